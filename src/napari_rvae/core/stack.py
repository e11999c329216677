"""Inputs as frames: images, movies, patch stacks and many files, read lazily.

:func:`open_inputs` turns what a user gives (files, folders, globs) into a
:class:`ScanSet`: one :class:`Source` per file, each a lazy ``(T, Y, X)`` dask
array (a 2-D image as ``(1, Y, X)``), and one :class:`Layout` saying how the
arrays are read (one image, movie frames, or a stack of patches) and why.
Nothing is read until :func:`read_frame` or :func:`read_window` asks for it,
and a Source pickles as how to reopen its file, so it can go to dask workers.

Pure core: no Qt, no napari.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import InputError
from .image import _LUMA, as_image2d
from .readers import LAZY_EXTENSIONS, is_zarr_store, read_image_lazy, split_inner
from .time_axis import frame_interval_seconds

__all__ = [
    "LAYOUTS",
    "PATCH_STACK_MAX_SIDE",
    "Source",
    "Layout",
    "ScanSet",
    "expand_input_paths",
    "choose_layout",
    "open_inputs",
    "read_frame",
    "read_window",
    "scan_set_from_array",
]

LAYOUTS = ("auto", "image", "movie", "patches")
# Patches are cut at 16-64 px around one atom column; movie frames are hundreds of px or more.
PATCH_STACK_MAX_SIDE = 64
_ACCEPTED = (
    "accepted are a 2-D image (Y, X), a movie (T, Y, X) or patch stack (N, P, P), "
    "(T, Z, Y, X) with --plane, and RGB(A) colour as a last axis of 3 or 4"
)


@dataclass(frozen=True)
class Source:
    """One input: a file, or one HDF5 dataset / Zarr array inside it.

    Attributes
    ----------
    path : str
        As given (``file.h5::/dataset`` for a named dataset).
    name : str
        Unique short name for the ``file`` column and output file names (the file
        name; the parent folder's name in front when names repeat). Safe in a file name.
    data : dask.array.Array
        The lazy ``(T, Y, X)`` frames (a 2-D image as ``(1, Y, X)``; a patch stack
        as ``(N, P, P)``), float for an RGB input (its luminance).
    pixel_size, unit : float or None, str or None
        The calibration the file carries (both None when it carries none).
    is_stack : bool
        The file itself held several frames (its outputs are stacks).
    frame_interval_s : float or None
        Seconds between frames, where the file says (:mod:`.time_axis`).
    """

    path: str
    name: str
    data: object
    pixel_size: float | None
    unit: str | None
    is_stack: bool
    frame_interval_s: float | None = None

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return int(self.data.shape[1]), int(self.data.shape[2])


@dataclass(frozen=True)
class Layout:
    """How the arrays are read: ``kind`` in ``image``, ``movie``, ``patches``; ``reason`` says why in one sentence."""

    kind: str
    reason: str


@dataclass
class ScanSet:
    """The inputs of one job: sources, how they are read, and notes for the user."""

    sources: list[Source]
    layout: Layout
    notes: list[str] = field(default_factory=list)

    @property
    def frames(self) -> list[tuple[int, int]]:
        """(source index, frame index) of every frame, in order."""
        return [(i, t) for i, s in enumerate(self.sources) for t in range(s.n_frames)]

    @property
    def n_frames(self) -> int:
        return sum(s.n_frames for s in self.sources)


# --- which files --------------------------------------------------------------------------


def expand_input_paths(items) -> list[Path]:
    """The input files named by ``items``: files, folders and glob patterns, in order.

    A folder gives the files of known image types in it (sorted; a Zarr store is one
    input, not a folder); a glob gives its matches of known types, sorted. A path may
    name an array inside an HDF5 file or Zarr store as ``file.h5::/path/to/dataset``.
    Repeats are dropped.

    Raises
    ------
    InputError
        For a missing file, a file of unknown type, or a folder/glob with no input.

    Examples
    --------
    >>> expand_input_paths([])
    Traceback (most recent call last):
    ...
    napari_rvae.core.errors.InputError: No input given: name one or more files, folders or globs.
    """
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    out: list[Path] = []
    for item in items:
        for p in _expand_one(os.fspath(item)):
            if p not in out:
                out.append(p)
    if not out:
        raise InputError("No input given: name one or more files, folders or globs.")
    return out


def _known(p: Path) -> bool:
    return is_zarr_store(p) or (p.is_file() and p.suffix.lower() in LAZY_EXTENSIONS)


def _expand_one(item: str) -> list[Path]:
    path, inner = split_inner(item)
    if inner is not None or path.exists():
        if not path.exists():
            raise InputError(f"No such file: {path}")
        if path.is_dir() and not is_zarr_store(path):
            found = sorted(p for p in path.iterdir() if _known(p))
            if not found:
                raise InputError(f"No input files match {path}: the folder holds no file of a known image type.")
            return found
        if not _known(path):
            raise InputError(
                f"Cannot read {path}: unknown file type {path.suffix or '(no extension)'!r}. "
                f"Supported: {', '.join(LAZY_EXTENSIONS)} and Zarr stores."
            )
        return [Path(item).expanduser()]
    if glob.has_magic(item):
        found = sorted(Path(m) for m in glob.glob(os.path.expanduser(item), recursive=True) if _known(Path(m)))
        if not found:
            raise InputError(f"No input files match {item!r} (no file of a known image type).")
        return found
    raise InputError(f"No such file: {path}")


def _unique_names(paths: list[Path]) -> list[str]:
    """File names, with the parent folder's name in front where they repeat; safe in a file name."""

    def base(p: Path, parents: int) -> str:
        outer, inner = split_inner(p)
        parts = [*outer.parts[-1 - parents : -1], outer.name]
        if inner:
            parts.append(inner.strip("/"))
        return "_".join(parts).replace("/", "_").replace("\\", "_").replace(":", "_")

    names = [base(p, 0) for p in paths]
    for parents in range(1, 8):
        repeated = {n for n in names if names.count(n) > 1}
        if not repeated:
            break
        names = [base(p, parents) if n in repeated else n for p, n in zip(paths, names)]
    seen: dict[str, int] = {}
    unique = []
    for n in names:  # still repeated (same names all the way up): number them
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return unique


# --- how to read an array -----------------------------------------------------------------


def _looks_rgb(shape) -> bool:
    """A 3-D shape whose last axis of 3 or 4 is smaller than the image's (an RGB(A) picture)."""
    return len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) > shape[-1]


