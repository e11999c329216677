"""``torchrun --standalone --nproc_per_node=2 napari-rvae train``: one complete folder, the files of one process."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from napari_rvae.core.readers import write_tiff
from napari_rvae.core.synthetic import make_lattice

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torchrun")
    frames = [make_lattice((96, 96), spacing=12, grains=((48, 48, 10.0 * t),), seed=t).image for t in range(2)]
    return write_tiff(folder / "movie.tif", np.stack(frames))


def _train(prefix, movie, out):
    args = ["train", str(movie), "--out", str(out), "--epochs", "2", "--patch-size", "16", "--workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_processes_write_the_files_of_one(movie, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _train([sys.executable, "-m", "napari_rvae.cli"], movie, one)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = _train([*torchrun, "-m", "napari_rvae.cli"], movie, two)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert done.stderr.count("Results in") == 1  # rank 0 alone reports
    a, b = pd.read_csv(one / "points.csv"), pd.read_csv(two / "points.csv")
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    np.testing.assert_array_equal(a[["frame", "y", "x"]].to_numpy(), b[["frame", "y", "x"]].to_numpy())
    reports = [json.loads((d / "report.json").read_text()) for d in (one, two)]
    assert [r["processes"] for r in reports] == [1, 2]
    assert reports[0]["n_patches"] == reports[1]["n_patches"]
