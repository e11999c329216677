"""Cutting a square patch around every atom: "atoms in, patches out".

The patch around a point ``(y, x)`` is sampled by bilinear interpolation so
that its centre *is* the point, to sub-pixel accuracy: patch pixel ``(i, j)``
samples the image at ``(y + i - (P - 1) / 2, x + j - (P - 1) / 2)``. Points use
napari's axis order ``(y, x)`` = ``(row, column)`` with pixel centres at integer
coordinates.

Everything here is vectorised: there is no Python loop over points. The points
are processed in chunks; each chunk gathers a ``(P + 1) x (P + 1)`` block per
point from a strided view of the image and blends it in float32 straight into a
preallocated output, so peak memory stays close to the size of the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import InputError
from .image import as_image2d

__all__ = ["PatchSet", "extract_patches", "edge_dropped_count"]

EDGE_MODES = ("drop", "reflect", "constant", "nearest")
NORMALIZE_MODES = ("none", "patch", "global", "minmax")
MIN_PATCH_SIZE = 8

# Points this far (px) beyond the image's outer pixel edges are edge points, not
# mistakes: tools differ on whether pixel i covers [i - 0.5, i + 0.5) or
# [i, i + 1), so sub-pixel positions up to a pixel past the last centre are
# normal. Farther out, or when more than MAX_BORDER_SHARE of the points lie
# outside at all, the points belong to another image or have x and y swapped.
BORDER_TOLERANCE = 1.0
MAX_BORDER_SHARE = 0.05

# A patch (or stack) whose spread is within float32's rounding of its level is constant.
_LEVEL_ROUNDING = 4 * float(np.finfo(np.float32).eps)

# Points per chunk: keeps the per-chunk temporaries (~P^2 * 4 B * 3 per point)
# at a few MB, which is cache friendly and caps the memory overhead.
_CHUNK = 2048


@dataclass(frozen=True)
class PatchSet:
    """Patches cut around points, and which points they came from.

    Attributes
    ----------
    patches : ndarray of float32, shape (M, P, P)
        One patch per kept point, in input order.
    centers : ndarray of float64, shape (M, 2)
        ``(y, x)`` sub-pixel centres of the kept points.
    kept : ndarray of int64, shape (M,)
        Indices of the kept points in the input, increasing.
    dropped : ndarray of int64, shape (D,)
        Indices of the input points dropped because their patch left the image
        (only with ``edge="drop"``; empty otherwise).
    patch_size : int
        ``P``.
    """

    patches: np.ndarray
    centers: np.ndarray
    kept: np.ndarray
    dropped: np.ndarray
    patch_size: int

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    def summary(self) -> str:
        """One human-readable line, e.g. for a status bar or the CLI.

        Examples
        --------
        >>> img = np.zeros((64, 64), np.float32); img[32, 32] = 1
        >>> ps = extract_patches(img, [[32, 32], [3, 40]], 16)
        >>> ps.summary()
        '1 patch of 16 x 16; 1 point within 8 px of the edge dropped'
        """
        m = len(self)
        p = self.patch_size
        text = f"{m:,} patch{'es' if m != 1 else ''} of {p} x {p}"
        d = int(self.dropped.size)
        if d:
            text += f"; {d:,} point{'s' if d != 1 else ''} within {p // 2} px of the edge dropped"
        return text


# ----------------------------------------------------------------------------
# validation


def _check_patch_size(patch_size, shape) -> int:
    try:
        p = int(patch_size)
    except (TypeError, ValueError):
        raise InputError(f"The patch size must be a whole number of pixels, not {patch_size!r}.") from None
    if p != patch_size:
        raise InputError(f"The patch size must be a whole number of pixels, not {patch_size!r}.")
    if p < MIN_PATCH_SIZE:
        raise InputError(f"The patch size {p} px is too small: use at least {MIN_PATCH_SIZE} px.")
    if p > min(shape):
        raise InputError(
            f"The patch size {p} px is larger than the image's smaller side "
            f"({min(shape)} px of {shape[0]} x {shape[1]}): choose a smaller patch size."
        )
    return p


def _check_points(points, shape) -> np.ndarray:
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("The points must be numbers: an (N, 2) table of (y, x) pixel positions.") from None
    if (pts.ndim == 2 and pts.shape[0] == 0) or pts.size == 0:
        raise InputError("There are no points: detect atoms or add points first.")
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"The points have shape {pts.shape}: an (N, 2) table of (y, x) pixel positions is needed.")
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{int(bad.sum()):,} of {len(pts):,} points have NaN or infinite coordinates "
            f"(for example point {i}: {tuple(pts[i])})."
        )
    h, w = shape
    beyond = np.maximum.reduce([-0.5 - pts[:, 0], pts[:, 0] - (h - 0.5), -0.5 - pts[:, 1], pts[:, 1] - (w - 0.5)])
    far = beyond > BORDER_TOLERANCE
    near = (beyond > 0) & ~far
    if far.any() or near.mean() > MAX_BORDER_SHARE:
        bad = far if far.any() else near
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{int((beyond > 0).sum()):,} of {len(pts):,} points lie outside the {h} x {w} image "
            f"(for example point {i} at y={pts[i, 0]:.1f}, x={pts[i, 1]:.1f}). "
            f"Are the points from another image, or in (x, y) instead of (y, x) order?"
        )
    return pts


def _inside_mask(shape, pts: np.ndarray, patch_size: int) -> np.ndarray:
    """True where every sample of the patch lies within the image's pixel centres."""
    c = (patch_size - 1) / 2.0
    h, w = shape
    y, x = pts[:, 0], pts[:, 1]
    return (y - c >= 0) & (y + c <= h - 1) & (x - c >= 0) & (x + c <= w - 1)


