"""Movies, stacks and many scans, frame by frame (and tile by tile), on dask.distributed or here.

The same task functions run on a ``distributed.Client``'s workers or, with
``client=None``, one after the other in this process, so the two agree:

* :func:`detect_frames`: one task per frame; a frame larger than ``tile`` px
  is detected tile by tile: its detection settings are fixed first, from the
  whole frame read tile by tile (:func:`~.tiles.detection_settings_tiled`:
  the feature size from the central crop, noise and strengths from the whole
  frame, as whole-image detection takes them), then one task per tile finds
  the candidates in its core and the frame's ties are resolved together
  (:func:`~.detect.finish_detection`), so chunked and whole-image detection
  agree. A levelled frame (``level`` not "none") is detected whole:
  levelling fits the whole frame.
* :func:`sample_patches`: the training sample, cut frame by frame (only the
  sampled atoms' patches are cut).
* :func:`encode_frames`: one task per frame (read, cut, encode, lattice
  check, maps). The model travels once, as the bytes of its file, and each
  worker loads it once. At most a few frames are in flight and results come
  back in frame order, so memory stays flat in the length of the movie.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .cluster import limit_threads
from .errors import InputError

# Frames in flight per worker: one running, one waiting, so no worker idles while the
# results of the frame before are taken in order.
IN_FLIGHT_PER_WORKER = 2
# The candidate pool a training sample is stratified from: this many times the sample.
POOL_FACTOR = 2
ATOM_COLUMNS = ("source", "frame", "y", "x", "strength")


@dataclass
class FrameResult:
    """One frame's results.

    Attributes
    ----------
    source, frame : int
        Which input (index into ``ScanSet.sources``) and which of its frames.
    table : DataFrame
        One row per kept atom: the columns of today's points.csv (``y, x``, the
        encoder's and lattice check's columns, calibrated ``y_<unit>, x_<unit>``,
        then the columns carried from the atoms table), without ``file``/``frame``.
    maps : dict of str to ndarray
        The frame's ``angle_map``, ``class_map``, ``psi_map`` (those the table supports).
    dropped : ndarray of int
        Row numbers (within this frame's atoms) dropped at the frame's edge.
    psi_n : int or None
        The lattice check's n (4 or 6) for this frame's atoms; None without the check.
    """

    source: int
    frame: int
    table: pd.DataFrame
    maps: dict
    dropped: np.ndarray
    psi_n: int | None = None


# ---------------------------------------------------------------- reading frames


def frame_image(source, t: int, level: str = "none") -> np.ndarray:
    """Frame ``t`` of ``source`` as float32, levelled like today's 2-D path."""
    from .level import level_image
    from .stack import read_frame

    return level_image(read_frame(source, int(t)), level)


def _needs_tiles(shape, tile: int | None, level: str) -> bool:
    """Whether a frame is detected tile by tile (larger than ``tile``, not levelled)."""
    return tile is not None and level == "none" and max(shape) > int(tile)


# ---------------------------------------------------------------- detection


def _detect_frame_task(sources, s: int, t: int, options: dict, level: str) -> pd.DataFrame:
    """A whole frame's atoms: today's ``detect_atoms`` on the (levelled) frame."""
    from .detect import detect_atoms

    limit_threads()
    try:
        image = frame_image(sources[s], t, level)
    except InputError as err:  # a blank frame (beam off, a dropped scan) has no atoms; the movie goes on
        if "constant" not in str(err):
            raise
        return pd.DataFrame({"y": np.empty(0), "x": np.empty(0), "strength": np.empty(0)})
    return detect_atoms(image, **options)


def _settings_task(sources, s: int, t: int, options: dict, tile: int):
    """The detection settings of a frame too large for one task, read tile by tile (None: nothing to find)."""
    from .stack import read_window
    from .tiles import detection_settings_tiled

    limit_threads()
    src = sources[s]
    return detection_settings_tiled(
        lambda rows, cols: read_window(src, int(t), rows, cols), src.frame_shape, tile=int(tile), **options
    )


def _tile_task(sources, s: int, t: int, tile, settings) -> pd.DataFrame:
    """The detection candidates a tile owns (maxima in its core), from its outer window."""
    from .stack import read_window
    from .tiles import tile_candidates

    limit_threads()
    return tile_candidates(read_window(sources[s], int(t), tile.rows, tile.cols), tile, settings)


class _Runner:
    """Submits task functions to a client, or calls them here: the one switch between the two paths."""

    def __init__(self, client, sources):
        self.client = client
        if client is None:
            self.sources = sources
        else:
            # Sent once; each task names it instead of carrying the sources along.
            [self.sources] = client.scatter([list(sources)], broadcast=True, hash=False)

    def submit(self, fn, *args):
        if self.client is None:
            return _Done(fn(self.sources, *args))
        return self.client.submit(fn, self.sources, *args, pure=False)

    @property
    def workers(self) -> int:
        if self.client is None:
            return 1
        return max(1, len(self.client.scheduler_info().get("workers", {})))


class _Done:
    """A finished in-process result with a future's ``result()``."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value

    def cancel(self):
        pass


def _stopped(stop) -> bool:
    return stop is not None and (stop.is_set() if hasattr(stop, "is_set") else bool(stop()))


def _frame_detection(run: _Runner, scans, s: int, t: int, options: dict, tile, level, settings: dict) -> list:
    """The futures whose tables make frame (s, t)'s atoms: one per frame, or one per tile.

    A tiled frame's settings go into ``settings[(s, t)]``: its tiles' candidates are
    finished together (ties across tiles are the frame's).
    """
    from .detect import detection_halo
    from .tiles import tile_grid

    shape = scans.sources[s].frame_shape
    if not _needs_tiles(shape, tile, level):
        return [run.submit(_detect_frame_task, s, t, options, level)]
    settings[(s, t)] = frame_settings = run.submit(_settings_task, s, t, options, tile).result()
    if frame_settings is None:
        return []
    grid = tile_grid(shape, int(tile), detection_halo(frame_settings))
    return [run.submit(_tile_task, s, t, tl, frame_settings) for tl in grid]


def detect_frames(
    scans, detect_options: dict, *, client=None, tile: int | None = None, level="none", on_frame=None, stop=None
) -> pd.DataFrame:
    """Atoms of every frame: columns ``source, frame, y, x, strength``, in frame then raster order.

    Parameters
    ----------
    scans : ScanSet
    detect_options : dict
        :func:`~.detect.detect_atoms`'s keyword arguments.
    client : distributed.Client, optional
        None: every frame in this process.
    tile : int, optional
        Frames larger than this (px, either side) are detected tile by tile.
    level : str
        How each frame is levelled first (:data:`~.level.LEVELS`).
    on_frame : callable, optional
        ``on_frame(done, total)`` after each frame.
    stop : threading.Event or callable, optional
        Checked between frames; when set, the frames found so far are returned.
    """
    from .detect import finish_detection

    run = _Runner(client, scans.sources)
    frames = list(scans.frames)
    tables, settings = [], {}

    def make(s, t):
        return _frame_detection(run, scans, s, t, detect_options, tile, level, settings)

    for done, ((s, t), parts) in enumerate(in_order(run, frames, make, stop)):
        if (s, t) in settings:
            found = [p for p in parts if len(p)]
            candidates = pd.concat(found, ignore_index=True) if found else pd.DataFrame()
            parts = [finish_detection(candidates, settings.pop((s, t)), scans.sources[s].frame_shape)]
        tables.append(_frame_atoms(s, t, parts))
        if on_frame is not None:
            on_frame(done + 1, len(frames))
    return pd.concat(tables, ignore_index=True) if tables else _empty_atoms()


def in_order(run: _Runner, items, make, stop=None) -> Iterator:
    """``(item, results)`` for each item in order, with ``make(*item)``'s futures of a few items in flight.

    ``make`` returns a list of futures per item; at most ``IN_FLIGHT_PER_WORKER``
    items per worker are submitted and not yet taken, so finished results never
    pile up. When ``stop`` is set the items not yet taken are cancelled.
    """
    feed = iter(items)
    pending: deque = deque()
    window = IN_FLIGHT_PER_WORKER * run.workers
    try:
        while True:
            while len(pending) < window and not _stopped(stop):
                item = next(feed, None)
                if item is None:
                    break
                pending.append((item, make(*item)))
            if not pending or _stopped(stop):
                return
            item, futures = pending.popleft()
            yield item, _results(futures, item)
    finally:
        for _, futures in pending:
            for f in futures:
                f.cancel()


def _results(futures, item) -> list:
    """The futures' results; a worker that died under them (most often: over its memory limit) is one sentence."""
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    try:
        return [f.result() for f in futures]
    except (KilledWorker, FutureCancelledError) as err:
        raise InputError(
            f"A dask worker stopped while it worked on input {item[0]}, frame {item[1]} (most often: it went over "
            "its memory limit). Give each worker more memory (--memory-limit), use fewer workers (--workers), "
            f"or a smaller --tile. ({type(err).__name__})"
        ) from err


def _empty_atoms() -> pd.DataFrame:
    return pd.DataFrame({c: np.empty(0, dtype=float if c in ("y", "x", "strength") else int) for c in ATOM_COLUMNS})


def _frame_atoms(s: int, t: int, parts) -> pd.DataFrame:
    """One frame's tables (whole or tiles) as atoms rows in raster order, as ``detect_atoms`` sorts."""
    parts = [p for p in parts if len(p)]
    if not parts:
        found = _empty_atoms().drop(columns=["source", "frame"])
    else:
        found = pd.concat(parts, ignore_index=True)
        order = np.lexsort((found["x"].to_numpy(), found["y"].to_numpy()))
        found = found.iloc[order].reset_index(drop=True)
    found.insert(0, "frame", np.full(len(found), t, dtype=np.int64))
    found.insert(0, "source", np.full(len(found), s, dtype=np.int64))
    return found


# ---------------------------------------------------------------- frames of an atoms table


def frame_groups(atoms: pd.DataFrame) -> dict:
    """``{(source, frame): row indices}`` of an atoms table."""
    if len(atoms) == 0:
        return {}
    keys = atoms[["source", "frame"]].to_numpy(dtype=np.int64)
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    k = keys[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(k, axis=0) != 0).any(axis=1)])
    ends = np.r_[starts[1:], len(k)]
    return {(int(k[a, 0]), int(k[a, 1])): np.sort(order[a:b]) for a, b in zip(starts, ends)}


