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


def test_the_budget_counts_patches_not_points_too_near_the_edge(make_napari_viewer):
    """Points whose patch would leave the image are left out by the run: the budget leaves them out too."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((256, 256), np.float32), name="scan")
    inside = np.random.default_rng(0).uniform(16, 240, (30, 2))
    edge = np.column_stack([np.full(10, 6.0), np.linspace(20, 200, 10)])
    viewer.add_points(np.vstack([inside, edge]), name="atoms")
    _, widget = viewer.window.add_plugin_dock_widget("napari-rvae", "Train rVAE")
    widget.form.patch_size.setValue(32)
    assert "30 patches is a small data set" in widget.budget_label.text()
    widget.form.patch_size.setValue(8)  # now the edge points' patches fit too
    assert "40 patches is a small data set" in widget.budget_label.text()
