"""What the CLI writes besides points.csv (map TIFFs, latent.png), and the latent views behind them."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from napari_rvae.cli import main
from napari_rvae.core.config import ModelConfig
from napari_rvae.core.errors import InputError
from napari_rvae.core.exports import latent_figure, result_maps
from napari_rvae.core.latent import latent_manifold, reconstruct
from napari_rvae.core.modelfile import load_model
from napari_rvae.core.models import RVAE
from napari_rvae.core.readers import read_image_file, write_tiff
from napari_rvae.core.synthetic import make_lattice

ROTATION = 40.0  # the second grain's orientation relative to the first
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# One thread: on a shared 2-core machine two spinning torch threads run several times slower.
SMALL = [
    "--hidden-dim",
    "32",
    "--patch-size",
    "16",
    "--quiet",
    "--device",
    "cpu",
    "--lr",
    "3e-3",
    "--batch-size",
    "32",
    "--threads",
    "1",
]


def circular_diff(a, b, period=360.0):
    """a - b wrapped into (-period/2, period/2]."""
    return (np.asarray(a) - np.asarray(b) + period / 2) % period - period / 2


@pytest.fixture(scope="module")
def two_grains(tmp_path_factory):
    """A 96 x 192 lattice: left grain at 0 deg, right grain at +40 deg; TIFF at 0.25 nm/px + points.csv."""
    d = tmp_path_factory.mktemp("grains")
    lat = make_lattice(
        (96, 192), spacing=12, grains=((48, 48, 0.0), (48, 144, ROTATION)), second_species="none", seed=0
    )
    write_tiff(d / "scan.tif", lat.image, pixel_size=0.25, unit="nm")
    pd.DataFrame({"y": lat.points[:, 0], "x": lat.points[:, 1], "grain": lat.grain}).to_csv(
        d / "points.csv", index=False
    )
    return d, lat


@pytest.fixture(scope="module")
def trained_run(two_grains):
    """A real 60-epoch rVAE training through the CLI (a few seconds)."""
    d, lat = two_grains
    out = d / "run"
    assert (
        main(
            [
                "train",
                str(d / "scan.tif"),
                "--points",
                str(d / "points.csv"),
                "--out",
                str(out),
                "--epochs",
                "60",
                *SMALL,
            ]
        )
        == 0
    )
    return out, lat


def test_train_on_an_image_writes_a_calibrated_angle_map_and_the_figure(trained_run):
    out, lat = trained_run
    report = json.loads((out / "report.json").read_text())
    assert report["files"] == ["model.pt", "points.csv", "angle_map.tif", "psi_map.tif", "latent.png", "report.json"]
    assert not (out / "class_map.tif").exists()  # rvae has no classes
    assert (out / "latent.png").read_bytes()[:8] == PNG_MAGIC
    [amap] = read_image_file(out / "angle_map.tif")
    assert amap.data.shape == lat.image.shape and amap.data.dtype == np.float32
    assert amap.scale == pytest.approx((0.25, 0.25)) and amap.unit == "nm"
    table = pd.read_csv(out / "points.csv")
    iy, ix = np.rint(table["y"]).astype(int), np.rint(table["x"]).astype(int)
    # Every atom's own pixel carries exactly its angle.
    np.testing.assert_allclose(amap.data[iy, ix], table["angle"], atol=1e-4)
    # The lattice check's map beside it: psi_4 of this square lattice, in [0, 90), each atom's own value.
    [pmap] = read_image_file(out / "psi_map.tif")
    assert report["lattice_check"]["psi_n"] == 4 and pmap.scale == pytest.approx((0.25, 0.25))
    ordered = np.isfinite(table["psi_angle"].to_numpy())
    np.testing.assert_allclose(pmap.data[iy, ix][ordered], table["psi_angle"][ordered], atol=1e-4)
    assert np.nanmax(pmap.data) < 90


def test_angle_map_regions_differ_by_the_applied_rotation(trained_run):
    out, _ = trained_run
    amap = read_image_file(out / "angle_map.tif")[0].data
    # Away from the grain boundary (x = 96): the map's circular mean per grain.
    phases = np.deg2rad(amap)
    left = np.angle(np.nanmean(np.exp(1j * phases[12:84, 12:72])), deg=True)
    right = np.angle(np.nanmean(np.exp(1j * phases[12:84, 120:180])), deg=True)
    # The model may learn a mirrored angle, so the difference is +-40 deg.
    step = abs(circular_diff(right, left))
    assert abs(step - ROTATION) < 10, f"grain angles {left:.1f} and {right:.1f}: step {step:.1f}, expected {ROTATION}"


def test_class_model_writes_a_class_map_and_encode_writes_the_same_files(two_grains, tmp_path):
    d, _ = two_grains
    out = tmp_path / "jr"
    assert (
        main(
            [
                "train",
                str(d / "scan.tif"),
                "--out",
                str(out),
                "--points",
                str(d / "points.csv"),
                "--model",
                "jrvae",
                "--classes",
                "2",
                "--symmetry",
                "2",
                "--epochs",
                "2",
                *SMALL,
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert {"angle_map.tif", "class_map.tif", "latent.png"} <= set(report["files"])
    cmap = read_image_file(out / "class_map.tif")[0]
    table = pd.read_csv(out / "points.csv")
    iy, ix = np.rint(table["y"]).astype(int), np.rint(table["x"]).astype(int)
    np.testing.assert_array_equal(cmap.data[iy, ix], table["class"] + 1)
    assert cmap.scale == pytest.approx((0.25, 0.25))
    amap = read_image_file(out / "angle_map.tif")[0].data
    assert np.nanmax(amap) < 180  # two-fold symmetry: the map wraps at 180 deg

    enc = tmp_path / "enc"
    assert (
        main(
            [
                "encode",
                str(d / "scan.tif"),
                "--model",
                str(out / "model.pt"),
                "--points",
                str(d / "points.csv"),
                "--out",
                str(enc),
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((enc / "report.json").read_text())["files"] == [
        "points.csv",
        "angle_map.tif",
        "class_map.tif",
        "psi_map.tif",
        "latent.png",
        "report.json",
    ]
    np.testing.assert_array_equal(read_image_file(enc / "class_map.tif")[0].data, cmap.data)


def test_patch_stack_input_gets_the_figure_but_no_maps(tmp_path, glyph_stack):
    patches, _ = glyph_stack
    np.save(tmp_path / "stack.npy", patches[:64])
    out = tmp_path / "stack"
    assert main(["train", str(tmp_path / "stack.npy"), "--out", str(out), "--epochs", "1", *SMALL]) == 0
    assert json.loads((out / "report.json").read_text())["files"] == [
        "model.pt",
        "points.csv",
        "latent.png",
        "report.json",
    ]


def test_manifold_decodes_at_the_chosen_angle():
    torch.manual_seed(0)
    model = RVAE(ModelConfig(patch_size=16, hidden_dim=32, translation=False, latent_dim=3))
    upright = latent_manifold(model, 5, dims=(0, 2))
    assert upright.shape == (80, 80) and upright.dtype == np.float32
    turned = latent_manifold(model, 5, dims=(0, 2), angle_deg=90)
    # Each tile is the upright tile turned 90 deg counter-clockwise (as displayed).
    for r in range(5):
        for c in range(5):
            tile = np.s_[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16]
            np.testing.assert_allclose(turned[tile], np.rot90(upright[tile]), atol=1e-5)
    assert np.abs(turned - upright).max() > 1e-3
    # Rows run from high to low y values: the top-left tile decodes (lo_x, hi_y).
    z_corner = torch.tensor([[-1.0, 0.0, 2.0]])
    corner = model.decode(z_corner, angle_deg=0.0).detach().numpy()[0]
    mosaic = latent_manifold(model, 3, dims=(0, 2), z_range=((-1, 1), (-2, 2)))
    np.testing.assert_allclose(mosaic[:16, :16], corner, atol=1e-5)


def test_manifold_for_one_latent_and_bad_dims():
    model = RVAE(ModelConfig(patch_size=16, hidden_dim=16, latent_dim=1))
    assert latent_manifold(model, 4).shape == (16, 64)
    with pytest.raises(InputError, match="latent dimensions"):
        latent_manifold(RVAE(ModelConfig(patch_size=16, hidden_dim=16)), 4, dims=(0, 5))
    with pytest.raises(InputError, match="at least 1"):
        latent_manifold(model, 0)


@pytest.mark.parametrize("kind", ["rvae", "jrvae", "crvae", "vae"])
def test_reconstruction_is_the_models_own_decoding_of_the_encoded_pose(kind, glyph_stack):
    # Same path as training's likelihood: decoder(z, cos/sin of the encoded angle, encoded shift, class).
    torch.manual_seed(1)
    classes = 2 if kind in ("jrvae", "crvae") else 0
    model = RVAE(ModelConfig(kind=kind, patch_size=16, hidden_dim=32, n_classes=classes))
    model.fit_normalization(torch.as_tensor(glyph_stack[0]))
    patches = glyph_stack[0][:12]
    labels = np.arange(12) % 2 if kind == "crvae" else None
    recon = reconstruct(model, patches, labels=labels)
    assert recon.shape == (12, 16, 16) and recon.dtype == np.float32
    with torch.no_grad():
        x = model.normalize(torch.as_tensor(patches))
        y = torch.nn.functional.one_hot(torch.as_tensor(labels), 2).float() if kind == "crvae" else None
        post = model.posterior(x, y)
        if kind == "jrvae":
            y = torch.nn.functional.one_hot(post["class_prob"].argmax(-1), 2).float()
        out = model._decode_pose(post["z"], post.get("u"), post.get("shift"), y)
        expected = (torch.sigmoid(out) * model.norm_scale + model.norm_offset).reshape(-1, 16, 16).numpy()
    np.testing.assert_allclose(recon, expected, atol=1e-5)
    if kind in ("rvae", "jrvae"):  # the pose matters: decoding upright gives something else
        upright = model.decode(post["z"], angle_deg=0.0, y=y).numpy()
        assert np.abs(upright - recon).max() > 1e-3


def test_figure_and_maps_helpers(trained_run):
    out, lat = trained_run
    model, _ = load_model(out / "model.pt")
    table = pd.read_csv(out / "points.csv")
    fig = latent_figure(table, model, d=4, angle_deg=30)
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "z0"
    assert len(fig.axes[0].collections[0].get_offsets()) == len(table)
    only_scatter = latent_figure(table)
    assert len(only_scatter.axes) == 1
    maps = result_maps(lat.image.shape, table[["y", "x"]].to_numpy(), table, period=90.0)
    assert set(maps) == {"angle_map"} and np.nanmax(maps["angle_map"]) < 90
