"""The widgets remember their form settings between sessions (a real viewer, a real settings file)."""

import json

import pytest

from napari_rvae.ui.form_memory import read_settings

pytestmark = pytest.mark.gui


def open_dock(viewer, name):
    return viewer.window.add_plugin_dock_widget("napari-rvae", name)[1]


def reopen(make_napari_viewer, viewer, name):
    """Close ``viewer`` (its widgets with it) and open ``name`` in a new viewer: the next session."""
    viewer.close()
    return open_dock(make_napari_viewer(), name)


def test_train_settings_come_back_in_a_new_viewer(make_napari_viewer, settings_file):
    viewer = make_napari_viewer()
    form = open_dock(viewer, "Train rVAE").form
    form.kind.setCurrentText("jrvae")
    form.n_classes.setValue(3)
    form.patch_size.setValue(24)
    form.epochs.setValue(7)
    form.lr.setValue(0.003)
    form.translation.setChecked(False)
    form.symmetry.setCurrentText("6")
    form.rotations.setCurrentText("full circle")
    form.device.setCurrentText("cpu")
    assert settings_file.exists()

    again = reopen(make_napari_viewer, viewer, "Train rVAE").form
    assert again is not form
    assert again.kind.currentText() == "jrvae"
    assert again.n_classes.isEnabled()  # the kind's own consequences follow the restored kind
    assert (again.n_classes.value(), again.patch_size.value(), again.epochs.value()) == (3, 24, 7)
    assert again.lr.value() == pytest.approx(0.003)
    assert not again.translation.isChecked()
    assert again.symmetry.currentText() == "6"
    assert again.rotations.currentText() == "full circle"
    assert again.device.currentText() == "cpu"


def test_pick_and_explorer_settings_come_back(make_napari_viewer):
    viewer = make_napari_viewer()
    pick = open_dock(viewer, "Pick atoms")
    pick.sigma.setValue(2.5)
    pick.threshold.setValue(0.35)
    pick.dark.setChecked(True)
    pick.refine.setChecked(False)
    pick.patch_size.setValue(40)
    explorer = open_dock(viewer, "Latent explorer")
    explorer.tool_combo.setCurrentText("lasso")
    explorer.grid_spin.setValue(12)

    pick = reopen(make_napari_viewer, viewer, "Pick atoms")
    assert pick.detection_options() == dict(sigma=2.5, min_distance=None, threshold=0.35, dark=True, refine=False)
    assert pick.patch_size.value() == 40
    explorer = open_dock(pick.viewer, "Latent explorer")
    assert explorer.tool_combo.currentText() == "lasso"
    assert explorer.grid_spin.value() == 12


def test_stale_and_invalid_values_are_ignored(make_napari_viewer, settings_file):
    stored = {
        "train": {
            "kind": "a-model-kind-gone-since",
            "epochs": "many",
            "patch_size": 10**6,
            "lr": float("nan"),
            "translation": 1,
            "batch_size": 64,
            "device": "cuda:7",
        },
        "pick": ["not", "a", "section"],
    }
    settings_file.write_text(json.dumps(stored))
    viewer = make_napari_viewer()
    form = open_dock(viewer, "Train rVAE").form
    assert form.kind.currentText() == "rvae"
    assert (form.epochs.value(), form.patch_size.value()) == (0, 32)  # epochs: auto
    assert form.lr.value() == pytest.approx(1e-3)
    assert form.translation.isChecked()
    assert form.device.currentText() == "auto"
    assert form.batch_size.value() == 64  # the one value that still fits
    assert open_dock(viewer, "Pick atoms").threshold.value() == pytest.approx(0.1)


def test_a_corrupt_file_is_ignored_and_then_replaced(make_napari_viewer, settings_file):
    settings_file.write_text('{"train": {"epochs": 12')  # cut short mid-write
    form = open_dock(make_napari_viewer(), "Train rVAE").form
    assert form.epochs.value() == 0  # auto
    form.epochs.setValue(9)
    assert read_settings(settings_file)["train"]["epochs"] == 9