def _is_rgb(shape, requested: str, rgb: bool | None) -> bool:
    """Whether the last axis is colour: as the file says, else guessed from the shape unless frames were asked for."""
    if rgb is not None:
        return bool(rgb)
    return requested in ("auto", "image") and _looks_rgb(shape)


def choose_layout(shape, requested: str = "auto", *, has_frame_points: bool = False, rgb: bool | None = None) -> Layout:
    """How an array of ``shape`` is read, and a sentence saying so and how to choose otherwise.

    Auto: 2-D is an image; 3-D with a last axis of 3 or 4 is an RGB(A) image; 3-D with
    square frames of at most :data:`PATCH_STACK_MAX_SIDE` px is a patch stack (a movie when
    the points carry a frame); other 3-D arrays are movies. An explicit ``requested``
    layout wins where it fits the shape.

    Parameters
    ----------
    shape : tuple of int
    requested : {"auto", "image", "movie", "patches"}
    has_frame_points : bool
        The user's points have a frame column: the array is frames, not patches.
    rgb : bool, optional
        The file says the last axis is colour (True) or not (False); None guesses from the shape.

    Raises
    ------
    InputError
        For a layout that does not fit the shape, 4-D (needs ``--plane``) and 5-D arrays.

    Examples
    --------
    >>> choose_layout((3, 256, 256)).kind
    'movie'
    >>> choose_layout((500, 32, 32)).kind
    'patches'
    >>> choose_layout((500, 32, 32), "movie").kind
    'movie'
    >>> choose_layout((480, 640, 3)).reason
    'Shape (480, 640, 3): an RGB(A) image (its luminance is used).'
    """
    shape = tuple(int(n) for n in shape)
    if requested not in LAYOUTS:
        raise InputError(f"Unknown layout {requested!r}: choose one of {', '.join(LAYOUTS)}.")
    rgb = _is_rgb(shape, requested, rgb)
    spatial = shape[:-1] if rgb else shape
    if len(spatial) < 2:
        raise InputError(f"Shape {shape} is not an image: {_ACCEPTED}.")
    if len(spatial) == 4:
        raise InputError(
            f"Shape {shape} has 4 axes, read as (T, Z, Y, X): choose the Z plane with --plane (0 to {spatial[1] - 1})."
        )
    if len(spatial) > 4:
        raise InputError(f"Shape {shape} has {len(spatial)} axes, more than are read: {_ACCEPTED}.")
    if len(spatial) == 2:
        return _layout_2d(shape, requested, rgb)
    return _layout_3d(shape, spatial, requested, has_frame_points)


