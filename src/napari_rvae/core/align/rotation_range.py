"""The rotation range: do the rotations stay within +/-90 degrees of a common upright?

If so (digits written upright and tilted, one crystal with small
misorientations) the upright is knowable: the pairwise search is redone
within that window, and each patch's angle is measured from the mean pose of
the patches similar to it (:func:`centre_on_mean_pose`). Two tests decide
(:func:`window_loss`, :func:`beyond_window_share`), then the concentration of
the angles found within the window.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .search import masked_correlation, outside_window, rotation_neighbours
from .sync import as_numpy, edge_weights, synchronize

# Largest weighted share of patches whose best match is lost inside the window: see docs/science.md#limited_range_loss
LIMITED_RANGE_LOSS = 0.07
# Smallest mean-direction length of the angles synchronised within the window: see docs/science.md#limited_range_concentration
LIMITED_RANGE_CONCENTRATION = 0.5
# Neighbours per patch in the search within the window: see docs/science.md#limited_neighbours
LIMITED_NEIGHBOURS = 20
# Largest share of patches whose neighbours nearly all lie beyond the window: see docs/science.md#limited_range_beyond
LIMITED_RANGE_BEYOND = 0.02
# "Nearly all" of a patch's neighbours, for LIMITED_RANGE_BEYOND: see docs/science.md#limited_range_beyond
BEYOND_MAJORITY = 0.9


def limited_window(symmetry: int = 1) -> float:
    """Half-width (radians) of the limited rotation range: 90 degrees / symmetry."""
    return math.pi / (2 * int(symmetry))


def window_loss(
    spec: torch.Tensor,
    idx,
    score,
    window: float,
    *,
    symmetry: int = 1,
    n_angles: int = 64,
    sharpness: float = 16.0,
    tolerance: float = 0.05,
    chunk: int = 256,
) -> float:
    """Share of the patches whose best match needs a rotation beyond ``window``.

    ``idx``/``score``: the neighbours from :func:`rotation_neighbours`, best
    first; only each patch's best match is tested (more edges bring in more
    matches between different shapes, whose rotation is arbitrary). It counts
    as lost when its best score within +/- ``window`` radians is below
    ``1 - tolerance`` times its best score overall; patches weigh
    ``score ** sharpness``.

    Examples
    --------
    >>> from napari_rvae.core.align import angular_spectra, rotation_neighbours
    >>> from napari_rvae.core.synthetic import make_rotated_shapes
    >>> for max_angle in (30, 180):
    ...     x, _ = make_rotated_shapes(300, 24, max_angle=max_angle, seed=0)
    ...     spec = angular_spectra(torch.as_tensor(x))
    ...     idx, _, score = rotation_neighbours(spec, 10, 64)
    ...     print(max_angle, window_loss(spec, idx, score, math.pi / 2) <= LIMITED_RANGE_LOSS)
    30 True
    180 False
    """
    outside = outside_window(n_angles, window, symmetry, spec.device)
    if outside is None:
        return 0.0
    idx = torch.as_tensor(idx, device=spec.device)[:, :1]
    score = torch.as_tensor(score, device=spec.device)[:, :1]
    inside = []
    for s in range(0, idx.shape[0], chunk):
        cross = (spec[s : s + chunk, None].conj() * spec[idx[s : s + chunk]]).sum(2)  # (B, k, F)
        corr = torch.fft.irfft(cross, n=n_angles, dim=-1)
        inside.append(masked_correlation(corr, outside).max(-1).values)
    lost = (torch.cat(inside) < (1.0 - tolerance) * score).cpu().numpy()
    w = edge_weights(score, sharpness)
    return float((w * lost).sum() / w.sum())


def beyond_window_share(rel, window: float, *, symmetry: int = 1, majority: float = BEYOND_MAJORITY) -> float:
    """Share of the patches whose neighbours nearly all lie at turns beyond ``window``.

    ``rel``: (N, k) rotations onto each patch's neighbours over the full
    circle (:func:`rotation_neighbours`). A patch counts when at least
    ``majority`` of its k rotations (modulo 2 pi / symmetry) are larger than
    ``window``. :func:`window_loss` misses a small grain turned beyond the
    window: each of its patches still finds a copy within its own grain at no
    turn. But most of its neighbours are patches of the larger rest, at the
    grain's turn, and those are what this counts.

    Examples
    --------
    >>> rel = np.zeros((10, 4)); rel[:2] = np.deg2rad(120)   # 2 of 10 patches see the rest turned 120 deg
    >>> beyond_window_share(rel, math.pi / 2)
    0.2
    """
    rel = np.asarray(as_numpy(rel), dtype=np.float64) * symmetry
    turn = np.remainder(rel + math.pi, 2 * math.pi) - math.pi
    far = (np.abs(turn) > window * symmetry + 1e-6).mean(1)
    return float((far >= majority).mean()) if far.size else 0.0


def centre_on_mean_pose(
    theta, similarity: torch.Tensor, *, symmetry: int = 1, sharpness: float = 16.0, chunk: int = 1024
) -> np.ndarray:
    """Angles (radians) measured from the mean pose of similar patches.

    Each patch's upright is the circular mean of every patch's angle (of
    ``symmetry * theta``), weighted by their ``similarity ** sharpness``, so
    each group of similar shapes gets its own upright: its mean pose. Every
    pair counts, not only the nearest neighbours: neighbours can be near
    copies at nearly the same pose, whose mean would follow the angle itself
    (measured on one glyph at +/-45 deg: one-offset correlation 0.31-0.89 with
    a 10-neighbour mean, 1.000 with this one). The mean is taken twice, the
    second time without the patches more than 90 degrees (/ symmetry) from the
    first: a similar-looking shape whose group came out turned the other way
    round (a 9 beside the 6s) would otherwise pull it. Only meaningful when the
    rotations stay within +/-90 degrees (/ symmetry) of a common upright.
    Returned in ``(-pi, pi] / symmetry``.

    Examples
    --------
    >>> theta = np.array([1.1, 1.2, 1.3, -2.0, -1.9])   # two shapes, mean poses 1.2 and -1.95
    >>> same = np.equal.outer([0, 0, 0, 1, 1], [0, 0, 0, 1, 1])
    >>> np.round(centre_on_mean_pose(theta, torch.tensor(np.where(same, 1.0, 0.9))), 2) + 0.0
    array([-0.1 ,  0.  ,  0.1 , -0.05,  0.05])
    """
    # float32 on the device (MPS has no float64); symmetry * theta first, in float64 on the host.
    theta = torch.as_tensor(
        np.asarray(np.asarray(as_numpy(theta), dtype=np.float64) * symmetry, dtype=np.float32), device=similarity.device
    )
    pose = torch.polar(torch.ones_like(theta), theta).to(torch.complex64)
    mean = torch.empty_like(pose)
    for s in range(0, pose.shape[0], chunk):
        weight = similarity[s : s + chunk].float().clamp_min(0.0) ** sharpness
        first = weight.to(torch.complex64) @ pose
        agree = (pose[None, :] * first.conj()[:, None]).real > 0
        mean[s : s + chunk] = (weight * agree).to(torch.complex64) @ pose
    return torch.angle(pose * mean.conj()).cpu().numpy().astype(np.float64) / symmetry


def limited_range_angles(
    spec: torch.Tensor,
    idx,
    rel,
    score,
    *,
    symmetry: int = 1,
    k: int = 10,
    n_angles: int = 64,
    rotation_range: str = "auto",
):
    """Angles (radians) measured within the limited window, or ``None`` where the full circle stands.

    ``idx``, ``rel``, ``score``: the full-circle neighbours
    (:func:`~napari_rvae.core.align.rotation_neighbours`). ``rotation_range``:
    ``auto`` runs the range tests for 1-fold content and takes the full circle
    for n-fold content; ``limited`` measures within the window untested;
    ``full`` returns ``None``. Returns ``(theta, loss, concentration,
    beyond)``: the angles (``None``: use the full circle) and the tests'
    statistics (:func:`window_loss`, the concentration of the angles found
    within the window, :func:`beyond_window_share`), NaN where not measured.
    """
    window, loss, concentration, beyond = limited_window(symmetry), float("nan"), float("nan"), float("nan")
    if rotation_range == "auto" and symmetry > 1:
        rotation_range = "full"
    if rotation_range == "auto":
        loss = window_loss(spec, idx, score, window, symmetry=symmetry, n_angles=n_angles)
        beyond = beyond_window_share(rel, window, symmetry=symmetry)
    if not (
        rotation_range == "limited"
        or (rotation_range == "auto" and loss <= LIMITED_RANGE_LOSS and beyond <= LIMITED_RANGE_BEYOND)
    ):
        return None, loss, concentration, beyond
    w_idx, w_rel, w_score, similar, _ = rotation_neighbours(
        spec, max(k, LIMITED_NEIGHBOURS), n_angles, window=window, symmetry=symmetry, every=True
    )
    theta = synchronize(w_idx, w_rel * symmetry, w_score) / symmetry
    concentration = float(np.abs(np.exp(1j * symmetry * theta).mean()))
    if rotation_range == "auto" and concentration < LIMITED_RANGE_CONCENTRATION:
        return None, loss, concentration, beyond  # consistent angles that cover the circle: not a limited range
    # Similar within the window: a shape and its upside-down look-alike are not.
    return centre_on_mean_pose(theta, similar, symmetry=symmetry), loss, concentration, beyond
