"""Cutting a frame into tiles with a halo: chunked detection and patches that agree with the whole frame's.

A tile has a *core* (half-open boxes that cover the frame once) and an
*outer* box: the core plus a halo of context, clipped to the frame. Work runs
on the outer box's pixels (a window of the frame), and each tile keeps what
belongs to its core:

- detection (:func:`detect_tiled`): the settings are fixed once per frame
  (:func:`~napari_rvae.core.detect.detection_settings`); each tile gives the
  maxima whose integer pixel lies in its core
  (:func:`~napari_rvae.core.detect.detection_candidates`), and ties across
  cores are resolved on all the candidates together
  (:func:`~napari_rvae.core.detect.finish_detection`): the same atoms as the
  whole frame, each once;
- patches (:func:`cut_tile`): each tile cuts the patches of the points it
  owns (:func:`owned`: centre in its core), bit for bit those of the whole
  frame.

With a halo of ``detection_halo(settings, patch_size)`` px every pixel of a
core sees the values the whole frame gives it, and the filters' and the
patches' edge modes act only where a tile touches the frame's border.

Keeping the atoms of ``detect_with`` on each window whose centre is in the
core is *not* exact: a plateau of tied maxima can chain its ties across any
halo. Hence candidates per tile, ties per frame. A frame too large to hold
gets its settings tile by tile too (:func:`detection_settings_tiled`).
``cut_tile`` is ``extract_patches``' own steps on a window; only the rule on
the share of points beyond the border is left to :func:`frame_points`, run
once per frame, because it is about all of a frame's points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .detect import (
    _NOISE_K,
    _SIZE_CROP,
    DetectionSettings,
    _check_detection_settings,
    _core_statistics,
    _dog_gain,
    _feature_size,
    _local_box,
    _min_distance,
    _noise_std_read,
    _settings,
    detection_candidates,
    detection_halo,
    finish_detection,
    finite_window,
)
from .errors import InputError
from .patches import (
    BORDER_TOLERANCE,
    PatchSet,
    _check_modes,
    _check_patch_size,
    _check_points,
    _inside_mask,
    _kept_and_dropped,
    _normalize,
    _sample_edge,
    _sample_interior,
)

__all__ = [
    "Tile",
    "tile_grid",
    "owned",
    "detect_tiled",
    "detection_settings_tiled",
    "tile_candidates",
    "cut_tile",
    "frame_points",
]


@dataclass(frozen=True)
class Tile:
    """One tile of a frame.

    Attributes
    ----------
    core : (int, int, int, int)
        ``(y0, y1, x0, x1)``, half-open, frame px: what the tile owns.
    outer : (int, int, int, int)
        The core plus the halo, clipped to the frame: the window to read.
    frame_shape : (int, int), optional
        ``(H, W)`` of the frame. With it, a core on the frame's border also
        owns the points just beyond that border (as ``extract_patches``
        accepts up to 1 px out).
    """

    core: tuple[int, int, int, int]
    outer: tuple[int, int, int, int]
    frame_shape: tuple[int, int] | None = None

    @property
    def origin(self) -> tuple[int, int]:
        """``(y0, x0)`` of the outer box: where the window starts in the frame."""
        return self.outer[0], self.outer[2]

    @property
    def rows(self) -> slice:
        """The outer box's rows."""
        return slice(self.outer[0], self.outer[1])

    @property
    def cols(self) -> slice:
        """The outer box's columns."""
        return slice(self.outer[2], self.outer[3])


def tile_grid(frame_shape, tile: int, halo: int) -> list[Tile]:
    """Tiles whose cores cover the frame once, in raster order.

    Parameters
    ----------
    frame_shape : (int, int)
        ``(H, W)`` of the frame.
    tile : int
        Side of the cores in px (the last row and column of tiles get what is left).
    halo : int
        Context around each core in px, e.g. ``detection_halo(settings, patch_size)``.

    Returns
    -------
    list of Tile

    Raises
    ------
    InputError
        For a tile side below 1 px or a negative halo.

    Examples
    --------
    >>> [t.core for t in tile_grid((5, 7), 4, 1)]
    [(0, 4, 0, 4), (0, 4, 4, 7), (4, 5, 0, 4), (4, 5, 4, 7)]
    >>> tile_grid((5, 7), 4, 1)[3].outer
    (3, 5, 3, 7)
    """
    h, w = (int(n) for n in frame_shape)
    if not (int(tile) == tile and tile >= 1):
        raise InputError(f"The tile side must be a whole number of pixels, at least 1, not {tile!r}.")
    if not (int(halo) == halo and halo >= 0):
        raise InputError(f"The tile halo must be a whole number of pixels, at least 0, not {halo!r}.")
    tile, halo = int(tile), int(halo)
    tiles = []
    for y0 in range(0, h, tile):
        y1 = min(h, y0 + tile)
        for x0 in range(0, w, tile):
            x1 = min(w, x0 + tile)
            outer = (max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo))
            tiles.append(Tile(core=(y0, y1, x0, x1), outer=outer, frame_shape=(h, w)))
    return tiles


