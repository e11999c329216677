"""One model over the frames of a stack, in this process: cut, train, encode and paint frame by frame.

The napari widgets run these on a (T, Y, X) layer: each frame is read on its
own (``read_plane(t)``, so a dask-backed movie is never loaded whole), its
points' patches are cut with :func:`~.patches.extract_patches`, all frames'
patches train one model, and each frame is encoded and painted with the 2-D
path's own functions (:func:`~.analysis.train_patches_iter`,
:func:`~.analysis.encode_patches`, :func:`~.exports.result_maps`). The results are an :class:`~.analysis.Analysis` whose
table starts with a ``frame`` column; the lattice check and the maps look at
one frame's atoms at a time (atoms of different frames are not neighbours).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .analysis import Analysis, encode_patches, train_patches_iter
from .bond_order import with_lattice_check
from .config import ModelConfig, TrainConfig
from .errors import InputError
from .exports import result_maps
from .maps import typical_spacing
from .models import RVAE
from .patches import extract_patches
from .train import Progress, resolve_class_window

__all__ = [
    "FramePatches",
    "split_by_frame",
    "frame_indices",
    "cut_frames",
    "with_frames",
    "analyse_frames_iter",
    "apply_model_frames",
    "frame_spacing",
    "largest_frame",
    "paint_frames",
]

# What a map pixel holds where no atom is near, as the 2-D maps have it.
_EMPTY = {"angle_map": np.nan, "psi_map": np.nan, "class_map": 0}


@dataclass(frozen=True)
class FramePatches:
    """Patches cut frame by frame, and which input points they came from.

    Attributes
    ----------
    patches : ndarray of float32, shape (M, P, P)
    centers : ndarray, shape (M, 2)
        ``(y, x)`` of the kept points in their frame's pixels.
    frames : ndarray of int, shape (M,)
        The frame of each kept point.
    kept : ndarray of int, shape (M,)
        Indices of the kept points in the input, increasing.
    dropped : ndarray of int
        Indices of the input points dropped at their frame's edge.
    patch_size : int
    """

    patches: np.ndarray
    centers: np.ndarray
    frames: np.ndarray
    kept: np.ndarray
    dropped: np.ndarray
    patch_size: int


def frame_indices(points_tyx, n_frames: int | None = None) -> np.ndarray:
    """The frame of each ``(t, y, x)`` point (``t`` rounded); InputError for one outside the stack.

    Examples
    --------
    >>> frame_indices([[0.0, 5, 5], [1.9, 5, 5]], 3).tolist()
    [0, 2]
    """
    pts = np.asarray(points_tyx, dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(pts).all():
        raise InputError("Some points have no position (NaN): remove them from the points layer.")
    frames = np.rint(pts[:, 0]).astype(np.int64)
    bad = (frames < 0) | (frames >= n_frames) if n_frames is not None else frames < 0
    if bad.any():
        t = int(frames[np.flatnonzero(bad)[0]])
        stack = f"the stack's frames 0 to {n_frames - 1}" if n_frames is not None else "frames, which count from 0"
        raise InputError(
            f"{int(bad.sum()):,} points lie outside {stack} (the first on frame {t}): "
            "remove them or choose the image they were picked on."
        )
    return frames


def split_by_frame(frames) -> list[tuple[int, np.ndarray]]:
    """``(frame, indices of its points)`` for each frame that has points, in frame order.

    Examples
    --------
    >>> [(t, idx.tolist()) for t, idx in split_by_frame([2, 0, 2])]
    [(0, [1]), (2, [0, 2])]
    """
    frames = np.asarray(frames, dtype=np.int64).ravel()
    order = np.argsort(frames, kind="stable")
    values, starts = np.unique(frames[order], return_index=True)
    return [(int(t), idx) for t, idx in zip(values, np.split(order, starts[1:]))]


def cut_frames(
    read_plane: Callable[[int], np.ndarray], points_tyx, patch_size: int, *, edge: str = "drop", n_frames=None
) -> FramePatches:
    """Cut the patches of every frame that has points, one plane read at a time.

    Parameters
    ----------
    read_plane : callable
        ``read_plane(t)`` returns frame ``t`` as a 2-D array.
    points_tyx : array_like, shape (N, 3)
        ``(t, y, x)`` in the stack's pixels.
    patch_size : int
    edge : str
        As in :func:`~.patches.extract_patches`.
    n_frames : int, optional
        The stack's length, to refuse points beyond it.

    Returns
    -------
    FramePatches
        In input order, as :func:`~.patches.extract_patches` keeps them.
    """
    pts = np.asarray(points_tyx, dtype=np.float64).reshape(-1, 3)
    frames = frame_indices(pts, n_frames)
    parts, kept, dropped = [], [], []
    for t, idx in split_by_frame(frames):
        ps = extract_patches(read_plane(t), pts[idx, 1:], patch_size, edge=edge)
        parts.append((ps.patches, ps.centers))
        kept.append(idx[ps.kept])
        dropped.append(idx[ps.dropped])
    if not parts:
        raise InputError("There are no points: detect atoms or add points first.")
    kept_all = np.concatenate(kept)
    order = np.argsort(kept_all, kind="stable")
    return FramePatches(
        patches=np.concatenate([p for p, _ in parts])[order],
        centers=np.concatenate([c for _, c in parts]).reshape(-1, 2)[order],
        frames=frames[kept_all][order],
        kept=kept_all[order],
        dropped=np.sort(np.concatenate(dropped)),
        patch_size=int(patch_size),
    )


def with_frames(table: pd.DataFrame, fp: FramePatches, symmetry: int) -> pd.DataFrame:
    """The encoder's table (a row per patch of ``fp``) after a ``frame`` column, with the lattice check
    done frame by frame (:func:`~.bond_order.with_lattice_check`: atoms of different frames are not neighbours).
    """
    table = table.reset_index(drop=True)
    checked = []
    for _, idx in split_by_frame(fp.frames):
        rows = with_lattice_check(table.iloc[idx], fp.centers[idx], symmetry)
        checked.append(rows.set_index(pd.Index(idx)))
    out = pd.concat(checked).sort_index().reset_index(drop=True)
    out.insert(0, "frame", fp.frames.astype(np.int64))
    return out


def largest_frame(frames) -> np.ndarray:
    """Indices of the rows of the frame with the most atoms (the first such frame)."""
    groups = split_by_frame(frames)
    if not groups:
        return np.zeros(0, dtype=np.int64)
    return max(groups, key=lambda group: len(group[1]))[1]


def frame_spacing(centers_yx, frames) -> float:
    """The typical atom spacing within a frame (:func:`~.maps.typical_spacing` of the fullest frame)."""
    centers = np.asarray(centers_yx, dtype=np.float64).reshape(-1, 2)
    return typical_spacing(centers[largest_frame(frames)])


def _kept_labels(labels, kept):
    return None if labels is None else np.asarray(labels)[kept]


def analyse_frames_iter(
    read_plane,
    points_tyx,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    n_frames: int | None = None,
    labels=None,
    edge: str = "drop",
    stop=None,
    model: RVAE | None = None,
) -> Generator[Progress, None, Analysis]:
    """Cut every frame's patches, train one model on all of them and encode them, lattice-check frame by frame.

    As :func:`~.analysis.analyse_iter` for a stack: ``read_plane`` and
    ``points_tyx`` as in :func:`cut_frames`; ``labels`` per input point.
    The analysis's table starts with ``frame``; its centers are ``(y, x)``.
    """
    t_start = time.perf_counter()
    if model is not None:
        model_config = model.config
    fp = cut_frames(read_plane, points_tyx, model_config.patch_size, edge=edge, n_frames=n_frames)
    t_extract = time.perf_counter() - t_start
    # The class window follows the spacing within a frame, not across stacked frames.
    train_config = resolve_class_window(train_config, model_config, fp.centers[largest_frame(fp.frames)])
    # Without centers: the lattice check is done frame by frame below.
    analysis = yield from train_patches_iter(
        fp.patches, None, model_config, train_config, labels=_kept_labels(labels, fp.kept), stop=stop, model=model
    )
    return _framed(analysis, fp, t_extract)


def _framed(analysis: Analysis, fp: FramePatches, t_extract: float) -> Analysis:
    """A patch-stack analysis of ``fp`` made a stack's: frames, lattice check, kept/dropped points, centers."""
    analysis.table = with_frames(analysis.table, fp, analysis.model.config.symmetry)
    analysis.kept, analysis.dropped, analysis.centers = fp.kept, fp.dropped, fp.centers
    analysis.seconds["extract"] = t_extract
    analysis.seconds["total"] += t_extract
    return analysis


