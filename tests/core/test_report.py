"""The training report: one builder for the CLI's report.json and the widget's X.report.json."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_rvae.core.align import CoarseAlignment
from napari_rvae.core.analysis import analyse_iter, apply_model
from napari_rvae.core.config import ModelConfig, TrainConfig
from napari_rvae.core.errors import InputError
from napari_rvae.core.modelfile import load_model
from napari_rvae.core.pipeline import run_train
from napari_rvae.core.report import (
    analysis_report,
    find_report,
    read_report,
    report_path,
    training_report,
    write_report,
)
from napari_rvae.core.train import drive, train_iter
from tests.core.test_cli import gaussian_lattice

# report.json's keys as scripts know them: new keys may be added, none of these renamed or dropped.
CLI_REPORT_KEYS = {
    "command",
    "input",
    "points",
    "model_config",
    "train_config",
    "device",
    "alignment",
    "n_points",
    "n_patches",
    "dropped_rows",
    "epochs_run",
    "stopped_early",
    "loss_per_epoch",
    "final_loss",
    "seconds",
    "patches_per_second",
    "class_names",
    "pixel_size",
    "unit",
    "notes",
    "files",
}
# The keys that name files: a napari run names its layers instead.
CLI_SOURCE_KEYS = {"input", "points"}
SECONDS_KEYS = {"extract", "train", "encode", "total"}

MODEL = ModelConfig(patch_size=16, hidden_dim=32)
TRAIN = TrainConfig(epochs=2, batch_size=50, device="cpu")


def test_run_train_report_keeps_every_key(tmp_path):
    img, pts = gaussian_lattice()
    tifffile.imwrite(tmp_path / "scan.tif", img)
    pd.DataFrame({"y": pts[:, 0], "x": pts[:, 1]}).to_csv(tmp_path / "points.csv", index=False)
    out = tmp_path / "run"
    report = run_train(
        tmp_path / "scan.tif", out, model_config=MODEL, train_config=TRAIN, points_path=tmp_path / "points.csv"
    )

    written = json.loads((out / "report.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert set(written) >= CLI_REPORT_KEYS, CLI_REPORT_KEYS - set(written)
    assert written["command"] == "train"
    assert written["input"] == str(tmp_path / "scan.tif") and written["points"] == str(tmp_path / "points.csv")
    assert written["model_config"] == MODEL.to_dict() and written["train_config"] == TRAIN.to_dict()
    assert written["device"] == "cpu"
    assert written["epochs_run"] == 2 and written["stopped_early"] is False
    assert len(written["loss_per_epoch"]) == 2 and written["final_loss"] == written["loss_per_epoch"][-1]
    assert written["n_points"] == len(pts)
    assert written["n_patches"] + len(written["dropped_rows"]) == len(pts)
    assert written["n_patches"] == len(pd.read_csv(out / "points.csv"))
    assert set(written["seconds"]) == SECONDS_KEYS
    assert all(v >= 0 for v in written["seconds"].values())
    assert written["seconds"]["total"] >= written["seconds"]["train"]
    assert written["patches_per_second"] > 0
    assert set(written["files"]) >= {"model.pt", "points.csv", "report.json"}
    assert all((out / name).is_file() for name in written["files"])
    model, _ = load_model(out / "model.pt")
    assert written["alignment"] == CoarseAlignment(model).summary()  # the saved model's own summary
    assert find_report(out / "model.pt") == written  # a CLI run's model finds its report


def test_analysis_report_has_the_cli_keys_with_layer_names(glyph_stack):
    """The Train widget's report: the CLI's keys, layer names in place of file paths."""
    rng = np.random.default_rng(0)
    image = rng.normal(0, 0.05, (96, 96)).astype(np.float32)
    yx = np.array([(y, x) for y in range(12, 85, 16) for x in range(12, 85, 16)], dtype=float)
    for (y, x), patch in zip(yx.astype(int), glyph_stack[0]):
        image[y - 8 : y + 8, x - 8 : x + 8] += patch
    yx = np.vstack([yx, [[2.0, 2.0]]])  # one point too close to the edge: dropped
    analysis = drive(analyse_iter(image, yx, MODEL, TRAIN))
    sources = {"image_layer": "scan", "points_layer": "atoms", "labels_column": None}
    report = analysis_report(analysis, TRAIN, command="napari", sources=sources, notes=["a note"])

    assert set(report) >= (CLI_REPORT_KEYS - CLI_SOURCE_KEYS) | set(sources)
    assert not set(report) & CLI_SOURCE_KEYS
    assert report["command"] == "napari" and report["image_layer"] == "scan" and report["points_layer"] == "atoms"
    assert report["n_points"] == len(yx) and report["dropped_rows"] == [len(yx) - 1]
    assert report["n_patches"] == len(analysis.kept) == analysis.training.n_patches == len(yx) - 1
    assert len(report["loss_per_epoch"]) == report["epochs_run"] == TRAIN.epochs
    assert set(report["seconds"]) == SECONDS_KEYS and report["seconds"]["train"] == analysis.training.seconds
    assert report["seconds"]["total"] >= report["seconds"]["train"] + report["seconds"]["encode"]
    assert report["notes"] == ["a note"]
    json.dumps(report)  # JSON as it stands

    with pytest.raises(ValueError, match="applied a model"):  # no training, no training report
        analysis_report(apply_model(image, yx, analysis.model), TRAIN, command="napari", sources=sources)


def test_report_file_beside_the_model_is_written_atomically(tmp_path, glyph_stack):
    model_path = tmp_path / "grains.pt"
    path = report_path(model_path)
    assert path == tmp_path / "grains.report.json"
    assert read_report(path) is None and find_report(model_path) is None

    write_report({"command": "napari", "loss": np.float32(1.5), "rows": np.arange(2)}, path)
    assert read_report(path) == {"command": "napari", "loss": 1.5, "rows": [0, 1]}
    # Something that is not JSON fails before the file is touched: the old report stays whole.
    with pytest.raises(TypeError):
        write_report({"command": "napari", "bad": object()}, path)
    assert read_report(path)["command"] == "napari"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind

    # X.report.json wins over a run folder's report.json.
    (tmp_path / "report.json").write_text(json.dumps({"command": "train", "files": ["grains.pt"]}))
    assert find_report(model_path)["command"] == "napari"
    path.unlink()
    assert find_report(model_path)["command"] == "train"
    (tmp_path / "report.json").write_text(json.dumps({"command": "train", "files": ["other.pt"]}))
    assert find_report(model_path) is None  # a report of another model is not this one's

    path.write_text("{not json")
    with pytest.raises(InputError, match="could not be read"):
        find_report(model_path)


def test_stopped_run_reports_partial_epochs(glyph_stack):
    """A stopped training reports what it ran: epochs_run below the setting, one loss per started epoch."""
    patches = glyph_stack[0][:60]
    steps = iter(range(10**6))
    # Stop after 3 steps of 10 per epoch (batch 6): inside the first epoch.
    result = drive(
        train_iter(patches, MODEL, TrainConfig(epochs=5, batch_size=6, device="cpu"), stop=lambda: next(steps) >= 3)
    )
    report = training_report(
        result,
        MODEL,
        TRAIN,
        command="train",
        sources={},
        n_points=60,
        n_patches=60,
        dropped_rows=[],
        seconds={"extract": 0.0, "encode": 0.0, "total": 1.0},
    )
    assert report["stopped_early"] is True and 0 < report["epochs_run"] < 1
    assert len(report["loss_per_epoch"]) == 1 and report["final_loss"] == report["loss_per_epoch"][0]
