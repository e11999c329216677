"""Levelling a scanning-probe topograph: the tilt and the scan-line offsets removed.

Raw STM and AFM topographs sit on a tilted plane (the sample is never exactly
perpendicular to the tip's z axis) and each scan line has its own offset (drift
and feedback between lines). Atom detection looks for local maxima against
their surroundings, and a patch's contrast should be the atoms', not the tilt's:
so the image the detector and the patches see can be levelled first. The
user's own data are never changed: each function returns a new array.

Pure core: no Qt, no napari.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

LEVELS = ("none", "plane", "lines")
"""The levelling methods, as the CLI's ``--level`` and the Pick widget offer them."""


def plane_level(image) -> np.ndarray:
    """The image minus its least-squares plane ``a + b y + c x``.

    Parameters
    ----------
    image : array_like, shape (H, W)

    Returns
    -------
    ndarray of float32, shape (H, W)
        The residual; its mean is 0.

    Examples
    --------
    >>> y, x = np.mgrid[:4, :5]
    >>> flat = plane_level(3.0 + 0.5 * y - 2.0 * x)
    >>> bool(np.abs(flat).max() < 1e-5)
    True
    """
    return _plane_residual(image).astype(np.float32)


def _plane_residual(image) -> np.ndarray:
    """The image minus its least-squares plane, in float64."""
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    # Centred coordinates keep the 3 x 3 normal equations well conditioned on large images.
    y = np.arange(h, dtype=np.float64) - (h - 1) / 2
    x = np.arange(w, dtype=np.float64) - (w - 1) / 2
    # The plane's coefficients from sums over rows and columns: no (H*W, 3) design matrix in memory.
    mean = img.mean()
    b = (img.sum(axis=1) @ y) / (w * (y @ y)) if h > 1 else 0.0
    c = (img.sum(axis=0) @ x) / (h * (x @ x)) if w > 1 else 0.0
    return img - mean - b * y[:, None] - c * x[None, :]


def line_level(image) -> np.ndarray:
    """The plane removed, then each row's median (the scan lines' offsets).

    The median of a row is the height of the surface between the atoms'
    extremes, so atoms, adsorbates and spikes that cover less than half a row
    do not shift it. A step edge that crosses the rows does: a row's median
    follows whichever terrace covers most of it, so terraces keep a residual
    height difference where the step runs along the scan lines. Use
    ``plane`` on such images, or crop to one terrace.

    Parameters
    ----------
    image : array_like, shape (H, W)

    Returns
    -------
    ndarray of float32, shape (H, W)
        Each row's median is 0.

    Examples
    --------
    >>> rows = np.array([[0.0, 1.0, 0.0], [5.0, 6.0, 5.0], [-2.0, -1.0, -2.0]])
    >>> line_level(rows)
    array([[0., 1., 0.],
           [0., 1., 0.],
           [0., 1., 0.]], dtype=float32)
    """
    flat = _plane_residual(image)
    return (flat - np.median(flat, axis=1, keepdims=True)).astype(np.float32)


def level_image(image, method: str = "none") -> np.ndarray:
    """Level ``image`` by ``method`` (one of :data:`LEVELS`); ``none`` returns it as float32.

    Parameters
    ----------
    image : array_like, shape (H, W)
    method : {"none", "plane", "lines"}
        ``plane``: :func:`plane_level`; ``lines``: :func:`line_level`.

    Returns
    -------
    ndarray of float32, shape (H, W)
        A new array; ``image`` is not changed.

    Raises
    ------
    InputError
        For an unknown method.

    Examples
    --------
    >>> level_image(np.array([[1.0, 2.0], [3.0, 4.0]]), "plane")
    array([[0., 0.],
           [0., 0.]], dtype=float32)
    """
    if method not in LEVELS:
        raise InputError(f"Unknown levelling {method!r}: choose one of {', '.join(LEVELS)}.")
    if method == "plane":
        return plane_level(image)
    if method == "lines":
        return line_level(image)
    return np.array(image, dtype=np.float32, copy=True)


__all__ = ["LEVELS", "plane_level", "line_level", "level_image"]