def _layout_2d(shape, requested: str, rgb: bool) -> Layout:
    what = "an RGB(A) image (its luminance is used)" if rgb else "a 2-D image"
    if requested == "patches":
        raise InputError(f"Shape {shape} is {what}, not a stack of patches: --layout patches needs (N, P, P).")
    if requested == "movie":
        return Layout("movie", f"Shape {shape}: {what}, read as a movie of one frame (--layout movie).")
    return Layout("image", f"Shape {shape}: {what}.")


def _layout_3d(shape, spatial, requested: str, has_frame_points: bool) -> Layout:
    n, h, w = spatial
    colour = "RGB(A) " if len(shape) > 3 else ""  # their luminance is read (noted by the caller)
    movie = f"a movie of {n} {colour}frames of {h} x {w} px"
    patches = f"a stack of {n} patches of {h} px"
    if requested == "image":
        raise InputError(
            f"Shape {shape} holds {n} planes, not one image: give --layout movie to read them as frames"
            + (" or --layout patches to read them as patches." if h == w else ".")
        )
    if requested == "patches":
        if h != w:
            raise InputError(
                f"Shape {shape} cannot be a patch stack: patches are square (N, P, P); use --layout movie."
            )
        return Layout("patches", f"Shape {shape}: read as {patches} (--layout patches).")
    if requested == "movie":
        return Layout("movie", f"Shape {shape}: read as {movie} (--layout movie).")
    if h == w and h <= PATCH_STACK_MAX_SIDE and not has_frame_points:
        return Layout(
            "patches",
            f"Shape {shape}: read as {patches} (square planes of at most {PATCH_STACK_MAX_SIDE} px); "
            "give --layout movie to read them as frames.",
        )
    if h == w and h <= PATCH_STACK_MAX_SIDE:
        return Layout("movie", f"Shape {shape}: read as {movie} (the points carry a frame).")
    if h == w:
        why = f"planes larger than {PATCH_STACK_MAX_SIDE} px"
        return Layout(
            "movie", f"Shape {shape}: read as {movie} ({why}); give --layout patches to read them as patches."
        )
    return Layout("movie", f"Shape {shape}: read as {movie} (planes that are not square cannot be patches).")


# --- opening ------------------------------------------------------------------------------


def open_inputs(items, *, layout: str = "auto", plane: int | None = None, has_frame_points: bool = False) -> ScanSet:
    """Open the inputs named by ``items`` (files, folders, globs) lazily, as one :class:`ScanSet`.

    Parameters
    ----------
    items : str, Path or list of them
        See :func:`expand_input_paths`.
    layout : {"auto", "image", "movie", "patches"}
        How 3-D arrays are read (:func:`choose_layout`); explicit wins where it fits.
    plane : int, optional
        The Z plane of 4-D (T, Z, Y, X) inputs.
    has_frame_points : bool
        The user's points carry a frame: small square planes are frames, not patches.

    Raises
    ------
    InputError
        One sentence for anything the inputs get wrong: missing or unknown files, a glob
        or folder matching nothing, a Zarr group without an array, 4-D without ``plane``,
        5-D, frames of different shapes in one file, a patch stack among several files.
    """
    if layout not in LAYOUTS:
        raise InputError(f"Unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}.")
    paths = expand_input_paths(items)
    names = _unique_names(paths)
    notes: list[str] = []
    sources, layouts = [], []
    for path, name in zip(paths, names):
        source, lay = _open_source(path, name, layout, plane, has_frame_points, notes)
        sources.append(source)
        layouts.append(lay)
    return ScanSet(sources, _combined_layout(sources, layouts), notes + _calibration_notes(sources))


