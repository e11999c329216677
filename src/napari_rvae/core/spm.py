"""Reading scanning-probe (STM/AFM) image files, one :class:`ImageData` per channel and scan direction.

Nanonis ``.sxm`` (through nanonispy2, MIT), Gwyddion ``.gwy`` (gwyfile, MIT) and
Igor binary waves ``.ibw`` as Asylum Research AFMs write them (igor2, LGPL-3.0),
all three in the optional extra ``napari-rvae[spm]``. The libraries parse the
files; this module orients each image as the instrument showed it (top row at
the top, x to the right), converts lengths in metres to nm, and turns whatever a
library raises on a bad file into one :class:`InputError`.

Pure core: no Qt, no napari.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
from pathlib import Path

import numpy as np

from .errors import InputError
from .readers import SPM_EXTENSIONS, ImageData, _fail, normalize_unit

__all__ = ["SPM_EXTENSIONS", "SPM_EXTRA_HINT", "read_spm_file"]

SPM_EXTRA_HINT = "pip install 'napari-rvae[spm]'"

# Nanonis header versions whose layout nanonispy2 reads (files before version 2 carry no version line).
_KNOWN_NANONIS_VERSIONS = ("1", "2")
# A channel whose name starts so is the topograph; it is put first (the CLI uses the first image).
_TOPOGRAPHY_PREFIXES = ("z", "height", "topo")


def read_spm_file(p: Path) -> list[ImageData]:
    """Read a scanning-probe file into one image per channel and direction, topography first.

    Raises
    ------
    InputError
        When the optional library is missing, or the file is truncated, of an
        unknown format version, or holds no image.
    """
    readers = {".sxm": _read_sxm, ".gwy": _read_gwy, ".ibw": _read_ibw}
    images = readers[p.suffix.lower()](p)
    if not images:
        raise InputError(f"{p} holds no image channel.")
    return sorted(images, key=lambda im: not _is_topography(im.metadata["channel"]))


def _is_topography(channel: str) -> bool:
    return channel.strip().lower().startswith(_TOPOGRAPHY_PREFIXES)


def _library(module: str, p: Path):
    """Import the format library, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(
            f"Reading {p.suffix.lower()} files needs the optional extra: {SPM_EXTRA_HINT} (cannot read {p})."
        ) from None


def _value_unit(unit) -> str | None:
    """The unit of the pixel values as the file writes it (A is ampere here, not ångström)."""
    if unit is None:
        return None
    if isinstance(unit, bytes):
        unit = unit.decode("utf-8", "replace")
    return str(unit).strip() or None


def _in_nm(length: float, unit) -> tuple[float, str | None]:
    """A length in the file's unit, in nm where that unit is metres."""
    unit = normalize_unit(unit)
    if unit == "m":
        return float(length) * 1e9, "nm"
    return float(length), unit


def _image(p: Path, data, channel: str, direction: str | None, pixel: tuple, unit, md: dict) -> ImageData:
    """One channel as ImageData: the layer is named after the file and the channel."""
    label = f"{channel} ({direction})" if direction else channel
    metadata = {"path": str(p), "channel": channel, "axes": ["y", "x"], "axis_units": [unit, unit], **md}
    if direction:
        metadata["direction"] = direction
    scale = tuple(float(s) if np.isfinite(s) and s > 0 else 1.0 for s in pixel)
    data = np.asarray(data)
    # Nanonis (and Igor on a Mac) write big-endian numbers; torch and the GPU want the machine's order.
    data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("="))
    return ImageData(data=data, name=f"{p.stem} - {label}", scale=scale, unit=unit, metadata=metadata)


# --- Nanonis .sxm ---------------------------------------------------------------------------


def _read_sxm(p: Path) -> list[ImageData]:
    nanonis = _library("nanonispy2.read", p)
    if p.suffix != ".sxm":  # nanonispy2 recognises the lowercase extension only
        raise InputError(f"Cannot read {p}: nanonispy2 reads Nanonis scans named *.sxm; rename it to {p.stem}.sxm.")
    what = "Nanonis .sxm scan"
    try:
        header_text = nanonis.NanonisFile(str(p)).header_raw
    except Exception as exc:  # a header cut short or not a Nanonis file at all
        raise _fail(p, what, exc) from exc
    _check_nanonis_version(p, header_text)
    try:
        scan = nanonis.Scan(str(p))
    except ValueError as exc:
        if "reshape" not in str(exc):
            raise _fail(p, what, exc) from exc
        raise InputError(
            f"Could not read {p} ({what}): it holds fewer pixels than its header announces. "
            "Was it cut short (a copy or download that did not finish)? Scans saved in one direction "
            "only are not read either (nanonispy2 reads scans saved forward and backward)."
        ) from exc
    except Exception as exc:  # nanonispy2 raises KeyError/IndexError on headers it cannot parse
        raise _fail(p, what, exc) from exc
    return _sxm_images(p, scan.header, scan.signals)


