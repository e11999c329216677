"""The command line on levelled and calibrated images, and the bundled real STM sample."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy.spatial import cKDTree

from napari_rvae.core.readers import write_tiff
from napari_rvae.core.stm_sample import STM_NOTICE_FILE

from .test_cli import FAST, gaussian_lattice, run_cli


def tilted(img):
    y, x = np.mgrid[: img.shape[0], : img.shape[1]]
    return (img + 0.05 * y - 0.04 * x + 3.0).astype(np.float32)


@pytest.mark.parametrize(("unit", "column", "factor"), [("nm", "y_nm", 0.02), ("Å", "y_nm", 0.002)])
def test_detect_writes_calibrated_columns(tmp_path, unit, column, factor):
    img, _ = gaussian_lattice()
    write_tiff(tmp_path / "scan.tif", img, pixel_size=0.02, unit=unit)
    assert run_cli("detect", tmp_path / "scan.tif", "--out", tmp_path / "atoms.csv", "--quiet") == 0
    table = pd.read_csv(tmp_path / "atoms.csv")
    assert list(table.columns) == ["y", "x", "y_nm", "x_nm", "strength"]
    assert len(table) > 40
    np.testing.assert_allclose(table[column], table["y"] * factor, rtol=1e-6)
    np.testing.assert_allclose(table["x_nm"], table["x"] * factor, rtol=1e-6)


def test_detect_on_an_uncalibrated_image_writes_pixels_only(tmp_path):
    img, _ = gaussian_lattice()
    tifffile.imwrite(tmp_path / "scan.tif", img)
    assert run_cli("detect", tmp_path / "scan.tif", "--out", tmp_path / "atoms.csv", "--quiet") == 0
    assert list(pd.read_csv(tmp_path / "atoms.csv").columns) == ["y", "x", "strength"]


def test_detect_level_finds_the_atoms_of_the_untilted_image(tmp_path):
    img, _ = gaussian_lattice()
    tifffile.imwrite(tmp_path / "flat.tif", img)
    tifffile.imwrite(tmp_path / "tilted.tif", tilted(img))
    before = tifffile.imread(tmp_path / "tilted.tif")
    for name, level in (("flat", "none"), ("tilted", "plane"), ("tilted", "lines")):
        args = ("detect", tmp_path / f"{name}.tif", "--out", tmp_path / f"{name}_{level}.csv", "--level", level)
        assert run_cli(*args, "--margin", "3", "--quiet") == 0
    reference = pd.read_csv(tmp_path / "flat_none.csv")
    for level in ("plane", "lines"):
        found = pd.read_csv(tmp_path / f"tilted_{level}.csv")
        assert len(found) == len(reference) > 40
        dist, _ = cKDTree(reference[["y", "x"]].to_numpy()).query(found[["y", "x"]].to_numpy())
        assert dist.max() < 0.25
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "tilted.tif"), before)


def test_train_level_is_recorded_and_encode_follows_the_model(tmp_path):
    img, pts = gaussian_lattice()
    tifffile.imwrite(tmp_path / "tilted.tif", tilted(img))
    pd.DataFrame({"y": pts[:, 0], "x": pts[:, 1]}).to_csv(tmp_path / "points.csv", index=False)
    common = ("--points", tmp_path / "points.csv", "--edge", "reflect")
    assert run_cli("train", tmp_path / "tilted.tif", *common, "--out", tmp_path / "run", "--level", "plane", *FAST) == 0
    assert json.loads((tmp_path / "run" / "report.json").read_text())["level"] == "plane"
    model = tmp_path / "run" / "model.pt"
    assert (
        run_cli("encode", tmp_path / "tilted.tif", *common, "--model", model, "--out", tmp_path / "enc", "--quiet") == 0
    )
    assert json.loads((tmp_path / "enc" / "report.json").read_text())["level"] == "plane"
    args = ("encode", tmp_path / "tilted.tif", *common, "--model", model, "--out", tmp_path / "enc2", "--level", "none")
    assert run_cli(*args, "--quiet") == 0
    assert json.loads((tmp_path / "enc2" / "report.json").read_text())["level"] == "none"


def test_unknown_level_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli("detect", tmp_path / "x.tif", "--out", tmp_path / "a.csv", "--level", "median")
    assert exc.value.code == 2
    assert "invalid choice: 'median'" in capsys.readouterr().err


def test_sample_stm_writes_the_real_image_with_its_notice(tmp_path):
    assert run_cli("sample", "stm", "--out", tmp_path, "--quiet") == 0
    image = tifffile.imread(tmp_path / "stm.tif")
    assert image.shape == (512, 512) and image.dtype == np.float32
    notice = (tmp_path / STM_NOTICE_FILE).read_text(encoding="utf-8")
    assert "Copyright 2014 - 2023 Stephan Zevenhuizen" in notice and "Redistribution and use" in notice
    # The atoms of the real image are found once the column size is given (about 2 px here).
    args = ("detect", tmp_path / "stm.tif", "--out", tmp_path / "atoms.csv", "--sigma", "2.5", "--level", "plane")
    assert run_cli(*args, "--quiet") == 0
    assert len(pd.read_csv(tmp_path / "atoms.csv")) > 1000
