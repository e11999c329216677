"""Result layers in a real viewer: alignment, the rotation in the angle map, classes, re-runs, napari's CSV writer."""

import numpy as np
import pandas as pd
import pytest

from napari_rvae.core.readers import read_image_file
from napari_rvae.ui.layers import META, results_meta
from napari_rvae.ui.result_layers import (
    export_maps_tiff,
    export_table_csv,
    show_results,
)
from napari_rvae.ui.worker import job_results

from .results_util import (
    ROTATION,
    SCALE,
    TRANSLATE,
    add_source,
    circular_diff,
    circular_mean,
    trained_crvae,
    trained_rvae,
    two_grains,
)

pytestmark = pytest.mark.gui


def by_role(layers):
    return {results_meta(lay)["role"]: lay for lay in layers}


def world(layer, data):
    return np.asarray(data)[:, -2:] * np.asarray(layer.scale[-2:]) + np.asarray(layer.translate[-2:])


def test_layers_align_with_the_scan_and_the_angle_map_shows_the_rotation(make_napari_viewer):
    viewer = make_napari_viewer()
    img, pts = add_source(viewer)
    img_data, pts_data, pts_features = img.data.copy(), pts.data.copy(), pts.features.copy()
    analysis = trained_rvae()
    layers = show_results(viewer, analysis, image_layer=img, points_layer=pts, run_name="scan rvae")

    roles = by_role(layers)
    assert list(roles) == ["angle_map", "psi_map", "orientation", "points"]  # no classes in an rvae
    # The lattice check's map, registered like the rest and hidden until asked for.
    psi = roles["psi_map"]
    assert not psi.visible and psi.data.shape == img.data.shape and tuple(psi.contrast_limits) == (0.0, 90.0)
    for lay in layers:
        np.testing.assert_allclose(lay.scale, SCALE)
        np.testing.assert_allclose(lay.translate, TRANSLATE)
        assert [str(u) for u in lay.units] == ["nanometer", "nanometer"]
        assert results_meta(lay)["analysis"] is analysis and results_meta(lay)["run"] == "scan rvae"
    # The results sit exactly on the user's atoms (in world coordinates).
    res = roles["points"]
    np.testing.assert_allclose(world(res, res.data), world(pts, pts.data)[analysis.kept], atol=1e-9)
    np.testing.assert_allclose(world(roles["orientation"], roles["orientation"].data[:, 0]), world(res, res.data))
    # The features table: coordinates, every encoded column, then the user's own columns.
    feats = res.features
    assert list(feats.columns[:7]) == ["y", "x", "angle", "dx", "dy", "z0", "z1"]
    assert {"class", "class_prob"}.isdisjoint(feats.columns) and {"grain", "note"} <= set(feats.columns)
    np.testing.assert_array_equal(feats["grain"], two_grains().grain[analysis.kept])
    np.testing.assert_allclose(feats["angle"], analysis.table["angle"])

    amap = roles["angle_map"]
    assert amap.data.shape == img.data.shape and amap.data.dtype == np.float32
    assert tuple(amap.contrast_limits) == (0.0, 360.0) and amap.opacity == pytest.approx(0.5)
    # The two grains differ by the applied rotation (the model may learn it mirrored: +-40 deg).
    left, right = circular_mean(amap.data[12:84, 12:72]), circular_mean(amap.data[12:84, 120:180])
    step = abs(circular_diff(right, left))
    assert abs(step - ROTATION) < 10, f"grains at {left:.1f} and {right:.1f} deg: step {step:.1f}"
    # Each grain is one colour family: its points' colours are close to the colour of its mean angle.
    colors = res.face_color
    grain = feats["grain"].to_numpy()
    assert np.abs(colors[grain == 0].mean(0) - colors[grain == 1].mean(0)).max() > 0.1

    # The user's layers are exactly as they were.
    np.testing.assert_array_equal(img.data, img_data)
    np.testing.assert_array_equal(pts.data, pts_data)
    pd.testing.assert_frame_equal(pts.features, pts_features)
    assert [lay.name for lay in viewer.layers[:2]] == ["scan", "atoms"]


def test_rerun_replaces_this_runs_layers_and_leaves_the_rest(make_napari_viewer):
    viewer = make_napari_viewer()
    img, pts = add_source(viewer)
    decoy = viewer.add_points(np.zeros((1, 2)), name="scan rvae atoms")  # a user layer with our name
    analysis = trained_rvae()
    first = show_results(viewer, analysis, image_layer=img, points_layer=pts, run_name="scan rvae")
    n = len(viewer.layers)
    second = show_results(viewer, analysis, image_layer=img, points_layer=pts, run_name="scan rvae", map_mode="smooth")
    assert len(viewer.layers) == n
    assert not any(lay in viewer.layers for lay in first) and all(lay in viewer.layers for lay in second)
    assert decoy in viewer.layers and len(decoy.data) == 1 and META not in decoy.metadata
    assert results_meta(by_role(second)["angle_map"])["map_mode"] == "smooth"
    other = show_results(viewer, analysis, image_layer=img, points_layer=pts, run_name="scan rvae applied")
    assert len(viewer.layers) == n + len(other) and all(lay in viewer.layers for lay in second)


