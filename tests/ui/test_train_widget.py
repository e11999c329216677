"""The Train rVAE dock widget with a real viewer, real Qt and real (tiny) trainings."""

import json
import time

import numpy as np
import pytest
import torch
from napari.utils import progress
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QTimer

from napari_rvae.core.align import CoarseAlignment
from napari_rvae.core.analysis import apply_model
from napari_rvae.core.config import ModelConfig
from napari_rvae.core.detect import detect_atoms
from napari_rvae.core.modelfile import load_model, save_model
from napari_rvae.core.models import RVAE
from napari_rvae.core.patches import edge_dropped_count
from napari_rvae.core.synthetic import make_lattice
from napari_rvae.ui.layers import results_meta
from napari_rvae.ui.result_layers import run_layers
from napari_rvae.ui.train_widget import NO_LABELS
from tests.core.test_report import CLI_REPORT_KEYS, CLI_SOURCE_KEYS

pytestmark = pytest.mark.gui

WAIT_MS = 60_000


@pytest.fixture(scope="module")
def lattice():
    lat = make_lattice((128, 128), seed=0)
    return lat.image, detect_atoms(lat.image)[["y", "x"]].to_numpy()


@pytest.fixture
def messages():
    """Texts of the napari notifications shown during the test."""
    start = len(notification_manager.records)
    return lambda: [str(n.message) for n in notification_manager.records[start:]]


def open_widget(viewer):
    dock, widget = viewer.window.add_plugin_dock_widget("napari-rvae", "Train rVAE")
    return dock, widget


def add_inputs(viewer, lattice, scale=(1.0, 1.0), translate=(0.0, 0.0)):
    image, points = lattice
    img = viewer.add_image(image.copy(), name="scan", scale=scale, translate=translate)
    pts = viewer.add_points(points * np.asarray(scale) + np.asarray(translate), name="atoms")
    return img, pts


def small_run(widget, epochs=3, batch=16, kind="rvae"):
    """Settings for a training of a few seconds on ~80 patches."""
    f = widget.form
    f.kind.setCurrentText(kind)
    f.patch_size.setValue(16)
    f.hidden_dim.setValue(32)
    f.epochs.setValue(epochs)
    f.batch_size.setValue(batch)
    f.device.setCurrentText("cpu")


def wait_progress(qtbot, widget, n=2):
    qtbot.waitUntil(lambda: len(widget.plot.x) >= n, timeout=WAIT_MS)


def start_long_training(viewer, lattice, qtbot):
    """Add the inputs, open the widget, start a 500-epoch training; (dock, widget) once it reports progress."""
    add_inputs(viewer, lattice)
    dock, widget = open_widget(viewer)
    small_run(widget, epochs=500, batch=8)
    widget.train_button.click()
    wait_progress(qtbot, widget)
    return dock, widget


def result_layers(viewer, before):
    return [lay for lay in viewer.layers if lay.name not in before]


def run_points(viewer, run_name):
    """The results points layer of one run (found by metadata, whatever the names)."""
    (points,) = [lay for lay in run_layers(viewer, run_name) if results_meta(lay)["role"] == "points"]
    return points


def assert_untouched(viewer, layer, data, name):
    """The user's layer is still in the viewer, with its data and the name the user gave it."""
    assert layer in viewer.layers and layer.name == name
    np.testing.assert_array_equal(layer.data, data)
    assert list(getattr(layer, "features", {})) == []