def check_frames(scans, atoms: pd.DataFrame, what: str = "The points") -> None:
    """An InputError when an atom names a source or frame the inputs do not have."""
    for (s, t), rows in frame_groups(atoms).items():
        if not 0 <= s < len(scans.sources):
            raise InputError(f"{what} name an input that was not given (row {int(rows[0]) + 1}).")
        n = scans.sources[s].n_frames
        if not 0 <= t < n:
            name = scans.sources[s].name
            raise InputError(
                f"{what} have frame {t} (row {int(rows[0]) + 1}), but {name} has {n} frame"
                f"{'s' if n != 1 else ''} (0 to {n - 1})."
            )


# ---------------------------------------------------------------- the model on workers

_MODELS: dict = {}  # per process: model file digest -> loaded model (a worker loads each model once)


def model_bytes(model) -> bytes:
    """The model as the bytes of its file (:func:`~.modelfile.save_model`): what travels to workers."""
    import tempfile
    from pathlib import Path

    from .modelfile import save_model

    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(model, Path(tmp) / "model.pt")
        return path.read_bytes()


def _cached_model(blob: bytes):
    """The model in ``blob``, loaded once per process through the one model-file reader."""
    import tempfile
    from pathlib import Path

    from .modelfile import load_model

    key = hashlib.sha256(blob).hexdigest()
    if key not in _MODELS:
        _MODELS.clear()  # one model at a time: a worker that served an earlier job drops it
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            path.write_bytes(blob)
            _MODELS[key] = load_model(path)[0]
    return _MODELS[key]