def _check_nanonis_version(p: Path, header_text: str) -> None:
    found = re.search(r":NANONIS_VERSION:\s*\n\s*(\S+)", header_text)
    if found and found.group(1) not in _KNOWN_NANONIS_VERSIONS:
        raise InputError(
            f"Cannot read {p}: it is a Nanonis .sxm file of format version {found.group(1)}, newer than the "
            f"versions read here ({', '.join(_KNOWN_NANONIS_VERSIONS)}). Update nanonispy2, or export the scan "
            "from Nanonis or Gwyddion as .gwy."
        )


def _sxm_images(p: Path, header: dict, signals: dict) -> list[ImageData]:
    nx, ny = (int(n) for n in header["scan_pixels"])
    range_x, range_y = (float(r) for r in header["scan_range"])  # metres
    dx, unit = _in_nm(range_x / nx, "m")
    dy, _ = _in_nm(range_y / ny, "m")
    # Nanonis stores lines in the order scanned: an upward scan starts at the bottom line.
    bottom_up = str(header.get("scan_dir", "")).strip().lower() == "up"
    info = header["data_info"]
    z_units = dict(zip(info["Name"], info.get("Unit", ("",) * len(info["Name"]))))
    common = {
        "format": "nanonis-sxm",
        "scan_dir": str(header.get("scan_dir", "")),
        "bias": float(header.get("bias", np.nan)),
        "scan_angle": str(header.get("scan_angle", "")).strip(),
    }
    images = []
    for channel, by_direction in signals.items():
        md = {**common, "z_unit": _value_unit(z_units.get(channel))}
        for direction in ("forward", "backward"):
            data = by_direction[direction]
            if bottom_up:
                data = data[::-1]
            if direction == "backward":  # stored as the tip moved, right to left
                data = data[:, ::-1]
            images.append(_image(p, data, channel, direction, (dy, dx), unit, md))
    return images


# --- Gwyddion .gwy --------------------------------------------------------------------------


def _read_gwy(p: Path) -> list[ImageData]:
    gwyfile = _library("gwyfile", p)
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic == b"GWYO":
        raise InputError(
            f"Cannot read {p}: it is an old Gwyddion 1 file; open it in Gwyddion and save it again (as Gwyddion 2)."
        )
    if magic != b"GWYP":
        raise InputError(
            f"Cannot read {p}: it does not start as a Gwyddion 2 .gwy file does (GWYP, found {magic!r}): "
            "a newer Gwyddion format, or not a Gwyddion file."
        )
    try:
        container = gwyfile.load(str(p))
        fields = _gwy_fields(container)
        images = [_gwy_image(p, container, number, field) for number, field in fields]
    except InputError:
        raise
    except Exception as exc:  # gwyfile raises struct.error/ValueError/IndexError on a cut-short file
        raise _fail(p, "Gwyddion .gwy file", exc) from exc
    if not images:
        kinds = sorted({key.split("/")[2] for key in container if key.count("/") >= 2 and key[1:2].isdigit()})
        other = f" (it holds {', '.join(kinds)} only)" if kinds else ""
        raise InputError(f"{p} holds no image channel{other}.")
    return images


def _gwy_fields(container) -> list:
    """(number, data field) of each image channel, in channel order."""
    if getattr(container, "name", "") == "GwyDataField":  # a bare field saved on its own
        return [(0, container)]
    found = []
    for key, value in container.items():
        match = re.fullmatch(r"/(\d+)/data", key)
        if match and getattr(value, "name", "") == "GwyDataField":
            found.append((int(match.group(1)), value))
    return sorted(found, key=lambda item: item[0])


def _unit_string(si_unit) -> str | None:
    if si_unit is None:
        return None
    return getattr(si_unit, "unitstr", None) or (si_unit.get("unitstr") if hasattr(si_unit, "get") else None)


def _gwy_image(p: Path, container, number: int, field) -> ImageData:
    data = np.asarray(field.data)  # Gwyddion keeps row 0 at the top, as displayed
    yres, xres = data.shape
    xy_unit = _unit_string(field.get("si_unit_xy"))
    dx, unit = _in_nm(float(field.get("xreal", 1.0)) / xres, xy_unit)
    dy, _ = _in_nm(float(field.get("yreal", 1.0)) / yres, xy_unit)
    title = container.get(f"/{number}/data/title") if hasattr(container, "get") else None
    channel = str(title).strip() if title else f"channel {number}"
    md = {"format": "gwyddion", "z_unit": _value_unit(_unit_string(field.get("si_unit_z"))), "gwy_channel": number}
    return _image(p, data, channel, None, (dy, dx), unit, md)


