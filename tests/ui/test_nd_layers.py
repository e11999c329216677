"""A (T, Y, X) layer and (t, y, x) points through Pick, Train and Apply with a real viewer under Xvfb."""

import threading

import dask.array as da
import numpy as np
import pytest

from napari_rvae.core.detect import detect_atoms
from napari_rvae.core.synthetic import make_lattice
from napari_rvae.ui.layers import results_meta
from napari_rvae.ui.pick_widget import EVERY_FRAME, IN_VIEW
from napari_rvae.ui.result_layers import run_layers

pytestmark = pytest.mark.gui

WAIT_MS = 60_000
SCALE, TRANSLATE = (2.0, 0.5, 0.5), (10.0, 3.0, -4.0)  # every axis calibrated and shifted


@pytest.fixture(scope="module")
def movie():
    """Three 128 px frames of different polycrystals, and each frame's atoms."""
    frames = np.stack([make_lattice((128, 128), seed=s).image for s in range(3)]).astype(np.float32)
    return frames, [detect_atoms(f)[["y", "x"]].to_numpy() for f in frames]


def lazy(frames, calls):
    """A dask movie, one chunk per frame, that records which thread computes which frame."""

    def block(chunk, block_info=None):
        calls.append((threading.current_thread() is threading.main_thread(), block_info[0]["chunk-location"][0]))
        return chunk

    return da.from_array(frames, chunks=(1, *frames.shape[1:])).map_blocks(block, dtype=frames.dtype)


def pick(viewer, qtbot, detect_on):
    widget = viewer.window.add_plugin_dock_widget("napari-rvae", "Pick atoms")[1]
    widget.detect_on.setCurrentText(detect_on)
    widget.detect_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    return widget


def frame_rows(layer, t):
    data = np.asarray(layer.data)
    return data[np.rint(data[:, 0]) == t]


def check_points_per_frame(layer, atoms, lo=0.0):
    """The layer's (t, y, x) rows of each frame are that frame's atoms (in image pixels)."""
    for t, yx in enumerate(atoms):
        rows = frame_rows(layer, t)[:, 1:]
        d = np.linalg.norm(rows[:, None] - yx[None], axis=-1).min(axis=1)
        assert len(rows) and d.max() <= lo + 1e-6


def test_pick_every_frame_and_frame_in_view(make_napari_viewer, qtbot, movie):
    frames, atoms = movie
    viewer = make_napari_viewer()
    viewer.add_image(frames.copy(), name="movie", scale=SCALE, translate=TRANSLATE)
    widget = pick(viewer, qtbot, EVERY_FRAME)
    assert widget.detect_on.isEnabled()
    points = viewer.layers["movie atoms"]
    assert points.ndim == 3 and tuple(points.scale) == SCALE and tuple(points.translate) == TRANSLATE
    assert sorted(points.features["frame"].unique()) == [0, 1, 2]
    np.testing.assert_array_equal(points.features["frame"], points.data[:, 0])
    check_points_per_frame(points, atoms)
    # The gallery shows patches of the frame in view, the count all frames' points.
    qtbot.waitUntil(lambda: not widget.thumbs[0].pixmap().isNull(), timeout=WAIT_MS)
    assert widget.count_label.text().startswith(f"{len(points.data):,} points")

    # Moving the slider redraws the gallery from the frame now in view.
    first = widget.thumbs[0].pixmap().toImage()
    shown = int(viewer.dims.current_step[0])
    viewer.dims.set_point(0, TRANSLATE[0] + (shown + 1) % 3 * SCALE[0])
    qtbot.waitUntil(lambda: widget.thumbs[0].pixmap().toImage() != first, timeout=WAIT_MS)

    # The frame in view: only that frame's atoms, at that frame.
    viewer.layers.remove(points)
    viewer.dims.set_point(0, TRANSLATE[0] + 2 * SCALE[0])
    pick(viewer, qtbot, IN_VIEW)
    points = viewer.layers["movie atoms"]
    assert set(points.data[:, 0]) == {2.0}
    np.testing.assert_allclose(np.sort(points.data[:, 1]), np.sort(atoms[2][:, 0]), atol=1e-6)


def test_stop_ends_every_frame_detection_between_frames(make_napari_viewer, qtbot, movie):
    frames, _ = movie
    calls = []
    long = lazy(np.concatenate([frames] * 20), calls)  # 60 frames
    viewer = make_napari_viewer()
    viewer.add_image(long, name="long", contrast_limits=(0.0, 1.0))
    widget = viewer.window.add_plugin_dock_widget("napari-rvae", "Pick atoms")[1]
    widget.detect_on.setCurrentText(EVERY_FRAME)
    widget.detect_button.click()
    assert widget.stop_button.isEnabled()
    qtbot.waitUntil(lambda: widget.job._bar is not None and widget.job._bar.n > 0, timeout=WAIT_MS)
    widget.stop_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    done = viewer.layers["long atoms"].features["frame"].unique()
    assert 1 <= len(done) < 60
    # The worker read the frames; the GUI thread only the plane in view.
    assert {t for main, t in calls if main} <= {0}
    assert {t for main, t in calls if not main} >= set(done)


