"""Classes of atoms from the column's own window (issue #17, target 6: species on polycrystals)."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from napari_rvae.cli import main
from napari_rvae.core.config import TrainConfig
from napari_rvae.core.errors import InputError
from napari_rvae.core.readers import write_tiff
from napari_rvae.core.synthetic import make_lattice
from napari_rvae.core.train import class_window_for, class_window_size


def test_the_window_keeps_the_patch_centre_and_never_exceeds_the_patch():
    assert class_window_size(15, 32) == 16 and class_window_size(16, 32) == 16 and class_window_size(15, 31) == 15
    assert (
        class_window_size(31, 32) is None
        and class_window_size(None, 32) is None
        and class_window_size("auto", 32) is None
    )
    i, j = np.mgrid[:12, :12].reshape(2, -1) * 12.0
    points = np.column_stack([i, j])
    assert class_window_for(points, 32) == 16 and class_window_for(points, 16) is None
    with pytest.raises(InputError, match="class window"):
        TrainConfig(class_window=2)


def test_species_at_random_sites_of_a_polycrystal_are_found_with_the_defaults(tmp_path):
    rng = np.random.default_rng(101)
    grains = [(rng.uniform(30, 170), rng.uniform(30, 170), rng.uniform(-180, 180)) for _ in range(4)]
    lat = make_lattice((200, 200), spacing=12, grains=grains, second_species="random", second_fraction=0.15, seed=1)
    write_tiff(tmp_path / "scan.tif", lat.image)
    pd.DataFrame({"y": lat.points[:, 0], "x": lat.points[:, 1]}).to_csv(tmp_path / "points.csv", index=False)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(tmp_path / "scan.tif"),
                "--points",
                str(tmp_path / "points.csv"),
                "--out",
                str(out),
                "--model",
                "jrvae",
                "--classes",
                "2",
                "--epochs",
                "10",
                "--batch-size",
                "32",
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["class_window_px"] == 16 and report["train_config"]["class_window"] == 16
    table = pd.read_csv(out / "points.csv")
    kept = np.setdiff1d(np.arange(len(lat.points)), report["dropped_rows"])
    assert adjusted_rand_score(lat.species[kept], table["class"]) >= 0.95
