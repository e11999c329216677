"""Scoring angles honestly: circular correlation and error after fitting sign and offset.

A latent angle has an arbitrary zero (and, for mirror-symmetric content, an
arbitrary sign), so scores first fit the one sign and offset that best align
it with the truth, then measure.
"""

from __future__ import annotations

import math

import numpy as np


def circular_correlation(a_deg, b_deg) -> float:
    """Fisher-Lee circular correlation of two angle samples (degrees), in [-1, 1].

    Unlike the Jammalamadaka-SenGupta coefficient it needs no mean direction,
    so it stays meaningful when angles cover the whole circle. A negative value
    means the two run in opposite senses.

    Examples
    --------
    >>> a = np.linspace(0, 350, 36)
    >>> round(circular_correlation(a, a + 40), 6), round(circular_correlation(a, -a), 6)
    (1.0, -1.0)
    """
    a = np.deg2rad(np.asarray(a_deg, dtype=float))
    b = np.deg2rad(np.asarray(b_deg, dtype=float))
    ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
    # sum_ij sin(a_i - a_j) sin(b_i - b_j), expanded into O(n) sums.
    num = (ca * cb).sum() * (sa * sb).sum() - (ca * sb).sum() * (sa * cb).sum()
    den_a = (ca**2).sum() * (sa**2).sum() - (ca * sa).sum() ** 2
    den_b = (cb**2).sum() * (sb**2).sum() - (cb * sb).sum() ** 2
    den = np.sqrt(max(den_a, 0.0) * max(den_b, 0.0))
    return float(num / den) if den > 0 else 0.0


def aligned_errors(pred_deg, true_deg, *, groups=None, period: float = 360.0, sign=None):
    """Absolute angle errors (degrees) after fitting one sign and an offset per group.

    Parameters
    ----------
    pred_deg, true_deg : array_like
        Predicted and true angles in degrees.
    groups : array_like, optional
        One offset is fitted per group (for example per digit class when every
        class appears at every angle); ``None`` fits one offset for all.
    period : float
        Angles are compared modulo ``period`` (``360 / n`` for n-fold symmetry).
    sign : {1, -1}, optional
        Fix the sign instead of choosing the better one.

    Returns
    -------
    errors : ndarray
        Per-sample absolute error in degrees, in ``[0, period / 2]``.
    sign : int
        The sign used.

    Examples
    --------
    >>> t = np.array([0.0, 90.0, 180.0, 270.0])
    >>> err, s = aligned_errors(-t + 30, t)
    >>> round(float(err.max()), 6), s
    (0.0, -1)
    """
    k = 2 * np.pi / period
    p = np.asarray(pred_deg, dtype=float) * k
    t = np.asarray(true_deg, dtype=float) * k
    g = np.zeros(len(p), dtype=int) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    best = None
    for s in [sign] if sign else [1, -1]:
        d = np.exp(1j * (s * p - t))
        err = np.empty(len(p))
        for gi in np.unique(g):
            m = g == gi
            off = np.angle(d[m].mean())
            err[m] = np.abs(np.angle(d[m] * np.exp(-1j * off)))
        if best is None or err.mean() < best[0].mean():
            best = (err, s)
    return best[0] / k, best[1]


def circular_mean_spread(angles_deg, period: float = 360.0) -> tuple[float, float]:
    """Circular mean direction and circular standard deviation of angles modulo ``period`` (degrees).

    With ``phi = 2 pi angle / period`` and ``R`` the length of the mean of
    ``exp(i phi)``, the mean is ``arg`` of that mean and the spread is Mardia's
    circular standard deviation ``sqrt(-2 ln R)``, both converted back to
    degrees on the ``period`` circle. NaN angles are left out.

    Parameters
    ----------
    angles_deg : array_like
    period : float
        ``360 / n`` for an n-fold symmetric angle.

    Returns
    -------
    mean : float
        In ``[0, period)``; NaN without angles or when they cancel (``R == 0``).
    spread : float
        0 when all angles agree, ``inf`` when they cancel, NaN without angles.

    Examples
    --------
    >>> m, s = circular_mean_spread([170.0, 10.0], period=180.0)
    >>> round(m, 6), round(s, 3)
    (0.0, 10.104)
    """
    a = np.asarray(angles_deg, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return math.nan, math.nan
    k = 2 * np.pi / period
    mean = np.exp(1j * k * a).mean()
    r = min(float(abs(mean)), 1.0)
    if r < 1e-12:
        return math.nan, math.inf
    direction = float(np.angle(mean) / k) % period
    return (0.0 if direction >= period else direction), float(np.sqrt(max(0.0, -2.0 * np.log(r))) / k)