def owned(points_yx, tile: Tile) -> np.ndarray:
    """Which points a tile owns: centre in its half-open core.

    A centre exactly on the border between two cores belongs to the one
    that starts there, so every point of the frame is owned by exactly one
    tile of a :func:`tile_grid`. A core on the frame's border (when the tile
    knows the frame) also owns the points beyond it; NaN points are owned by
    none.

    Parameters
    ----------
    points_yx : array_like, shape (N, 2)
        ``(y, x)`` in frame px.
    tile : Tile

    Returns
    -------
    ndarray of bool, shape (N,)

    Examples
    --------
    >>> a, b = tile_grid((8, 8), 4, 0)[:2]
    >>> owned([[1.0, 3.999], [1.0, 4.0]], a).tolist(), owned([[1.0, 3.999], [1.0, 4.0]], b).tolist()
    ([True, False], [False, True])
    """
    pts = np.asarray(points_yx, dtype=np.float64).reshape(-1, 2)
    y0, y1, x0, x1 = (float(v) for v in tile.core)
    if tile.frame_shape is not None:
        h, w = tile.frame_shape
        y0, x0 = (-np.inf if y0 <= 0 else y0), (-np.inf if x0 <= 0 else x0)
        y1, x1 = (np.inf if y1 >= h else y1), (np.inf if x1 >= w else x1)
    y, x = pts[:, 0], pts[:, 1]
    return (y >= y0) & (y < y1) & (x >= x0) & (x < x1)


def tile_candidates(window, tile: Tile, settings: DetectionSettings | None) -> pd.DataFrame:
    """The detection candidates a tile owns (maxima in its core), from its outer window.

    One task of chunked detection: concatenate every tile's candidates and
    pass them to :func:`~napari_rvae.core.detect.finish_detection`.

    Parameters
    ----------
    window : array_like
        The frame's pixels in ``tile.outer`` (finite; float32 is what is used).
    tile : Tile
        From :func:`tile_grid` with a halo of at least ``detection_halo(settings)``.
    settings : DetectionSettings or None
        The whole frame's settings.

    Returns
    -------
    pandas.DataFrame
        See :func:`~napari_rvae.core.detect.detection_candidates`.
    """
    return detection_candidates(window, settings, origin=tile.origin, frame_shape=tile.frame_shape, core=tile.core)


def detect_tiled(
    read_window: Callable[[slice, slice], np.ndarray], frame_shape, settings: DetectionSettings | None, *, tile: int
) -> pd.DataFrame:
    """Detection tile by tile: the same atoms as on the whole frame, each once.

    Parameters
    ----------
    read_window : callable
        ``read_window(rows, cols)`` -> the frame's pixels there (float32).
    frame_shape : (int, int)
        ``(H, W)`` of the frame.
    settings : DetectionSettings or None
        From :func:`~napari_rvae.core.detect.detection_settings` on the
        whole frame; ``None``: nothing to find.
    tile : int
        Side of the tiles' cores in px; the halo is ``detection_halo(settings)``.

    Returns
    -------
    pandas.DataFrame
        ``"y"``, ``"x"``, ``"strength"`` as
        ``detect_with(frame, settings)`` gives them.

    Examples
    --------
    >>> from napari_rvae.core.detect import detect_with, detection_settings
    >>> from napari_rvae.core.synthetic import make_lattice
    >>> img = make_lattice((96, 96), seed=1).image
    >>> s = detection_settings(img)
    >>> tiled = detect_tiled(lambda r, c: img[r, c], img.shape, s, tile=20)
    >>> tiled.equals(detect_with(img, s))
    True
    """
    if settings is None:
        return finish_detection(pd.DataFrame(), None, frame_shape)
    tiles = tile_grid(frame_shape, tile, detection_halo(settings))
    parts = [tile_candidates(read_window(t.rows, t.cols), t, settings) for t in tiles]
    return finish_detection(pd.concat(parts, ignore_index=True), settings, frame_shape)


