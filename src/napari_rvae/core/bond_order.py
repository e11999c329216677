"""Bond-orientational order psi_n: a learning-free local orientation for crystals.

For each atom, ``psi_n = mean_j exp(i n phi_j)`` over the bonds to its nearest
neighbours, ``phi_j`` the bond direction (a bond too long to be one counts as
zero). In an n-fold lattice the bonds are
``360 / n`` degrees apart, so they all add up: ``arg(psi_n) / n`` is the
lattice orientation modulo ``360 / n`` and ``|psi_n|`` (1 in a perfect
lattice) says how well the neighbourhood fits one. It checks the rVAE's learned
``angle`` where the content is a lattice; the learned angle has an arbitrary
zero, so the comparison removes one global offset first.

Angles follow the project's convention: degrees, counter-clockwise as
displayed, with the image's y axis (napari's axis 0) pointing down, so a bond
``(dy, dx)`` has the direction ``atan2(-dy, dx)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .errors import InputError

__all__ = [
    "DISAGREEMENT_DEG",
    "LATTICE_ORDERS",
    "LATTICE_SYMMETRIES",
    "MIN_ORDER",
    "angle_disagreement",
    "bond_orientation",
    "compared_period",
    "flag_disagreement",
    "lattice_check_columns",
    "lattice_check_summary",
    "lattice_summary",
    "lattice_order",
    "lattice_period",
    "with_lattice_check",
]

# The rotations a periodic 2-D lattice can have (crystallographic restriction).
LATTICE_SYMMETRIES = (2, 3, 4, 6)

# The psi_n the lattice check reads: square and hexagonal lattices. Not the
# motif's symmetry: on a real MoS2 scan the pattern around a Mo column is 3-fold
# (the S columns) while the Mo lattice is 6-fold, and psi_3 of a 6-fold lattice
# picks 3 of 6 equal bonds at random.
LATTICE_ORDERS = (4, 6)

# Below this |psi_n| the neighbourhood is not one lattice (an edge, a boundary,
# a vacancy), so its psi angle is not a check of anything. On make_lattice
# (jitter 0.3 px) 99.2% (square) / 100% (hexagonal) of grain-interior atoms reach it;
# so do 30% (n=4) / 23% (n=6) of hard-core random points: from n bonds, a high
# order alone does not prove a lattice.
MIN_ORDER = 0.5

# Above the noise of both angles, measured on make_lattice (512 x 512, jitter
# 0.3 px, three grains): psi's own error on atoms of order >= 0.5 reached
# 10.2 deg (square) and 7.6 deg (hexagonal); after a 20-epoch CLI training
# (--hidden-dim 64 --patch-size 24) |angle - psi| reached 5.6 deg (n=4, 1449
# atoms) and 4.8 deg (n=6, 1811 atoms), so nothing was flagged, while 5-epoch
# models with whole grains 16-18 deg off had 49 of 310 and 89 of 411 flagged.
# The noise did not grow with n, so the threshold is not scaled by it.
DISAGREEMENT_DEG = 15.0


def _check_symmetry(n) -> int:
    try:
        ok = not isinstance(n, bool) and int(n) == n and int(n) >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise InputError(f"The symmetry n must be a positive integer, not {n!r}.")
    return int(n)


def _wrap(angle_deg, period: float):
    """Wrap into (-period / 2, period / 2]."""
    half = period / 2.0
    a = np.mod(np.asarray(angle_deg, dtype=float) + half, period) - half
    return np.where(a <= -half, a + period, a)


def bond_orientation(points_yx, n: int, *, neighbours: int | None = None, max_distance: float | None = None):
    """Local lattice orientation and order from the bonds to the nearest neighbours.

    Parameters
    ----------
    points_yx : array_like, shape (N, 2)
        Atom positions (y, x) in pixels, y pointing down as displayed.
        Exact duplicates count as one atom (they share its result); rows with
        a NaN or infinite coordinate get NaN angle and order 0.
    n : int
        The lattice's rotational symmetry (4 square, 6 hexagonal, ...).
    neighbours : int, optional
        How many nearest neighbours make the bonds; default ``n`` (the first
        coordination shell of an n-fold lattice).
    max_distance : float, optional
        Bonds longer than this (pixels) count as zero; default 1.5 times the
        median nearest-neighbour distance.

    Returns
    -------
    angle : ndarray of float, shape (N,)
        ``arg(psi_n) / n`` in degrees, counter-clockwise as displayed, in
        ``[0, 360 / n)``: turning the lattice counter-clockwise by ``a`` adds
        ``a``. NaN where psi_n vanishes (no neighbour within ``max_distance``,
        or bonds that cancel).
    order : ndarray of float, shape (N,)
        ``|psi_n|`` in [0, 1]: 1 when all ``neighbours`` bonds lie on the
        n-fold star. Bonds missing (beyond ``max_distance``) count as zero, so
        edge and boundary atoms score lower.

    Examples
    --------
    A square lattice turned 10 degrees counter-clockwise (as displayed):

    >>> t = np.deg2rad(10.0)
    >>> i, j = np.mgrid[:5, :5].reshape(2, -1) * 12.0
    >>> x, y_up = i * np.cos(t) - j * np.sin(t), i * np.sin(t) + j * np.cos(t)
    >>> angle, order = bond_orientation(np.column_stack([-y_up, x]), 4)
    >>> round(float(angle[12]), 6), round(float(order[12]), 6)  # the middle atom
    (10.0, 1.0)
    >>> bond_orientation([[0.0, 0.0]], 4)
    (array([nan]), array([0.]))
    """
    n = _check_symmetry(n)
    k_wanted = n if neighbours is None else int(neighbours)
    if k_wanted < 1:
        raise InputError(f"neighbours must be at least 1, not {neighbours!r}.")
    pts = np.asarray(points_yx, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"Points must be an (N, 2) array of (y, x), not shape {pts.shape}.")
    angle = np.full(len(pts), np.nan)
    order = np.zeros(len(pts))
    finite = np.isfinite(pts).all(axis=1)
    # One atom listed twice is one atom: a zero-length bond has no direction.
    unique, inverse = np.unique(pts[finite], axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    if len(unique) < 2:
        return angle, order
    phi, use = _bonds(unique, k_wanted, max_distance)
    psi_angle, psi_order = _psi(phi, use, n, k_wanted)
    angle[finite] = psi_angle[inverse]
    order[finite] = psi_order[inverse]
    return angle, order


def _bonds(unique: np.ndarray, k_wanted: int, max_distance: float | None):
    """Each atom's bond directions (radians, CCW as displayed) to its nearest neighbours, and which count.

    A bond counts when the neighbour exists and lies within ``max_distance``
    (default 1.5 times the median nearest-neighbour distance).
    """
    tree = cKDTree(unique)
    k = min(k_wanted, len(unique) - 1)
    dist, idx = tree.query(unique, k=k + 1)  # column 0 is the atom itself
    dist, idx = dist[:, 1:], idx[:, 1:]
    found = idx < len(unique)  # the tree marks a neighbour it could not find with len(unique)
    if max_distance is None:
        max_distance = 1.5 * float(np.median(dist[:, 0]))
    elif not max_distance > 0:
        raise InputError(f"max_distance must be positive, not {max_distance!r}.")
    bond = unique[np.where(found, idx, 0)] - unique[:, None, :]
    phi = np.arctan2(-bond[..., 0], bond[..., 1])
    return phi, found & (dist <= max_distance)


def _psi(phi: np.ndarray, use: np.ndarray, n: int, k_wanted: int):
    """Angle (degrees in ``[0, 360 / n)``, NaN where psi_n vanishes) and order ``|psi_n|`` per atom."""
    count = use.sum(axis=1)
    # A missing bond counts as zero (divide by the bonds asked for, not found), or an
    # atom with one close neighbour scores order 1 (docs/science.md, "psi_n: missing bonds").
    psi = np.where(use, np.exp(1j * n * phi), 0.0).sum(axis=1) / k_wanted
    period = 360.0 / n
    psi_order = np.minimum(np.abs(psi), 1.0)
    psi_angle = np.mod(np.rad2deg(np.angle(psi)) / n, period)
    psi_angle = np.where(psi_angle >= period, 0.0, psi_angle)  # mod can round up to the period
    psi_angle = np.where((count > 0) & (psi_order > 1e-12), psi_angle, np.nan)
    return psi_angle, np.where(count > 0, psi_order, 0.0)


def angle_disagreement(angle_deg, psi_deg, n: int, order=None, *, min_order: float = MIN_ORDER):
    """How far the learned angle is from psi_n's, after removing one global offset.

    The learned angle's zero is arbitrary, so the offset is the circular mean
    of the differences (modulo ``360 / n``), weighted by ``order`` over the
    atoms whose order is at least ``min_order``.

    Parameters
    ----------
    angle_deg : array_like, shape (N,)
        The learned angle, degrees counter-clockwise as displayed.
    psi_deg : array_like, shape (N,)
        psi_n's angle from :func:`bond_orientation` (same sense).
    n : int
        The symmetry: angles are compared modulo ``360 / n``.
    order : array_like, shape (N,), optional
        ``|psi_n|`` from :func:`bond_orientation`; None weighs every atom alike.
    min_order : float
        Atoms below this order do not take part in fitting the offset.

    Returns
    -------
    ndarray of float, shape (N,)
        ``angle - psi - offset`` wrapped into ``(-180 / n, 180 / n]`` degrees.
        NaN where either angle is NaN, and everywhere when no atom has
        ``order >= min_order`` (no lattice to fit the offset on).

    Examples
    --------
    >>> psi = np.array([10.0, 20.0, 85.0, 40.0])
    >>> learned = psi + 33.0  # an arbitrary zero
    >>> learned[3] += 20.0    # one atom that disagrees
    >>> angle_disagreement(learned, psi, 4, order=[1.0, 1.0, 1.0, 0.1]).round(6)
    array([ 0.,  0.,  0., 20.])
    """
    n = _check_symmetry(n)
    period = 360.0 / n
    a = np.asarray(angle_deg, dtype=float)
    p = np.asarray(psi_deg, dtype=float)
    if a.shape != p.shape:
        raise InputError(f"angle_deg and psi_deg must have the same shape, not {a.shape} and {p.shape}.")
    w = np.ones(a.shape) if order is None else np.asarray(order, dtype=float)
    if w.shape != a.shape:
        raise InputError(f"order must have one value per angle: shape {a.shape}, not {w.shape}.")
    diff = a - p
    fit = np.isfinite(diff) & np.isfinite(w) & (w > 0)
    if order is not None:
        fit &= w >= min_order
    if not fit.any():
        return np.full(a.shape, np.nan)
    step = 2.0 * np.pi / period
    offset = np.angle(np.sum(w[fit] * np.exp(1j * step * diff[fit]))) / step
    return _wrap(diff - offset, period)


def flag_disagreement(diff_deg, order=None, *, threshold_deg: float = DISAGREEMENT_DEG, min_order: float = MIN_ORDER):
    """True where the learned angle and psi_n disagree by more than ``threshold_deg``.

    Parameters
    ----------
    diff_deg : array_like, shape (N,)
        From :func:`angle_disagreement`.
    order : array_like, shape (N,), optional
        ``|psi_n|``; atoms below ``min_order`` (not one lattice around them)
        are never flagged. None flags by the difference alone.
    threshold_deg : float
        Degrees; the default :data:`DISAGREEMENT_DEG`.
    min_order : float

    Returns
    -------
    ndarray of bool, shape (N,)
        False where the difference is NaN.

    Examples
    --------
    >>> flag_disagreement([2.0, -30.0, 30.0, np.nan], order=[1.0, 0.9, 0.2, 1.0])
    array([False,  True, False, False])
    """
    d = np.abs(np.asarray(diff_deg, dtype=float))
    flag = np.isfinite(d) & (d > threshold_deg)
    if order is not None:
        flag &= np.asarray(order, dtype=float) >= min_order
    return flag


def lattice_order(points_yx) -> tuple[int, float]:
    """The lattice's n (4 or 6): the psi_n with the higher median order, and that median.

    Examples
    --------
    >>> i, j = np.mgrid[:10, :10].reshape(2, -1) * 10.0   # a square lattice; most atoms inside
    >>> n, order = lattice_order(np.column_stack([i, j]))
    >>> n, round(order, 2)
    (4, 1.0)
    """
    best = (LATTICE_ORDERS[0], float("nan"))
    for n in LATTICE_ORDERS:
        _, order = bond_orientation(points_yx, n)
        median = float(np.nanmedian(order)) if np.isfinite(order).any() else float("nan")
        if np.isfinite(median) and not median <= best[1]:
            best = (n, median)
    return best


def lattice_period(points_yx) -> float:
    """Degrees of psi_n's period for these positions: 360 / :func:`lattice_order`'s n."""
    return 360.0 / lattice_order(points_yx)[0]


def compared_period(symmetry: int, lattice_n: int) -> float:
    """Degrees modulo which a ``symmetry``-fold angle and psi_``lattice_n`` can be compared: 360 / lcm."""
    return 360.0 / np.lcm(_check_symmetry(symmetry), _check_symmetry(lattice_n))


def lattice_check_columns(points_yx, angle_deg, symmetry: int, lattice_n: int | None = None) -> dict[str, np.ndarray]:
    """The points.csv columns that set psi_n beside the learned angle.

    Parameters
    ----------
    points_yx : array_like, shape (N, 2)
        Atom positions (y, x) in pixels.
    angle_deg : array_like, shape (N,)
        The learned angle (NaN where there is none).
    symmetry : int
        The symmetry the model was trained with (the angle is modulo 360/symmetry).
    lattice_n : int, optional
        psi_n's n; default :func:`lattice_order` of the points (4 or 6). The
        two angles are compared modulo :func:`compared_period`: a 3-fold motif
        on a 6-fold lattice modulo 60 degrees, a 1-fold one on a square lattice
        modulo 90.

    Returns
    -------
    dict of str to ndarray
        ``psi_angle`` and ``psi_order`` (:func:`bond_orientation`),
        ``angle_psi_diff`` (:func:`angle_disagreement`) and ``angle_psi_flag``
        (:func:`flag_disagreement`), in that order.

    Examples
    --------
    >>> i, j = np.mgrid[:4, :4].reshape(2, -1) * 10.0
    >>> columns = lattice_check_columns(np.column_stack([i, j]), np.full(16, 30.0), 4)
    >>> list(columns), float(columns["angle_psi_diff"].max()), bool(columns["angle_psi_flag"].any())
    (['psi_angle', 'psi_order', 'angle_psi_diff', 'angle_psi_flag'], 0.0, False)
    """
    n = _check_symmetry(lattice_n) if lattice_n is not None else lattice_order(points_yx)[0]
    psi_angle, psi_order = bond_orientation(points_yx, n)
    together = int(round(360.0 / compared_period(symmetry, n)))
    diff = angle_disagreement(angle_deg, psi_angle, together, psi_order)
    return {
        "psi_angle": psi_angle,
        "psi_order": psi_order,
        "angle_psi_diff": diff,
        "angle_psi_flag": flag_disagreement(diff, psi_order),
    }


def with_lattice_check(table: pd.DataFrame, points_yx, symmetry: int) -> pd.DataFrame:
    """``table`` (the encoder's, a row per point) followed by the :func:`lattice_check_columns`.

    Without an ``angle`` column (a plain VAE) psi_n is still given; the
    difference columns are then empty. The layout of points.csv and of the
    napari results' features alike.
    """
    points = np.asarray(points_yx, dtype=float).reshape(-1, 2)
    angle = table["angle"].to_numpy(dtype=float) if "angle" in table else np.full(len(points), np.nan)
    check = lattice_check_columns(points, angle, int(symmetry))
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(check)], axis=1)


def lattice_check_summary(points_yx, columns: dict, symmetry: int) -> dict:
    """For report.json: which psi_n, compared modulo what, how ordered, how many atoms flagged."""
    n, median = lattice_order(points_yx)
    return lattice_summary(n, median, int(np.asarray(columns["angle_psi_flag"], dtype=bool).sum()), symmetry)


def lattice_summary(psi_n: int, median_order: float, flagged: int, symmetry: int) -> dict:
    """report.json's ``lattice_check`` from its measured parts (one image's, or a movie's gathered).

    Examples
    --------
    >>> lattice_summary(6, 0.91234, 3, 6)["compared_modulo_deg"], lattice_summary(4, float("nan"), 0, 1)["median_order"]
    (60.0, None)
    """
    return {
        "psi_n": int(psi_n),
        "compared_modulo_deg": float(compared_period(symmetry, psi_n)),
        "median_order": None if not np.isfinite(median_order) else round(float(median_order), 4),
        "min_order": MIN_ORDER,
        "threshold_deg": DISAGREEMENT_DEG,
        "flagged": int(flagged),
    }
