"""Checking and converting user images into the 2-D float arrays the core works on."""

from __future__ import annotations

import numpy as np

from .errors import InputError

# ITU-R BT.601 luma weights: what "take the luminance" means for an RGB micrograph.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def as_image2d(data, *, name: str = "image", rgb: bool | None = None) -> tuple[np.ndarray, list[str]]:
    """Return ``data`` as a finite 2-D float32 array, plus notes on what was changed.

    Parameters
    ----------
    data : array_like
        Any numeric array. RGB(A) images (last axis 3 or 4) become their
        luminance; other extra axes are refused with a message naming them.
    name : str
        How the message should call the image.
    rgb : bool, optional
        Whether the last axis holds colour channels. ``None`` guesses from the
        shape (last axis of length 3 or 4 on a 3-D array).

    Returns
    -------
    image : ndarray of float32, shape (H, W)
    notes : list of str
        Human-readable notes (luminance taken, NaNs replaced), empty when the
        image was used as it is.

    Raises
    ------
    InputError
        For non-numeric data, more than two spatial axes, an empty image,
        an image with no finite pixel, a constant image, finite values
        beyond float32's range (about 3.4e38), or values that differ only
        by less than float32 resolves (a tiny range on a huge offset).

    Examples
    --------
    >>> img, notes = as_image2d(np.arange(12).reshape(3, 4))
    >>> img.dtype, img.shape, notes
    (dtype('float32'), (3, 4), [])
    """
    notes: list[str] = []
    arr = _numeric(np.asarray(data), name, notes)
    arr = _plane(_luminance(arr, name, rgb, notes), name)
    img = _finite_float32(arr, name, notes)
    _check_not_constant(img, arr, name)
    return img, notes


def _numeric(arr: np.ndarray, name: str, notes: list[str]) -> np.ndarray:
    """A real numeric array: booleans as 0/1, complex values as their magnitude."""
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    if not (np.issubdtype(arr.dtype, np.number)):
        raise InputError(f"The {name} is not numeric (dtype {arr.dtype}).")
    if np.iscomplexobj(arr):
        arr = np.abs(arr)
        notes.append(f"The {name} is complex; its magnitude is used.")
    return arr


def _luminance(arr: np.ndarray, name: str, rgb: bool | None, notes: list[str]) -> np.ndarray:
    """The luminance of an RGB(A) image; any other array as it is."""
    if rgb is None:
        rgb = arr.ndim == 3 and arr.shape[-1] in (3, 4)
    if not rgb:
        return arr
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise InputError(f"The {name} was marked RGB but has shape {arr.shape}.")
    notes.append(f"The {name} is RGB; its luminance (0.299 R + 0.587 G + 0.114 B) is used.")
    return arr[..., :3].astype(np.float64) @ _LUMA


def _plane(arr: np.ndarray, name: str) -> np.ndarray:
    """The one 2-D plane of ``arr`` (axes of length 1 dropped), at least 2 x 2 pixels."""
    squeezed = np.squeeze(arr) if arr.ndim > 2 else arr
    if squeezed.ndim != 2:
        raise InputError(
            f"The {name} has shape {arr.shape}: a 2-D image is needed. "
            f"Pick one plane of the stack first (for example image[0] along axis 0)."
        )
    if squeezed.size == 0 or min(squeezed.shape) < 2:
        raise InputError(f"The {name} is empty or one pixel thin (shape {squeezed.shape}).")
    return squeezed


def _finite_float32(wide: np.ndarray, name: str, notes: list[str]) -> np.ndarray:
    """``wide`` in float32, NaN/inf pixels set to the median; values beyond float32's range refused."""
    with np.errstate(over="ignore"):  # float64 beyond float32's range: refused just below
        arr = wide.astype(np.float32, copy=False)
    finite = np.isfinite(arr)
    if finite.all():
        return arr
    if wide is not arr and wide.dtype.kind == "f":
        outside = wide[~finite]
        outside = outside[np.isfinite(outside)]
        if outside.size:
            raise InputError(
                f"The {name} has values up to {float(np.abs(outside).max()):.3g}, beyond the float32 range "
                f"(about {float(np.finfo(np.float32).max):.3g}) the analysis works in: "
                "scale it down first."
            )
    n_bad = int(arr.size - finite.sum())
    if n_bad == arr.size:
        raise InputError(f"The {name} has no finite pixel (all NaN or inf).")
    fill = float(np.median(arr[finite].astype(np.float64)))  # float32's mean of two near its max overflows
    notes.append(f"The {name} has {n_bad} NaN/inf pixels; they were set to the median ({fill:.4g}).")
    return np.where(finite, arr, np.float32(fill))


def _check_not_constant(arr: np.ndarray, wide: np.ndarray, name: str) -> None:
    """Refuse a constant float32 image, saying so apart when only float32 made it constant.

    ``wide`` is the image before the cast to float32 (the same array where it was float32).
    """
    lo, hi = float(arr.min()), float(arr.max())
    if hi > lo:
        return
    if wide is not arr and wide.dtype.kind in "fiu":
        w = wide[np.isfinite(wide)] if wide.dtype.kind == "f" else wide
        if w.size and w.max() > w.min():
            tiny = float(np.abs(w).max()) < float(np.finfo(np.float32).tiny)
            raise InputError(
                f"The {name} varies only from {w.min():.10g} to {w.max():.10g}, which the float32 the "
                f"analysis works in cannot tell apart: "
                + ("scale it up first." if tiny else "subtract its offset first.")
            )
    raise InputError(f"The {name} is constant (every pixel is {lo:.4g}): there is nothing to analyse.")