def detection_settings_tiled(
    read_window: Callable[[slice, slice], np.ndarray],
    frame_shape,
    *,
    tile: int,
    sigma=None,
    min_distance=None,
    threshold=0.1,
    dark=False,
    margin=0,
    refine=True,
    refine_method="com",
) -> DetectionSettings | None:
    """:func:`~napari_rvae.core.detect.detection_settings` of a frame read tile by tile (a mosaic larger
    than memory): the same settings, with one tile's pixels in memory at a time.

    The feature size comes from the central crop (at most 1024 x 1024 px),
    the noise from strided samples of the frame (about a million 2 x 2
    blocks), the strongest response and the candidates' strengths from every
    tile's core.

    Parameters
    ----------
    read_window : callable
        ``read_window(rows, cols)`` -> the frame's finite pixels there; the
        slices may have a step.
    frame_shape : (int, int)
    tile : int
        Side of the tiles' cores in px.
    sigma, min_distance, threshold, dark, margin, refine, refine_method
        As for :func:`~napari_rvae.core.detect.detect_atoms`.

    Returns
    -------
    DetectionSettings or None
        ``None``: nothing to find.

    Examples
    --------
    >>> from napari_rvae.core.detect import detection_settings
    >>> from napari_rvae.core.synthetic import make_lattice
    >>> img = make_lattice((96, 96), seed=1).image.astype(np.float32)
    >>> detection_settings_tiled(lambda r, c: img[r, c], img.shape, tile=32) == detection_settings(img)
    True
    """
    _check_detection_settings(sigma, min_distance, threshold, margin)
    h, w = (int(n) for n in frame_shape)

    def read(rows, cols):
        win = np.asarray(read_window(rows, cols), dtype=np.float32)
        return -win if dark else win

    if _constant_crop(read, (h, w)) and _constant_frame(read, (h, w), tile):
        return None
    sigma = float(_feature_size(read, (h, w)) if sigma is None else sigma)
    md = _min_distance(sigma, min_distance)
    cut = _NOISE_K * (_noise_std_read(read, (h, w)) * _dog_gain(sigma))  # as the whole frame rounds it
    halo = detection_halo(DetectionSettings(sigma=sigma, min_distance=md, floor=cut, min_strength=0.0))
    peak, parts = -np.inf, []
    for t in tile_grid((h, w), tile, halo):
        win = read(t.rows, t.cols)
        core_peak, strength = _core_statistics(win, sigma, md, cut, _local_box(t.core, t.origin, win.shape))
        peak = max(peak, core_peak)
        parts.append(strength)
    if not peak > 0:
        return None
    floor = max(cut, 1e-6 * peak)
    strength = np.concatenate(parts)
    # the whole frame keeps responses above the float32 floor; those above the noise cut include them
    strength = strength[strength > np.float32(floor)]
    options = dict(dark=dark, margin=margin, refine=refine, refine_method=refine_method)
    return _settings(sigma, md, floor, strength, threshold, **options)