# ---------------------------------------------------------------- encoding


def _empty_table(model) -> pd.DataFrame:
    """The columns of an encoded frame without atoms."""
    from .encode import result_columns

    cols = ["y", "x", *result_columns(model), "psi_angle", "psi_order", "angle_psi_diff", "angle_psi_flag"]
    return pd.DataFrame({c: np.empty(0) for c in cols})


def _encode_task(sources, s: int, t: int, rows: pd.DataFrame, labels, blob, edge: str, level: str, names):
    """Frame (s, t): cut the patches at ``rows``' atoms, encode, check the lattice, paint the maps."""
    from .analysis import encode_patches
    from .exports import result_maps
    from .patches import extract_patches
    from .pipeline import Inputs, results_table

    limit_threads()
    model = _cached_model(blob) if isinstance(blob, bytes) else blob
    src = sources[s]
    image = frame_image(src, t, level)
    rows = rows.drop(columns=["source", "frame", "file"], errors="ignore").reset_index(drop=True)
    period = 360.0 / model.config.symmetry
    if len(rows) == 0:
        table = _empty_table(model)
        maps = result_maps(image.shape, np.empty((0, 2)), table, period=period)
        return FrameResult(s, t, table, maps, np.empty(0, dtype=np.int64))
    ps = extract_patches(image, rows[["y", "x"]].to_numpy(dtype=float), model.config.patch_size, edge=edge)
    kept_labels = None if labels is None else np.asarray(labels)[ps.kept]
    encoded = encode_patches(model, ps.patches, ps.centers, labels=kept_labels).table
    inputs = Inputs(ps.patches[:0], rows.iloc[ps.kept].reset_index(drop=True), pixel_size=src.pixel_size, unit=src.unit)
    table = results_table(inputs, encoded, class_names=names)
    psi_n = _psi_n(ps.centers, encoded)
    psi_period = 360.0 / psi_n if psi_n else None
    maps = result_maps(image.shape, ps.centers, encoded, period=period, psi_period=psi_period)
    return FrameResult(s, t, table, maps, np.asarray(ps.dropped, dtype=np.int64), psi_n)


