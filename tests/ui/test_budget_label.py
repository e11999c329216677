"""The Train widget says which training budget a run will use before Train is pressed."""

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_the_budget_is_shown_for_the_chosen_points(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((256, 256), np.float32), name="scan")
    atoms = viewer.add_points(np.random.default_rng(0).uniform(16, 240, (30, 2)), name="atoms")
    _, widget = viewer.window.add_plugin_dock_widget("napari-rvae", "Train rVAE")
    assert widget.form.epochs.text() == "auto"  # the default
    assert widget.form.configs()[1].epochs == "auto"
    assert "30 patches is a small data set: 50 full passes" in widget.budget_label.text()
    widget.form.epochs.setValue(7)
    assert "7 epochs as given, over all 30 patches" in widget.budget_label.text()
    assert widget.form.configs()[1].epochs == 7
    widget.form.epochs.setValue(0)
    atoms.data = np.random.default_rng(1).uniform(16, 240, (25_000, 2))  # many atoms: a sample
    assert "stratified sample of 6,400" in widget.budget_label.text()
