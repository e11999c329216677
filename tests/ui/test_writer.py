"""File > Save Layers through the plugin's npe2 writers: files the CLI, napari and our reader read back."""

import numpy as np
import pandas as pd
import pytest

from napari_rvae.cli import main
from napari_rvae.core.errors import InputError
from napari_rvae.core.modelfile import save_model
from napari_rvae.core.points_io import read_points_csv
from napari_rvae.core.readers import read_image_file, write_tiff
from napari_rvae.ui.reader import get_reader
from napari_rvae.ui.result_layers import show_results
from napari_rvae.ui.writer import write_map_tiff, write_points_csv

from .results_util import SCALE, add_source, trained_crvae, trained_rvae, two_grains

pytestmark = pytest.mark.gui


def _save(viewer, layer, path):
    """What File > Save Selected Layers does with napari-rvae chosen."""
    viewer.layers.selection = {layer}
    return viewer.layers.save(str(path), selected=True, plugin="napari-rvae")


def _results(viewer, analysis, run_name):
    img, pts = add_source(viewer)
    layers = show_results(viewer, analysis, image_layer=img, points_layer=pts, run_name=run_name)
    return {lay.metadata["napari_rvae"]["role"]: lay for lay in layers}


def test_saved_points_are_the_clis_table_and_encode_reads_them(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    analysis = trained_rvae()
    res = _results(viewer, analysis, "saved")["points"]
    [saved] = _save(viewer, res, tmp_path / "atoms.csv")

    raw = pd.read_csv(saved)
    features = [c for c in res.features.columns if c not in ("y", "x")]
    assert list(raw.columns) == ["y", "x", *features, "y_nm", "x_nm", "axis-0", "axis-1"]
    np.testing.assert_allclose(raw[["y", "x"]], analysis.centers)
    np.testing.assert_allclose(raw[["y_nm", "x_nm"]], analysis.centers * np.asarray(SCALE))
    np.testing.assert_allclose(raw["angle"], res.features["angle"], rtol=1e-6)
    assert (raw["note"] == "user").all()  # the source points' own columns come along
    # The CLI's reader: y, x first, napari's axis copies skipped.
    assert list(read_points_csv(saved).columns) == ["y", "x", *features, "y_nm", "x_nm"]

    # napari-rvae encode --points takes the saved file as it is.
    lat = two_grains()
    write_tiff(tmp_path / "scan.tif", lat.image, pixel_size=SCALE[1], unit="nm")
    save_model(analysis.model, tmp_path / "model.pt")
    args = ["encode", str(tmp_path / "scan.tif"), "--model", str(tmp_path / "model.pt"), "--points", str(saved)]
    assert main([*args, "--out", str(tmp_path / "again"), "--quiet"]) == 0
    again = pd.read_csv(tmp_path / "again" / "points.csv")
    np.testing.assert_allclose(again[["y", "x"]], raw[["y", "x"]])
    np.testing.assert_allclose(again[["y_nm", "x_nm"]], raw[["y_nm", "x_nm"]], rtol=1e-6)
    header = (tmp_path / "again" / "points.csv").read_text().splitlines()[0].split(",")
    assert len(header) == len(set(header)) and not any(c.startswith("axis-") for c in header)

    # napari's own CSV reader: the same points, the columns as features.
    [back] = viewer.open(str(saved), plugin="napari")
    np.testing.assert_allclose(back.data, res.data)
    np.testing.assert_allclose(back.features["angle"], res.features["angle"], rtol=1e-6)


def test_saved_maps_are_calibrated_tiffs_our_reader_opens(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    roles = _results(viewer, trained_crvae(), "maps")
    for role, name in (("angle_map", "angle.tif"), ("class_map", "classes.tiff")):
        [saved] = _save(viewer, roles[role], tmp_path / name)
        [image] = read_image_file(saved)
        assert image.scale == pytest.approx(SCALE) and image.unit == "nm"
        np.testing.assert_array_equal(image.data, roles[role].data)
        [(data, kwargs, kind)] = get_reader(saved)(saved)
        assert kind == "image" and kwargs["units"] == ("nm", "nm") and kwargs["scale"] == pytest.approx(SCALE)


def test_an_uncalibrated_points_layer_gets_no_unit_columns(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    pts = viewer.add_points(np.array([[1.0, 2.0], [3.0, 4.5]]), features={"label": ["a", "b"]})
    [saved] = _save(viewer, pts, tmp_path / "picked.csv")
    table = read_points_csv(saved)
    assert list(table.columns) == ["y", "x", "label"] and table["x"].tolist() == [2.0, 4.5]


def test_what_cannot_be_written_fails_clearly_and_writes_nothing(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="RGB"):
        write_map_tiff(str(tmp_path / "rgb.tif"), rgb, {"rgb": True, "scale": [1.0, 1.0]})
    with pytest.raises(InputError, match="does not exist"):
        write_map_tiff(str(tmp_path / "missing" / "map.tif"), np.zeros((8, 8)), {"scale": [0.5, 0.5]})
    with pytest.raises(InputError, match="features"):
        write_points_csv(str(tmp_path / "p.csv"), np.zeros((3, 2)), {"features": pd.DataFrame({"a": [1, 2]})})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="does not exist"):
        write_points_csv(str(tmp_path / "missing" / "p.csv"), np.zeros((2, 2)), {"scale": [1.0, 1.0]})
    assert list(tmp_path.iterdir()) == []