def train_widget(viewer, image, points, kind):
    _, widget = viewer.window.add_plugin_dock_widget("napari-rvae", "Train rVAE")
    widget.image_combo.setCurrentText(image)
    widget.points_combo.setCurrentText(points)
    f = widget.form
    f.kind.setCurrentText(kind)
    f.patch_size.setValue(16)
    f.hidden_dim.setValue(32)
    f.epochs.setValue(2)
    f.batch_size.setValue(64)
    f.device.setCurrentText("cpu")
    f.symmetry.setCurrentText("1")
    return widget


def run(qtbot, widget, button):
    button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.model is not None


def check_results(viewer, run_name, tyx, frames):
    """n-D result layers on the source's geometry; each frame holds its own atoms and follows the slider."""
    layers = {results_meta(lay)["role"]: lay for lay in run_layers(viewer, run_name)}
    assert {"angle_map", "orientation", "points"} <= set(layers)
    for lay in layers.values():
        assert lay.ndim == 3
        assert tuple(lay.scale) == SCALE and tuple(lay.translate) == TRANSLATE
    assert layers["angle_map"].data.shape == frames.shape
    atoms = layers["points"]
    for t in range(len(frames)):
        mine, theirs = frame_rows(atoms, t)[:, 1:], tyx[tyx[:, 0] == t, 1:]
        assert 0 < len(mine) <= len(theirs)
        d = np.linalg.norm(mine[:, None] - theirs[None], axis=-1).min(axis=1)
        assert d.max() < 1e-6
        angle_map = layers["angle_map"].data[t]
        rows = (atoms.features["frame"] == t).to_numpy()
        yx = np.rint(mine).astype(int)
        np.testing.assert_allclose(angle_map[yx[:, 0], yx[:, 1]], atoms.features["angle"][rows] % 360, atol=1e-3)
    vectors = layers["orientation"].data
    assert vectors.shape[1:] == (2, 3) and (vectors[:, 1, 0] == 0).all()
    # The slider: frame 1 (in world coordinates, through the scale and translate) shows frame 1's atoms and map.
    viewer.dims.set_point(0, TRANSLATE[0] + SCALE[0])
    shown = atoms.data[atoms._view_indices]
    assert len(shown) and (shown[:, 0] == 1).all()
    assert (vectors[layers["orientation"]._view_indices, 0, 0] == 1).all()
    for role in ("angle_map", "class_map"):
        if role in layers:
            np.testing.assert_array_equal(np.asarray(layers[role]._slice.image.raw), layers[role].data[1])
    return layers


def check_reconstruction_in_its_frame(viewer, qtbot, points, frames):
    """The explorer cuts an atom's patch from that atom's own frame."""
    from napari_rvae.core.patches import extract_patches

    _, explorer = viewer.window.add_plugin_dock_widget("napari-rvae", "Latent explorer")
    index = int(np.flatnonzero(points.features["frame"].to_numpy() == 2)[0])
    points.selected_data = {index}
    qtbot.waitUntil(lambda: explorer.reconstruction is not None and explorer.reconstruction[0] == index, timeout=30_000)
    _, patch, _ = explorer.reconstruction
    centre = explorer.info["analysis"].centers[index : index + 1]
    expected = extract_patches(frames[2], centre, patch.shape[0], edge="reflect").patches[0]
    np.testing.assert_allclose(patch, expected, atol=1e-5)


@pytest.mark.parametrize("backing, kind", [("numpy", "rvae"), ("dask", "jrvae")])
def test_train_and_apply_on_a_stack(make_napari_viewer, qtbot, movie, backing, kind):
    frames, atoms = movie
    calls = []
    data = frames.copy() if backing == "numpy" else lazy(frames, calls)
    viewer = make_napari_viewer()
    viewer.add_image(data, name="movie", scale=SCALE, translate=TRANSLATE, contrast_limits=(0.0, 1.0))
    tyx = np.concatenate([np.column_stack([np.full(len(a), t), a]) for t, a in enumerate(atoms)])
    viewer.add_points(tyx * SCALE + TRANSLATE, name="atoms", features={"frame": tyx[:, 0].astype(int)})
    widget = train_widget(viewer, "movie", "atoms", kind)
    assert widget.plan.text().startswith(f"Movie: 3 frames of 128 x 128 px, {len(tyx):,} atoms on 3 of them")

    run(qtbot, widget, widget.train_button)
    assert "on 3 frames" in widget.status.text()
    assert widget.report["frames"] == 3 and widget.report["lattice_check"]["frames"] == 3  # every frame checked
    trained = check_results(viewer, f"movie {kind}", tyx, frames)
    flags = trained["points"].features["angle_psi_flag"].astype(bool)
    assert widget.report["lattice_check"]["flagged"] == int(flags.sum())
    if backing == "numpy":
        check_reconstruction_in_its_frame(viewer, qtbot, trained["points"], frames)
    if kind == "jrvae":  # classes: a class map per frame
        roles = {results_meta(lay)["role"]: lay for lay in run_layers(viewer, f"movie {kind}")}
        assert roles["class_map"].data.shape == frames.shape and roles["class_map"].data.max() >= 1

    run(qtbot, widget, widget.apply_button)
    applied = check_results(viewer, f"movie {kind} applied", tyx, frames)
    np.testing.assert_allclose(applied["points"].features["z0"], trained["points"].features["z0"], atol=1e-5)
    if backing == "dask":  # the GUI thread drew the planes in view, the worker read the rest
        assert {t for main, t in calls if main} <= {0, 1}
        assert {t for main, t in calls if not main} == {0, 1, 2}