def scan_set_from_array(
    data,
    *,
    name: str = "image",
    layout: str = "auto",
    pixel_size: float | None = None,
    unit: str | None = None,
    has_frame_points: bool = False,
) -> ScanSet:
    """A :class:`ScanSet` of one in-memory or dask array (a napari layer's data), read as :func:`open_inputs` would.

    Examples
    --------
    >>> scans = scan_set_from_array(np.zeros((3, 128, 128), np.float32), name="movie")
    >>> scans.layout.kind, scans.n_frames, scans.sources[0].frame_shape
    ('movie', 3, (128, 128))
    """
    notes: list[str] = []
    arr = _as_dask(data, rgb=False)
    rgb = _is_rgb(arr.shape, layout, None)
    lay = _named(name, choose_layout(arr.shape, layout, has_frame_points=has_frame_points, rgb=rgb))
    if lay.kind == "patches":
        arr = arr.rechunk(_frame_chunks(arr.shape, False, lead=_patches_per_chunk(arr.shape)))
    source = _source(arr, name, name, rgb, pixel_size if unit else None, unit if pixel_size else None, notes)
    return ScanSet([source], lay, notes)


def _named(name: str, lay: Layout) -> Layout:
    return Layout(lay.kind, f"{name}: {lay.reason}")


def _open_source(path: Path, name: str, requested: str, plane, has_frame_points: bool, notes: list[str]):
    """One input as a Source, with how it is read."""
    image, file_notes = read_image_lazy(path)
    notes += file_notes
    rgb = bool(image.metadata.get("rgb"))
    arr = _as_dask(image.data, rgb=rgb)
    if plane is not None:
        if arr.ndim - rgb == 4:
            if not 0 <= int(plane) < arr.shape[1]:
                raise InputError(
                    f"--plane {plane} is outside {name}'s {arr.shape[1]} Z planes (0 to {arr.shape[1] - 1})."
                )
            arr = arr[:, int(plane)]
        else:
            notes.append(f"--plane is for 4-D (T, Z, Y, X) inputs; {name} has shape {arr.shape}, so it is not used.")
    try:
        rgb = _is_rgb(arr.shape, requested, True if rgb else None)
        lay = choose_layout(arr.shape, requested, has_frame_points=has_frame_points, rgb=rgb)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None
    if lay.kind == "patches" and image.data.ndim == 3:
        arr = _as_dask(image.data, rgb=False, lead=_patches_per_chunk(arr.shape))
    scale = tuple(image.scale or ())
    pixel_size = float(scale[-1]) if scale and image.unit else None  # as the 2-D path reads calibration
    source = _source(arr, os.fspath(path), name, rgb, pixel_size, image.unit if pixel_size else None, notes)
    if lay.kind == "movie":
        source = replace(source, frame_interval_s=frame_interval_seconds(image.metadata))
    return source, _named(name, lay)


def _source(arr, path: str, name: str, rgb: bool, pixel_size, unit, notes: list[str]) -> Source:
    if rgb:
        notes.append(f"{name} is RGB; its luminance (0.299 R + 0.587 G + 0.114 B) is used.")
        arr = arr.rechunk(_frame_chunks(arr.shape, True))
        arr = arr.map_blocks(_luminance_block, drop_axis=arr.ndim - 1, dtype=np.float64)
    is_stack = arr.ndim == 3
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[0] == 0 or min(arr.shape[1:]) < 2:
        raise InputError(f"{name} holds no frame to analyse (shape {arr.shape}).")
    return Source(path, name, arr, pixel_size, unit, is_stack)


def _luminance_block(block: np.ndarray) -> np.ndarray:
    """RGB(A) to luminance exactly as :func:`~.image.as_image2d` does it (float64, BT.601 weights)."""
    return block[..., :3].astype(np.float64) @ _LUMA


def _as_dask(data, *, rgb: bool, lead: int = 1):
    """``data`` as a dask array chunked by frame (``lead`` frames, each whole with its colour axis, per chunk)."""
    import dask.array as da

    if isinstance(data, da.Array):
        arr = data
    else:
        if not hasattr(data, "shape"):
            data = np.asarray(data)
        chunks = _frame_chunks(data.shape, rgb, lead=lead)
        arr = da.from_array(data, chunks=chunks, meta=np.empty((0,) * len(data.shape), data.dtype))
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"The input is not numeric (dtype {arr.dtype}).")
    return arr.rechunk(_frame_chunks(arr.shape, rgb, lead=lead)) if arr.ndim > 2 + rgb else arr


def _frame_chunks(shape, rgb: bool, *, lead: int = 1) -> tuple[int, ...]:
    tail = 2 + bool(rgb)
    return tuple(min(lead, int(n)) if i < len(shape) - tail else int(n) for i, n in enumerate(shape))


