"""Reading microscope image files (with their calibration) and writing calibrated TIFFs.

Built in: ``.npy``, ``.png``/``.jpg``/``.jpeg``/``.bmp``/``.gif`` and
``.tif``/``.tiff`` (ImageJ, resolution-tag and FEI/Thermo Fisher calibration).
Through the optional extra ``napari-rvae[formats]`` (RosettaSciIO): Gatan
``.dm3``/``.dm4``, ``.emd`` (Velox and Berkeley EMD), FEI TIA ``.ser`` and
``.mrc``. Through ``napari-rvae[spm]`` (see :mod:`napari_rvae.core.spm`):
Nanonis ``.sxm``, Gwyddion ``.gwy`` and Igor ``.ibw`` scanning-probe files.

:func:`read_image_lazy` opens the first image of a file without reading its
pixels (a :class:`LazyArray` that pickles as how to reopen the file): ``.npy``,
TIFF, HDF5 (``.h5``/``.hdf5``/``.hdf``), Zarr/OME-Zarr stores and the
RosettaSciIO formats; :mod:`.stack` builds movies and many-file runs on it.

Pure core: no Qt, no napari.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .time_axis import seconds_per

__all__ = [
    "ImageData",
    "read_image_file",
    "write_tiff",
    "BUILTIN_EXTENSIONS",
    "ROSETTA_EXTENSIONS",
    "SPM_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "FORMATS_EXTRA_HINT",
    "LazyArray",
    "read_image_lazy",
    "HDF5_EXTENSIONS",
    "ZARR_EXTENSIONS",
    "LAZY_EXTENSIONS",
]

PLAIN_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
TIFF_EXTENSIONS = (".tif", ".tiff")
BUILTIN_EXTENSIONS = (".npy", *PLAIN_IMAGE_EXTENSIONS, *TIFF_EXTENSIONS)
# extension -> (rsciio submodule, format name)
_ROSETTA = {
    ".dm3": ("digitalmicrograph", "Gatan DigitalMicrograph"),
    ".dm4": ("digitalmicrograph", "Gatan DigitalMicrograph"),
    ".emd": ("emd", "EMD"),
    ".ser": ("tia", "FEI TIA"),
    ".mrc": ("mrc", "MRC"),
}
ROSETTA_EXTENSIONS = tuple(_ROSETTA)
# Scanning-probe formats, read in core/spm.py through the optional extra napari-rvae[spm].
SPM_EXTENSIONS = (".sxm", ".gwy", ".ibw")
SUPPORTED_EXTENSIONS = BUILTIN_EXTENSIONS + ROSETTA_EXTENSIONS + SPM_EXTENSIONS
FORMATS_EXTRA_HINT = "pip install 'napari-rvae[formats]'"

_UNIT_ALIASES = {
    "micron": "µm",
    "microns": "µm",
    "um": "µm",
    "\\u00b5m": "µm",
    "\u03bcm": "µm",  # greek mu
    "angstrom": "Å",
    "angstroms": "Å",
    "a": "Å",
    "\\u00c5": "Å",
    "\u212b": "Å",  # angstrom sign
    "nanometer": "nm",
    "nanometers": "nm",
    "micrometer": "µm",  # OME-Zarr's unit names
    "micrometers": "µm",
    "pixel": None,
    "pixels": None,
    "px": None,
    "": None,
    "<undefined>": None,
    "undefined": None,
}


@dataclass
class ImageData:
    """One image read from a file.

    Attributes
    ----------
    data : ndarray
        The pixels, as stored (2-D image, 3-D stack, or 2-D RGB(A) with a
        trailing channel axis; then ``metadata["rgb"]`` is True).
    name : str
        A name for the layer/signal (file stem, or the signal's title).
    scale : tuple of float
        Physical size of one pixel along each axis of ``data`` (the channel axis
        of an RGB image excluded). 1.0 where there is no calibration.
    unit : str or None
        Unit of the spatial (last two) axes, ``None`` when uncalibrated.
    metadata : dict
        At least ``path`` and ``format``; ``axes`` (names) and ``axis_units``
        where known; RosettaSciIO's mapped metadata under ``"rsciio"``.
    """

    data: np.ndarray
    name: str
    scale: tuple = ()
    unit: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def pixel_size(self) -> float:
        """Pixel size along x (the last spatial axis)."""
        return float(self.scale[-1]) if self.scale else 1.0


def normalize_unit(unit) -> str | None:
    """Map unit spellings (``micron``, ``um``, ``\\u00B5m``, ``A``...) to one form; None for no unit."""
    if unit is None:
        return None
    if isinstance(unit, bytes):
        unit = unit.decode("utf-8", "replace")
    if not isinstance(unit, str):  # e.g. traits.Undefined
        return None
    u = unit.strip()
    key = u.lower()
    if key in _UNIT_ALIASES:
        return _UNIT_ALIASES[key]
    if "\\u" in u and u.isascii():
        try:
            return normalize_unit(u.encode("ascii").decode("unicode_escape"))
        except UnicodeDecodeError:
            return u
    return u


def read_image_file(path) -> list[ImageData]:
    """Read an image file into one :class:`ImageData` per image it holds.

    Raises
    ------
    InputError
        When the file is missing, is a folder, has an unsupported extension,
        cannot be read (corrupted, truncated, not what its extension says), or
        needs the optional ``[formats]`` or ``[spm]`` extra that is not installed.
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise InputError(f"No such file: {p}")
    if p.is_dir():
        raise InputError(f"{p} is a folder, not an image file.")
    ext = p.suffix.lower()
    if ext == ".npy":
        images = _read_npy(p)
    elif ext in PLAIN_IMAGE_EXTENSIONS:
        images = _read_plain(p)
    elif ext in TIFF_EXTENSIONS:
        images = _read_tiff(p)
    elif ext in _ROSETTA:
        images = _read_rosetta(p, ext)
    elif ext in SPM_EXTENSIONS:
        from .spm import read_spm_file  # spm.py builds on this module's ImageData

        images = read_spm_file(p)
    else:
        raise InputError(
            f"Cannot read {p}: unknown file type {ext or '(no extension)'!r}. "
            f"Supported: {', '.join(SUPPORTED_EXTENSIONS)}."
        )
    if not images:
        raise InputError(f"{p} holds no image (no 2-D or 3-D data found).")
    return images


def read_first_image(path) -> tuple[ImageData, list[str]]:
    """The first image of a file, and a note when the file holds more than one."""
    p = Path(os.fspath(path)).expanduser()
    images = read_image_file(p)
    notes = []
    if len(images) > 1:
        notes.append(f"{p.name} holds {len(images)} images; the first ({images[0].name}) is used.")
    return images[0], notes


# --- built-in formats -----------------------------------------------------------------------


def _fail(p: Path, what: str, exc: BaseException) -> InputError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    msg = msg.rstrip(". ")
    return InputError(f"Could not read {p} ({what}): {msg}. Is the file complete and really of this type?")


def _read_npy(p: Path) -> list[ImageData]:
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError/UnpicklingError...
        raise _fail(p, "NumPy .npy array", exc) from exc
    if not isinstance(data, np.ndarray):
        raise InputError(f"{p} does not hold a single array.")
    return [_plain_image(p, data, "npy")]


def _read_plain(p: Path) -> list[ImageData]:
    try:
        import imageio.v3 as iio

        data = np.asarray(iio.imread(p))
    except ImportError:
        try:
            from skimage import io as skio

            data = np.asarray(skio.imread(p))
        except Exception as exc:
            raise _fail(p, f"{p.suffix.lstrip('.').upper()} image", exc) from exc
    except Exception as exc:
        raise _fail(p, f"{p.suffix.lstrip('.').upper()} image", exc) from exc
    return [_plain_image(p, data, p.suffix.lstrip(".").lower())]


def _plain_image(p: Path, data: np.ndarray, fmt: str) -> ImageData:
    rgb = data.ndim == 3 and data.shape[-1] in (3, 4) and fmt != "npy"
    nspatial = data.ndim - 1 if rgb else data.ndim
    md = {"path": str(p), "format": fmt}
    if rgb:
        md["rgb"] = True
    return ImageData(data=data, name=p.stem, scale=(1.0,) * nspatial, unit=None, metadata=md)


def _read_tiff(p: Path) -> list[ImageData]:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            if not tif.series:
                raise InputError(f"{p} holds no image.")
            data = tif.series[0].asarray()
            image = _tiff_image(p, tif, tif.series[0], data)
    except InputError:
        raise
    except Exception as exc:
        raise _fail(p, "TIFF image", exc) from exc
    return [image]


def _tiff_image(p: Path, tif, series, data) -> ImageData:
    """The :class:`ImageData` of one TIFF series, its calibration read from the file's tags."""
    axes = series.axes
    page = series.pages[0] if series.pages else tif.pages[0]
    tags = page.tags if page is not None else {}
    ij = tif.imagej_metadata or {}
    fei = getattr(tif, "fei_metadata", None) or {}
    pixel, unit, zspacing, source = _tiff_calibration(tags, ij, fei)
    rgb = "S" in axes and axes.endswith("S") and series.shape[-1] in (3, 4)
    scale = []
    for i, ax in enumerate(axes):
        if rgb and i == len(axes) - 1:
            continue
        if ax == "Y":
            scale.append(pixel[0])
        elif ax == "X":
            scale.append(pixel[1])
        elif ax == "Z":
            scale.append(zspacing)
        else:
            scale.append(1.0)
    md = {"path": str(p), "format": "tiff", "axes": axes, "calibration": source}
    if rgb:
        md["rgb"] = True
    if ij:
        md["imagej"] = {k: v for k, v in ij.items() if isinstance(v, (str, int, float, bool))}
        if axes[:1] == "T" and ij.get("finterval"):  # ImageJ's frame interval, in its time unit (seconds by default)
            md["frame_interval"] = (ij["finterval"], ij.get("tunit") or "s")
    return ImageData(data=data, name=p.stem, scale=tuple(float(s) for s in scale), unit=unit, metadata=md)


def _rational(tag) -> float | None:
    if tag is None:
        return None
    v = tag.value
    if isinstance(v, tuple) and len(v) == 2:
        return v[0] / v[1] if v[1] else None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _tiff_calibration(tags, ij: dict, fei: dict):
    """Return ((dy, dx), unit, z_spacing, source) from the TIFF's metadata."""
    # Thermo Fisher / FEI SEM & TEM TIFFs: pixel size in metres.
    scan = fei.get("Scan", {}) if isinstance(fei, dict) else {}
    pw = scan.get("PixelWidth")
    if pw:
        ph = scan.get("PixelHeight") or pw
        return (float(ph) * 1e9, float(pw) * 1e9), "nm", 1.0, "fei"

    xres = _rational(tags.get("XResolution")) if hasattr(tags, "get") else None
    yres = _rational(tags.get("YResolution")) if hasattr(tags, "get") else None
    resunit_tag = tags.get("ResolutionUnit") if hasattr(tags, "get") else None
    resunit = int(resunit_tag.value) if resunit_tag is not None else 2  # TIFF default: inch
    dx = 1.0 / xres if xres else None
    dy = 1.0 / yres if yres else dx

    if ij:
        unit = normalize_unit(ij.get("unit"))
        z = float(ij.get("spacing", 1.0) or 1.0)
        if dx is not None and unit is not None:
            return (dy, dx), unit, z, "imagej"
        if dx is not None and dx != 1.0:
            return (dy, dx), None, z, "imagej"
        return (1.0, 1.0), None, 1.0, "none"

    if dx is None:
        return (1.0, 1.0), None, 1.0, "none"
    if resunit == 3:  # centimetre -> µm
        return (dy * 1e4, dx * 1e4), "µm", 1.0, "resolution"
    if resunit == 1 and dx != 1.0:  # no absolute unit
        return (dy, dx), None, 1.0, "resolution"
    # inch: a print resolution (72/96/300 dpi), not a microscope calibration
    return (1.0, 1.0), None, 1.0, "none"


# --- RosettaSciIO formats -------------------------------------------------------------------


def _read_rosetta(p: Path, ext: str, *, lazy: bool = False) -> list[ImageData]:
    import importlib

    modname, fmt = _ROSETTA[ext]
    try:
        mod = importlib.import_module(f"rsciio.{modname}")
    except ImportError:
        raise InputError(
            f"Reading {ext} files needs the optional extra: {FORMATS_EXTRA_HINT} (cannot read {p})."
        ) from None
    try:
        signals = mod.file_reader(str(p), lazy=True) if lazy else mod.file_reader(str(p))
    except ImportError as exc:  # e.g. h5py missing for .emd
        raise InputError(
            f"Reading {ext} files needs the optional extra: {FORMATS_EXTRA_HINT} ({exc}; cannot read {p})."
        ) from exc
    except Exception as exc:  # third-party readers raise anything on a corrupted file
        raise _fail(p, f"{fmt} file", exc) from exc
    out = []
    n_sig = len(signals)
    for i, sig in enumerate(signals):
        img = _from_rsciio_dict(p, sig, fmt, i, n_sig, lazy=lazy)
        if img is not None:
            out.append(img)
    if not out and signals:
        shapes = ", ".join(str(np.shape(s.get("data"))) for s in signals)
        raise InputError(f"{p} holds no 2-D or 3-D image (signal shapes: {shapes}).")
    return out


def _squeezed_signal(sig: dict, *, lazy: bool = False):
    """A signal's data with its length-1 axes (and their calibration) squeezed away, and its axes.

    ``lazy`` keeps a dask array as it is (a reshape only); otherwise it is read.
    (None, []) when the signal has no data or less than two axes.
    """
    data = sig.get("data")
    if data is None:
        return None, []
    if hasattr(data, "compute") and (not lazy or data.dtype.names is not None):
        data = data.compute()  # RGB structured dtypes are read: small, and stacked below
    if not hasattr(data, "compute"):
        data = np.asarray(data)
    axes = list(sig.get("axes") or [])
    if all(isinstance(a, dict) and "index_in_array" in a for a in axes):
        axes.sort(key=lambda a: int(a["index_in_array"]))
    if len(axes) != data.ndim:
        axes = [{} for _ in range(data.ndim)]
    keep = [i for i, n in enumerate(data.shape) if n > 1]
    if len(keep) < data.ndim and len(keep) >= 2:
        data = data.reshape([data.shape[i] for i in keep])
        axes = [axes[i] for i in keep]
    if data.ndim < 2:
        return None, []
    return data, axes


def _signal_name(stem: str, title: str, index: int, n_sig: int) -> str:
    """The layer name of one signal: the file's stem, with the signal's title or number where it has one."""
    if title and title != stem:
        return f"{stem} - {title}"
    return stem if n_sig == 1 else f"{stem} [{index}]"


def _signal_title(sig: dict) -> str:
    md = sig.get("metadata") or {}
    general = md.get("General", {}) if isinstance(md, dict) else {}
    title = general.get("title") if isinstance(general, dict) else None
    return str(title).strip() if title else ""


def _from_rsciio_dict(p: Path, sig: dict, fmt: str, index: int, n_sig: int, *, lazy: bool = False) -> ImageData | None:
    data, axes = _squeezed_signal(sig, lazy=lazy)
    if data is None:
        return None
    rgb = data.dtype.names is not None  # rsciio RGB structured dtypes
    if rgb:
        data = np.stack([data[n] for n in data.dtype.names], axis=-1)
    scale = []
    units = []
    names = []
    for ax in axes:
        s = ax.get("scale", 1.0)
        try:
            s = float(s)
        except (TypeError, ValueError):
            s = 1.0
        scale.append(s if np.isfinite(s) and s != 0 else 1.0)
        units.append(normalize_unit(ax.get("units")))
        names.append(str(ax.get("name")) if isinstance(ax.get("name"), str) else "")
    unit = units[-1] if units else None
    if len(units) >= 2 and units[-2] != units[-1]:
        unit = units[-1] or units[-2]
    title = _signal_title(sig)
    name = _signal_name(p.stem, title, index, n_sig)
    md = {
        "path": str(p),
        "format": fmt,
        "axes": names,
        "axis_units": units,
        "signal_index": index,
    }
    if len(units) == 3 and seconds_per(units[0]) is not None:  # a time series: its first axis in s, ms...
        md["frame_interval"] = (scale[0], units[0])
    if rgb:
        md["rgb"] = True
    rmd = sig.get("metadata")
    if isinstance(rmd, dict):
        md["rsciio"] = _plain_dict(rmd)
    return ImageData(data=data, name=name, scale=tuple(scale), unit=unit, metadata=md)


def _plain_dict(d, depth: int = 0):
    """A copy of a nested metadata dict with only plain values (for napari layer metadata)."""
    if depth > 8:
        return None
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            pv = _plain_dict(v, depth + 1)
            if pv is not None:
                out[str(k)] = pv
        return out
    if isinstance(d, (list, tuple)):
        return [x for x in (_plain_dict(v, depth + 1) for v in d) if x is not None]
    if isinstance(d, (str, bool, int, float)):
        return d
    if isinstance(d, np.generic):
        return d.item()
    return None


# --- lazy reading: the pixels stay in the file ------------------------------------------------

HDF5_EXTENSIONS = (".h5", ".hdf5", ".hdf")
ZARR_EXTENSIONS = (".zarr",)
# What read_image_lazy opens: a Zarr store is a folder (with or without the .zarr suffix).
LAZY_EXTENSIONS = SUPPORTED_EXTENSIONS + HDF5_EXTENSIONS + ZARR_EXTENSIONS
INNER_SEP = "::"  # file.h5::/path/to/dataset, store.zarr::path/to/array


class LazyArray:
    """A read-only array in a file, opened on first use in each process.

    It pickles as how to open it (a module-level function and its arguments), never as
    its pixels or an open file handle, so a dask graph built on it can go to another
    process. Reads are serialised per process: file handles (h5py, tifffile) are not
    safe to share between threads.

    Examples
    --------
    >>> a = LazyArray(np.arange, (6,), (6,), np.int64)
    >>> a[2:4], a.shape, a.ndim
    (array([2, 3]), (6,), 1)
    """

    def __init__(self, opener, args, shape, dtype):
        self.opener = opener
        self.args = tuple(args)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._array = None
        self._lock = threading.Lock()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        with self._lock:
            if self._array is None:
                self._array = self.opener(*self.args)
            out = self._array[key]
            if hasattr(out, "compute"):  # a dask array from RosettaSciIO: read it here, in this task
                out = out.compute(scheduler="synchronous")
        out = np.asarray(out)
        # A memory-mapped slice is read-only and pins the file: hand out a copy of the pixels.
        return np.array(out) if isinstance(out, np.memmap) or not out.flags.writeable else out

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __getstate__(self):
        return {"opener": self.opener, "args": self.args, "shape": self.shape, "dtype": self.dtype}

    def __setstate__(self, state):
        self.__init__(state["opener"], state["args"], state["shape"], state["dtype"])

    def __dask_tokenize__(self):
        return ("LazyArray", self.opener.__module__, self.opener.__qualname__, self.args, self.shape, str(self.dtype))

    def __repr__(self) -> str:
        return f"LazyArray({self.opener.__name__}{self.args!r}, shape={self.shape}, dtype={self.dtype})"


def split_inner(spec) -> tuple[Path, str | None]:
    """``file.h5::/path/to/ds`` -> (Path('file.h5'), '/path/to/ds'); a plain path -> (path, None).

    Examples
    --------
    >>> split_inner("movie.h5::/data/frames")
    (PosixPath('movie.h5'), '/data/frames')
    >>> split_inner("scan.tif")
    (PosixPath('scan.tif'), None)
    """
    text = os.fspath(spec)
    if INNER_SEP in text:
        outer, inner = text.split(INNER_SEP, 1)
        return Path(outer).expanduser(), inner or None
    return Path(text).expanduser(), None


def is_zarr_store(p: Path) -> bool:
    """Whether the folder ``p`` is a Zarr store (v2 or v3, array or group)."""
    p = Path(p)
    if not p.is_dir():
        return False
    return p.suffix.lower() in ZARR_EXTENSIONS or any((p / m).exists() for m in ("zarr.json", ".zarray", ".zgroup"))


def read_image_lazy(spec) -> tuple[ImageData, list[str]]:
    """The first image of a file with its pixels left in the file, and notes.

    Like :func:`read_first_image`, but ``data`` is a :class:`LazyArray` for the formats
    that can be read a piece at a time: ``.npy`` (memory-mapped), TIFF (through
    tifffile's Zarr view), HDF5 (``file.h5`` takes the first dataset of two or more
    axes in HDF5's name order; ``file.h5::/path`` names one), Zarr and OME-Zarr (an
    array, or a group: OME-Zarr's level 0, else its first array) and the RosettaSciIO
    formats (read with ``lazy=True``). PNG/JPEG and the scanning-probe formats are read
    whole: they hold one 2-D scan.

    Raises
    ------
    InputError
        As :func:`read_image_file`, and for a Zarr store or HDF5 file without an array.
    """
    p, inner = split_inner(spec)
    if not p.exists():
        raise InputError(f"No such file: {p}")
    if is_zarr_store(p):
        return _lazy_zarr(p, inner), []
    ext = p.suffix.lower()
    if inner is not None and ext not in HDF5_EXTENSIONS:
        raise InputError(f"'{INNER_SEP}{inner}' names an array inside an HDF5 file or a Zarr store; {p} is neither.")
    if p.is_dir():
        raise InputError(f"{p} is a folder, not an image file or a Zarr store.")
    if ext in HDF5_EXTENSIONS:
        return _lazy_hdf5(p, inner), []
    if ext == ".npy":
        return _lazy_npy(p), []
    if ext in TIFF_EXTENSIONS:
        return _lazy_tiff(p)
    if ext in _ROSETTA:
        return _lazy_rosetta(p, ext)
    return read_first_image(p)


def _open_npy(path: str):
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _lazy_npy(p: Path) -> ImageData:
    try:
        arr = _open_npy(str(p))
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError/UnpicklingError...
        raise _fail(p, "NumPy .npy array", exc) from exc
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{p} does not hold a single array.")
    data = LazyArray(_open_npy, (str(p),), arr.shape, arr.dtype)
    return ImageData(data=data, name=p.stem, scale=(1.0,) * arr.ndim, metadata={"path": str(p), "format": "npy"})


def _open_tiff(path: str):
    import tifffile
    import zarr

    node = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    return node if isinstance(node, zarr.Array) else node["0"]  # a pyramid: its full resolution


def _lazy_tiff(p: Path) -> tuple[ImageData, list[str]]:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            if not tif.series:
                raise InputError(f"{p} holds no image.")
            _check_tiff_frames(p, tif.series)
            series = tif.series[0]
            data = LazyArray(_open_tiff, (str(p),), series.shape, series.dtype)
            image = _tiff_image(p, tif, series, data)
            n_series = len(tif.series)
    except InputError:
        raise
    except Exception as exc:
        raise _fail(p, "TIFF image", exc) from exc
    notes = [f"{p.name} holds {n_series} image series; the first {series.shape} is used."] if n_series > 1 else []
    return image, notes


def _check_tiff_frames(p: Path, series) -> None:
    """Refuse a TIFF whose pages are single frames of different shapes (a stack that cannot be one)."""
    frames = [s for s in series if len(s.shape) == 2 and not getattr(s.pages[0], "is_reduced", False)]
    shapes = sorted({tuple(s.shape) for s in frames})
    if len(frames) == len(series) > 1 and len(shapes) > 1:
        listed = ", ".join(f"{h} x {w}" for h, w in shapes[:4]) + (", ..." if len(shapes) > 4 else "")
        raise InputError(
            f"{p.name} holds frames of different shapes ({listed} px): a stack needs one frame shape; "
            "crop them to one size, or save them as separate files and give those."
        )


def _open_rosetta(path: str, ext: str, index: int):
    import importlib

    mod = importlib.import_module(f"rsciio.{_ROSETTA[ext][0]}")
    data, _ = _squeezed_signal(mod.file_reader(path, lazy=True)[index], lazy=True)
    return data


def _lazy_rosetta(p: Path, ext: str) -> tuple[ImageData, list[str]]:
    images = _read_rosetta(p, ext, lazy=True)
    first = images[0]
    if hasattr(first.data, "compute"):  # the reader kept it lazy: reopen it by recipe in each process
        index = first.metadata["signal_index"]
        first.data = LazyArray(_open_rosetta, (str(p), ext, index), first.data.shape, first.data.dtype)
    notes = [f"{p.name} holds {len(images)} images; the first ({first.name}) is used."] if len(images) > 1 else []
    return first, notes


def _open_hdf5(path: str, name: str):
    import h5py

    return h5py.File(path, "r")[name]  # the dataset keeps its file open


def _lazy_hdf5(p: Path, inner: str | None) -> ImageData:
    import h5py

    try:
        f = h5py.File(p, "r")
    except Exception as exc:  # h5py raises OSError for anything that is not HDF5
        raise _fail(p, "HDF5 file", exc) from exc
    with f:
        if inner is None:
            name = f.visititems(_image_dataset)
            if name is None:
                raise InputError(
                    f"{p} holds no numeric dataset of two or more axes; name one as {p.name}{INNER_SEP}/path/to/dataset."
                )
            ds = f[name]
        else:
            ds = f.get(inner)
            if not isinstance(ds, h5py.Dataset):
                found = []
                f.visititems(lambda n, o: found.append("/" + n) if isinstance(o, h5py.Dataset) else None)
                what = "is a group, not a dataset" if ds is not None else "is not there"
                raise InputError(f"{inner} in {p} {what}; its datasets: {', '.join(found[:8]) or 'none'}.")
            if ds.ndim < 2 or ds.dtype.kind not in "biufc":
                raise InputError(f"{inner} in {p} is not an image ({ds.ndim} axes, dtype {ds.dtype}).")
        data = LazyArray(_open_hdf5, (str(p), ds.name), ds.shape, ds.dtype)
        md = {"path": str(p), "format": "hdf5", "dataset": ds.name}
    return ImageData(data=data, name=p.stem, scale=(1.0,) * data.ndim, unit=None, metadata=md)


def _image_dataset(name, obj):
    """visititems callback: the first numeric dataset of two or more axes (a non-None return stops the visit)."""
    if getattr(obj, "ndim", 0) >= 2 and hasattr(obj, "dtype") and obj.dtype.kind in "biufc":
        return obj.name
    return None


def _open_zarr(path: str, key: str):
    import zarr

    node = zarr.open(path, mode="r")
    return node[key] if key else node


def _lazy_zarr(p: Path, inner: str | None) -> ImageData:
    import zarr

    try:
        node = zarr.open(str(p), mode="r")
        if inner:
            node = node[inner.strip("/")]
    except (KeyError, FileNotFoundError) as exc:
        raise InputError(f"The Zarr store {p} has no array or group {inner!r}.") from exc
    except Exception as exc:  # zarr raises many types for a folder that is not a store
        raise _fail(p, "Zarr store", exc) from exc
    prefix = inner.strip("/") if inner else ""
    scale, unit, time_unit = None, None, None
    if not isinstance(node, zarr.Array):
        key, scale, unit, time_unit = _zarr_image(node)
        if key is None:
            where = f"{p}{INNER_SEP}{inner}" if inner else str(p)
            raise InputError(f"{where} is a Zarr group without an array: give the path to an array in it.")
        prefix = f"{prefix}/{key}" if prefix else key
        node = node[key]
    md = {"path": str(p), "format": "zarr", "array": prefix}
    if scale is None or len(scale) != node.ndim:
        scale = (1.0,) * node.ndim
    elif time_unit is not None:
        md["frame_interval"] = (scale[0], time_unit)
    data = LazyArray(_open_zarr, (str(p), prefix), node.shape, node.dtype)
    return ImageData(data=data, name=p.stem, scale=tuple(scale), unit=unit, metadata=md)


def _zarr_image(group) -> tuple[str | None, tuple | None, str | None, str | None]:
    """(key, scale, unit, time unit) of a group's image: OME-Zarr's level 0, else the first array (depth
    first). The time unit is that of a first axis OME-Zarr marks as time, else None."""
    attrs = dict(group.attrs)
    multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if multiscales:
        ms = multiscales[0]
        level = ms["datasets"][0]
        scale = next(
            (t.get("scale") for t in level.get("coordinateTransformations", []) if t.get("type") == "scale"), None
        )
        axes = [a if isinstance(a, dict) else {} for a in ms.get("axes") or []]
        unit = normalize_unit(axes[-1].get("unit")) if axes else None
        time_unit = axes[0].get("unit") if axes and axes[0].get("type") == "time" else None
        return str(level["path"]), (tuple(float(s) for s in scale) if scale else None), unit, time_unit
    for key in sorted(group.array_keys()):
        return key, None, None, None
    for sub in sorted(group.group_keys()):
        key = _zarr_image(group[sub])[0]
        if key is not None:
            return f"{sub}/{key}", None, None, None
    return None, None, None, None


# --- writing --------------------------------------------------------------------------------


def write_tiff(path, image, pixel_size: float | None = None, unit: str | None = None) -> Path:
    """Write ``image`` as an ImageJ-style TIFF that :func:`read_image_file` reads back calibrated.

    2-D images and 3-D stacks (axis 0 = planes) are written; float64 becomes
    float32 and int64 int32/uint16 as ImageJ needs. The file appears atomically
    (written to a temporary file in the same folder, then renamed).

    Parameters
    ----------
    path : str or Path
    image : array_like, 2-D or 3-D
    pixel_size : float, optional
        Physical size of one pixel (same along y and x), in ``unit``.
    unit : str, optional
        For example ``"nm"``, ``"Å"`` or ``"µm"``.

    Returns
    -------
    Path
        The written file.
    """
    import tifffile

    p = Path(os.fspath(path)).expanduser()
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise InputError(f"Only 2-D images and 3-D stacks can be written as TIFF, not shape {arr.shape}.")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f" or arr.dtype.kind == "c":
        arr = np.abs(arr).astype(np.float32) if arr.dtype.kind == "c" else arr.astype(np.float32)
    elif arr.dtype.kind in "iu" and arr.dtype not in (np.uint8, np.uint16, np.int16):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        arr = arr.astype(np.uint16) if lo >= 0 and hi < 2**16 else arr.astype(np.float32)
    if pixel_size is not None:
        pixel_size = float(pixel_size)
        if not (np.isfinite(pixel_size) and pixel_size > 0):
            raise InputError(f"The pixel size must be a positive number, not {pixel_size}.")
    if not p.parent.exists():
        raise InputError(f"Cannot write {p}: the folder {p.parent} does not exist.")

    metadata = {"axes": "YX" if arr.ndim == 2 else "ZYX"}
    kwargs = {}
    if pixel_size is not None:
        kwargs["resolution"] = (1.0 / pixel_size, 1.0 / pixel_size)
        if unit:
            metadata["unit"] = _imagej_unit(unit)
        if arr.ndim == 3:
            metadata["spacing"] = pixel_size
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=".tif.tmp", dir=p.parent)
    os.close(fd)
    try:
        tifffile.imwrite(tmp, arr, imagej=True, metadata=metadata, **kwargs)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):  # the failure that got us here is the one to report
            os.unlink(tmp)
        raise
    return p


def _imagej_unit(unit: str) -> str:
    """ImageJ stores its description as ASCII: write µm as 'micron' and other non-ASCII escaped."""
    u = normalize_unit(unit) or ""
    if u == "µm":
        return "micron"
    if u.isascii():
        return u
    return "".join(c if ord(c) < 128 else f"\\u{ord(c):04X}" for c in u)