def _psi_n(centers, table) -> int | None:
    """The lattice check's n (psi_4 or psi_6) of a frame, as today's 2-D exports choose it."""
    if "psi_angle" not in table or len(centers) < 2:
        return None
    from .bond_order import lattice_order

    return lattice_order(centers)[0]


def encode_frames(
    scans, atoms, model, *, client=None, edge="drop", level="none", labels=None, class_names=None, on_frame=None
) -> Iterator[FrameResult]:
    """Encode every frame's atoms with ``model``; yields one :class:`FrameResult` per frame, in frame order.

    Parameters
    ----------
    scans : ScanSet
    atoms : DataFrame
        ``source, frame, y, x`` and any carried columns (:func:`detect_frames`,
        or a points table with frames).
    model : RVAE
        A trained model; it is sent to the workers once.
    client : distributed.Client, optional
        None: every frame in this process, by the same function.
    edge, level : str
        As for today's 2-D path.
    labels : array_like of int, optional
        Per atom row: the classes a class-input model reads.
    class_names : list, optional
        Names for the ``class_name`` column.
    on_frame : callable, optional
        ``on_frame(done, total)`` after each frame.
    """
    run = _Runner(client, scans.sources)
    blob = model if client is None else client.scatter(model_bytes(model), broadcast=True, hash=False)
    groups = frame_groups(atoms)
    frames = list(scans.frames)
    empty = np.empty(0, dtype=np.int64)

    def make(s, t):
        rows = groups.get((s, t), empty)
        lab = None if labels is None else np.asarray(labels)[rows]
        return [run.submit(_encode_task, s, t, atoms.iloc[rows], lab, blob, edge, level, class_names)]

    for done, (_, [result]) in enumerate(in_order(run, frames, make)):
        if on_frame is not None:
            on_frame(done + 1, len(frames))
        yield result


