"""The Pick atoms dock widget with a real viewer and the real detector."""

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from napari_rvae.core.patches import edge_dropped_count
from napari_rvae.core.synthetic import make_lattice

pytestmark = pytest.mark.gui

WAIT_MS = 30_000


@pytest.fixture(scope="module")
def lattice():
    return make_lattice((128, 128), seed=0)


@pytest.fixture
def messages():
    start = len(notification_manager.records)
    return lambda: [str(n.message) for n in notification_manager.records[start:]]


def open_widget(viewer):
    return viewer.window.add_plugin_dock_widget("napari-rvae", "Pick atoms")[1]


def detect(qtbot, widget):
    widget.detect_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)


def test_detect_makes_a_new_layer_on_the_image(make_napari_viewer, qtbot, lattice, messages):
    viewer = make_napari_viewer()
    img = viewer.add_image(lattice.image.copy(), name="scan", scale=(0.5, 0.5), translate=(10.0, -4.0))
    mine = viewer.add_points(np.array([[20.0, 20.0]]), name="my points")
    before_img, before_mine = img.data.copy(), mine.data.copy()
    widget = open_widget(viewer)
    assert widget.detect_button.isEnabled()
    detect(qtbot, widget)

    atoms = viewer.layers["scan atoms"]
    assert tuple(atoms.scale) == (0.5, 0.5) and tuple(atoms.translate) == (10.0, -4.0)
    # Every true atom has a detection within 1 px (in image pixels).
    d = np.linalg.norm(lattice.points[:, None, :] - atoms.data[None, :, :], axis=-1)
    inner = (lattice.points > 4).all(axis=1) & (lattice.points < 124).all(axis=1)
    assert (d.min(axis=1)[inner] < 1.0).all()
    assert "strength" in atoms.features
    # The user's layers are untouched and a message says what happened.
    np.testing.assert_array_equal(img.data, before_img)
    np.testing.assert_array_equal(mine.data, before_mine)
    assert any("Found" in m for m in messages())

    # The count follows the patch size, and the gallery shows patches.
    assert widget.points_combo.currentText() == "scan atoms"
    for p in (16, 48):
        widget.patch_size.setValue(p)
        dropped = edge_dropped_count(lattice.image.shape, atoms.data, p)
        assert widget.count_label.text().startswith(f"{len(atoms.data):,} points; {dropped:,} within")
    assert all(t.pixmap() is not None and not t.pixmap().isNull() for t in widget.thumbs)


def test_count_follows_point_edits(make_napari_viewer, qtbot, lattice):
    viewer = make_napari_viewer()
    viewer.add_image(lattice.image, name="scan")
    pts = viewer.add_points(lattice.points[:10], name="hand")
    widget = open_widget(viewer)
    widget.patch_size.setValue(16)
    assert widget.count_label.text().startswith("10 points")
    pts.add(np.array([[2.0, 2.0]]))  # napari's own editing: at the edge, so dropped
    n_drop = edge_dropped_count(lattice.image.shape, pts.data, 16)
    qtbot.waitUntil(lambda: widget.count_label.text().startswith(f"11 points; {n_drop} within"), timeout=2000)


def test_assign_class_writes_only_the_selected_points(make_napari_viewer, lattice, messages):
    viewer = make_napari_viewer()
    viewer.add_image(lattice.image, name="scan")
    pts = viewer.add_points(lattice.points[:6], name="hand")
    widget = open_widget(viewer)
    widget.assign_class()
    assert any("Select some points" in m for m in messages())
    pts.selected_data = {1, 3}
    widget.class_value.setValue(2)
    widget.assign_button.click()
    label = pts.features["label"].to_numpy()
    assert label[1] == 2 and label[3] == 2 and np.isnan(label[[0, 2, 4, 5]]).all()
    np.testing.assert_array_equal(pts.data, lattice.points[:6])
    assert "label" in widget.assign_button.toolTip()  # the UI says it writes into the layer


def test_bad_input(make_napari_viewer, qtbot, messages):
    viewer = make_napari_viewer()
    widget = open_widget(viewer)
    assert not widget.detect_button.isEnabled()
    widget.detect()
    assert any("Choose an image layer" in m for m in messages())

    viewer.add_image(np.random.default_rng(0).random((2, 3, 32, 32)), name="4-D")
    widget.detect()
    assert not widget.busy and any("a 2-D image or a (T, Y, X) stack" in m for m in messages())

    viewer.add_image(np.full((64, 64), 0.5) + 1e-3 * np.random.default_rng(1).random((64, 64)), name="flat")
    widget.image_combo.setCurrentText("flat")
    detect(qtbot, widget)
    assert any("No atoms found" in m for m in messages())
    assert "flat atoms" not in viewer.layers