def _constant_crop(read, shape) -> bool:
    """Whether the central crop (the feature size's) is constant: only then can the frame be."""
    h, w = shape
    ch, cw = min(h, _SIZE_CROP), min(w, _SIZE_CROP)
    crop = read(slice((h - ch) // 2, (h - ch) // 2 + ch), slice((w - cw) // 2, (w - cw) // 2 + cw))
    return bool(crop.min() == crop.max())


def _constant_frame(read, shape, tile: int) -> bool:
    """Whether every pixel of the frame has one value (read tile by tile)."""
    first = None
    for t in tile_grid(shape, tile, 0):
        win = read(t.rows, t.cols)
        lo, hi = float(win.min()), float(win.max())
        if lo != hi or (first is not None and lo != first):
            return False
        first = lo
    return True


def cut_tile(
    window, origin, points_yx, patch_size, *, edge="drop", cval=None, frame_shape=None, normalize="none"
) -> PatchSet:
    """Patches around points, cut from a window of the frame: those the whole frame gives, bit for bit.

    Parameters
    ----------
    window : array_like, shape (h, w)
        The frame's (finite) pixels in a tile's outer box.
    origin : (int, int)
        ``(y0, x0)`` of the window in the frame.
    points_yx : array_like, shape (N, 2)
        ``(y, x)`` in frame px: points the tile owns (:func:`owned`), whose
        tile had a halo of at least ``detection_halo(settings, patch_size)``
        (at least ``patch_size + 1``), checked for the whole frame first
        (:func:`frame_points`). No points: an empty set.
    patch_size : int
    edge : {"drop", "reflect", "constant", "nearest"}
        As for :func:`~napari_rvae.core.patches.extract_patches`. The edge
        modes act at the frame's border, which the tiles of points near it
        touch (their halo reaches it).
    cval : float, optional
        Padding for ``"constant"``. Needed unless the window is the whole
        frame: the default there is the *frame's* median, which a window
        does not know.
    frame_shape : (int, int), optional
        ``(H, W)``: the points are then checked against the frame (as the
        whole frame's cut checks them), and the window's size too. Without
        it, against ``(y0 + h, x0 + w)``.
    normalize : {"none", "patch"}
        Per-patch normalisation only: the stack-wide ones need the whole stack.

    Returns
    -------
    PatchSet
        ``centers`` in frame px; ``kept`` and ``dropped`` index ``points_yx``.

    Raises
    ------
    InputError
        For what ``extract_patches`` refuses.
    ValueError
        For a window too small for the patches, ``"constant"`` without
        ``cval`` on a part of a frame, or a stack-wide ``normalize``.
    """
    _check_modes(edge, normalize)
    if normalize not in ("none", "patch"):
        raise ValueError(f"normalize={normalize!r} needs the whole stack: normalise after cutting every tile.")
    img = _tile_image(window)
    oy, ox = int(origin[0]), int(origin[1])
    # without the frame's shape, the points are checked against the frame up to the window's far end
    frame = tuple(frame_shape) if frame_shape is not None else (oy + img.shape[0], ox + img.shape[1])
    p = _check_patch_size(patch_size, frame if frame_shape is not None else img.shape)
    pts = _tile_points(points_yx, frame)
    _check_window(img.shape, (oy, ox), frame_shape, p, edge, cval)
    # a float minus a whole number no larger than it is exact, so the window sees the same offsets
    local = pts - np.array([oy, ox], np.float64)
    inside = _inside_mask(img.shape, local, p)
    kept, dropped = _kept_and_dropped(inside, edge)
    out = np.empty((kept.size, p, p), dtype=np.float32)
    if edge == "drop":
        _sample_interior(img, local[kept], np.arange(kept.size), out)
    else:
        _sample_interior(img, local, np.flatnonzero(inside), out)
        _sample_edge(img, local, np.flatnonzero(~inside), edge, cval, out)
    _normalize(out, normalize)
    return PatchSet(patches=out, centers=pts[kept], kept=kept, dropped=dropped, patch_size=p)


def frame_points(points_yx, frame_shape) -> np.ndarray:
    """The frame's points checked as ``extract_patches`` checks them on the whole frame.

    Run it once per frame before cutting tiles: its share rule (at most 5 %
    of the points just beyond the border) is about all of a frame's points,
    which :func:`cut_tile` does not see.

    Parameters
    ----------
    points_yx : array_like, shape (N, 2)
        ``(y, x)`` in frame px.
    frame_shape : (int, int)

    Returns
    -------
    ndarray of float64, shape (N, 2)

    Raises
    ------
    InputError
        With ``extract_patches``' message, for points it refuses.
    """
    return _check_points(points_yx, tuple(int(n) for n in frame_shape))


def _tile_points(points_yx, frame) -> np.ndarray:
    """A tile's points as float64 ``(N, 2)``: finite and at most 1 px beyond the frame, else refused."""
    try:
        pts = np.asarray(points_yx, dtype=np.float64)
    except (TypeError, ValueError):
        return _check_points(points_yx, frame)  # its message
    if pts.size == 0:
        return np.empty((0, 2), np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
        return _check_points(pts, frame)
    h, w = frame
    beyond = np.maximum.reduce([-0.5 - pts[:, 0], pts[:, 0] - (h - 0.5), -0.5 - pts[:, 1], pts[:, 1] - (w - 0.5)])
    if (beyond > BORDER_TOLERANCE).any():
        return _check_points(pts, frame)  # its message
    return pts


def _tile_image(window) -> np.ndarray:
    """The window as a finite 2-D float32 array (NaNs are filled for the whole frame, before tiling)."""
    return finite_window(window, "A tile's window")


def _check_window(shape, origin, frame_shape, p: int, edge: str, cval) -> None:
    """Refuse windows whose patches could differ from the whole frame's."""
    whole = frame_shape is not None and tuple(shape) == tuple(frame_shape)
    if edge == "constant" and cval is None and not whole:
        raise ValueError("edge='constant' on a tile needs cval (the whole frame's median, by default).")
    if frame_shape is None:
        return
    for n, o, full in zip(shape, origin, frame_shape):
        if o < 0 or o + n > full:
            raise ValueError(f"A {shape} window at {origin} does not lie in the {tuple(frame_shape)} frame.")
        if n <= p and n != full:
            raise ValueError(f"A {shape} window is too small for {p} px patches: use a halo of at least {p + 1} px.")