def apply_model_frames(
    read_plane, points_tyx, model: RVAE, *, n_frames: int | None = None, labels=None, edge: str = "drop"
) -> Analysis:
    """Encode every frame's points with a trained model (:func:`~.analysis.apply_model` for a stack)."""
    t_start = time.perf_counter()
    fp = cut_frames(read_plane, points_tyx, model.config.patch_size, edge=edge, n_frames=n_frames)
    t_extract = time.perf_counter() - t_start
    return _framed(encode_patches(model, fp.patches, labels=_kept_labels(labels, fp.kept)), fp, t_extract)


def paint_frames(
    shape,
    centers_yx,
    table: pd.DataFrame,
    *,
    period: float = 360.0,
    mode: str = "nearest",
    radius: float | None = None,
    psi_period: float | None = None,
) -> dict[str, np.ndarray]:
    """:func:`~.exports.result_maps` frame by frame, as ``(T, Y, X)`` stacks.

    Parameters
    ----------
    shape : (int, int, int)
        ``(T, Y, X)`` of the stack.
    centers_yx : array_like, shape (N, 2)
    table : DataFrame
        One row per center, with a ``frame`` column.
    period, mode, radius, psi_period
        As in :func:`~.exports.result_maps`; ``radius`` defaults to :func:`frame_spacing`.

    Returns
    -------
    dict of ndarray
        The maps ``result_maps`` makes for this table; frames without atoms stay empty.
    """
    n_frames, height, width = (int(s) for s in shape)
    centers = np.asarray(centers_yx, dtype=np.float64).reshape(-1, 2)
    frames = table["frame"].to_numpy()
    if radius is None:
        radius = frame_spacing(centers, frames)
    stacks: dict[str, np.ndarray] = {}
    for t, idx in split_by_frame(frames):
        if not 0 <= t < n_frames:
            continue
        rows = table.iloc[idx].reset_index(drop=True)
        maps = result_maps(
            (height, width), centers[idx], rows, period=period, mode=mode, radius=radius, psi_period=psi_period
        )
        for name, plane in maps.items():
            if name not in stacks:
                stacks[name] = np.full((n_frames, height, width), _EMPTY.get(name, 0), dtype=plane.dtype)
            stacks[name][t] = plane
    return stacks