def test_class_map_splits_a_two_class_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    img, pts = add_source(viewer)
    analysis = trained_crvae()
    layers = show_results(viewer, analysis, image_layer=img, points_layer=pts, run_name="classes", color_by="class")
    roles = by_role(layers)
    assert list(roles) == ["angle_map", "psi_map", "class_map", "orientation", "points"]
    labels = roles["class_map"]
    np.testing.assert_allclose(labels.scale, SCALE)
    np.testing.assert_allclose(labels.translate, TRANSLATE)
    # Left grain is class 0 (label 1), right grain class 1 (label 2); the boundary is at x = 96.
    left, right = labels.data[12:84, 12:80], labels.data[12:84, 112:180]
    assert (left == 1).all() and (right == 2).all()
    # Points coloured by class: one colour per class, different between the classes.
    colors, cls = roles["points"].face_color, roles["points"].features["class"].to_numpy()
    assert len(np.unique(colors[cls == 0], axis=0)) == 1 and len(np.unique(colors[cls == 1], axis=0)) == 1
    assert not np.allclose(colors[cls == 0][0], colors[cls == 1][0])
    np.testing.assert_allclose(labels.colormap.map(np.array([1]))[0], colors[cls == 0][0], atol=1e-6)


def test_symmetry_wraps_the_map_and_the_colours(make_napari_viewer):
    viewer = make_napari_viewer()
    img, pts = add_source(viewer)
    analysis = trained_rvae()
    lat = two_grains()
    # Known angles 89 deg (left grain) and 1 deg (right grain): 2 deg apart modulo 90.
    analysis = type(analysis)(analysis.table.copy(), analysis.kept, analysis.dropped, analysis.centers, analysis.model)
    analysis.table["angle"] = np.where(lat.grain[analysis.kept] == 0, 89.0, 1.0)
    roles = by_role(show_results(viewer, analysis, image_layer=img, points_layer=pts, run_name="four", symmetry=4))
    amap = roles["angle_map"]
    assert tuple(amap.contrast_limits) == (0.0, 90.0) and np.nanmax(amap.data) == 89.0
    assert results_meta(amap)["period"] == 90.0
    colors, grain = roles["points"].face_color, roles["points"].features["grain"].to_numpy()
    # 89 and 1 deg look alike on a 90 deg colour wheel (they would be far apart on a 360 deg one).
    assert np.abs(colors[grain == 0][0] - colors[grain == 1][0]).max() < 0.2
    smooth = show_results(
        viewer, analysis, image_layer=img, points_layer=pts, run_name="four", symmetry=4, map_mode="smooth"
    )
    sm = by_role(smooth)["angle_map"].data[40:56, 88:104]  # across the boundary: near 0/90, never near 45
    assert np.nanmin(np.minimum(sm, 90 - sm)) < 2 and np.nanmax(np.minimum(sm, 90 - sm)) < 2


def test_napari_csv_writer_and_exports_keep_the_columns(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    img, pts = add_source(viewer)
    analysis = trained_crvae()
    roles = by_role(show_results(viewer, analysis, image_layer=img, points_layer=pts, run_name="csv run"))
    res = roles["points"]
    [saved] = res.save(str(tmp_path / "napari.csv"), plugin="napari")
    table = pd.read_csv(saved)
    assert set(res.features.columns) <= set(table.columns)
    np.testing.assert_allclose(table["angle"], res.features["angle"], rtol=1e-6)
    np.testing.assert_array_equal(table["class"], res.features["class"])

    out = export_table_csv(res, tmp_path / "table.csv")
    assert list(pd.read_csv(out).columns) == list(res.features.columns)
    paths = export_maps_tiff(viewer, "csv run", tmp_path)
    assert [p.name for p in paths] == ["csv_run_angle_map.tif", "csv_run_psi_map.tif", "csv_run_class_map.tif"]
    angle_tif, _, class_tif = (read_image_file(p)[0] for p in paths)
    assert angle_tif.scale == pytest.approx(SCALE) and angle_tif.unit == "nm"
    np.testing.assert_allclose(angle_tif.data, roles["angle_map"].data)
    np.testing.assert_array_equal(class_tif.data, roles["class_map"].data)


def test_maps_made_by_the_worker_are_drawn_as_they_are(make_napari_viewer):
    """The worker makes the maps (seconds on a large scan); the GUI thread only draws them."""
    viewer = make_napari_viewer()
    img, pts = add_source(viewer)
    analysis = trained_rvae()
    results = job_results(analysis, img.data.shape)
    assert set(results.maps) == {"angle_map", "psi_map"} and results.psi_period == 90.0  # a square lattice
    layers = by_role(
        show_results(
            viewer,
            analysis,
            image_layer=img,
            points_layer=pts,
            run_name="given",
            maps=results.maps,
            radius=results.radius,
        )
    )
    assert layers["angle_map"].data is results.maps["angle_map"]
    assert results_meta(layers["angle_map"])["radius"] == results.radius
    # The same maps show_results makes by itself.
    own = by_role(show_results(viewer, analysis, image_layer=img, points_layer=pts, run_name="own"))
    np.testing.assert_array_equal(own["angle_map"].data, results.maps["angle_map"])
