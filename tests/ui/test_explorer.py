"""The Latent explorer with a real viewer: selection linked both ways, manifold, reconstructions, exports."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.backend_bases import MouseEvent

from napari_rvae.core.patches import extract_patches
from napari_rvae.core.readers import read_image_file
from napari_rvae.ui.layers import results_meta, unproxied
from napari_rvae.ui.result_layers import show_results

from .results_util import SCALE, add_source, trained_crvae, trained_rvae, two_grains

pytestmark = pytest.mark.gui

WAIT_MS = 30_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def open_explorer(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-rvae", "Latent explorer")
    return widget


def with_results(viewer, analysis=None, run="scan rvae", **kw):
    img, pts = add_source(viewer)
    layers = show_results(viewer, analysis or trained_rvae(), image_layer=img, points_layer=pts, run_name=run, **kw)
    return img, pts, layers[-1]


def drag(widget, path):
    """Press, move and release the left button along ``path`` (data coordinates) on the scatter canvas."""
    canvas, ax = widget.canvas, widget.ax
    widget.canvas.draw()
    pix = ax.transData.transform(np.asarray(path, dtype=float))
    MouseEvent("button_press_event", canvas, *pix[0], button=1)._process()
    for p in pix[1:]:
        MouseEvent("motion_notify_event", canvas, *p, button=1)._process()
    MouseEvent("button_release_event", canvas, *pix[-1], button=1)._process()


def test_empty_until_results_then_shows_the_latent_scatter(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_explorer(viewer)
    assert widget.layer is None and widget.layer_combo.count() == 0
    assert not widget.csv_button.isEnabled() and not widget.png_button.isEnabled()
    viewer.add_points(np.zeros((3, 2)), name="not results")  # plain points layers are not offered
    assert widget.layer_combo.count() == 0
    _, _, res = with_results(viewer)
    assert widget.layer is unproxied(res) and widget.layer_combo.currentText() == "scan rvae atoms"
    assert (widget.x_combo.currentText(), widget.y_combo.currentText()) == ("z0", "z1")
    offsets = widget.ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets, res.features[["z0", "z1"]].to_numpy())
    widget.y_combo.setCurrentText("angle")
    np.testing.assert_allclose(widget.ax.collections[0].get_offsets()[:, 1], res.features["angle"])


@pytest.mark.parametrize("tool", ["rectangle", "lasso"])
def test_selection_in_the_scatter_selects_atoms_in_the_viewer(make_napari_viewer, tool):
    viewer = make_napari_viewer()
    _, _, res = with_results(viewer)
    widget = open_explorer(viewer)
    widget.tool_combo.setCurrentText(tool)
    xy = res.features[["z0", "z1"]].to_numpy()
    (x0, y0), (x1, y1) = np.quantile(xy, 0.2, axis=0), np.quantile(xy, 0.7, axis=0)
    box = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    drag(widget, box if tool == "lasso" else [box[0], box[2]])
    expected = {int(i) for i in np.flatnonzero((xy[:, 0] > x0) & (xy[:, 0] < x1) & (xy[:, 1] > y0) & (xy[:, 1] < y1))}
    assert 0 < len(expected) < len(xy)
    got = set(res.selected_data)
    # Points right on the box's edge may fall either way (pixel rounding of the drag).
    on_edge = {
        i
        for i in got ^ expected
        if min(abs(xy[i, 0] - x0), abs(xy[i, 0] - x1), abs(xy[i, 1] - y0), abs(xy[i, 1] - y1)) < 0.02 * np.ptp(xy)
    }
    assert got ^ expected <= on_edge and len(got) > 0
    np.testing.assert_allclose(np.sort(widget.highlighted(), axis=0), np.sort(xy[sorted(got)], axis=0))


def test_selection_in_the_viewer_is_highlighted_and_reconstructed(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    img, _, res = with_results(viewer)
    widget = open_explorer(viewer)
    res.selected_data = {7, 3}
    xy = res.features[["z0", "z1"]].to_numpy()
    np.testing.assert_allclose(widget.highlighted(), xy[[3, 7]])
    assert widget.selection_label.text().startswith("2 atoms selected")
    # The first selected atom's patch and its reconstruction, decoded in the background.
    qtbot.waitUntil(lambda: widget.reconstruction is not None and widget.reconstruction[0] == 3, timeout=WAIT_MS)
    _, patch, recon = widget.reconstruction
    analysis = trained_rvae()
    expected = extract_patches(img.data, analysis.centers[3:4], 16, edge="reflect").patches[0]
    np.testing.assert_allclose(patch, expected, atol=1e-5)
    assert recon.shape == (16, 16) and np.isfinite(recon).all()
    res.selected_data = set()
    assert len(widget.highlighted()) == 0


def test_manifold_is_decoded_at_the_chosen_angle_and_can_become_a_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    with_results(viewer)
    widget = open_explorer(viewer)
    widget.grid_spin.setValue(5)
    qtbot.waitUntil(
        lambda: widget.manifold_image is not None and widget.manifold_image.shape == (80, 80), timeout=WAIT_MS
    )
    upright = widget.manifold_image
    assert widget.angle_slider.maximum() == 359
    widget.angle_slider.setValue(90)
    qtbot.waitUntil(lambda: widget.manifold_image is not upright, timeout=WAIT_MS)
    turned = widget.manifold_image
    # Every tile is the upright one turned 90 deg counter-clockwise.
    np.testing.assert_allclose(turned[:16, :16], np.rot90(upright[:16, :16]), atol=1e-5)
    layer = widget.manifold_to_layer()
    assert layer.data.shape == (80, 80) and layer.name == "scan rvae latent manifold"
    n = len(viewer.layers)
    widget.manifold_to_layer()
    assert len(viewer.layers) == n  # replaced, not duplicated


def test_rerun_follows_the_new_layer_and_linking_still_works(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    img, pts, first = with_results(viewer)
    widget = open_explorer(viewer)
    second = show_results(viewer, trained_rvae(), image_layer=img, points_layer=pts, run_name="scan rvae")[-1]
    assert widget.layer is unproxied(second) and first not in viewer.layers
    widget.select_rectangle((-1e9, 1e9), (-1e9, 1e9))
    assert len(second.selected_data) == len(second.data)
    second.selected_data = {0}
    assert len(widget.highlighted()) == 1


def test_colour_by_class_and_exports(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _, _, res = with_results(viewer, trained_crvae(), run="classes")
    widget = open_explorer(viewer)
    assert widget.class_spin.isEnabled() and widget.class_spin.maximum() == 1
    widget.color_combo.setCurrentText("class")
    cls = res.features["class"].to_numpy()
    assert len(np.unique(res.face_color[cls == 0], axis=0)) == 1
    assert not np.allclose(res.face_color[cls == 0][0], res.face_color[cls == 1][0])
    scatter_colors = widget.ax.collections[0].get_facecolors()
    np.testing.assert_allclose(scatter_colors, res.face_color, atol=1e-6)

    csv = widget.export_csv(tmp_path / "table.csv")
    assert list(pd.read_csv(csv).columns) == list(res.features.columns)
    paths = widget.export_maps(tmp_path)
    assert sorted(p.name for p in paths) == ["classes_angle_map.tif", "classes_class_map.tif", "classes_psi_map.tif"]
    assert read_image_file(paths[0])[0].scale == pytest.approx(SCALE)
    png = widget.export_figure(tmp_path / "latent.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    lat = two_grains()
    assert len(res.features) == len(lat.points) - len(trained_crvae().dropped)


def test_angle_map_mode_is_the_users_choice(make_napari_viewer):
    viewer = make_napari_viewer()
    img, pts, res = with_results(viewer)
    widget = open_explorer(viewer)
    assert widget.map_combo.currentText() == "nearest"
    n = len(viewer.layers)
    widget.map_combo.setCurrentText("smooth")
    maps = [lay for lay in viewer.layers if (results_meta(lay) or {}).get("role") == "angle_map"]
    assert len(viewer.layers) == n and len(maps) == 1 and results_meta(maps[0])["map_mode"] == "smooth"
    assert res not in viewer.layers and widget.layer is not None and "grain" in widget.layer.features
    assert img in viewer.layers and pts in viewer.layers


def record_manifold_titles(widget) -> list:
    """The titles the manifold panel is asked to show from now on (one per decoded manifold drawn)."""
    shown, show = [], widget.manifold_panel.show
    widget.manifold_panel.show = lambda images, titles, **kw: (shown.append(titles[0]), show(images, titles, **kw))
    return shown


def request_manifolds(widget, angles) -> list:
    """Ask for one manifold per angle at once, as fast slider moves would; returns their jobs."""
    widget.angle_slider.blockSignals(True)  # no debounced decode of its own
    jobs = []
    for angle in angles:
        widget.angle_slider.setValue(angle)
        widget.update_manifold()
        jobs.append(widget.job)
    return jobs


def test_only_the_newest_decoding_is_drawn(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    with_results(viewer)
    widget = open_explorer(viewer)
    qtbot.waitUntil(lambda: widget.manifold_image is not None and not widget.busy, timeout=WAIT_MS)
    shown = record_manifold_titles(widget)
    jobs = request_manifolds(widget, (30, 60, 90))
    assert len(set(map(id, jobs))) == 3
    qtbot.waitUntil(lambda: not any(job.running for job in jobs), timeout=WAIT_MS)
    qtbot.wait(50)
    assert shown == ["8 x 8 at 90°"]  # the older requests' results were dropped


def test_closing_the_dock_closes_every_decoding_job(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    with_results(viewer)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-rvae", "Latent explorer")
    qtbot.waitUntil(lambda: widget.manifold_image is not None and not widget.busy, timeout=WAIT_MS)
    shown = record_manifold_titles(widget)
    jobs = request_manifolds(widget, (30, 60))
    dock.title.close_button.click()  # napari's "x" on the dock
    qtbot.waitUntil(lambda: not any(job.running for job in jobs), timeout=WAIT_MS)
    qtbot.wait(50)
    assert all(job.stopping for job in jobs) and shown == []  # closed: nothing calls back into the widget