# ---------------------------------------------------------------- the training sample


def _cut_task(sources, s: int, t: int, points_yx, patch_size: int, edge: str, level: str):
    """The patches at ``points_yx`` in frame (s, t), and which points kept one."""
    from .patches import extract_patches

    limit_threads()
    ps = extract_patches(frame_image(sources[s], t, level), points_yx, patch_size, edge=edge)
    return ps.patches, ps.kept


def cut_patches(scans, atoms, rows, patch_size: int, *, client=None, edge="drop", level="none"):
    """The patches of atom rows ``rows`` (frame by frame) and the rows that kept one, in row order."""
    run = _Runner(client, scans.sources)
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    groups = frame_groups(atoms.iloc[rows].reset_index(drop=True))
    pts = atoms[["y", "x"]].to_numpy(dtype=float)
    patches, kept = [], []

    def make(s, t):
        return [run.submit(_cut_task, s, t, pts[rows[groups[(s, t)]]], patch_size, edge, level)]

    for (s, t), [(cut, k)] in in_order(run, [f for f in scans.frames if f in groups], make):
        patches.append(cut)
        kept.append(rows[groups[(s, t)]][k])
    if not patches:
        return np.empty((0, patch_size, patch_size), np.float32), np.empty(0, np.int64)
    kept = np.concatenate(kept)
    order = np.argsort(kept, kind="stable")
    return np.concatenate(patches)[order], kept[order]


def cuttable(scans, atoms, patch_size: int, edge: str) -> np.ndarray:
    """Bool per atom row: whether it gets a patch (always, unless ``edge="drop"`` and it is too close)."""
    from .patches import _inside_mask

    ok = np.ones(len(atoms), dtype=bool)
    if edge != "drop":
        return ok
    pts = atoms[["y", "x"]].to_numpy(dtype=float)
    for (s, _), rows in frame_groups(atoms).items():
        ok[rows] = _inside_mask(scans.sources[s].frame_shape, pts[rows], patch_size)
    return ok


def sample_patches(scans, atoms, n_sample: int, patch_size: int, *, client=None, edge="drop", level="none", seed=0):
    """A training sample of at most ``n_sample`` patches: ``(patches, rows, rule)``.

    Every patch when there are no more than ``n_sample``. Otherwise a pool of
    ``POOL_FACTOR * n_sample`` atoms is drawn uniformly at random (each frame
    contributes in proportion to its atoms), its patches are cut, and
    :func:`~.budget.stratified_sample` picks ``n_sample`` of them with the
    frames as groups. ``rows`` are atom row numbers, increasing; ``rule`` says
    which way was taken, for report.json.
    """
    candidates = np.flatnonzero(cuttable(scans, atoms, patch_size, edge))
    if len(candidates) <= n_sample:
        patches, rows = cut_patches(scans, atoms, candidates, patch_size, client=client, edge=edge, level=level)
        return patches, rows, "every patch"
    from .budget import stratified_sample

    rng = np.random.default_rng(seed)
    pool = np.sort(rng.choice(candidates, size=min(len(candidates), POOL_FACTOR * n_sample), replace=False))
    patches, rows = cut_patches(scans, atoms, pool, patch_size, client=client, edge=edge, level=level)
    keys = atoms[["source", "frame"]].to_numpy(dtype=np.int64)[rows]
    groups = np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)
    pick = stratified_sample(patches, int(n_sample), groups=groups, seed=seed)
    rule = (
        f"{n_sample} of {len(candidates)} patches: a random pool of {len(pool)} (frames in proportion to their "
        f"atoms), stratified by frame (budget.stratified_sample, seed {seed})"
    )
    return patches[pick], rows[pick], rule