def _patches_per_chunk(shape) -> int:
    """Patches per dask chunk: about 4 Mpx (16 MB of float32), not one task per patch."""
    return max(1, (1 << 22) // max(1, int(shape[-1]) * int(shape[-2])))


def _combined_layout(sources: list[Source], layouts: list[Layout]) -> Layout:
    """The one layout of all inputs: one file keeps its own; several are frames of one movie (or images)."""
    if len(sources) == 1:
        return layouts[0]
    for s, lay in zip(sources, layouts):
        if lay.kind == "patches":
            raise InputError(
                f"{s.name} is read as a stack of patches, and a patch stack is read alone: give it as the only "
                "input, or --layout movie to read every file as frames."
            )
    listed = ", ".join(
        f"{s.name} ({s.n_frames} frames)" if s.is_stack else f"{s.name} (one image)" for s in sources[:4]
    ) + (f" and {len(sources) - 4} more" if len(sources) > 4 else "")
    total = sum(s.n_frames for s in sources)
    if all(lay.kind == "image" for lay in layouts):
        return Layout("image", f"{len(sources)} images, each read as one frame of one run: {listed}.")
    return Layout("movie", f"{len(sources)} files read as movie frames, {total} in all: {listed}.")


def _calibration_notes(sources: list[Source]) -> list[str]:
    """A note when the inputs' pixel sizes differ: they are used as they are, not resampled."""

    def cal(s: Source) -> str:
        return f"{s.pixel_size:.4g} {s.unit}" if s.pixel_size else "uncalibrated"

    if len({cal(s) for s in sources}) <= 1:
        return []
    listed = ", ".join(f"{s.name} {cal(s)}" for s in sources[:6]) + (", ..." if len(sources) > 6 else "")
    return [
        f"The inputs' pixel sizes differ ({listed}); they are used as they are, not resampled, so an atom spans "
        "different numbers of pixels in them: check that one patch size suits all."
    ]


# --- reading ------------------------------------------------------------------------------


def _read(data, key) -> np.ndarray:
    """``data[key]`` read into an array of its own (never a view of a layer's or a file's pixels)."""
    part = data[key]
    if hasattr(part, "compute"):  # one frame is one chunk: no parallelism to gain, and safe inside a worker
        part = part.compute(scheduler="synchronous")
    return np.array(part)


def _check_frame(source: Source, t: int) -> int:
    t = int(t)
    if not 0 <= t < source.n_frames:
        raise InputError(
            f"Frame {t} is beyond {source.name}, which has {source.n_frames} frames (0 to {source.n_frames - 1})."
        )
    return t


def read_frame(source: Source, t: int) -> np.ndarray:
    """Frame ``t`` of ``source`` as finite float32 2-D, exactly as :func:`~.image.as_image2d` makes an image.

    NaN/inf pixels become the frame's median; a constant frame is refused (InputError).

    Examples
    --------
    >>> scans = scan_set_from_array(np.arange(2 * 80 * 80).reshape(2, 80, 80))
    >>> read_frame(scans.sources[0], 1).dtype, read_frame(scans.sources[0], 1).shape
    (dtype('float32'), (80, 80))
    """
    t = _check_frame(source, t)
    name = f"frame {t} of {source.name}" if source.is_stack else f"image {source.name}"
    image, _ = as_image2d(_read(source.data, t), name=name, rgb=False)
    return image


def read_window(source: Source, t: int, rows: slice, cols: slice) -> np.ndarray:
    """The window ``[rows, cols]`` of frame ``t``, read alone (the rest of the frame stays in the file).

    Only converted to float32 (complex values: their magnitude): NaN/inf stay, since
    whole-frame statistics cannot be taken on a window; :func:`read_frame` replaces them.

    Examples
    --------
    >>> scans = scan_set_from_array(np.arange(2 * 80 * 80).reshape(2, 80, 80))
    >>> read_window(scans.sources[0], 1, slice(0, 2), slice(3, 5))
    array([[6403., 6404.],
           [6483., 6484.]], dtype=float32)
    """
    t = _check_frame(source, t)
    window = _read(source.data, (t, rows, cols))
    if np.iscomplexobj(window):
        window = np.abs(window)
    return window.astype(np.float32, copy=False)