# --- Igor binary wave .ibw ------------------------------------------------------------------


def _read_ibw(p: Path) -> list[ImageData]:
    binarywave = _library("igor2.binarywave", p)
    what = "Igor binary wave .ibw"
    try:
        with _quiet("igor2"):  # igor2 logs the raw bytes of a cut-short wave before it raises
            wave = binarywave.load(str(p))["wave"]
        data = np.asarray(wave["wData"])
    except ValueError as exc:
        if "version" in str(exc):
            raise _unknown_ibw_version(p) from exc
        raise _fail(p, what, exc) from exc
    except Exception as exc:  # igor2 raises struct.error/EOFError/KeyError on a cut-short file
        raise _fail(p, what, exc) from exc
    if data.ndim < 2 or min(data.shape[:2]) < 2:
        raise InputError(f"{p} holds a 1-D Igor wave of {data.size} points (a curve), not an image.")
    columns = _ibw_labels(wave, 1)
    if data.ndim == 2 and any(columns):  # named columns: curves side by side, as an AFM force curve is saved
        raise InputError(
            f"{p} holds {data.shape[1]} curves of {data.shape[0]} points ({', '.join(c for c in columns if c)}), "
            "not an image."
        )
    if data.ndim > 3:
        raise InputError(f"{p} holds a {data.ndim}-D Igor wave {data.shape}; images (2-D, or channels in 3-D) only.")
    return _ibw_images(p, wave, data)


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Silence a library's logger while it reads (what it would say becomes our InputError)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _unknown_ibw_version(p: Path) -> InputError:
    """A wave of a version igor2 does not know: a newer Igor's, or no Igor wave at all."""
    with open(p, "rb") as f:
        head = f.read(2)
    # The version is the first 16-bit word, in the byte order of the machine that wrote it.
    version = min(int.from_bytes(head, "little"), int.from_bytes(head, "big")) if len(head) == 2 else None
    if version is not None and version < 64:
        return InputError(
            f"Cannot read {p}: it is an Igor binary wave of format version {version}, which igor2 does not "
            "know (it reads versions 1, 2, 3 and 5). Save it again from Igor Pro, or update igor2."
        )
    return InputError(f"Cannot read {p}: it is not an Igor binary wave (.ibw), or its start is damaged.")


def _ibw_dimension_units(wave: dict) -> list:
    """The unit of each of the wave's dimensions (x, y, layers, chunks)."""
    header = wave["wave_header"]
    extended = wave.get("dimension_units")
    units = []
    for i in range(4):
        if isinstance(extended, (list, tuple)) and i < len(extended) and extended[i]:
            units.append(extended[i])
        else:
            units.append(b"".join(np.atleast_1d(header["dimUnits"][i])))
    return units


def _ibw_labels(wave: dict, dim: int) -> list[str]:
    """The names Igor gives the elements along one dimension (its dimension labels), or []."""
    labels = wave.get("labels") or []
    if len(labels) <= dim:
        return []
    return [x.decode("utf-8", "replace") for x in labels[dim][1:]]  # [0] names the dimension itself


def _ibw_channel_names(wave: dict, n: int) -> list[str]:
    """Asylum Research names the layers of a 3-D wave (HeightTrace, AmplitudeRetrace...); else the wave's name."""
    layer_labels = _ibw_labels(wave, 2)
    if len(layer_labels) == n and all(layer_labels):
        return layer_labels
    base = wave["wave_header"]["bname"].decode("utf-8", "replace") or "wave"
    return [base] if n == 1 else [f"{base} [{k}]" for k in range(n)]


def _ibw_images(p: Path, wave: dict, data: np.ndarray) -> list[ImageData]:
    header = wave["wave_header"]
    step_x, step_y = float(header["sfA"][0]), float(header["sfA"][1])
    x_unit, y_unit = _ibw_dimension_units(wave)[:2]
    dx, unit = _in_nm(abs(step_x), x_unit)
    dy, _ = _in_nm(abs(step_y), y_unit or x_unit)
    md = {"format": "igor-ibw", "z_unit": _value_unit(b"".join(np.atleast_1d(header["dataUnits"])))}
    layers = data[:, :, np.newaxis] if data.ndim == 2 else data
    images = []
    for k, channel in enumerate(_ibw_channel_names(wave, layers.shape[2])):
        # Igor's rows run along x and its columns along y, with y growing upwards on screen.
        image = layers[:, :, k].T[::-1]
        if step_x < 0:
            image = image[:, ::-1]
        if step_y < 0:
            image = image[::-1]
        images.append(_image(p, image, channel, None, (dy, dx), unit, md))
    return images
