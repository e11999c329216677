"""Ctrl-C in the CLI: the first stops training and writes an honest result, the second aborts."""

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


def _start_training(tmp_path):
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
    time.sleep(4.0)  # into training (alignment of 200 patches takes well under a second)
    return proc, out


def test_first_ctrl_c_stops_and_writes_a_complete_result(tmp_path):
    proc, out = _start_training(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
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
