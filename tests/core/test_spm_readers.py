"""Scanning-probe files (Nanonis .sxm, Gwyddion .gwy, Igor .ibw) through read_image_file and the CLI.

.gwy files are written by gwyfile and .ibw files by igorwriter. No library on the
registry writes .sxm, so those are laid out here as Nanonis documents the format
(a text header, then big-endian float32 pixels, each channel forward then backward,
lines in the order scanned), the layout nanonispy2 parses.
"""

import sys

import numpy as np
import pytest

from napari_rvae.cli import main
from napari_rvae.core.errors import InputError
from napari_rvae.core.readers import read_first_image, read_image_file


def _seen(ny=24, nx=32, seed=0):
    """An image with a bright block at its top-left corner: up/down and left/right are told apart."""
    image = np.random.default_rng(seed).normal(0.0, 0.01, (ny, nx)).astype(np.float32)
    image[2:6, 3:9] = 1.0
    return image


# --- Nanonis .sxm ---------------------------------------------------------------------------


def write_sxm(path, channels, scan_dir="down", scan_range=(8e-9, 6e-9), version="2"):
    """A Nanonis .sxm file; ``channels`` maps name -> (unit, forward, backward), each as stored."""
    ny, nx = next(iter(channels.values()))[1].shape
    rows = "".join(
        f"\t{i}\t{name}\t{unit}\tboth\t1.000E+0\t0.000E+0\n" for i, (name, (unit, _, _)) in enumerate(channels.items())
    )
    header = (
        f":NANONIS_VERSION:\n{version}\n:SCANIT_TYPE:\n              FLOAT            MSBFIRST\n"
        f":SCAN_PIXELS:\n       {nx}       {ny}\n:SCAN_RANGE:\n           {scan_range[0]:.6E}           {scan_range[1]:.6E}\n"
        ":SCAN_OFFSET:\n             0.000000E+0         0.000000E+0\n:SCAN_ANGLE:\n            0.000E+0\n"
        f":SCAN_DIR:\n{scan_dir}\n:SCAN_TIME:\n             1.000E+0             1.000E+0\n:BIAS:\n1.000E-1\n"
        ":ACQ_TIME:\n60.0\n:DATA_INFO:\n\tChannel\tName\tUnit\tDirection\tCalibration\tOffset\n"
        f"{rows}\n:SCANIT_END:\n"
    )
    pixels = b"".join(np.asarray(a, ">f4").tobytes() for _, fwd, bwd in channels.values() for a in (fwd, bwd))
    path.write_bytes(header.encode() + b"\n\n\x1a\x04" + pixels)
    return path


def _stored(seen, scan_dir, backward):
    """What the instrument writes for an image the user saw as ``seen``."""
    stored = seen[::-1] if scan_dir == "up" else seen
    return stored[:, ::-1] if backward else stored


@pytest.mark.parametrize("scan_dir", ["up", "down"])
def test_sxm_channels_calibration_and_orientation(tmp_path, scan_dir):
    pytest.importorskip("nanonispy2")
    z, current = _seen(seed=0) * 1e-9, _seen(seed=1) * 1e-10
    channels = {
        "Current": ("A", _stored(current, scan_dir, False), _stored(current, scan_dir, True)),
        "Z": ("m", _stored(z, scan_dir, False), _stored(z * 1.1, scan_dir, True)),
    }
    images = read_image_file(write_sxm(tmp_path / "scan.sxm", channels, scan_dir=scan_dir))
    assert [im.name for im in images] == [
        "scan - Z (forward)",
        "scan - Z (backward)",
        "scan - Current (forward)",
        "scan - Current (backward)",
    ]
    np.testing.assert_allclose(images[0].data, z, rtol=1e-6)
    np.testing.assert_allclose(images[1].data, z * 1.1, rtol=1e-6)
    np.testing.assert_allclose(images[2].data, current, rtol=1e-6)
    np.testing.assert_allclose(images[3].data, current, rtol=1e-6)
    for im in images:
        assert im.unit == "nm" and im.scale == pytest.approx((6.0 / 24, 8.0 / 32))
        assert im.metadata["format"] == "nanonis-sxm" and im.metadata["scan_dir"] == scan_dir
        assert im.data.dtype == np.float32 and im.data.dtype.isnative  # Nanonis writes big-endian
    assert images[0].metadata["z_unit"] == "m" and images[2].metadata["z_unit"] == "A"
    assert images[1].metadata["direction"] == "backward" and images[0].metadata["channel"] == "Z"


