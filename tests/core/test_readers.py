import os
import sys

import numpy as np
import pytest

from napari_rvae.core.errors import InputError
from napari_rvae.core.readers import (
    ImageData,
    normalize_unit,
    read_image_file,
    write_tiff,
)


def _one(path):
    images = read_image_file(path)
    assert len(images) == 1 and isinstance(images[0], ImageData)
    return images[0]


# --- TIFF ----------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["nm", "Å", "µm", "pm"])
def test_tiff_calibration_round_trip(tmp_path, unit):
    img = np.random.default_rng(0).random((20, 30))
    p = write_tiff(tmp_path / "a.tif", img, pixel_size=0.0123, unit=unit)
    im = _one(p)
    assert im.data.shape == (20, 30) and im.data.dtype == np.float32
    np.testing.assert_allclose(im.data, img.astype(np.float32))
    np.testing.assert_allclose(im.scale, (0.0123, 0.0123), rtol=1e-6)
    assert im.unit == unit
    assert im.name == "a" and im.metadata["format"] == "tiff"


def test_tiff_stack_stays_3d(tmp_path):
    stack = np.arange(3 * 8 * 9, dtype=np.uint16).reshape(3, 8, 9)
    im = _one(write_tiff(tmp_path / "s.tiff", stack, pixel_size=0.5, unit="nm"))
    assert im.data.shape == (3, 8, 9) and im.data.dtype == np.uint16
    assert im.scale[-2:] == (0.5, 0.5) and len(im.scale) == 3 and im.unit == "nm"


def test_tiff_uncalibrated(tmp_path):
    im = _one(write_tiff(tmp_path / "n.tif", np.ones((5, 6), dtype=np.int64)))
    assert im.scale == (1.0, 1.0) and im.unit is None


def test_write_tiff_is_atomic_and_overwrites(tmp_path):
    p = tmp_path / "a.tif"
    write_tiff(p, np.zeros((4, 4)), 1.0, "nm")
    write_tiff(p, np.ones((6, 4)), 2.0, "nm")
    assert _one(p).data.shape == (6, 4) and _one(p).scale == (2.0, 2.0)
    assert sorted(os.listdir(tmp_path)) == ["a.tif"]  # no temp file left


def test_write_tiff_bad_input(tmp_path):
    with pytest.raises(InputError):
        write_tiff(tmp_path / "a.tif", np.zeros(5))
    with pytest.raises(InputError):
        write_tiff(tmp_path / "a.tif", np.zeros((4, 4)), pixel_size=-1)
    with pytest.raises(InputError, match="does not exist"):
        write_tiff(tmp_path / "nope" / "a.tif", np.zeros((4, 4)))


def test_tiff_resolution_tags(tmp_path):
    import tifffile

    p = tmp_path / "cm.tif"
    tifffile.imwrite(p, np.zeros((4, 4), np.uint8), resolution=(1e5, 1e5), resolutionunit="CENTIMETER")
    im = _one(p)
    np.testing.assert_allclose(im.scale, (0.1, 0.1))
    assert im.unit == "µm"
    p = tmp_path / "dpi.tif"  # 72 dpi is a print resolution, not a calibration
    tifffile.imwrite(p, np.zeros((4, 4), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    assert _one(p).scale == (1.0, 1.0) and _one(p).unit is None


def test_tiff_imagej_micron(tmp_path):
    import tifffile

    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, np.zeros((4, 4), np.float32), imagej=True, resolution=(4, 4), metadata={"unit": "micron"})
    im = _one(p)
    assert im.unit == "µm" and im.scale == (0.25, 0.25)


def test_normalize_unit():
    assert normalize_unit("micron") == "µm"
    assert normalize_unit("\\u00C5") == "Å"
    assert normalize_unit("\\u00B5m") == "µm"
    assert normalize_unit("nm") == "nm"
    assert normalize_unit("") is None and normalize_unit(None) is None and normalize_unit(object()) is None


# --- npy / png -----------------------------------------------------------------------------


def test_npy(tmp_path):
    arr = np.random.default_rng(1).random((7, 9)).astype(np.float64)
    np.save(tmp_path / "x.npy", arr)
    im = _one(tmp_path / "x.npy")
    np.testing.assert_array_equal(im.data, arr)
    assert im.scale == (1.0, 1.0) and im.unit is None and im.name == "x"


def test_png_gray_and_rgb(tmp_path):
    import imageio.v3 as iio

    gray = (np.arange(64).reshape(8, 8) * 3).astype(np.uint8)
    iio.imwrite(tmp_path / "g.png", gray)
    im = _one(tmp_path / "g.png")
    np.testing.assert_array_equal(im.data, gray)
    assert im.scale == (1.0, 1.0)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    iio.imwrite(tmp_path / "c.png", rgb)
    im = _one(tmp_path / "c.png")
    assert im.data.shape == (8, 8, 3) and im.metadata.get("rgb") and im.scale == (1.0, 1.0)


# --- errors --------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="No such file") as info:
        read_image_file(tmp_path / "nope.tif")
    assert "nope.tif" in str(info.value)


def test_folder_and_unknown_extension(tmp_path):
    with pytest.raises(InputError, match="folder"):
        read_image_file(tmp_path)
    (tmp_path / "a.xyz").write_bytes(b"123")
    with pytest.raises(InputError, match="unknown file type") as info:
        read_image_file(tmp_path / "a.xyz")
    assert "a.xyz" in str(info.value) and ".dm4" in str(info.value)


@pytest.mark.parametrize("ext", [".tif", ".npy", ".png"])
def test_corrupted_builtin(tmp_path, ext):
    p = tmp_path / f"bad{ext}"
    p.write_bytes(b"this is not an image" * 20)
    with pytest.raises(InputError, match="Could not read") as info:
        read_image_file(p)
    assert str(p) in str(info.value)


def test_truncated_tiff(tmp_path):
    p = write_tiff(tmp_path / "t.tif", np.random.default_rng(0).random((64, 64)), 1.0, "nm")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"t\.tif"):
        read_image_file(p)


