"""Finding atomic columns in atom-resolved images (STEM and the like).

Three steps, all vectorised and in float32 where it matters:

1. :func:`estimate_feature_size` guesses the width (Gaussian sigma, px) of the
   atomic columns from the lattice periodicity (the image's autocorrelation,
   computed through its Fourier transform).
2. :func:`detect_atoms` filters the image with a difference of Gaussians
   (sigma and 3 sigma: matched filter minus local background) and keeps the
   local maxima that stand out both from the noise and relative to the
   image's contrast.
3. :func:`refine_positions` moves every maximum to the sub-pixel centre of its
   column (iterated Gaussian-weighted centre of mass, or a Gaussian fit).

Step 2 is split for chunked work: :func:`detection_settings` fixes what the
whole frame's statistics decide (feature size, noise floor, strength cut),
and :func:`detect_with` does the local work on any window of the frame with
them (:func:`detection_halo` px of context make it agree with the whole
frame; :mod:`napari_rvae.core.tiles` cuts a frame into such windows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .errors import InputError
from .image import as_image2d

__all__ = [
    "estimate_feature_size",
    "detect_atoms",
    "refine_positions",
    "DetectionSettings",
    "detection_settings",
    "detect_with",
    "detection_halo",
    "detection_candidates",
    "finish_detection",
]

# Largest side of the central crop used to estimate the feature size.
_SIZE_CROP = 1024
# Background blurs tried (px, coarse to fine) when an image shows no column spacing at first:
# the real STM sample's step edge hid it; 8 px found it (docs/science.md#detection-backgrounds).
_BACKGROUND_SCALES = (32, 16, 8)
# Sigma estimates are clipped to this range (px).
_SIGMA_MIN = 0.7
# Columns count as isolated when the autocorrelation's central peak falls to this fraction of its
# height before its first minimum: its width alone then measures them (sparse lattices whose
# weak satellites hide the spacing; see _feature_size).
_ISOLATED_FLOOR = 0.1
# A maximum must exceed this many standard deviations of the filtered noise.
_NOISE_K = 6.0
# Outer/inner sigma ratio of the difference-of-Gaussians detector.
_DOG_K = 3.0


def _image(image, name="image"):
    """Float32 2-D image, or ``None`` for a constant image (nothing to find)."""
    try:
        img, _notes = as_image2d(image, name=name)
    except InputError as err:
        if "constant" in str(err):
            return None
        raise
    return img


def _noise_std(img: np.ndarray) -> float:
    """Robust estimate of the white-noise standard deviation of the pixels.

    Uses the mixed second difference ``(a - b - c + d) / 2`` of every 2 x 2
    block (unit gain for white noise, small for smooth atoms) and its median
    absolute deviation, on a subsample of at most ~1 M blocks.
    """
    return _noise_std_read(lambda rows, cols: img[rows, cols], img.shape)


def _noise_std_read(read, shape) -> float:
    """:func:`_noise_std` of a frame of ``shape`` whose pixels ``read(rows, cols)`` gives (strided slices)."""
    h, w = shape
    step = max(1, int(np.sqrt(h * w / 1e6)))
    a = np.asarray(read(slice(0, h - 1, step), slice(0, w - 1, step))).astype(np.float64)
    n, m = a.shape
    b = np.asarray(read(slice(1, h, step), slice(0, w - 1, step)))[:n, :m]
    cc = np.asarray(read(slice(0, h - 1, step), slice(1, w, step)))[:n, :m]
    d = np.asarray(read(slice(1, h, step), slice(1, w, step)))[:n, :m]
    diff = (a - b - cc + d) / 2.0
    med = np.median(diff)
    return float(1.4826 * np.median(np.abs(diff - med)))


def estimate_feature_size(image) -> float:
    """Estimate the Gaussian sigma (px) of the atomic columns in an image.

    The nearest-neighbour spacing ``d`` is read from the image's
    autocorrelation (inverse Fourier transform of its power spectrum): its
    radial average has its first off-centre maximum at ``d``. Gaussian
    columns of width sigma make that profile a central Gaussian of width
    ``sqrt(2) sigma`` plus a ring of neighbours at ``d``; sigma is fitted to
    it and clipped to ``[d / 12, d / 4]`` (``d / 5`` when the fit fails).
    A central crop of at most 1024 x 1024 px is used, so this is fast on any
    image size.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Atom-resolved image, any numeric dtype. Bright or dark columns.

    Returns
    -------
    float
        Estimated sigma in pixels, at least 0.7. Images without periodicity
        fall back to the central peak width alone.

    Raises
    ------
    InputError
        If the image is not a usable 2-D image (see ``as_image2d``) or is
        constant.

    Examples
    --------
    >>> yy, xx = np.mgrid[:256, :256]
    >>> img = np.zeros((256, 256))
    >>> for cy in range(4, 256, 12):
    ...     for cx in range(4, 256, 12):
    ...         img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0**2))
    >>> bool(1.6 < estimate_feature_size(img) < 2.5)
    True
    """
    img = _image(image)
    if img is None:
        raise InputError("The image is constant: there are no features to measure.")
    return _feature_size(lambda rows, cols: img[rows, cols], img.shape)


def _feature_size(read, shape) -> float:
    """:func:`estimate_feature_size` of a frame of ``shape`` whose pixels ``read(rows, cols)`` gives."""
    h, w = shape
    if min(h, w) / 8.0 <= _SIGMA_MIN:
        # Too thin to measure (the result is clipped to [0.7, min(h, w) / 8] below), and the
        # autocorrelation's lags would reach past the image: no overlap, division by zero.
        return _SIGMA_MIN
    crop = _central_crop(read, shape)
    profile = _radial_autocorrelation(crop)
    spacing, floor = _neighbour_spacing(profile)
    if spacing is None and abs(floor) <= _ISOLATED_FLOOR * profile[0]:
        # Isolated columns, no clear neighbour ring within reach (a sparse lattice with weak
        # satellites between columns): the central peak's width is the columns' own, unbiased by
        # neighbours. Left to the background search, this took the satellites' rings or the
        # lattice's for the spacing by chance, frame to frame (2.5 or 7.1 px for columns of 3).
        sigma_w = _central_peak_sigma(profile, floor)
        if sigma_w is not None:
            return float(np.clip(sigma_w, _SIGMA_MIN, max(_SIGMA_MIN, min(h, w) / 8.0)))
    if spacing is None:
        profile, spacing, floor = _without_background(crop, profile, floor)
    sigma = _column_sigma(profile, spacing, _central_peak_sigma(profile, floor))
    return float(np.clip(sigma, _SIGMA_MIN, max(_SIGMA_MIN, min(h, w) / 8.0)))


def _without_background(crop: np.ndarray, profile: np.ndarray, floor):
    """The profile of the crop less its large-scale background, for images whose contrast at
    large scales (a step edge, a tilt, a drift in brightness) hides the columns' periodicity.

    Backgrounds blurred at ``_BACKGROUND_SCALES`` px, coarse to fine, are subtracted until a
    neighbour spacing shows; without one, the profile as it was.
    """
    from scipy.ndimage import gaussian_filter

    for scale in _BACKGROUND_SCALES:
        if 4 * scale > min(crop.shape):
            continue
        flat = _radial_autocorrelation(crop - gaussian_filter(crop, scale))
        spacing, flat_floor = _neighbour_spacing(flat)
        if spacing is not None:
            return flat, spacing, flat_floor
    return profile, None, floor


def _central_crop(read, shape) -> np.ndarray:
    """The central crop of at most ``_SIZE_CROP`` px a side, float64, zero mean."""
    h, w = shape
    ch, cw = min(h, _SIZE_CROP), min(w, _SIZE_CROP)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = np.asarray(read(slice(y0, y0 + ch), slice(x0, x0 + cw))).astype(np.float64)
    crop -= crop.mean()
    return crop


def _radial_autocorrelation(crop: np.ndarray) -> np.ndarray:
    """Radial average of the crop's unbiased autocorrelation at lags ``0 .. max(4, side / 4)``.

    Lag 0 is extrapolated from lags 1 and 2: white noise only adds there.
    """
    ch, cw = crop.shape
    # zero-pad to twice the size: the linear (not circular) autocorrelation
    f = np.fft.rfft2(crop, s=(2 * ch, 2 * cw))
    ac = np.fft.irfft2(f.real**2 + f.imag**2, s=(2 * ch, 2 * cw))
    # unbiased: divide by the overlap area at each lag
    rmax = max(4, min(ch, cw) // 4)
    ly = np.r_[0 : rmax + 1, -rmax:0]
    lx = np.r_[0 : rmax + 1, -rmax:0]
    sub = ac[np.ix_(ly % (2 * ch), lx % (2 * cw))]
    overlap = (ch - np.abs(ly))[:, None] * (cw - np.abs(lx))[None, :]
    sub = sub / overlap
    rr = np.hypot(ly[:, None], lx[None, :])
    rbin = np.rint(rr).astype(int)
    ok = rbin <= rmax
    counts = np.bincount(rbin[ok], minlength=rmax + 1)
    prof = np.bincount(rbin[ok], weights=sub[ok], minlength=rmax + 1) / np.maximum(counts, 1)
    prof0 = 2 * prof[1] - prof[2] if prof[1] > prof[2] else prof[1]
    p = prof.copy()
    p[0] = max(prof0, prof[1])
    return p


def _neighbour_spacing(p: np.ndarray):
    """The nearest-neighbour spacing (None where the profile shows none) and the profile's floor.

    The spacing is the highest maximum after the first local minimum, within
    about twice that lag, refined by a parabola; the floor is the profile at
    that minimum (at the last lag where there is none).
    """
    rmax = len(p) - 1
    dp = np.diff(p)
    mins = np.flatnonzero((dp[:-1] < 0) & (dp[1:] >= 0)) + 1
    if not mins.size:
        return None, p[-1]
    m = int(mins[0])
    hi = min(rmax, max(3 * m, m + 3))
    seg = p[m : hi + 1]
    k = int(np.argmax(seg)) + m
    if m < k < rmax and p[k] > p[m] + 0.05 * (p[0] - p[m]):
        den = p[k - 1] - 2 * p[k] + p[k + 1]
        return k + (0.5 * (p[k - 1] - p[k + 1]) / den if den < 0 else 0.0), p[m]
    return None, p[m]


def _central_peak_sigma(p: np.ndarray, floor):
    """Column sigma from the half width at half maximum of the central peak above ``floor``, or None."""
    amp = p[0] - floor
    if not amp > 0:
        return None
    half = floor + amp / 2
    below = np.flatnonzero(p < half)
    if not below.size:
        return None
    j = int(below[0])
    # linear interpolation between j-1 and j
    frac = (p[j - 1] - half) / (p[j - 1] - p[j])
    hwhm = (j - 1) + frac
    return hwhm / (np.sqrt(2 * np.log(2)) * np.sqrt(2))


def _column_sigma(p: np.ndarray, spacing, sigma_w) -> float:
    """The best sigma at hand: the ring fit, the central width, ``spacing / 5``, or 2 px.

    With a spacing the result is clipped to ``[spacing / 12, spacing / 4]``.
    """
    if spacing is None:
        return sigma_w if sigma_w is not None else 2.0
    fitted = _fit_width(p, spacing)
    if fitted is not None:
        return float(np.clip(fitted, spacing / 12.0, spacing / 4.0))
    if sigma_w is not None:
        return float(np.clip(sigma_w, spacing / 12.0, spacing / 4.0))
    return spacing / 5.0


def _fit_width(prof: np.ndarray, d: float):
    """Column sigma from the radial autocorrelation profile, knowing the spacing ``d``.

    Gaussian columns of width sigma give an autocorrelation made of Gaussians
    of width ``sqrt(2) sigma``: a central one plus a ring of neighbours at
    ``d``. Fit ``a + b * centre(r) + e * ring(r)`` (linear least squares for
    each trial sigma) to lags ``1 .. 1.2 d`` and keep the best sigma. Lag 0 is
    left out: white noise only adds there.
    """
    from scipy.special import i0e

    rmax = min(len(prof) - 1, int(np.ceil(1.2 * d)))
    r = np.arange(1, rmax + 1, dtype=np.float64)
    y = prof[1 : rmax + 1]
    if r.size < 4:
        return None
    best = (np.inf, None)
    for sig in np.geomspace(max(0.4, d / 20.0), d / 2.5, 80):
        v = 4.0 * sig * sig
        centre = np.exp(-(r**2) / v)
        ring = np.exp(-((r - d) ** 2) / v) * i0e(2.0 * r * d / v)
        a = np.column_stack([np.ones_like(r), centre, ring])
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        if coef[1] <= 0:
            continue
        res = float(np.sum((a @ coef - y) ** 2))
        if res < best[0]:
            best = (res, sig)
    return best[1]


def _dog_response(img: np.ndarray, sigma: float) -> np.ndarray:
    """Difference of Gaussians ``G(sigma) - G(3 sigma)``, float32: bright blobs positive.

    The narrow Gaussian is the matched filter for a column of width sigma
    (low noise gain); subtracting the wide one removes the local background,
    so the response is the column's contrast above its surroundings.
    """
    r = ndi.gaussian_filter(img, sigma, mode="reflect", truncate=3.5)
    bg = ndi.gaussian_filter(r, np.sqrt(_DOG_K**2 - 1) * sigma, mode="reflect", truncate=3.0)
    r -= bg
    return r


def _dog_gain(sigma: float) -> float:
    """L2 norm of the response kernel: filtered white noise has std = gain * pixel std."""
    n = 2 * int(np.ceil(3.5 * _DOG_K * sigma)) + 3
    delta = np.zeros((n, n), np.float64)
    delta[n // 2, n // 2] = 1.0
    k = ndi.gaussian_filter(delta, sigma, mode="constant", truncate=3.5)
    k = k - ndi.gaussian_filter(k, np.sqrt(_DOG_K**2 - 1) * sigma, mode="constant", truncate=3.0)
    return float(np.sqrt((k**2).sum()))


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({"y": np.empty(0), "x": np.empty(0), "strength": np.empty(0)})


@dataclass(frozen=True)
class DetectionSettings:
    """Everything the whole image decides about detection, fixed once per frame.

    With these fixed, detection is local: :func:`detect_with` on any window
    of the frame (with :func:`detection_halo` px of context) finds the same
    columns there as on the whole frame.

    Attributes
    ----------
    sigma : float
        Gaussian sigma of the columns (px).
    min_distance : int
        Half side of the maximum filter's window (px).
    floor : float
        Absolute cut: a response must exceed it (noise floor; compared in float32).
    min_strength : float
        Absolute cut: a response must reach it (``threshold`` times the 99th
        percentile of the frame's candidates).
    dark : bool
        Dark columns on a bright background (the image is negated).
    margin : float
        Columns closer than this to the frame's border are discarded (px).
    refine : bool
        Refine positions to sub-pixel accuracy.
    refine_method : str
        ``"com"`` or ``"gaussian"`` (see :func:`refine_positions`).
    """

    sigma: float
    min_distance: int
    floor: float
    min_strength: float
    dark: bool = False
    margin: float = 0.0
    refine: bool = True
    refine_method: str = "com"


def detection_settings(
    image, *, sigma=None, min_distance=None, threshold=0.1, dark=False, margin=0, refine=True, refine_method="com"
) -> DetectionSettings | None:
    """The detection settings that the whole image's statistics decide.

    The feature size, the noise floor (the noise of the whole image) and the
    strength cut (``threshold`` times the 99th percentile of the whole
    image's candidate maxima) are measured here, once per frame, so that
    detection in chunks (:func:`detect_with` on windows) agrees with
    detection on the whole frame.

    Parameters
    ----------
    image : array_like, shape (H, W)
        The whole frame.
    sigma, min_distance, threshold, dark, margin, refine, refine_method
        As for :func:`detect_atoms`.

    Returns
    -------
    DetectionSettings or None
        ``None`` when there is nothing to find (a constant image, no response
        above the noise).

    Raises
    ------
    InputError
        For the settings :func:`detect_atoms` refuses, or an unusable image.

    Examples
    --------
    >>> yy, xx = np.mgrid[:64, :64]
    >>> img = np.exp(-((yy - 20.3) ** 2 + (xx - 40.6) ** 2) / 8)
    >>> s = detection_settings(img, sigma=2.0)
    >>> s.sigma, s.min_distance, detect_with(img, s).round(2)[["y", "x"]].values.tolist()
    (2.0, 3, [[20.3, 40.6]])
    >>> detection_settings(np.ones((8, 8))) is None
    True
    """
    _check_detection_settings(sigma, min_distance, threshold, margin)
    img = _image(image)
    if img is None:
        return None
    if dark:
        img = -img
    options = dict(threshold=threshold, dark=dark, margin=margin, refine=refine, refine_method=refine_method)
    settings, _found = _frame_settings(img, sigma, min_distance, **options)
    return settings


def _frame_settings(img, sigma, min_distance, *, threshold, **options):
    """The settings (None: nothing to find) and the frame's maxima above the floor ``(iy, ix, strength)``.

    ``img`` is the float32 frame, already negated for dark columns.
    """
    sigma = float(estimate_feature_size(img) if sigma is None else sigma)
    md = _min_distance(sigma, min_distance)
    resp = _dog_response(img, sigma)
    noise = _noise_std(img) * _dog_gain(sigma)
    peak = float(resp.max())
    if not peak > 0:
        return None, None
    floor = max(_NOISE_K * noise, 1e-6 * peak)
    iy, ix, strength = _maxima(resp, md, floor)
    del resp
    return _settings(sigma, md, floor, strength, threshold, **options), (iy, ix, strength)


def _min_distance(sigma: float, min_distance) -> int:
    """The maximum filter's half side in whole pixels; by default 1.5 sigma, at least 2."""
    return int(round(max(2, int(round(1.5 * sigma))) if min_distance is None else min_distance))


def _settings(sigma, md, floor, strength, threshold, *, dark, margin, refine, refine_method):
    """The settings from the frame's maxima above the floor (their ``strength``); None without any."""
    if strength.size == 0:
        return None
    ref = float(np.percentile(strength, 99))
    return DetectionSettings(
        sigma=sigma,
        min_distance=md,
        floor=float(floor),
        min_strength=float(threshold * ref),
        dark=bool(dark),
        margin=float(margin),
        refine=bool(refine),
        refine_method=refine_method,
    )


def _core_statistics(img: np.ndarray, sigma: float, md: int, cut: float, local):
    """The largest response in a window's core ``local`` and the responses of its maxima above ``cut``.

    ``img``: float32, already negated for dark columns, with enough halo around the core.
    """
    resp = _dog_response(img, sigma)
    y0, y1, x0, x1 = local
    peak = float(resp[y0:y1, x0:x1].max()) if y1 > y0 and x1 > x0 else -np.inf
    _iy, _ix, strength = _maxima(resp, md, cut, local)
    return peak, strength


def detect_atoms(
    image, *, sigma=None, min_distance=None, threshold=0.1, dark=False, margin=0, refine=True, refine_method="com"
) -> pd.DataFrame:
    """Find atomic columns: local maxima of a difference-of-Gaussians filter.

    The response is ``G(sigma) * image - G(3 sigma) * image``: the column
    contrast above its local background, with low noise gain (the narrow
    Gaussian is the matched filter of a Gaussian column). The same as
    ``detect_with(image, detection_settings(image, ...))``, with the filter
    run once.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Atom-resolved image, any numeric dtype (views and slices are fine).
    sigma : float, optional
        Gaussian sigma of the columns in px. Default: :func:`estimate_feature_size`.
    min_distance : int, optional
        Minimum distance between detected columns in px (square window of
        side ``2 * min_distance + 1``). Default: ``max(2, round(1.5 * sigma))``.
    threshold : float
        Between 0 and 1: a column is kept when its filter response is at
        least ``threshold`` times the typical strongest response (the 99th
        percentile over the candidates). Independently of it, a response
        must stand 6 noise standard deviations above zero, so that a
        pure-noise image gives nothing.
    dark : bool
        Find dark columns on a bright background instead (e.g. ABF images).
    margin : float
        Discard columns closer than this many px to the image border.
    refine : bool
        Refine positions to sub-pixel accuracy with :func:`refine_positions`.
        Otherwise positions are the integer pixels of the maxima.
    refine_method : {"com", "gaussian"}
        Passed to :func:`refine_positions`.

    Returns
    -------
    pandas.DataFrame
        Columns ``"y"``, ``"x"`` (float64 px, napari order) and
        ``"strength"`` (the filter response at the maximum: contrast above
        the local background, in image intensity units), one row per column,
        sorted by ``y`` and then ``x`` (raster order), index ``0..N-1``. Empty
        (with those columns) for a flat or pure-noise image.

    Raises
    ------
    InputError
        For a non-positive ``sigma`` or ``min_distance``, a threshold outside
        [0, 1], a negative margin, or an unusable image.

    Examples
    --------
    >>> yy, xx = np.mgrid[:64, :64]
    >>> img = np.exp(-((yy - 20.3) ** 2 + (xx - 40.6) ** 2) / 8) + np.exp(
    ...     -((yy - 45) ** 2 + (xx - 12) ** 2) / 8)
    >>> df = detect_atoms(img, sigma=2.0)
    >>> df[["y", "x"]].round(2).values.tolist()
    [[20.3, 40.6], [45.0, 12.0]]
    >>> len(detect_atoms(np.ones((64, 64))))
    0
    """
    _check_detection_settings(sigma, min_distance, threshold, margin)
    img = _image(image)
    if img is None:
        return _empty_frame()
    if dark:
        img = -img
    options = dict(threshold=threshold, dark=dark, margin=margin, refine=refine, refine_method=refine_method)
    settings, found = _frame_settings(img, sigma, min_distance, **options)
    if settings is None:
        return _empty_frame()
    iy, ix, strength = found
    keep = strength >= settings.min_strength
    return _finish(img, settings, iy[keep], ix[keep], strength[keep], (0, 0), img.shape)


def finite_window(window, what: str) -> np.ndarray:
    """A window of a frame as a finite 2-D float32 array; ``what`` names it in the error.

    NaN pixels are not filled here: their fill is a statistic of the whole frame.
    """
    arr = np.asarray(window)
    if arr.ndim != 2 or arr.size == 0 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"{what} must be a real 2-D array, not {arr.dtype} of shape {arr.shape}.")
    img = arr.astype(np.float32, copy=False)
    if not np.isfinite(img).all():
        raise InputError(f"{what} has NaN or infinite pixels: fill them for the whole frame first.")
    return img


def detect_with(window, settings: DetectionSettings | None, *, origin=(0, 0), frame_shape=None) -> pd.DataFrame:
    """Find the columns in a window of a frame with settings fixed for the whole frame.

    Parameters
    ----------
    window : array_like, shape (h, w)
        Finite pixels of the frame, ``frame[y0:y0 + h, x0:x0 + w]`` (not
        negated for dark columns; ``settings.dark`` does that).
    settings : DetectionSettings or None
        From :func:`detection_settings` on the whole frame. ``None``: nothing
        to find, an empty table.
    origin : (int, int)
        ``(y0, x0)``: where the window starts in the frame.
    frame_shape : (int, int), optional
        ``(H, W)`` of the frame. Default: the window is the whole frame.

    Returns
    -------
    pandas.DataFrame
        ``"y"``, ``"x"`` (float64, frame px) and ``"strength"``, in raster
        order, as :func:`detect_atoms`. The filters' boundary modes act at
        the window's border, so only columns at least
        ``detection_halo(settings)`` px inside it (or near a window edge that
        is the frame's border) are those of the whole frame: cut the frame
        into tiles with that halo and keep each tile's core
        (:mod:`napari_rvae.core.tiles` does, and resolves ties across cores).
        The margin counts from the frame's border.

    Raises
    ------
    InputError
        For a window that is not a finite 2-D array inside the frame.
    """
    if settings is None:
        return _empty_frame()
    img, origin, frame_shape = _window_image(window, settings, origin, frame_shape)
    resp = _dog_response(img, settings.sigma)
    iy, ix, strength = _maxima(resp, settings.min_distance, settings.floor)
    del resp
    keep = strength >= settings.min_strength
    return _finish(img, settings, iy[keep], ix[keep], strength[keep], origin, frame_shape)


def detection_candidates(
    window, settings: DetectionSettings | None, *, origin=(0, 0), frame_shape=None, core=None
) -> pd.DataFrame:
    """The maxima of one chunk of a frame, refined, before ties are resolved.

    Ties (plateaus of equal response within ``min_distance``) can chain
    across a whole plateau, so they are resolved by :func:`finish_detection`
    on the candidates of all chunks together: that is what makes chunked
    detection agree with the whole frame's.

    Parameters
    ----------
    window, settings, origin, frame_shape
        As for :func:`detect_with`.
    core : (int, int, int, int), optional
        ``(y0, y1, x0, x1)``, half-open, in frame px: keep the maxima whose
        integer pixel lies in it (a tile's core). Default: the whole window.

    Returns
    -------
    pandas.DataFrame
        ``"iy"``, ``"ix"`` (int64, the maximum's frame pixel), ``"y"``,
        ``"x"`` (float64, refined, frame px) and ``"strength"``, in raster
        order of ``(iy, ix)``.
    """
    if settings is None:
        return _empty_candidates()
    img, origin, frame_shape = _window_image(window, settings, origin, frame_shape)
    local = None if core is None else _local_box(core, origin, img.shape)
    resp = _dog_response(img, settings.sigma)
    iy, ix, strength = _maxima(resp, settings.min_distance, settings.floor, local)
    del resp
    keep = strength >= settings.min_strength
    iy, ix, strength = iy[keep], ix[keep], strength[keep]
    pts = _positions(img, settings, iy, ix, origin, frame_shape)
    return pd.DataFrame(
        {"iy": iy + origin[0], "ix": ix + origin[1], "y": pts[:, 0], "x": pts[:, 1], "strength": strength}
    )


def finish_detection(candidates: pd.DataFrame, settings: DetectionSettings | None, frame_shape) -> pd.DataFrame:
    """The columns of a frame from the candidates of all its chunks.

    Parameters
    ----------
    candidates : pandas.DataFrame
        :func:`detection_candidates` of chunks whose cores cover the frame
        once, concatenated in any order.
    settings : DetectionSettings or None
        The frame's settings.
    frame_shape : (int, int)
        ``(H, W)`` of the frame (for the margin).

    Returns
    -------
    pandas.DataFrame
        As :func:`detect_with` on the whole frame: ties resolved as there
        (the first in strength-then-raster order wins), the margin applied,
        raster order.

    Raises
    ------
    ValueError
        If a pixel came from two chunks (their cores overlap).
    """
    if settings is None or len(candidates) == 0:
        return _empty_frame()
    cand = candidates.sort_values(["iy", "ix"], kind="stable")
    iy = cand["iy"].to_numpy(np.int64)
    ix = cand["ix"].to_numpy(np.int64)
    if np.any((np.diff(iy) == 0) & (np.diff(ix) == 0)):
        raise ValueError("Some maxima came from two chunks: the chunks' cores overlap.")
    strength = cand["strength"].to_numpy(np.float64)
    keep = _tie_winners(iy, ix, strength, settings.min_distance)
    pts = cand[["y", "x"]].to_numpy(np.float64)[keep]
    return _table(pts, strength[keep], settings, tuple(int(n) for n in frame_shape))


def detection_halo(settings: DetectionSettings, patch_size: int = 0) -> int:
    """Pixels of context a chunk needs around its core, for detection and patches.

    The sum, each term the reach of one step (scipy's kernel radius is
    ``int(truncate * sd + 0.5)``):

    - ``int(3.5 sigma + 0.5)``: the narrow Gaussian of the response;
    - ``int(3.0 sqrt(8) sigma + 0.5)``: the wide one, run on the narrow one's output;
    - ``min_distance``: the maximum filter, run on the response;

    and at least the refinement's reach, ``ceil(2.5 sigma) + 4`` (its
    window's half side, plus the Gaussian fit's 5 x 5 around an estimate up
    to half a window away, with its 9 x 9 background). With those, every
    pixel of the core sees the values the whole frame gives it, and the
    filters' boundary modes act only where the chunk touches the frame's
    border. A ``patch_size`` ``P`` asks for ``P + 1`` px: the ``P // 2 + 2``
    a patch around a core point reaches, and windows larger than a patch
    (whose patches are cut as the whole frame's are).

    Parameters
    ----------
    settings : DetectionSettings
    patch_size : int
        Side of the patches to be cut from the chunks; 0 for detection only.

    Returns
    -------
    int

    Examples
    --------
    >>> s = DetectionSettings(sigma=2.0, min_distance=3, floor=0.0, min_strength=0.0)
    >>> detection_halo(s), detection_halo(s, 64)
    (27, 65)
    """
    sigma = float(settings.sigma)
    narrow = int(3.5 * sigma + 0.5)
    wide = int(3.0 * float(np.sqrt(_DOG_K**2 - 1) * sigma) + 0.5)
    refine = int(np.ceil(2.5 * sigma)) + 4 if settings.refine else 0
    halo = max(narrow + wide + int(settings.min_distance), refine)
    return max(halo, int(patch_size) + 1 if patch_size else 0)


def _empty_candidates() -> pd.DataFrame:
    empty = np.empty(0, np.int64)
    return pd.DataFrame({"iy": empty, "ix": empty, "y": np.empty(0), "x": np.empty(0), "strength": np.empty(0)})


def _window_image(window, settings: DetectionSettings, origin, frame_shape):
    """The window as float32 (negated for dark columns), its origin and the frame's shape, checked.

    A whole frame is read as :func:`detect_atoms` reads it (RGB, NaN pixels); a part of one must
    be finite and 2-D already (NaN pixels are filled from the whole frame's statistics).
    """
    origin = (int(origin[0]), int(origin[1]))
    img = _image(window) if frame_shape is None and origin == (0, 0) else None
    if img is None:  # a part of a frame, or a constant frame
        img = finite_window(window, "A detection window")
    frame_shape = img.shape if frame_shape is None else (int(frame_shape[0]), int(frame_shape[1]))
    h, w = img.shape
    if min(origin) < 0 or origin[0] + h > frame_shape[0] or origin[1] + w > frame_shape[1]:
        raise InputError(f"A {h} x {w} window at {origin} does not lie in the {frame_shape} frame.")
    return (-img if settings.dark else img), origin, frame_shape


def _local_box(core, origin, shape) -> tuple[int, int, int, int]:
    """A frame box ``(y0, y1, x0, x1)`` in a window's px, clipped to the window."""
    (y0, y1, x0, x1), (oy, ox), (h, w) = core, origin, shape
    return tuple(int(min(max(v - o, 0), n)) for v, o, n in ((y0, oy, h), (y1, oy, h), (x0, ox, w), (x1, ox, w)))


def _maxima(resp: np.ndarray, md: int, floor: float, core=None):
    """Rows, columns (int64, raster order) and responses (float64) of the maxima above ``floor``.

    A maximum is the largest response within ``md`` px (ties included).
    ``core``: ``(y0, y1, x0, x1)`` of ``resp`` to keep them in.
    """
    mx = ndi.maximum_filter(resp, size=2 * md + 1, mode="nearest")
    mask = resp == mx
    del mx  # image-sized temporaries: freed as soon as they are used
    mask &= resp > np.float32(floor)
    y0 = x0 = 0
    if core is not None:
        y0, y1, x0, x1 = core
        mask = mask[y0:y1, x0:x1]
    iy, ix = np.nonzero(mask)
    del mask
    iy = iy.astype(np.int64) + y0
    ix = ix.astype(np.int64) + x0
    return iy, ix, resp[iy, ix].astype(np.float64)


def _finish(img, settings: DetectionSettings, iy, ix, strength, origin, frame_shape) -> pd.DataFrame:
    """Ties resolved, positions refined (frame px), margin applied: the table."""
    keep = _tie_winners(iy, ix, strength, settings.min_distance)
    iy, ix, strength = iy[keep], ix[keep], strength[keep]
    pts = _positions(img, settings, iy, ix, origin, frame_shape)
    return _table(pts, strength, settings, frame_shape)


def _positions(img, settings: DetectionSettings, iy, ix, origin, frame_shape) -> np.ndarray:
    """``(N, 2)`` float64 frame positions of the window's maxima ``(iy, ix)``, refined if asked."""
    pts = np.column_stack([iy, ix]).astype(np.float64)
    if settings.refine and pts.shape[0]:
        return _refine(img, pts, settings.sigma, settings.refine_method, origin=origin, frame_shape=frame_shape)
    return pts + np.asarray(origin, np.float64)  # whole numbers: exact


def _table(pts: np.ndarray, strength: np.ndarray, settings: DetectionSettings, frame_shape) -> pd.DataFrame:
    """The detection table: margin (from the frame's border) applied, raster order."""
    if settings.margin > 0:
        pts, strength = _within_margin(pts, strength, frame_shape, settings.margin)
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    return pd.DataFrame({"y": pts[order, 0], "x": pts[order, 1], "strength": strength[order]})


def _check_detection_settings(sigma, min_distance, threshold, margin) -> None:
    if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
        raise InputError(f"The feature size sigma must be a positive number of pixels, not {sigma!r}.")
    if min_distance is not None and not (np.isfinite(min_distance) and min_distance >= 1):
        raise InputError(f"The minimum distance must be at least 1 px, not {min_distance!r}.")
    if not (np.isfinite(threshold) and 0 <= threshold <= 1):
        raise InputError(
            f"The threshold is relative to the image contrast and must be between 0 and 1, not {threshold!r}."
        )
    if not (np.isfinite(margin) and margin >= 0):
        raise InputError(f"The margin must be zero or a positive number of pixels, not {margin!r}.")


def _within_margin(pts: np.ndarray, strength: np.ndarray, shape, margin: float):
    """The points (and their strengths) at least ``margin`` px inside the image's pixel centres."""
    h, w = shape
    ok = (pts[:, 0] >= margin) & (pts[:, 0] <= h - 1 - margin) & (pts[:, 1] >= margin) & (pts[:, 1] <= w - 1 - margin)
    return pts[ok], strength[ok]


def _tie_winners(iy, ix, strength, md) -> np.ndarray:
    """Boolean mask: False for maxima within ``md`` px (Chebyshev) of an equal or stronger one.

    ``maximum_filter`` already guarantees there is no strictly stronger
    response nearby; what remains are plateaus (saturated or integer
    images). Keep the first of each tie group in strength-then-raster order,
    whatever the order of the input.
    """
    from scipy.spatial import cKDTree

    keep = np.ones(iy.size, bool)
    if iy.size < 2:
        return keep
    pts = np.column_stack([iy, ix]).astype(np.float64)
    tree = cKDTree(pts)
    pairs = tree.query_pairs(r=md, p=np.inf, output_type="ndarray")
    if pairs.size == 0:
        return keep
    order = np.lexsort((ix, iy, -strength))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    # orient every pair as (better, worse) and drop greedily in rank order
    a, b = pairs[:, 0], pairs[:, 1]
    swap = rank[a] > rank[b]
    better = np.where(swap, b, a)
    worse = np.where(swap, a, b)
    by = np.argsort(rank[better], kind="stable")
    for bi, wi in zip(better[by], worse[by]):  # only tie pairs: few
        if keep[bi]:
            keep[wi] = False
    return keep


def refine_positions(image, points, *, window=None, method="com", sigma=None, n_iter=20) -> np.ndarray:
    """Move points to the sub-pixel centres of the bright features under them.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Image with bright features (negate it for dark ones).
    points : array_like, shape (N, 2)
        Starting ``(y, x)`` positions in px, within about 1 px of the centres.
    window : int, optional
        Side of the square window (odd, px) around each point. Default:
        ``2 * ceil(2.5 * sigma) + 3``.
    method : {"com", "gaussian"}
        ``"com"``: iterated centre of mass, weighted by a Gaussian of width
        ``sigma`` centred on the current estimate, of the window minus its
        minimum. Its fixed point is the centre of any symmetric feature, so
        it has no pixel-locking bias. ``"gaussian"``: least-squares fit of a
        2-D Gaussian (a quadratic fitted to the log intensity, background
        removed) to the 5 x 5 pixels around the centre-of-mass estimate.
    sigma : float, optional
        Feature sigma in px. Default: :func:`estimate_feature_size`.
    n_iter : int
        Iterations of the weighted centre of mass.

    Returns
    -------
    ndarray of float64, shape (N, 2)
        Refined ``(y, x)``. A point never moves by more than
        ``window // 2 - 1`` px and always stays within the image's pixel
        centres, ``0 <= y <= H - 1``; windows reaching past the border use
        the nearest edge pixels.

    Examples
    --------
    >>> yy, xx = np.mgrid[:32, :32]
    >>> img = np.exp(-((yy - 15.3) ** 2 + (xx - 16.8) ** 2) / (2 * 2.0**2))
    >>> refine_positions(img, [[15, 17]], sigma=2.0).round(3).tolist()
    [[15.3, 16.8]]
    """
    if method not in ("com", "gaussian"):
        raise InputError(f"Unknown refinement method {method!r}: use 'com' or 'gaussian'.")
    img = _image(image)
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return np.empty((0, 2), np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"The points have shape {pts.shape}: an (N, 2) table of (y, x) positions is needed.")
    if not np.isfinite(pts).all():
        raise InputError("Some points have NaN or infinite coordinates.")
    if img is None:  # constant image: nothing to refine towards
        return pts.copy()
    if sigma is None:
        sigma = estimate_feature_size(img)
    if not (np.isfinite(sigma) and sigma > 0):
        raise InputError(f"The feature size sigma must be a positive number of pixels, not {sigma!r}.")
    return _refine(img, pts, float(sigma), method, window=window, n_iter=n_iter)


def _refine(img, pts, sigma: float, method: str, *, window=None, n_iter=20, origin=(0, 0), frame_shape=None):
    """:func:`refine_positions` of ``pts`` (px in ``img``) on a float32 ``img``, without its checks.

    ``img`` may be a window at ``origin`` of a frame of ``frame_shape``:
    positions come back in frame px, kept within the frame.
    """
    if method not in ("com", "gaussian"):
        raise InputError(f"Unknown refinement method {method!r}: use 'com' or 'gaussian'.")
    if window is None:
        window = 2 * int(np.ceil(2.5 * sigma)) + 3
    window = int(window)
    if window < 3:
        raise InputError(f"The refinement window must be at least 3 px, not {window}.")
    if window % 2 == 0:
        window += 1
    frame_shape = img.shape if frame_shape is None else frame_shape
    out = np.empty_like(pts)
    chunk = max(1, (1 << 21) // (window * window))
    for s in range(0, pts.shape[0], chunk):
        part = pts[s : s + chunk]
        out[s : s + chunk] = _refine_chunk(img, part, window, float(sigma), method, n_iter, origin, frame_shape)
    return out


def _gather(img, cy, cx, half):
    """``(n, 2*half+1, 2*half+1)`` windows centred on integer pixels, edges clamped."""
    h, w = img.shape
    k = np.arange(-half, half + 1)
    ry = np.clip(cy[:, None] + k, 0, h - 1)
    rx = np.clip(cx[:, None] + k, 0, w - 1)
    return img[ry[:, :, None], rx[:, None, :]]


def _refine_chunk(img, pts, window, sigma, method, n_iter, origin, frame_shape):
    h, w = img.shape
    half = window // 2
    cy = np.clip(np.rint(pts[:, 0]), 0, h - 1).astype(np.intp)
    cx = np.clip(np.rint(pts[:, 1]), 0, w - 1).astype(np.intp)
    win = _gather(img, cy, cx, half).astype(np.float64)
    win -= win.min(axis=(1, 2), keepdims=True)
    k = np.arange(-half, half + 1, dtype=np.float64)
    # offsets of the estimate from the window centre
    oy = pts[:, 0] - cy
    ox = pts[:, 1] - cx
    lim = max(0.5, half - 1.0)
    inv2s2 = 1.0 / (2.0 * sigma * sigma)
    omega = 1.5  # over-relaxation: converges for any feature width, fast for width ~ sigma
    for _ in range(n_iter):
        wy = np.exp(-((k[None, :] - oy[:, None]) ** 2) * inv2s2)
        wx = np.exp(-((k[None, :] - ox[:, None]) ** 2) * inv2s2)
        rows = np.einsum("nij,nj->ni", win, wx)  # sum over x of w_x * I
        rows_x = np.einsum("nij,nj->ni", win, wx * k)
        tot = np.einsum("ni,ni->n", rows, wy)
        my = np.einsum("ni,ni->n", rows, wy * k)
        mx = np.einsum("ni,ni->n", rows_x, wy)
        good = tot > 0
        safe = np.where(good, tot, 1.0)
        ny = np.where(good, my / safe, oy)
        nx = np.where(good, mx / safe, ox)
        oy = np.clip(oy + omega * (ny - oy), -lim, lim)
        ox = np.clip(ox + omega * (nx - ox), -lim, lim)
    if method == "gaussian":
        oy, ox = _gauss_fit(img, cy, cx, oy, ox, lim)
    # never leave the frame (a column cut by the border would pull outwards); the integer pixel
    # in frame px plus the offset: the same float operation as on the whole frame
    fy, fx = cy + int(origin[0]), cx + int(origin[1])
    return np.column_stack([np.clip(fy + oy, 0, frame_shape[0] - 1), np.clip(fx + ox, 0, frame_shape[1] - 1)])


def _gauss_fit(img, cy, cx, oy, ox, lim):
    """Quadratic fit to log intensity on the 5 x 5 pixels around the estimate."""
    h, w = img.shape
    ry = np.clip(cy + np.rint(oy).astype(np.intp), 0, h - 1)
    rx = np.clip(cx + np.rint(ox).astype(np.intp), 0, w - 1)
    win = _gather(img, ry, rx, 2).astype(np.float64)
    big = _gather(img, ry, rx, 4)
    bg = big.min(axis=(1, 2)).astype(np.float64)
    win -= bg[:, None, None]
    top = win.max(axis=(1, 2), keepdims=True)
    val = np.maximum(win, 1e-6 * np.maximum(top, 1e-30))
    logv = np.log(val).reshape(len(win), -1)
    wts = (val / np.maximum(top, 1e-30)).reshape(len(win), -1)  # trust bright pixels more
    yy, xx = np.mgrid[-2:3, -2:3]
    a = np.column_stack([np.ones(25), yy.ravel(), xx.ravel(), yy.ravel() ** 2, xx.ravel() ** 2]).astype(np.float64)
    # weighted least squares per point: (A^T W A) c = A^T W log
    ata = np.einsum("ki,nk,kj->nij", a, wts, a)
    atb = np.einsum("ki,nk,nk->ni", a, wts, logv)
    try:
        coef = np.linalg.solve(ata, atb[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return oy, ox
    cyy, cxx = coef[:, 3], coef[:, 4]
    with np.errstate(divide="ignore", invalid="ignore"):
        dy = -coef[:, 1] / (2 * cyy)
        dx = -coef[:, 2] / (2 * cxx)
    ok = (cyy < 0) & (cxx < 0) & (np.abs(dy) <= 1.5) & (np.abs(dx) <= 1.5)
    ny = np.where(ok, (ry - cy) + dy, oy)
    nx = np.where(ok, (rx - cx) + dx, ox)
    return np.clip(ny, -lim, lim), np.clip(nx, -lim, lim)
