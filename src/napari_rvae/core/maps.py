"""Per-atom results painted back onto the scan: angle map, class map, arrows, colours.

Every map is a tessellation of the image into the pixels nearest to each atom
(limited to a radius, so vacuum and holes stay empty), computed once with a
Euclidean distance transform that also returns the nearest seed pixel; the
angle and class maps are then plain look-ups into the per-atom values. The
"smooth" angle map interpolates the angle's cosine and sine (a normalised
Gaussian convolution of the atoms' values) and converts back, so that angles
average correctly across the wrap at the period (359 deg and 1 deg give 0 deg,
not 180 deg).

Angles are degrees counter-clockwise as displayed (napari's y axis points
down), in ``[0, period)`` where ``period = 360 / symmetry``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .errors import InputError

__all__ = [
    "angle_colors",
    "angle_map",
    "class_colors",
    "class_map",
    "cyclic_colors",
    "nearest_atom_index",
    "orientation_vectors",
    "typical_spacing",
]

MAP_MODES = ("nearest", "smooth")


def _check(shape, centers_yx, values=None, what="values"):
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"A map shape must be two integers (height, width), not {shape!r}.") from None
    if h < 1 or w < 1:
        raise InputError(f"A map must be at least 1 x 1 pixel, not {h} x {w}.")
    centers = np.asarray(centers_yx, dtype=np.float64).reshape(-1, 2)
    if values is not None and len(np.asarray(values)) != len(centers):
        raise InputError(f"There are {len(centers)} atoms but {len(np.asarray(values))} {what}.")
    return (h, w), centers


def typical_spacing(centers_yx) -> float:
    """Median distance from each atom to its nearest neighbour (pixels); 1 for fewer than 2 atoms."""
    centers = np.asarray(centers_yx, dtype=np.float64).reshape(-1, 2)
    if len(centers) < 2:
        return 1.0
    # A subsample is plenty for a median and keeps 100,000 atoms fast.
    sample = centers[:: max(1, len(centers) // 20000)]
    dist, _ = cKDTree(centers).query(sample, k=2)
    d = dist[:, 1]
    d = d[d > 0]
    return float(np.median(d)) if len(d) else 1.0


def nearest_atom_index(shape, centers_yx, radius: float | None = None) -> np.ndarray:
    """For every pixel, the index of the nearest atom, or ``-1`` beyond ``radius``.

    Parameters
    ----------
    shape : (int, int)
        Image shape (H, W).
    centers_yx : array_like, shape (N, 2)
        Atom positions in pixels (y, x); atoms outside the image are ignored.
    radius : float, optional
        Pixels farther than this from every atom get ``-1``. Default: the
        typical nearest-neighbour spacing (:func:`typical_spacing`), so the
        lattice is covered and empty regions stay empty. ``np.inf`` for none.

    Returns
    -------
    ndarray of int32, shape (H, W)

    Notes
    -----
    Atoms are placed on their nearest pixel; where two atoms share a pixel the
    later one wins. This is the tessellation of the pixel grid, exact to half a
    pixel.
    """
    (h, w), centers = _check(shape, centers_yx)
    index = np.full((h, w), -1, dtype=np.int32)
    if len(centers) == 0:
        return index
    if radius is None:
        radius = typical_spacing(centers)
    iy = np.rint(centers[:, 0]).astype(np.int64)
    ix = np.rint(centers[:, 1]).astype(np.int64)
    inside = np.flatnonzero((iy >= 0) & (iy < h) & (ix >= 0) & (ix < w))
    if len(inside) == 0:
        return index
    seeds = np.full((h, w), -1, dtype=np.int32)
    seeds[iy[inside], ix[inside]] = inside.astype(np.int32)
    # The transform measures the distance to the nearest zero, so seeds are the zeros.
    # Indices only: scipy's distances cost as much again, and the squared
    # distance to the nearest seed pixel follows from the indices cheaply.
    ny, nx = ndimage.distance_transform_edt(seeds < 0, return_distances=False, return_indices=True)
    index = seeds[ny, nx]
    if np.isfinite(radius):
        ny -= np.arange(h, dtype=ny.dtype)[:, None]
        nx -= np.arange(w, dtype=nx.dtype)[None, :]
        np.multiply(ny, ny, out=ny)
        np.multiply(nx, nx, out=nx)
        ny += nx
        index[ny > float(radius) ** 2] = -1
    return index


def _period(period) -> float:
    period = float(period)
    if not (np.isfinite(period) and period > 0):
        raise InputError(f"The angle period must be a positive number of degrees, not {period}.")
    return period


def angle_map(
    shape,
    centers_yx,
    angles_deg,
    *,
    period: float = 360.0,
    mode: str = "nearest",
    radius: float | None = None,
    smoothing: float | None = None,
    index: np.ndarray | None = None,
) -> np.ndarray:
    """An image where every pixel carries the angle of the atoms around it.

    Parameters
    ----------
    shape : (int, int)
        Image shape (H, W).
    centers_yx : array_like, shape (N, 2)
        Atom positions in pixels.
    angles_deg : array_like, shape (N,)
        Each atom's angle in degrees (any range; wrapped into ``[0, period)``).
    period : float
        The angle's period, ``360 / symmetry``.
    mode : {"nearest", "smooth"}
        ``"nearest"``: each pixel takes its nearest atom's angle (a
        tessellation). ``"smooth"``: a Gaussian-weighted circular mean of the
        atoms' angles (width ``smoothing``).
    radius : float, optional
        Pixels farther than this from every atom are NaN (default: the typical
        atom spacing).
    smoothing : float, optional
        Gaussian sigma in pixels for ``"smooth"`` (default: the typical atom
        spacing).
    index : ndarray, optional
        A precomputed :func:`nearest_atom_index` for these atoms and radius
        (to share one tessellation between maps).

    Returns
    -------
    ndarray of float32, shape (H, W)
        Angles in ``[0, period)``, NaN where there is no atom within ``radius``.
    """
    (h, w), centers = _check(shape, centers_yx, angles_deg, "angles")
    period = _period(period)
    if mode not in MAP_MODES:
        raise InputError(f"The map mode must be one of {MAP_MODES}, not {mode!r}.")
    angles = np.mod(np.asarray(angles_deg, dtype=np.float64), period)
    if index is None:
        index = nearest_atom_index((h, w), centers, radius)
    empty = index < 0
    if mode == "nearest":
        lut = np.append(angles, np.nan).astype(np.float32)  # index -1 reads the trailing NaN
        return lut[index]

    sigma = float(smoothing) if smoothing else typical_spacing(centers)
    out = _smoothed_angles((h, w), centers, angles, period, sigma)
    out[empty] = np.nan
    return out


def _smoothed_angles(shape, centers: np.ndarray, angles: np.ndarray, period: float, sigma: float) -> np.ndarray:
    """Gaussian-weighted circular mean of the angles at every pixel; NaN where it is undefined.

    Normalised convolution of the unit vectors at period-scaled angles. The
    Gaussian is wide (about one atom spacing), so it runs on a grid a few
    times coarser and is interpolated back up: same map, a fraction of the time.
    """
    h, w = shape
    step = max(1, int(sigma // 3))
    ch, cw = -(-h // step), -(-w // step)
    iy = np.rint(centers[:, 0]).astype(np.int64) // step
    ix = np.rint(centers[:, 1]).astype(np.int64) // step
    ok = (iy >= 0) & (iy < ch) & (ix >= 0) & (ix < cw)
    flat = iy[ok] * cw + ix[ok]
    phase = angles[ok] * (2 * np.pi / period)
    planes = []
    for part in (np.cos(phase), np.sin(phase)):
        coarse = np.bincount(flat, weights=part, minlength=ch * cw).reshape(ch, cw).astype(np.float32)
        coarse = ndimage.gaussian_filter(coarse, sigma / step, mode="constant", truncate=3.0)
        if step > 1:
            coarse = ndimage.zoom(coarse, step, order=1, grid_mode=True, mode="nearest")[:h, :w]
        planes.append(coarse)
    cos, sin = planes
    out = np.mod(np.arctan2(sin, cos) * np.float32(period / (2 * np.pi)), np.float32(period)).astype(np.float32)
    # Where neighbours disagree completely the mean direction is undefined.
    out[np.hypot(cos, sin) < 1e-6] = np.nan
    return out


def class_map(
    shape, centers_yx, classes, radius: float | None = None, *, index: np.ndarray | None = None
) -> np.ndarray:
    """A label image: 0 = background, class ``k`` of the nearest atom -> ``k + 1``.

    Parameters
    ----------
    shape : (int, int)
    centers_yx : array_like, shape (N, 2)
    classes : array_like of int, shape (N,)
        Class codes ``0..C-1``; negative codes (unknown) paint as background.
    radius : float, optional
        As in :func:`nearest_atom_index`.
    index : ndarray, optional
        A precomputed :func:`nearest_atom_index`.

    Returns
    -------
    ndarray of int32, shape (H, W)
    """
    (h, w), centers = _check(shape, centers_yx, classes, "classes")
    if index is None:
        index = nearest_atom_index((h, w), centers, radius)
    codes = np.asarray(classes, dtype=np.int64)
    lut = np.append(np.where(codes >= 0, codes + 1, 0), 0).astype(np.int32)
    return lut[index]


def orientation_vectors(centers_yx, angles_deg, length: float | None = None) -> np.ndarray:
    """Arrows for a napari Vectors layer, one per atom, pointing along its angle.

    Parameters
    ----------
    centers_yx : array_like, shape (N, 2)
    angles_deg : array_like, shape (N,)
        Degrees counter-clockwise as displayed.
    length : float, optional
        Arrow length in pixels (default: 0.4 x the typical spacing).

    Returns
    -------
    ndarray of float32, shape (N, 2, 2)
        ``[:, 0]`` is the start (y, x) and ``[:, 1]`` the direction
        ``(dy, dx) = (-sin, cos) * length`` (y points down on screen, so a
        counter-clockwise angle has a negative dy).
    """
    centers = np.asarray(centers_yx, dtype=np.float64).reshape(-1, 2)
    angles = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if len(angles) != len(centers):
        raise InputError(f"There are {len(centers)} atoms but {len(angles)} angles.")
    if length is None:
        length = 0.4 * typical_spacing(centers)
    out = np.empty((len(centers), 2, 2), dtype=np.float32)
    out[:, 0] = centers
    out[:, 1, 0] = -np.sin(angles) * length
    out[:, 1, 1] = np.cos(angles) * length
    return out


def cyclic_colors(n: int = 256) -> np.ndarray:
    """A cyclic colour wheel, (n, 4) RGBA floats: entry 0 and entry n (the wrap) agree.

    A hue wheel at high saturation, so it stays readable when blended
    additively over a grey scan (a cyclic map that passes through black, like
    "twilight", would vanish there).
    """
    return _hue_to_rgba(np.arange(n) / n)


def _hue_to_rgba(hue: np.ndarray, saturation: float = 0.85, value: float = 1.0) -> np.ndarray:
    h6 = (np.asarray(hue, dtype=np.float64) % 1.0) * 6.0
    # HSV -> RGB, vectorised: each channel is a clipped triangle wave of the hue.
    k = np.stack([(5 + h6) % 6, (3 + h6) % 6, (1 + h6) % 6], axis=-1)
    rgb = value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1)
    alpha = np.ones((*rgb.shape[:-1], 1))
    return np.concatenate([rgb, alpha], axis=-1).astype(np.float32)


def angle_colors(angles_deg, period: float = 360.0) -> np.ndarray:
    """RGBA (N, 4) colours on :func:`cyclic_colors`, wrapping at ``period``; NaN -> grey."""
    period = _period(period)
    angles = np.asarray(angles_deg, dtype=np.float64)
    out = _hue_to_rgba(np.nan_to_num(angles) / period)
    out[~np.isfinite(angles)] = (0.5, 0.5, 0.5, 1.0)
    return out


# Distinct colours for classes (tab10 without grey), repeated for many classes.
_CLASS_RGB = (
    np.array(
        [
            (31, 119, 180),
            (255, 127, 14),
            (44, 160, 44),
            (214, 39, 40),
            (148, 103, 189),
            (140, 86, 75),
            (227, 119, 194),
            (188, 189, 34),
            (23, 190, 207),
        ]
    )
    / 255.0
)


def class_colors(classes) -> np.ndarray:
    """RGBA (N, 4) colours for class codes; negative codes (unknown) are grey."""
    codes = np.asarray(classes, dtype=np.int64)
    out = np.ones((len(codes), 4), dtype=np.float32)
    out[:, :3] = _CLASS_RGB[np.mod(codes, len(_CLASS_RGB))]
    out[codes < 0, :3] = 0.5
    return out