def edge_dropped_count(image_shape, points, patch_size) -> int:
    """How many points ``extract_patches(..., edge="drop")`` would drop.

    Cheap (no image needed): widgets use it to show the number live.

    Parameters
    ----------
    image_shape : tuple of int
        ``(H, W)`` of the image (extra leading axes are ignored).
    points : array_like, shape (N, 2)
        ``(y, x)`` positions in pixels.
    patch_size : int
        Patch side ``P`` in pixels.

    Returns
    -------
    int
        Number of points whose patch would leave the image, that is points
        closer than ``(P - 1) / 2`` px to an edge's pixel centre.

    Examples
    --------
    >>> edge_dropped_count((100, 100), [[50, 50], [5, 50], [50, 97.5]], 16)
    2
    """
    shape = tuple(int(s) for s in image_shape[-2:])
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return 0
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"The points have shape {pts.shape}: an (N, 2) table of (y, x) pixel positions is needed.")
    with np.errstate(invalid="ignore"):
        inside = _inside_mask(shape, pts, int(patch_size))
    return int(pts.shape[0] - np.count_nonzero(inside))


# ----------------------------------------------------------------------------
# gathering


def _corners(coord: np.ndarray, c: float, n_max: int):
    """Integer first sample index and float32 fraction, with ``0 <= i0 <= n_max``."""
    start = coord - c
    i0 = np.floor(start)
    np.minimum(i0, n_max, out=i0)  # the last block starts at n_max; fraction becomes 1
    frac = (start - i0).astype(np.float32)
    return i0.astype(np.intp), frac


