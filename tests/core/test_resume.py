"""Training goes on from a saved model: history, optimizer state and random streams carry on."""

import json
import pathlib

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from napari_rvae.cli import main
from napari_rvae.core import InputError, ModelConfig, TrainConfig, load_model, save_model, train
from napari_rvae.core.labels import labels_for_model
from napari_rvae.core.resume import FRESH_OPTIMIZER_NOTE

from .test_cli import gaussian_lattice

CONFIG = ModelConfig(patch_size=16, hidden_dim=32)


def _settings(epochs, **kw):
    return TrainConfig(epochs=epochs, batch_size=50, seed=1, device="cpu", **kw)


def test_three_saved_and_three_more_equal_six_in_one_run(glyph_stack, tmp_path):
    patches = glyph_stack[0][:100]
    whole = train(patches, CONFIG, _settings(6))
    first = train(patches, CONFIG, _settings(3))
    path = save_model(first.model, tmp_path / "m.pt")
    stored = torch.load(path, weights_only=True)["training"]  # plain tensors and numbers only
    assert stored["history"] == first.history and stored["epochs"] == 3.0
    model, _ = load_model(path)
    more = train(patches, CONFIG, _settings(3), model=model)

    assert len(more.history) == 6 and more.history[:3] == first.history
    assert more.history_before == 3 and more.epochs_before == 3 and more.epochs_run == 3 and more.epochs_total == 6
    assert more.optimizer_resumed and FRESH_OPTIMIZER_NOTE not in more.notes
    # Adam's step count went on (2 steps per epoch), and with it everything else: the uninterrupted run, exactly.
    assert int(more.model.training_state.optimizer["state"][0]["step"]) == 12
    assert more.history == whole.history
    ours, theirs = more.model.state_dict(), whole.model.state_dict()
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, equal_nan=True, msg=key)


def test_an_old_file_without_training_state_goes_on_with_a_fresh_optimizer(glyph_stack, tmp_path):
    patches = glyph_stack[0][:100]
    first = train(patches, CONFIG, _settings(2))
    path = save_model(first.model, tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    del payload["training"]  # as written before the training state was stored
    torch.save(payload, path)
    model, _ = load_model(path)
    assert model.training_state is None
    more = train(patches, CONFIG, _settings(2, lr=1e-4), model=model)
    assert FRESH_OPTIMIZER_NOTE in more.notes and not more.optimizer_resumed
    assert len(more.history) == 2 and more.history_before == 0
    # The model's own normalisation stayed; the new run's learning rate applies.
    assert float(more.model.norm_scale) == float(first.model.norm_scale)
    assert more.model.training_state.optimizer["param_groups"][0]["lr"] == 1e-4


def test_resumed_learning_rate_is_the_new_runs(glyph_stack):
    patches = glyph_stack[0][:100]
    first = train(patches, CONFIG, _settings(1))
    more = train(patches, CONFIG, _settings(1, lr=2e-4), model=first.model)
    assert more.optimizer_resumed and more.model.training_state.optimizer["param_groups"][0]["lr"] == 2e-4
    assert int(more.model.training_state.optimizer["state"][0]["step"]) == 4


def test_resuming_on_patches_of_another_size_is_refused(glyph_stack):
    patches = glyph_stack[0][:100]
    first = train(patches, CONFIG, _settings(1))
    with pytest.raises(InputError, match="16"):
        train(np.zeros((20, 24, 24), np.float32), ModelConfig(patch_size=24), _settings(1), model=first.model)


class _Touch:
    """A pickled object that would create a file when unpickled without weights_only."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_loading_never_runs_code_from_the_training_state(glyph_stack, tmp_path):
    first = train(glyph_stack[0][:100], CONFIG, _settings(1))
    path = save_model(first.model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    marker = tmp_path / "ran"
    payload["training"]["optimizer"] = _Touch(marker)
    torch.save(payload, path)
    with pytest.raises(InputError, match="not a readable"):
        load_model(path)
    assert not marker.exists()


def test_class_codes_are_renumbered_to_the_models_classes():
    codes = np.array([0, 1, -1, 1])  # over ["b", "c"]
    np.testing.assert_array_equal(labels_for_model(codes, ["b", "c"], ["a", "b", "c"]), [1, 2, -1, 2])
    with pytest.raises(InputError, match="'z'"):
        labels_for_model(codes, ["b", "z"], ["a", "b", "c"])


@pytest.fixture
def scan(tmp_path):
    img, pts = gaussian_lattice()
    tifffile.imwrite(tmp_path / "scan.tif", img)
    pd.DataFrame({"y": pts[:, 0], "x": pts[:, 1]}).to_csv(tmp_path / "points.csv", index=False)
    return tmp_path / "scan.tif", tmp_path / "points.csv"


FAST = ["--batch-size", "50", "--quiet", "--edge", "reflect"]


def test_cli_resume_writes_a_complete_folder_with_the_whole_history(scan, tmp_path):
    image, points = scan
    first, more = tmp_path / "first", tmp_path / "more"
    built = ["--patch-size", "16", "--hidden-dim", "32"]
    assert (
        main(["train", str(image), "--points", str(points), "--out", str(first), "--epochs", "2", *built, *FAST]) == 0
    )
    args = ["train", str(image), "--points", str(points), "--resume", str(first / "model.pt"), "--out", str(more)]
    assert main([*args, "--epochs", "3", *FAST]) == 0
    before = json.loads((first / "report.json").read_text())
    report = json.loads((more / "report.json").read_text())
    assert report["resumed_from"] == str(first / "model.pt") and before["resumed_from"] is None
    assert report["epochs_before"] == 2 and report["epochs_run"] == 3 and report["epochs_total"] == 5
    assert report["history_before"] == 2 and report["optimizer_resumed"]
    assert len(report["loss_per_epoch"]) == 5 and report["loss_per_epoch"][:2] == before["loss_per_epoch"]
    assert report["model_config"] == before["model_config"]
    assert sorted(p.name for p in more.iterdir()) == sorted(report["files"])
    assert len(pd.read_csv(more / "points.csv")) == before["n_patches"]
    model, _ = load_model(more / "model.pt")
    assert len(model.training_state.history) == 5


def test_cli_resume_refuses_model_options_and_writes_nothing(scan, tmp_path, capsys):
    image, points = scan
    first = tmp_path / "first"
    args = ["train", str(image), "--points", str(points), "--patch-size", "16", "--hidden-dim", "32"]
    assert main([*args, "--out", str(first), "--epochs", "1", *FAST]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad"
    resume = ["--resume", str(first / "model.pt"), "--out", str(bad), *FAST]
    assert main(["train", str(image), "--points", str(points), "--hidden-dim", "64", *resume]) == 2
    assert "leave out --hidden-dim" in capsys.readouterr().err and not bad.exists()
    # A stack of 24 px patches does not fit a 16 px model.
    np.save(tmp_path / "stack.npy", np.zeros((10, 24, 24), np.float32))
    assert main(["train", str(tmp_path / "stack.npy"), *resume]) == 2
    assert "16 px" in capsys.readouterr().err and not bad.exists()