def test_train_through_manifest_keeps_inputs_and_viewer_responsive(
    make_napari_viewer, qtbot, lattice, tmp_path, messages
):
    viewer = make_napari_viewer()
    img, pts = add_inputs(viewer, lattice, scale=(0.5, 0.5), translate=(3.0, -2.0))
    img_before, pts_before = img.data.copy(), pts.data.copy()
    _, widget = open_widget(viewer)
    assert widget.image_combo.currentText() == "scan" and widget.points_combo.currentText() == "atoms"
    assert widget.form.device.itemText(0) == "auto" and "cpu" in [
        widget.form.device.itemText(i) for i in range(widget.form.device.count())
    ]
    assert not widget.save_button.isEnabled() and not widget.apply_button.isEnabled()
    assert widget.form.symmetry.currentText() == "auto"  # estimated from the patches unless chosen
    small_run(widget, epochs=4)

    # The GUI thread must keep running its event loop while training, encoding and the maps run: until the
    # first result layer goes to napari (adding a layer builds napari's own controls, ~0.4 s the first time).
    ticks, handed_over = [], []
    timer = QTimer(interval=10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    viewer.layers.events.inserting.connect(lambda _: handed_over.append(time.perf_counter()))
    timer.start()
    before = [lay.name for lay in viewer.layers]
    widget.train_button.click()
    assert widget.busy and not widget.train_button.isEnabled() and widget.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    timer.stop()
    assert handed_over, "no result layer was added"
    gaps = np.diff([t for t in ticks if t <= handed_over[0]] + [handed_over[0]])
    assert len(gaps) > 5 and gaps.max() < 0.5, f"GUI stalled for {gaps.max():.2f} s during training"

    new = result_layers(viewer, before)
    assert new, "training produced no layers"
    table_layer = next(lay for lay in new if "angle" in getattr(lay, "features", {}))
    kept = len(lattice[1]) - edge_dropped_count(lattice[0].shape, lattice[1], 16)
    assert len(table_layer.features) == kept
    assert np.isfinite(table_layer.features["angle"]).all()
    assert "Training done" in widget.status.text() and "cpu" in widget.status.text()
    chosen = widget.model.config.symmetry
    assert f"Symmetry: {chosen}-fold (estimated from the patches" in widget.status.text()
    assert "Rotations " in widget.status.text()  # which rotation range the angles were measured in
    assert len(widget.plot.y) >= 4 and np.isfinite(widget.plot.y).all()
    # The user's layers are untouched.
    np.testing.assert_array_equal(img.data, img_before)
    np.testing.assert_array_equal(pts.data, pts_before)
    assert list(pts.features.columns) == [] and tuple(img.scale) == (0.5, 0.5)
    assert widget.save_button.isEnabled() and widget.apply_button.isEnabled() and widget.train_button.isEnabled()

    # Save, load back, apply: one more set of layers from the loaded model.
    path = widget.save_model(tmp_path / "model.pt")
    assert path.is_file()
    assert widget.load_model(str(path)) is not None
    before = [lay.name for lay in viewer.layers]
    widget.apply_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    applied = result_layers(viewer, before)
    assert applied and any("applied" in lay.name for lay in applied)
    assert not [m for m in messages() if "failed" in m]


def test_stop_keeps_partial_model(make_napari_viewer, qtbot, lattice):
    viewer = make_napari_viewer()
    _, widget = start_long_training(viewer, lattice, qtbot)
    before = [lay.name for lay in viewer.layers]  # results come only when training ends
    # Progress shows in napari's activity dock (a napari progress bar) and in the widget.
    bars = [b for b in progress._all_instances if b.desc.startswith("Training rVAE")]
    assert len(bars) == 1 and 0 < bars[0].n < bars[0].total
    assert 0 < widget.bar.value() < widget.bar.maximum()
    widget.stop_button.click()
    assert not widget.stop_button.isEnabled()  # pressed once is enough
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.model is not None
    assert "stopped early" in widget.status.text()
    assert not [b for b in progress._all_instances if b.desc.startswith("Training rVAE")]  # bar closed
    assert result_layers(viewer, before), "a stopped training must still write its results"


def test_abort_discards(make_napari_viewer, qtbot, lattice):
    viewer = make_napari_viewer()
    _, widget = start_long_training(viewer, lattice, qtbot)
    before = [lay.name for lay in viewer.layers]
    widget.abort_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    qtbot.wait(50)
    assert widget.model is None and not widget.save_button.isEnabled()
    assert [lay.name for lay in viewer.layers] == before
    assert "aborted" in widget.status.text()


def test_deleting_inputs_during_training_is_harmless(make_napari_viewer, qtbot, lattice, messages):
    viewer = make_napari_viewer()
    _, widget = start_long_training(viewer, lattice, qtbot)
    viewer.layers.remove(viewer.layers["scan"])
    viewer.layers.remove(viewer.layers["atoms"])
    n = len(widget.plot.x)
    wait_progress(qtbot, widget, n + 2)  # training goes on, on its own copies
    widget.stop_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.model is not None
    assert len(viewer.layers) >= 1, "results should still appear"
    assert widget.image_combo.findText("scan") == -1 and widget.points_combo.findText("atoms") == -1
    assert not [m for m in messages() if "failed" in m]


def test_closing_the_dock_stops_training(make_napari_viewer, qtbot, lattice):
    viewer = make_napari_viewer()
    dock, widget = start_long_training(viewer, lattice, qtbot)
    before = [lay.name for lay in viewer.layers]
    job = widget.job
    dock.title.close_button.click()  # napari's "x" on the dock
    qtbot.waitUntil(lambda: not job.running, timeout=10_000)
    qtbot.wait(50)
    assert [lay.name for lay in viewer.layers] == before


def test_closing_the_viewer_stops_training(make_napari_viewer, qtbot, lattice):
    viewer = make_napari_viewer(show=True)
    _, widget = start_long_training(viewer, lattice, qtbot)
    job = widget.job
    viewer.close()
    qtbot.waitUntil(lambda: not job.running, timeout=10_000)
    assert job.stopping


def test_buttons_follow_the_inputs(make_napari_viewer, lattice, messages):
    viewer = make_napari_viewer()
    _, widget = open_widget(viewer)
    assert not widget.train_button.isEnabled() and not widget.apply_button.isEnabled()
    widget.train()  # even if called anyway: a message, no exception
    viewer.add_image(lattice[0], name="scan")
    assert not widget.train_button.isEnabled()
    widget.train()
    viewer.add_points(lattice[1], name="atoms")
    assert widget.train_button.isEnabled()
    assert any("image layer" in m for m in messages())
    assert any("points" in m for m in messages())


@pytest.mark.parametrize(
    "data, rgb, expected",
    [
        (np.random.default_rng(0).random((2, 3, 64, 64)), False, "a 2-D image or a (T, Y, X) stack"),
        (np.random.default_rng(0).random((3, 64, 64)), False, "outside the stack's frames 0 to 2"),
        (np.zeros((64, 64)), False, "constant"),
        (np.random.default_rng(0).random((40, 40)), False, "larger than the image"),
    ],
)
def test_bad_images_give_a_message(make_napari_viewer, messages, data, rgb, expected):
    viewer = make_napari_viewer()
    viewer.add_image(data, name="bad", rgb=rgb)
    viewer.add_points(np.array([[10.0, 10.0, 10.0]])[:, -data.ndim :] + 10, name="p")
    _, widget = open_widget(viewer)
    widget.form.patch_size.setValue(48)
    widget.train()
    assert not widget.busy
    assert any(expected in m for m in messages()), messages()


def test_rgb_image_is_used_as_luminance(make_napari_viewer, qtbot, lattice, messages):
    viewer = make_napari_viewer()
    image, points = lattice
    viewer.add_image(np.stack([image] * 3, axis=-1), name="rgb", rgb=True)
    viewer.add_points(points, name="atoms")
    _, widget = open_widget(viewer)
    small_run(widget, epochs=1)
    widget.train()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert any("luminance" in m for m in messages())
    assert widget.model is not None


def test_models_that_do_not_fit(make_napari_viewer, lattice, tmp_path, messages):
    viewer = make_napari_viewer()
    add_inputs(viewer, lattice)
    _, widget = open_widget(viewer)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    assert widget.load_model(str(junk)) is None
    assert any("not a readable napari-rvae model" in m for m in messages())

    big = save_model(RVAE(ModelConfig(patch_size=200, hidden_dim=8)), tmp_path / "big.pt")
    assert widget.load_model(str(big)) is not None and widget.form.patch_size.value() == 200
    widget.apply()
    assert not widget.busy and any("does not fit" in m and "larger than the image" in m for m in messages())

    crvae = save_model(RVAE(ModelConfig(kind="crvae", n_classes=2, patch_size=16, hidden_dim=8)), tmp_path / "c.pt")
    widget.load_model(str(crvae))
    widget.apply()
    assert not widget.busy and any("does not fit" in m and "labels column" in m for m in messages())


def test_combos_follow_a_renamed_layer(make_napari_viewer, lattice):
    """Renaming the chosen layer keeps it chosen, under its new name; others are listed too."""
    viewer = make_napari_viewer()
    img, pts = add_inputs(viewer, lattice)
    viewer.add_image(np.zeros((8, 8)), name="other")
    _, widget = open_widget(viewer)
    widget.image_combo.setCurrentText("scan")
    img.name = "scan, drift-corrected"
    assert widget.image_combo.currentText() == "scan, drift-corrected"
    assert widget.image_combo.layer() is img
    pts.name = "atoms v2"
    assert widget.points_combo.currentText() == "atoms v2"
    viewer.layers["other"].name = "other renamed"
    assert widget.image_combo.findText("other renamed") >= 0 and widget.image_combo.layer() is img


def test_rotations_choice_sets_prior_and_alignment(make_napari_viewer):
    """The form's Rotations choice maps onto the model config, and a loaded model shows its own."""
    viewer = make_napari_viewer()
    _, widget = open_widget(viewer)
    form = widget.form
    seen = {}
    for i in range(form.rotations.count()):
        form.rotations.setCurrentIndex(i)
        model, _ = form.configs()
        seen[form.rotations.currentText()] = (
            model.angle_prior,
            model.coarse_alignment,
            model.rotation_range if model.coarse_alignment else "-",
        )
    assert sorted(seen.values()) == [
        (0.0, False, "-"),
        (0.0, True, "auto"),
        (0.0, True, "full"),
        (0.0, True, "limited"),
        (2.0, False, "-"),
    ]
    for config in (
        ModelConfig(angle_prior=2.0),
        ModelConfig(alignment="none"),
        ModelConfig(),
        ModelConfig(rotation_range="limited"),
        ModelConfig(rotation_range="full"),
    ):
        form.rotations.setCurrentIndex(0 if config.angle_prior else 3)
        form.show_model(config)
        model, _ = form.configs()
        assert (model.angle_prior, model.coarse_alignment, model.rotation_range) == (
            config.angle_prior,
            config.coarse_alignment,
            config.rotation_range,
        )
    form.kind.setCurrentText("vae")
    assert not form.rotations.isEnabled()


def test_crvae_trains_on_classes_assigned_in_pick_widget(make_napari_viewer, qtbot, lattice):
    viewer = make_napari_viewer()
    _, pts = add_inputs(viewer, lattice)
    _, pick = viewer.window.add_plugin_dock_widget("napari-rvae", "Pick atoms")
    _, widget = open_widget(viewer)
    n = len(pts.data)
    pts.selected_data = set(range(n // 2))
    pick.class_value.setValue(0)
    pick.assign_button.click()
    pts.selected_data = set(range(n // 2, n))
    pick.class_value.setValue(1)
    pick.assign_button.click()
    assert widget.labels_combo.currentText() == "label"  # picked up from the features event
    small_run(widget, epochs=2, kind="crvae")
    before = [lay.name for lay in viewer.layers]
    widget.train_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.model is not None and widget.model.config.kind == "crvae"
    table = next(lay.features for lay in result_layers(viewer, before) if "class" in getattr(lay, "features", {}))
    assert set(table["class"]) <= {0, 1}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_the_gpu_when_chosen(make_napari_viewer, qtbot, lattice):
    viewer = make_napari_viewer()
    add_inputs(viewer, lattice)
    _, widget = open_widget(viewer)
    small_run(widget, epochs=2)
    widget.form.device.setCurrentText("cuda:0")
    widget.train_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "cuda:0" in widget.status.text() and widget.model is not None


def test_renaming_inputs_during_training_is_harmless(make_napari_viewer, qtbot, lattice, messages):
    viewer = make_napari_viewer()
    img, pts = add_inputs(viewer, lattice)
    img_data, pts_data = img.data.copy(), pts.data.copy()
    _, widget = open_widget(viewer)
    small_run(widget, epochs=3)
    with qtbot.captureExceptions() as exceptions:
        widget.train_button.click()
        assert widget.busy  # no events ran since the click: the job cannot have ended
        img.name = "scan, drift-corrected"
        pts.name = "atoms v2"
        qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert not exceptions, exceptions
    assert "Training done" in widget.status.text()
    table = run_points(viewer, "scan rvae").features  # the run keeps the name it started with
    assert len(table) == len(lattice[1]) - edge_dropped_count(lattice[0].shape, lattice[1], 16)
    assert np.isfinite(table["angle"]).all()
    assert_untouched(viewer, img, img_data, "scan, drift-corrected")
    assert_untouched(viewer, pts, pts_data, "atoms v2")
    assert widget.image_combo.layer() is img and widget.points_combo.layer() is pts
    # The report names the layers as they were when the data was copied.
    assert (widget.report["image_layer"], widget.report["points_layer"]) == ("scan", "atoms")
    assert not [m for m in messages() if "failed" in m]


def test_second_train_or_apply_while_training_starts_nothing(make_napari_viewer, qtbot, lattice, tmp_path, messages):
    viewer = make_napari_viewer()
    img, pts = add_inputs(viewer, lattice)
    img_data, pts_data = img.data.copy(), pts.data.copy()
    _, widget = open_widget(viewer)
    widget.load_model(save_model(RVAE(ModelConfig(patch_size=16, hidden_dim=8)), tmp_path / "m.pt"))
    small_run(widget, epochs=3)
    inserted = []
    viewer.layers.events.inserted.connect(lambda event: inserted.append(event.value.name))
    with qtbot.captureExceptions() as exceptions:
        widget.train_button.click()
        job = widget.job
        assert widget.busy and not widget.train_button.isEnabled() and not widget.apply_button.isEnabled()
        widget.train()  # called anyway, as a script or a stray shortcut would
        widget.train_button.click()  # disabled: nothing happens
        widget.apply()
        widget.apply_button.click()
        assert widget.job is job
        assert len([b for b in progress._all_instances if b.desc.startswith(("Training", "Applying"))]) == 1
        qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
        qtbot.wait(100)  # a second job, had one started, would now deliver too
    assert not exceptions, exceptions
    assert widget.job is job and not widget.busy
    # The first run completed as usual, and only it made layers.
    assert "Training done" in widget.status.text()
    assert widget.report["epochs_run"] == 3 and not widget.report["stopped_early"]
    assert sorted(inserted) == sorted(lay.name for lay in run_layers(viewer, "scan rvae"))
    assert not [name for name in inserted if "applied" in name]
    assert_untouched(viewer, img, img_data, "scan")
    assert_untouched(viewer, pts, pts_data, "atoms")
    assert not [m for m in messages() if "failed" in m]


def test_apply_model_of_another_patch_size_cuts_its_own_patches(make_napari_viewer, qtbot, lattice, tmp_path, messages):
    """A 24 px model on a form set to 16 px: patches are cut at 24 px, as the core's apply_model does."""
    viewer = make_napari_viewer()
    img, pts = add_inputs(viewer, lattice)
    img_data, pts_data = img.data.copy(), pts.data.copy()
    _, widget = open_widget(viewer)
    small_run(widget)
    model = RVAE(ModelConfig(patch_size=24, hidden_dim=8)).eval()
    path = save_model(model, tmp_path / "p24.pt")
    assert widget.load_model(str(path)) is not None and widget.form.patch_size.value() == 24
    widget.form.patch_size.setValue(16)  # the user changes the form afterwards
    with qtbot.captureExceptions() as exceptions:
        widget.apply_button.click()
        qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert not exceptions, exceptions
    image, points = lattice
    kept_at_24 = len(points) - edge_dropped_count(image.shape, points, 24)
    assert kept_at_24 != len(points) - edge_dropped_count(image.shape, points, 16)  # the sizes are told apart
    table = run_points(viewer, "scan rvae applied").features
    assert len(table) == kept_at_24
    expected = apply_model(image, points, model)
    np.testing.assert_allclose(table["angle"], expected.table["angle"], atol=1e-4)
    np.testing.assert_allclose(table[["y", "x"]], expected.centers)
    assert "Applied to" in widget.status.text()
    assert_untouched(viewer, img, img_data, "scan")
    assert_untouched(viewer, pts, pts_data, "atoms")
    assert not [m for m in messages() if "failed" in m or "does not fit" in m]


def test_saved_model_has_the_runs_report(make_napari_viewer, qtbot, lattice, tmp_path, messages):
    """Save writes X.report.json beside X.pt: the CLI's report keys, with layer names in place of files."""
    viewer = make_napari_viewer()
    add_inputs(viewer, lattice, scale=(0.5, 0.5))
    _, widget = open_widget(viewer)
    small_run(widget, epochs=3)
    widget.train_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    path = widget.save_model(tmp_path / "grains.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grains.pt", "grains.report.json"]  # no temp files
    report = json.loads((tmp_path / "grains.report.json").read_text())

    assert set(report) >= (CLI_REPORT_KEYS - CLI_SOURCE_KEYS) | {"image_layer", "points_layer"}
    assert not set(report) & CLI_SOURCE_KEYS  # no file paths: there were none
    assert report["command"] == "napari"
    assert (report["image_layer"], report["points_layer"]) == ("scan", "atoms")
    assert report["model_config"] == widget.model.config.to_dict()
    assert report["model_config"]["patch_size"] == 16 and report["model_config"]["hidden_dim"] == 32
    assert {k: report["train_config"][k] for k in ("epochs", "batch_size", "device")} == {
        "epochs": 3,
        "batch_size": 16,
        "device": "cpu",
    }
    assert report["device"] == "cpu"
    assert report["alignment"] == CoarseAlignment(widget.model).summary()
    assert report["epochs_run"] == 3 and report["stopped_early"] is False
    assert len(report["loss_per_epoch"]) == 3 and report["final_loss"] == report["loss_per_epoch"][-1]
    trained = len(run_points(viewer, "scan rvae").features)
    assert report["n_patches"] == trained
    assert report["n_points"] == len(lattice[1]) == trained + len(report["dropped_rows"])
    assert set(report["seconds"]) == {"extract", "train", "encode", "total"}
    assert report["seconds"]["total"] >= report["seconds"]["train"] > 0 and report["patches_per_second"] > 0
    assert report["files"] == ["grains.pt", "grains.report.json"]

    # A loaded model brings its report along: saved again, the same report lies beside the copy.
    assert widget.load_model(str(path)) is not None
    copy = widget.save_model(tmp_path / "copies" / "again.pt")
    again = json.loads(copy.with_name("again.report.json").read_text())
    assert again["files"] == ["again.pt", "again.report.json"]
    assert {k: v for k, v in again.items() if k != "files"} == {k: v for k, v in report.items() if k != "files"}

    # A model without a report writes none, and removes an old one that described another model.
    widget.load_model(str(save_model(RVAE(ModelConfig(patch_size=16, hidden_dim=8)), tmp_path / "bare.pt")))
    assert widget.report is None
    widget.save_model(tmp_path / "grains.pt")
    assert not (tmp_path / "grains.report.json").exists()
    # A place that cannot be written to: a sentence, no traceback.
    assert widget.save_model(tmp_path / "bare.pt" / "inside a file.pt") is None
    assert any("could not be saved" in m for m in messages())
    assert not [m for m in messages() if "failed" in m]


def test_changing_the_labels_column_during_training_keeps_the_one_trained_on(
    make_napari_viewer, qtbot, lattice, tmp_path
):
    viewer = make_napari_viewer()
    image, points = lattice
    viewer.add_image(image, name="scan")
    viewer.add_points(points, name="atoms", features={"label": np.arange(len(points)) % 2})
    _, widget = open_widget(viewer)
    assert widget.labels_combo.currentText() == "label"
    small_run(widget, epochs=2, kind="crvae")
    with qtbot.captureExceptions() as exceptions:
        widget.train_button.click()
        widget.labels_combo.setCurrentText(NO_LABELS)  # the user moves on while it trains
        qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert not exceptions, exceptions
    assert widget.model.config.kind == "crvae"
    _, extra = load_model(widget.save_model(tmp_path / "c.pt"))
    assert extra["labels_col"] == "label" and extra["class_names"] == [0, 1]
    assert widget.report["labels_column"] == "label" and widget.report["class_names"] == [0, 1]


def test_failed_alignment_is_said_in_the_status_line(make_napari_viewer, qtbot, lattice, monkeypatch, messages):
    from napari_rvae.core.align import stage

    def broken(*args, **kwargs):
        raise FloatingPointError("the synchronised angles are not finite")

    monkeypatch.setattr(stage, "build_reference", broken)
    viewer = make_napari_viewer()
    add_inputs(viewer, lattice)
    _, widget = open_widget(viewer)
    small_run(widget, epochs=1)
    widget.train_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.model is not None and widget.model.config.alignment == "none"
    assert "alignment failed" in widget.status.text() and "rVAE alone" in widget.status.text()
    assert widget.report["alignment"]["status"] == "failed"
    assert not [m for m in messages() if "failed:" in m]