def test_cli_detect_reads_the_topograph_of_an_sxm(tmp_path, capsys):
    pytest.importorskip("nanonispy2")
    yy, xx = np.mgrid[:48, :48]
    z = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0) for cy in range(6, 44, 8) for cx in range(6, 44, 8))
    flat = np.zeros_like(z)
    path = write_sxm(tmp_path / "lat.sxm", {"Current": ("A", flat, flat), "Z": ("m", z, z[:, ::-1])})
    first, notes = read_first_image(path)
    assert first.name == "lat - Z (forward)" and "4 images" in notes[0]
    assert main(["detect", str(path), "--out", str(tmp_path / "atoms.csv")]) == 0
    out = capsys.readouterr()
    assert "the first (lat - Z (forward)) is used" in out.out + out.err
    assert (tmp_path / "atoms.csv").read_text().count("\n") >= 20


def test_truncated_sxm(tmp_path):
    pytest.importorskip("nanonispy2")
    seen = _seen()
    path = write_sxm(tmp_path / "cut.sxm", {"Z": ("m", seen, seen)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(InputError, match=r"cut\.sxm .*fewer pixels than its header announces"):
        read_image_file(path)
    path.write_bytes(data[:200])  # cut inside the header
    with pytest.raises(InputError, match=r"Could not read .*cut\.sxm \(Nanonis \.sxm scan\)"):
        read_image_file(path)


def test_sxm_with_an_uppercase_extension(tmp_path):
    pytest.importorskip("nanonispy2")
    seen = _seen()
    path = write_sxm(tmp_path / "SCAN.SXM", {"Z": ("m", seen, seen)})
    with pytest.raises(InputError, match=r"rename it to SCAN\.sxm"):
        read_image_file(path)


def test_sxm_of_a_newer_format_version(tmp_path):
    pytest.importorskip("nanonispy2")
    seen = _seen()
    path = write_sxm(tmp_path / "new.sxm", {"Z": ("m", seen, seen)}, version="7")
    with pytest.raises(InputError, match=r"new\.sxm: it is a Nanonis \.sxm file of format version 7"):
        read_image_file(path)


# --- Gwyddion .gwy --------------------------------------------------------------------------


def _gwy_field(gwyfile, data, xreal, yreal, xy_unit, z_unit):
    objects = gwyfile.objects
    return objects.GwyDataField(
        data.astype(np.float64),
        xreal=xreal,
        yreal=yreal,
        si_unit_xy=objects.GwySIUnit(unitstr=xy_unit),
        si_unit_z=objects.GwySIUnit(unitstr=z_unit),
    )


def test_gwy_channels_calibration_and_orientation(tmp_path):
    gwyfile = pytest.importorskip("gwyfile")
    topo, phase = _seen(seed=0) * 1e-9, _seen(seed=1)
    container = gwyfile.objects.GwyContainer()
    container["/0/data/title"] = "Phase"
    container["/0/data"] = _gwy_field(gwyfile, phase, 16e-9, 12e-9, "m", "deg")
    container["/3/data/title"] = "Height"
    container["/3/data"] = _gwy_field(gwyfile, topo, 16e-9, 12e-9, "m", "m")
    container.tofile(str(tmp_path / "afm.gwy"))
    images = read_image_file(tmp_path / "afm.gwy")
    assert [im.name for im in images] == ["afm - Height", "afm - Phase"]
    np.testing.assert_allclose(images[0].data, topo, rtol=1e-6)  # Gwyddion's row 0 is the top line
    np.testing.assert_allclose(images[1].data, phase, rtol=1e-6)
    assert images[0].unit == "nm" and images[0].scale == pytest.approx((0.5, 0.5))
    assert images[0].metadata["z_unit"] == "m" and images[1].metadata["z_unit"] == "deg"


def test_gwy_with_no_image_channel(tmp_path):
    gwyfile = pytest.importorskip("gwyfile")
    container = gwyfile.objects.GwyContainer()
    container["/0/graph/graph/1"] = gwyfile.objects.GwyObject("GwyGraphModel", {"title": "force curve"})
    container.tofile(str(tmp_path / "curves.gwy"))
    with pytest.raises(InputError, match=r"curves\.gwy holds no image channel \(it holds graph only\)"):
        read_image_file(tmp_path / "curves.gwy")


def test_truncated_and_unknown_gwy(tmp_path):
    gwyfile = pytest.importorskip("gwyfile")
    container = gwyfile.objects.GwyContainer()
    container["/0/data"] = _gwy_field(gwyfile, _seen(), 1e-8, 1e-8, "m", "m")
    path = tmp_path / "g.gwy"
    container.tofile(str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"Could not read .*g\.gwy \(Gwyddion \.gwy file\)"):
        read_image_file(path)
    path.write_bytes(b"GWYQ" + data[4:])
    with pytest.raises(InputError, match=r"g\.gwy: it does not start as a Gwyddion 2 \.gwy file does"):
        read_image_file(path)


# --- Igor .ibw ------------------------------------------------------------------------------


def _igor_wave(seen_layers, dx=2e-9, dy=3e-9):
    """An Asylum-style wave: rows along x, columns along y growing upwards, channels as layers."""
    igorwriter = pytest.importorskip("igorwriter")
    stored = np.stack([seen[::-1].T for seen in seen_layers], axis=2)
    wave = igorwriter.IgorWave(stored, name="afm0001")
    wave.set_dimscale("x", 0, dx, "m")
    wave.set_dimscale("y", 0, dy, "m")
    wave.set_datascale("m")
    return wave


def test_ibw_channels_calibration_and_orientation(tmp_path):
    pytest.importorskip("igor2")
    amplitude, height = _seen(seed=1), _seen(seed=0) * 1e-9
    wave = _igor_wave([amplitude, height, height * 0.9])
    for k, label in enumerate(["AmplitudeTrace", "HeightTrace", "HeightRetrace"]):
        wave.set_dimlabel(2, k, label)
    wave.save(str(tmp_path / "afm.ibw"))
    images = read_image_file(tmp_path / "afm.ibw")
    assert [im.name for im in images] == ["afm - HeightTrace", "afm - HeightRetrace", "afm - AmplitudeTrace"]
    np.testing.assert_allclose(images[0].data, height, rtol=1e-6)
    np.testing.assert_allclose(images[1].data, height * 0.9, rtol=1e-6)
    np.testing.assert_allclose(images[2].data, amplitude, rtol=1e-6)
    assert images[0].unit == "nm" and images[0].scale == pytest.approx((3.0, 2.0))
    assert images[0].metadata["z_unit"] == "m" and images[0].metadata["format"] == "igor-ibw"


def test_ibw_single_image_named_after_the_wave(tmp_path):
    pytest.importorskip("igor2")
    seen = _seen()
    _igor_wave([seen]).save(str(tmp_path / "one.ibw"))
    (image,) = read_image_file(tmp_path / "one.ibw")
    assert image.name == "one - afm0001"
    np.testing.assert_allclose(image.data, seen, rtol=1e-6)


def test_ibw_holding_a_curve(tmp_path):
    pytest.importorskip("igor2")
    igorwriter = pytest.importorskip("igorwriter")
    igorwriter.IgorWave(np.linspace(0, 1, 500), name="defl").save(str(tmp_path / "curve.ibw"))
    with pytest.raises(InputError, match=r"curve\.ibw holds a 1-D Igor wave of 500 points \(a curve\)"):
        read_image_file(tmp_path / "curve.ibw")


def test_ibw_holding_force_curves(tmp_path):
    """An AFM force curve as Asylum saves it: a 2-D wave of named columns, not an image."""
    pytest.importorskip("igor2")
    igorwriter = pytest.importorskip("igorwriter")
    wave = igorwriter.IgorWave(np.random.default_rng(0).random((400, 3)), name="force0001")
    for k, label in enumerate(["Raw", "Defl", "ZSnsr"]):
        wave.set_dimlabel(1, k, label)
    wave.save(str(tmp_path / "force.ibw"))
    with pytest.raises(InputError, match=r"force\.ibw holds 3 curves of 400 points \(Raw, Defl, ZSnsr\), not an image"):
        read_image_file(tmp_path / "force.ibw")


def test_truncated_and_unknown_version_ibw(tmp_path):
    pytest.importorskip("igor2")
    path = tmp_path / "w.ibw"
    _igor_wave([_seen()]).save(str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"Could not read .*w\.ibw \(Igor binary wave \.ibw\)"):
        read_image_file(path)
    path.write_bytes(b"\x09\x00" + data[2:])  # version 9: no such Igor binary wave version (yet)
    with pytest.raises(
        InputError, match=r"w\.ibw: it is an Igor binary wave of format version 9, which igor2 does not"
    ):
        read_image_file(path)
    path.write_bytes(b"not a wave" * 50)
    with pytest.raises(InputError, match=r"w\.ibw: it is not an Igor binary wave"):
        read_image_file(path)


# --- the optional extra ---------------------------------------------------------------------


@pytest.mark.parametrize(("ext", "library"), [(".sxm", "nanonispy2"), (".gwy", "gwyfile"), (".ibw", "igor2")])
def test_missing_spm_extra(tmp_path, monkeypatch, ext, library):
    for mod in list(sys.modules):
        if mod == library or mod.startswith(f"{library}."):
            monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, library, None)  # import -> ImportError
    path = tmp_path / f"x{ext}"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(InputError) as info:
        read_image_file(path)
    assert f"Reading {ext} files needs the optional extra: pip install 'napari-rvae[spm]'" in str(info.value)
