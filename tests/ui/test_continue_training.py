"""The Train widget's Continue button: a loaded or trained model trains on, its loss curve goes on."""

import json

import pytest
import torch

from napari_rvae.core.modelfile import load_model
from napari_rvae.ui.result_layers import run_layers

from .test_train_widget import WAIT_MS, add_inputs, lattice, open_widget, small_run  # noqa: F401 - lattice: fixture

pytestmark = pytest.mark.gui


def trained_widget(viewer, lattice, qtbot, epochs):  # noqa: F811
    """The Train widget on the lattice, after a training of ``epochs``."""
    add_inputs(viewer, lattice)
    _, widget = open_widget(viewer)
    assert not widget.continue_button.isEnabled()  # no model yet
    small_run(widget, epochs=epochs)
    widget.train_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    return widget


def test_continue_trains_a_loaded_model_on_and_the_history_goes_on(make_napari_viewer, qtbot, lattice, tmp_path):  # noqa: F811
    viewer = make_napari_viewer()
    widget = trained_widget(viewer, lattice, qtbot, epochs=2)
    path = widget.save_model(tmp_path / "first.pt")
    first = json.loads((tmp_path / "first.report.json").read_text())

    assert widget.load_model(str(path)) is not None and widget.continue_button.isEnabled()
    widget.form.epochs.setValue(3)
    widget.continue_button.click()
    assert widget.plot.y[:2] == first["loss_per_epoch"]  # the curve starts where the model left off
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)

    report = widget.report
    assert report["resumed_from"] == str(path) and report["optimizer_resumed"]
    assert (report["epochs_before"], report["epochs_run"], report["epochs_total"]) == (2, 3, 5)
    assert len(report["loss_per_epoch"]) == 5 and report["loss_per_epoch"][:2] == first["loss_per_epoch"]
    # The plot holds every epoch's loss: the earlier two, then this run's (and its within-epoch reports).
    epoch_ends = [y for x, y in zip(widget.plot.x, widget.plot.y) if float(x).is_integer()]
    assert epoch_ends == report["loss_per_epoch"]
    assert report["model_config"] == first["model_config"]
    assert run_layers(viewer, "scan rvae continued")
    assert "5 epochs in all" in widget.status.text()

    saved = widget.save_model(tmp_path / "more.pt")
    assert len(json.loads((tmp_path / "more.report.json").read_text())["loss_per_epoch"]) == 5
    assert load_model(saved)[0].training_state.history == report["loss_per_epoch"]


def test_aborting_a_continuation_keeps_the_model_as_it_was(make_napari_viewer, qtbot, lattice):  # noqa: F811
    widget = trained_widget(make_napari_viewer(), lattice, qtbot, epochs=1)
    model, weights = widget.model, {k: v.clone() for k, v in widget.model.state_dict().items()}
    history = list(model.training_state.history)
    widget.form.epochs.setValue(500)
    widget.form.batch_size.setValue(8)
    widget.continue_button.click()
    qtbot.waitUntil(lambda: len(widget.plot.x) >= len(history) + 2, timeout=WAIT_MS)
    widget.abort_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.model is model and model.training_state.history == history
    for key, value in weights.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, equal_nan=True, msg=key)
