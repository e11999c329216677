"""Ctrl-C in the CLI: while it trains, the first stops training and writes an honest result, the second
aborts; before training (reading, detecting) the first aborts at once."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from napari_rvae.core.synthetic import make_rotated_shapes

pytestmark = pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")


def _start_training(tmp_path, wait: float = 4.0):
    tmp_path.mkdir(parents=True, exist_ok=True)
    x, _ = make_rotated_shapes(200, 16, seed=0)
    np.save(tmp_path / "shapes.npy", x)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "napari_rvae.cli",
        "train",
        str(tmp_path / "shapes.npy"),
        "--out",
        str(out),
        "--epochs",
        "5000",
        "--batch-size",
        "10",
        "--hidden-dim",
        "16",
        "--patch-size",
        "16",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The staging folder appears once the run has started (after the handler is installed).
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".run.partial-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.1)
    time.sleep(wait)  # into training (alignment of 200 patches takes well under a second when idle)
    return proc, out


def test_first_ctrl_c_stops_and_writes_a_complete_result(tmp_path):
    # Before its first step the run aborts instead (the test below): on a loaded machine, wait longer.
    for attempt, wait in enumerate((4.0, 15.0, 40.0)):
        proc, out = _start_training(tmp_path / str(attempt), wait)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 130:
            break
    tmp_path = tmp_path / str(attempt)
    assert proc.returncode == 0, err
    assert "Press Ctrl-C again to abort" in err and "stopped early" in err
    report = json.loads((out / "report.json").read_text())
    assert report["stopped_early"] is True
    assert 0 <= report["epochs_run"] < 5000
    assert len(report["loss_per_epoch"]) == int(np.ceil(report["epochs_run"]))
    for name in report["files"]:
        assert (out / name).is_file(), name
    assert not list(tmp_path.glob(".run.partial-*"))


def test_second_ctrl_c_aborts_and_leaves_nothing(tmp_path):
    proc, out = _start_training(tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "aborted; nothing was written" in err and "Traceback" not in err
    assert not out.exists()
    assert not list(tmp_path.glob(".run.partial-*"))


def test_first_ctrl_c_before_training_aborts_at_once(tmp_path):
    """Detecting a movie's atoms, there is nothing to keep: the first Ctrl-C ends the run (it used
    to only mark training to stop, and the detection went on)."""
    from napari_rvae.core.synthetic import make_movie, write_movie_zarr

    write_movie_zarr(tmp_path / "movie.zarr", make_movie(40, (1024, 1024), 12.0, distinct=2, seed=0))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "napari_rvae.cli", "train", str(tmp_path / "movie.zarr"), "--out", str(out)]
    proc = subprocess.Popen([*cmd, "--workers", "0", "--epochs", "1"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".run.partial-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.1)
    time.sleep(1.0)  # detecting: 40 frames of 1024 x 1024 px take far longer than this
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "aborted; nothing was written" in err and "Traceback" not in err
    assert time.monotonic() - sent < 30
    assert not out.exists() and not list(tmp_path.glob(".run.partial-*"))