@pytest.mark.parametrize("ext", [".dm3", ".dm4", ".emd", ".ser", ".mrc"])
def test_missing_formats_extra(tmp_path, monkeypatch, ext):
    for mod in list(sys.modules):
        if mod == "rsciio" or mod.startswith("rsciio."):
            monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "rsciio", None)  # import rsciio -> ImportError
    p = tmp_path / f"x{ext}"
    p.write_bytes(b"\0" * 100)
    with pytest.raises(InputError) as info:
        read_image_file(p)
    assert f"Reading {ext} files needs the optional extra: pip install 'napari-rvae[formats]'" in str(info.value)


# --- RosettaSciIO formats ------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".dm3", ".dm4", ".emd", ".ser", ".mrc"])
def test_corrupted_rosetta(tmp_path, ext):
    pytest.importorskip("rsciio")
    if ext == ".emd":
        pytest.importorskip("h5py")
    p = tmp_path / f"bad{ext}"
    p.write_bytes(b"garbage!" * 64)
    with pytest.raises(InputError, match="Could not read") as info:
        read_image_file(p)
    assert str(p) in str(info.value)


def test_mrc_round_trip(tmp_path):
    pytest.importorskip("rsciio")
    mrcfile = pytest.importorskip("mrcfile")
    stack = np.random.default_rng(0).random((4, 20, 30)).astype(np.float32)
    with mrcfile.new(tmp_path / "x.mrc") as m:
        m.set_data(stack)
        m.voxel_size = (2.5, 2.0, 1.5)  # Å, (x, y, z)
    im = _one(tmp_path / "x.mrc")
    np.testing.assert_array_equal(im.data, stack)
    assert im.unit == "nm"
    np.testing.assert_allclose(im.scale, (0.15, 0.2, 0.25))  # (z, y, x) in nm


def _emd_signal(title, data, scale=0.2, unit="nm"):
    return {
        "data": data,
        "axes": [
            {"name": n, "scale": scale, "units": unit, "size": s, "offset": 0.0, "navigate": False}
            for n, s in zip("yx", data.shape)
        ],
        "metadata": {"General": {"title": title}, "Signal": {}},
        "original_metadata": {},
    }


def test_emd_round_trip_and_several_signals(tmp_path):
    pytest.importorskip("rsciio")
    h5py = pytest.importorskip("h5py")
    from rsciio.emd import file_writer

    data = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    p = tmp_path / "scan.emd"
    file_writer(str(p), _emd_signal("HAADF", data))
    im = _one(p)
    np.testing.assert_array_equal(im.data, data)
    assert im.scale == (0.2, 0.2) and im.unit == "nm"
    assert im.name == "scan - HAADF" and im.metadata["format"] == "EMD"

    with h5py.File(p, "a") as f:
        f.copy(f["signals/HAADF"], "signals/BF")
    images = read_image_file(p)
    assert sorted(i.name for i in images) == ["scan - BF", "scan - HAADF"]
    assert all(i.scale == (0.2, 0.2) for i in images)


def _temul_file(rel):
    """Real STEM files shipped in temul-toolkit's wheel (GPL-3, test-only, skipped if absent)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        p = distribution("temul-toolkit").locate_file(rel)
    except PackageNotFoundError:
        pytest.skip("temul-toolkit (real .dm3/.emd test files) not installed")
    if not os.path.exists(p):
        pytest.skip(f"{rel} not in this temul-toolkit")
    return p


@pytest.mark.parametrize(
    "rel, shape, pixel",
    [
        ("temul/example_data/experimental/example_Se_implanted_MoS2.dm3", (1024, 1024), 0.0127),
        ("temul/example_data/experimental/example_Au_nanoparticle.emd", (2048, 2048), 0.0075),
    ],
)
def test_real_files(rel, shape, pixel):
    pytest.importorskip("rsciio")
    pytest.importorskip("h5py")
    im = _one(_temul_file(rel))
    assert im.data.shape == shape and im.unit == "nm"
    assert im.scale[0] == pytest.approx(pixel, rel=0.01) and im.scale[0] == im.scale[1]