def _mode_index(idx: np.ndarray, n: int, mode: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Map possibly out-of-range indices into ``[0, n)``; also a validity mask for 'constant'."""
    if mode == "nearest":
        return np.clip(idx, 0, n - 1), None
    if mode == "reflect":  # half-sample symmetric: ... 1 0 | 0 1 2 ... n-1 | n-1 n-2 ...
        m = np.mod(idx, 2 * n)
        return np.where(m >= n, 2 * n - 1 - m, m), None
    valid = (idx >= 0) & (idx < n)
    return np.clip(idx, 0, n - 1), valid


def _blend(block: np.ndarray, fy: np.ndarray, fx: np.ndarray, out: np.ndarray) -> None:
    """Bilinear blend of ``(n, P+1, P+1)`` blocks into ``out`` ``(n, P, P)``, all float32."""
    p = out.shape[1]
    left = block[:, :, :p]
    tmp = np.subtract(block[:, :, 1:], left)  # (n, P+1, P)
    tmp *= fx[:, None, None]
    tmp += left
    top = tmp[:, :p, :]
    np.subtract(tmp[:, 1:, :], top, out=out)
    out *= fy[:, None, None]
    out += top


def _normalize_patchwise(out: np.ndarray) -> None:
    # float64 arithmetic: data at 1e-40 or 1e30 scale would underflow or overflow in float32.
    x = out.astype(np.float64)
    mean = x.mean(axis=(1, 2))
    x -= mean[:, None, None]
    std = np.sqrt((x * x).mean(axis=(1, 2)))
    # A constant patch (up to float32 rounding of its level) stays all zeros.
    std[std <= _LEVEL_ROUNDING * np.abs(mean)] = np.inf
    std[std == 0] = np.inf
    out[...] = x / std[:, None, None]


def extract_patches(image, points, patch_size, *, edge="drop", normalize="none", cval=None) -> PatchSet:
    """Cut a ``patch_size`` x ``patch_size`` patch centred on every point.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Any numeric 2-D image (views and non-contiguous slices are fine).
    points : array_like, shape (N, 2)
        ``(y, x)`` positions in pixels (napari order), sub-pixel allowed. They
        must lie in the image, ``-0.5 <= y <= H - 0.5`` and likewise for x,
        or at most ``BORDER_TOLERANCE`` (1 px) beyond it: those are edge
        points, dropped or padded like any point near the edge.
    patch_size : int
        Side ``P`` of the square patches, at least 8 and at most the image's
        smaller side.
    edge : {"drop", "reflect", "constant", "nearest"}
        What to do with points whose patch leaves the image. ``"drop"``
        skips them and lists them in ``PatchSet.dropped``; the others keep
        every point and extend the image: ``"reflect"`` mirrors it about its
        edge (``d c b a | a b c d | d c b a``, scipy's ``"reflect"``),
        ``"nearest"`` repeats the edge pixel, ``"constant"`` pads with
        ``cval``.
    normalize : {"none", "patch", "global", "minmax"}
        ``"patch"``: each patch to zero mean and unit standard deviation
        (a constant patch becomes all zeros). ``"global"``: the whole stack to
        zero mean and unit standard deviation. ``"minmax"``: the whole stack
        to [0, 1].
    cval : float, optional
        Padding value for ``edge="constant"``. Default: the image's median,
        which for an atom-resolved image is close to the background level.

    Returns
    -------
    PatchSet
        ``patches`` ``(M, P, P)`` float32, ``centers``, ``kept`` and
        ``dropped`` indices.

    Raises
    ------
    InputError
        For a bad image, a patch size below 8 or larger than the image, points
        that are not an (N, 2) table, NaN points, points outside the image, or
        no points at all.

    Notes
    -----
    Patch pixel ``(i, j)`` samples the image at
    ``(y + i - (P - 1) / 2, x + j - (P - 1) / 2)`` by bilinear interpolation,
    so the patch centre (between the middle pixels for even ``P``) is the
    point itself. With ``edge="drop"`` a point is kept exactly when all those
    samples lie within ``[0, H - 1] x [0, W - 1]``.

    Examples
    --------
    >>> img = np.arange(100 * 100, dtype=np.float32).reshape(100, 100)
    >>> ps = extract_patches(img, [[50.0, 50.0], [20.5, 30.25], [2.0, 2.0]], 8)
    >>> ps.patches.shape, ps.kept.tolist(), ps.dropped.tolist()
    ((2, 8, 8), [0, 1], [2])
    >>> float(ps.patches[1, 0, 0]) == (20.5 - 3.5) * 100 + (30.25 - 3.5)
    True
    >>> ps = extract_patches(img, [[2.0, 2.0]], 8, edge="nearest", normalize="minmax")
    >>> float(ps.patches.min()), float(ps.patches.max())
    (0.0, 1.0)
    """
    _check_modes(edge, normalize)
    img = _as_image_allow_constant(image)
    p = _check_patch_size(patch_size, img.shape)
    pts = _check_points(points, img.shape)
    inside = _inside_mask(img.shape, pts, p)
    kept, dropped = _kept_and_dropped(inside, edge)
    centers = pts[kept]
    out = np.empty((centers.shape[0], p, p), dtype=np.float32)
    if edge == "drop":
        _sample_interior(img, centers, np.arange(len(kept)), out)
    else:
        _sample_interior(img, centers, np.flatnonzero(inside), out)
        _sample_edge(img, centers, np.flatnonzero(~inside), edge, cval, out)
    _normalize(out, normalize)
    return PatchSet(patches=out, centers=centers, kept=kept, dropped=dropped, patch_size=p)


def _check_modes(edge: str, normalize: str) -> None:
    if edge not in EDGE_MODES:
        raise InputError(f"Unknown edge mode {edge!r}: use one of {', '.join(EDGE_MODES)}.")
    if normalize not in NORMALIZE_MODES:
        raise InputError(f"Unknown normalize mode {normalize!r}: use one of {', '.join(NORMALIZE_MODES)}.")


def _kept_and_dropped(inside: np.ndarray, edge: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (int64) of the points that get a patch and of those dropped at the edge."""
    if edge == "drop":
        kept = np.flatnonzero(inside)
        dropped = np.flatnonzero(~inside)
    else:
        kept = np.arange(inside.shape[0])
        dropped = np.empty(0, dtype=np.int64)
    return kept.astype(np.int64), dropped.astype(np.int64)


def _sample_interior(img: np.ndarray, centers: np.ndarray, interior: np.ndarray, out: np.ndarray) -> None:
    """Patches ``out[interior]`` of points whose patch lies in the image.

    ``(P + 1)^2`` blocks come straight from a strided view, with no index arrays.
    """
    h, w = img.shape
    p = out.shape[1]
    c = (p - 1) / 2.0
    windows = sliding_window_view(img, (p + 1, p + 1)) if min(h, w) > p else None
    for s in range(0, interior.size, _CHUNK):
        sel = interior[s : s + _CHUNK]
        y0, fy = _corners(centers[sel, 0], c, h - p - 1)
        x0, fx = _corners(centers[sel, 1], c, w - p - 1)
        # A patch as large as the image has no strided view (P + 1 rows do not fit): clipped indices.
        block = windows[y0, x0] if windows is not None else _gather_mode(img, y0, x0, p, "nearest", 0.0)
        if _is_range(sel):  # always the case with edge="drop": blend in place
            _blend(block, fy, fx, out[sel[0] : sel[-1] + 1])
        else:
            _blend_into(block, fy, fx, out, sel)


def _sample_edge(img: np.ndarray, centers, border: np.ndarray, edge: str, cval, out: np.ndarray) -> None:
    """Patches ``out[border]`` of points whose patch leaves the image, extended by ``edge``.

    Explicit index arrays carry the edge mode; ``cval`` None pads with the image's median.
    """
    if not border.size:
        return
    p = out.shape[1]
    c = (p - 1) / 2.0
    fill = float(np.median(img)) if cval is None else float(cval)
    for s in range(0, border.size, _CHUNK):
        sel = border[s : s + _CHUNK]
        start_y = centers[sel, 0] - c
        start_x = centers[sel, 1] - c
        y0 = np.floor(start_y)
        x0 = np.floor(start_x)
        fy = (start_y - y0).astype(np.float32)
        fx = (start_x - x0).astype(np.float32)
        block = _gather_mode(img, y0.astype(np.intp), x0.astype(np.intp), p, edge, fill)
        _blend_into(block, fy, fx, out, sel)


def _blend_into(block: np.ndarray, fy: np.ndarray, fx: np.ndarray, out: np.ndarray, sel: np.ndarray) -> None:
    """``_blend`` into the scattered rows ``out[sel]`` (through a temporary)."""
    tmp = np.empty((sel.size, *out.shape[1:]), np.float32)
    _blend(block, fy, fx, tmp)
    out[sel] = tmp


def _normalize(out: np.ndarray, normalize: str) -> None:
    """Normalise the stack in place (see ``extract_patches``' ``normalize``)."""
    if normalize == "patch":
        for s in range(0, out.shape[0], _CHUNK):
            _normalize_patchwise(out[s : s + _CHUNK])
    elif normalize in ("global", "minmax") and out.shape[0]:
        _normalize_stack(out, normalize)


def _is_range(sel: np.ndarray) -> bool:
    return sel.size > 0 and int(sel[-1]) - int(sel[0]) == sel.size - 1


def _gather_mode(img, y0, x0, p, mode, fill) -> np.ndarray:
    h, w = img.shape
    k = np.arange(p + 1)
    ry, vy = _mode_index(y0[:, None] + k, h, mode)
    rx, vx = _mode_index(x0[:, None] + k, w, mode)
    block = img[ry[:, :, None], rx[:, None, :]]
    if mode == "constant":
        valid = vy[:, :, None] & vx[:, None, :]
        block[~valid] = np.float32(fill)
    return block


def _normalize_stack(out: np.ndarray, mode: str) -> None:
    # Statistics and scaling in float64 chunks: data at 1e-40 or 1e30 scale would underflow or
    # overflow in float32 (1 / range alone exceeds float32 below about 3e-39).
    flat = out.reshape(-1)
    n = flat.size
    step = max(1, (1 << 22) // max(1, out.shape[1] * out.shape[2])) * out.shape[1] * out.shape[2]
    chunks = [slice(s, s + step) for s in range(0, n, step)]
    if mode == "minmax":
        lo, hi = float(out.min()), float(out.max())
        scale = 1.0 / (hi - lo) if hi > lo else 0.0
        for part in chunks:
            flat[part] = np.clip((flat[part].astype(np.float64) - lo) * scale, 0.0, 1.0)
        return
    mean = sum(float(flat[part].sum(dtype=np.float64)) for part in chunks) / n
    sq = sum(float(np.square(flat[part].astype(np.float64) - mean).sum()) for part in chunks)
    std = np.sqrt(sq / n)
    if not std > _LEVEL_ROUNDING * abs(mean):  # constant (up to float32 rounding): zeros
        std = np.inf
    for part in chunks:
        flat[part] = (flat[part].astype(np.float64) - mean) / std


def _as_image_allow_constant(image) -> np.ndarray:
    """``as_image2d``, but a constant image is returned (its patches are constant) instead of refused."""
    try:
        img, _notes = as_image2d(image)
    except InputError as err:
        arr = np.asarray(image)
        if arr.ndim == 2 and arr.size > 1 and np.issubdtype(arr.dtype, np.number) and "constant" in str(err):
            arr = arr.astype(np.float32)
            finite = np.isfinite(arr)
            if not finite.all():  # NaN pixels beside one constant level: that level
                arr[~finite] = arr[finite][0]
            return arr
        raise
    return img
