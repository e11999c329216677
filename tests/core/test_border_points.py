"""Points up to 1 px beyond the image are edge points (pixel conventions differ); farther is a mistake."""

import numpy as np
import pandas as pd
import pytest

from napari_rvae.cli import main
from napari_rvae.core.errors import InputError
from napari_rvae.core.patches import extract_patches
from napari_rvae.core.pipeline import load_inputs
from napari_rvae.core.readers import write_tiff
from napari_rvae.core.synthetic import make_lattice

IMG = np.random.default_rng(0).random((64, 80)).astype(np.float32)
INSIDE = [[32.0, 40.0]] * 40


@pytest.mark.parametrize("point", [[63.8, 40.0], [64.5, 40.0], [-1.5, 40.0], [32.0, 80.2], [32.0, -1.2]])
def test_points_within_a_pixel_of_the_border_are_edge_points(point):
    pts = np.array([point, *INSIDE])
    dropped = extract_patches(IMG, pts, 16, edge="drop")
    assert dropped.dropped.tolist() == [0] and len(dropped) == 40
    kept = extract_patches(IMG, pts, 16, edge="reflect")
    assert len(kept) == 41 and np.isfinite(kept.patches).all()


@pytest.mark.parametrize("point", [[65.6, 40.0], [-2.6, 40.0], [32.0, 81.6]])
def test_points_clearly_outside_are_refused(point):
    with pytest.raises(InputError, match="outside the 64 x 80 image"):
        extract_patches(IMG, np.array([point, *INSIDE]), 16)


def test_many_points_just_outside_mean_the_wrong_image():
    pts = np.array([[64.2, 40.0]] * 10 + INSIDE)  # a fifth of them beyond the border
    with pytest.raises(InputError, match="10 of 50 points lie outside"):
        extract_patches(IMG, pts, 16, edge="reflect")


def test_cli_keeps_a_polycrystal_whose_positions_use_the_other_pixel_convention(tmp_path, capsys):
    """Issue #19: 2 of 1,743 atoms at y = 511.8 in a 512-pixel image were refused."""
    lat = make_lattice((128, 128), seed=0)
    pts = lat.points.copy()
    pts[:2, 0] = [127.8, 127.9]
    write_tiff(tmp_path / "scan.tif", lat.image)
    pd.DataFrame({"y": pts[:, 0], "x": pts[:, 1]}).to_csv(tmp_path / "points.csv", index=False)
    inputs = load_inputs(tmp_path / "scan.tif", points_path=tmp_path / "points.csv", patch_size=16)
    assert {0, 1} <= set(inputs.dropped)
    code = main(
        [
            "train",
            str(tmp_path / "scan.tif"),
            "--points",
            str(tmp_path / "points.csv"),
            "--out",
            str(tmp_path / "run"),
            "--patch-size",
            "16",
            "--hidden-dim",
            "16",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--edge",
            "reflect",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(tmp_path / "run" / "points.csv")
    assert len(table) == len(pts) and np.isfinite(table["angle"]).all()
