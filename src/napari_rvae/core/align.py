"""Coarse rotational alignment of a patch stack by angular synchronisation.

An rVAE's latent angle has an arbitrary zero per *shape*: when every shape
appears at every angle, the decoder may draw one digit upright in one region
of the latent space and upside down in another, and training never resolves
it (issue #6: within-digit 180 degree flips). Cryo-EM solves the same problem
for particle images with angular synchronisation (Singer, 2011): estimate the
rotation between each patch and its most similar neighbours, then find the
one angle per patch that agrees best with all those pairwise rotations. The
result is consistent across the whole stack, which is exactly what the rVAE
lacks. ``RVAE.coarse_align`` turns each patch back by its coarse angle before
the rVAE sees it; the rVAE learns the content and what rotation is left.

Steps (torch on the training device; the eigenvector with scipy on the CPU):

1. Polar resampling about the patch centre (rings weighted by sqrt(r), so dot
   products approximate the area integral).
2. For every pair, the cross-correlation over all rotations at once by FFT
   along the angle; its peak gives the relative rotation and a similarity.
   With n-fold symmetry only the angular frequencies that are multiples of n
   are kept, so rotations are compared modulo 360/n degrees.
3. Each patch keeps its ``k`` most similar neighbours; the Hermitian matrix of
   their relative rotations' phases has the patches' phases as its leading
   eigenvector, refined by the generalised power method. Over the full
   circle, groups of patches with few links between them (the two species of
   a crystal) are then given one zero by their best matches across groups
   (:func:`link_groups`).

4. Rotation range. When the data stay within +/-90 degrees of a common
   upright (digits written upright and tilted, one crystal with small
   misorientations), the upright is knowable and the angle should be measured
   from it; but step 3 leaves one arbitrary zero per group of similar patches
   and lets near-symmetric shapes (a 1, an 0) flip by 180 degrees. Test: does
   each patch's best match score (nearly) as well within +/-90 degrees as
   over the whole circle? If so for all but ``LIMITED_RANGE_LOSS`` of the
   patches, and at most ``LIMITED_RANGE_BEYOND`` of them have nearly all their
   neighbours at turns beyond the window (a small grain turned by more than
   90 degrees), the pairwise search is redone within that window (no flips) and,
   if the angles found there are concentrated (``LIMITED_RANGE_CONCENTRATION``),
   each patch's angle is measured from the mean pose of the patches similar
   to it (:func:`centre_on_mean_pose`). Otherwise (rotations of any size, or a minority grain turned
   by more than 90 degrees) the full-circle result stands. The test runs
   for 1-fold content only: with n-fold symmetry (a crystal) ``auto`` is the
   full circle modulo 360/n (issue #17). There the window would be +/-90/n
   degrees (+/-15 for 6-fold), which real misorientations exceed, and on a
   lattice the "similar patches" of the mean pose are those of one region:
   on a real MoS2 scan regions turned by 12 and 25 degrees read 1.7 and -0.6
   (``benchmarks/bench_real.py``; full circle: 13.5 and 26.3). ``limited``
   still applies it when asked.

Large stacks: at most ``MAX_ANCHORS`` patches are synchronised with each
other, and ``REFERENCE_SIZE`` of them (the *reference*) are kept; every patch
then takes its angle from its best-matching reference patches, and so does
any new patch once the reference is stored in a model file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import ROTATION_RANGES
from .eigen import leading_eigenvectors
from .spectral import spectral_clusters

# Patches synchronised with each other: the cost grows as its square (2,000
# take about 1.1 s on 2 CPU cores, 4,000 4.3 s); on 10,000 rotated digits
# 4,000 gave a within-digit correlation of 0.719 against 0.695 with 2,000.
MAX_ANCHORS = 4000
# Of those, the reference a model keeps and matches every patch against (training
# and encoding alike). Matching cost grows with it: 500 encode 100,000 patches
# of 32 px in about a quarter of the time 2,000 take, and on rotated digits the
# within-digit correlation was 0.68-0.72 against 0.71-0.73 with all 2,000.
REFERENCE_SIZE = 500
# Rotation range test (step 4): the limited-range window is assumed when at most
# this share of the patches (weighted by match score ** 16) lose more than 5 %
# of their best match's score inside the window. Measured on 300 / 600 / 2,000
# rotated digits: +/-45 deg 0.045 / 0.034 / 0.007, +/-60 0.038-0.048, +/-90
# 0.18-0.21, +/-180 0.37-0.42; lattices: the README example (grains 0/30/-55
# deg) 0.001; a 15-25 % grain turned by 100-120 deg 0.100-0.145 (the window
# would merge it into the rest), two grains 170 deg apart 0.33.
LIMITED_RANGE_LOSS = 0.07
# ... and when the angles synchronised within that window stay concentrated:
# the length of their mean direction (uniform within +/-45 deg: 0.90, within
# +/-90: 0.64, any angle: 0). One shape at closely spaced angles passes the first
# test (each patch's best match is a near copy at nearly its pose) but not this.
LIMITED_RANGE_CONCENTRATION = 0.5
# Neighbours per patch in the search within the window. With 10, 4,000 digits
# at +/-45 deg left the 1s split in two (one-offset correlation 0.939); with 20,
# 0.988; 600-2,000 digits and one glyph: the same or better (+/-60: 0.91-0.93 ->
# 0.94). Over the full circle 15-40 brought nothing (docs/science.md).
LIMITED_NEIGHBOURS = 20
# ... and when at most this share of the patches have nearly all (BEYOND_MAJORITY) of
# their neighbours at turns beyond the window (beyond_window_share). Measured:
# rotated digits at +/-45 deg (300-4,000, seeds 0-5) 0.000-0.015, at +/-30, 60
# and 75 0.002-0.003; the README lattice 0.000; 2.4-10 % grains turned by 95-180
# deg 0.018-0.068, which the first test mostly passes (0.009-0.085).
LIMITED_RANGE_BEYOND = 0.02
BEYOND_MAJORITY = 0.9
# Over the full circle, the zeros of the groups of similar patches are tied
# together (link_groups): the patches are split into LINK_GROUPS groups of the
# neighbour graph, and each patch's LINK_MATCHES best matches in every other
# group say how far apart those zeros are. Measured on 10 polycrystals with two
# species at random orientations: the offset between the species within a grain
# went from 2.5-152 deg to 0.3-3.9 deg; rotated digits and one glyph unchanged
# (within-digit correlation within 0.004; 2 or 3 groups worked as well, 20 split
# digits and scored 0.60-0.68 against 0.68-0.71).
LINK_GROUPS = 4
LINK_MATCHES = 5

__all__ = [
    "BEYOND_MAJORITY",
    "LIMITED_RANGE_BEYOND",
    "LIMITED_RANGE_CONCENTRATION",
    "LIMITED_NEIGHBOURS",
    "LIMITED_RANGE_LOSS",
    "Reference",
    "angular_spectra",
    "best_references",
    "beyond_window_share",
    "limited_window",
    "link_groups",
    "build_reference",
    "centre_on_mean_pose",
    "coarse_angles",
    "disk",
    "pick_anchors",
    "polar_transform",
    "reference_angles",
    "rotate_patches",
    "rotation_neighbours",
    "synchronize",
    "window_loss",
]


def polar_transform(patches: torch.Tensor, n_angles: int = 64, n_radii: int | None = None) -> torch.Tensor:
    """(N, P, P) patches to (N, R, A) polar images about the patch centre.

    The angle runs counter-clockwise as displayed (rows grow downwards), so a
    patch turned counter-clockwise by ``phi`` has its polar image shifted by
    ``+phi`` along the last axis.

    Examples
    --------
    >>> x = torch.zeros(1, 17, 17); x[0, 8, 12:] = 1.0   # a bar pointing right
    >>> polar_transform(x, n_angles=8).sum(1)[0].argmax().item()   # angle 0
    0
    """
    n, p = patches.shape[0], patches.shape[-1]
    n_radii = int(n_radii or p // 2)
    r = (torch.arange(n_radii, dtype=torch.float32) + 0.5) / n_radii * (p / 2 - 0.5)
    a = 2 * math.pi * torch.arange(n_angles, dtype=torch.float32) / n_angles
    half = (p - 1) / 2
    # grid_sample's x is the column, y the row, both in [-1, 1]; y up on screen is -row.
    gx = r[:, None] * torch.cos(a)[None] / half
    gy = -r[:, None] * torch.sin(a)[None] / half
    grid = torch.stack([gx, gy], -1).to(patches.device)
    img = patches.reshape(n, 1, p, p).float()
    out = F.grid_sample(img, grid.expand(n, -1, -1, -1), align_corners=True)[:, 0]
    return out * r.sqrt().to(patches.device)[None, :, None]


def _spectra(polar: torch.Tensor, symmetry: int) -> torch.Tensor:
    """Unit-norm, mean-free angular spectra (N, R, F); only multiples of ``symmetry`` kept."""
    x = polar - polar.mean(dim=(1, 2), keepdim=True)
    x = x / x.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    spec = torch.fft.rfft(x, dim=-1)
    if symmetry > 1:
        keep = torch.arange(spec.shape[-1], device=spec.device) % symmetry == 0
        spec = spec * keep
    return spec


def limited_window(symmetry: int = 1) -> float:
    """Half-width (radians) of the limited rotation range: 90 degrees / symmetry."""
    return math.pi / (2 * int(symmetry))


def _outside(n_angles: int, window: float | None, symmetry: int, device) -> torch.Tensor | None:
    """(A,) mask of the rotation steps farther than ``window`` from 0 (modulo 2 pi / symmetry)."""
    if window is None or window >= math.pi / symmetry:
        return None
    period = 2 * math.pi / symmetry
    lag = torch.arange(n_angles, device=device, dtype=torch.float32) * (2 * math.pi / n_angles)
    lag = torch.remainder(lag + period / 2, period) - period / 2
    return lag.abs() > window + 1e-6


def _masked(corr: torch.Tensor, outside: torch.Tensor | None) -> torch.Tensor:
    # Far below any normalised correlation (which lies in [-1, 1]).
    return corr if outside is None else corr.masked_fill(outside, -4.0)


def _best_rotation(spec_a: torch.Tensor, spec_b: torch.Tensor, n_angles: int, outside=None):
    """Peak of the rotational cross-correlation of every a with every b.

    Returns ``(score, angle)``, each (A, B): the normalised correlation at the
    peak and the rotation (radians) that turns a onto b, refined to sub-step
    precision with a parabola through the peak. ``outside``: rotation steps
    not to consider (see :func:`_outside`).
    """
    corr = torch.fft.irfft(torch.einsum("irf,jrf->ijf", spec_a.conj(), spec_b), n=n_angles, dim=-1)
    return _peak(_masked(corr, outside), n_angles)


def _peak(corr: torch.Tensor, n_angles: int):
    """Peak value and sub-step position (radians) along the last axis of circular correlations."""
    best, arg = corr.max(-1)
    prev = corr.gather(-1, ((arg - 1) % n_angles)[..., None])[..., 0]
    nxt = corr.gather(-1, ((arg + 1) % n_angles)[..., None])[..., 0]
    den = prev - 2 * best + nxt
    frac = torch.where(den.abs() > 1e-12, 0.5 * (prev - nxt) / den.where(den.abs() > 1e-12, torch.ones_like(den)), 0.0)
    angle = (arg.float() + frac.clamp(-0.5, 0.5)) * (2 * math.pi / n_angles)
    return best, angle


def rotation_neighbours(spec: torch.Tensor, k: int, n_angles: int, chunk: int = 128, *,
                        window: float | None = None, symmetry: int = 1, every: bool = False):
    """For each patch, its ``k`` most similar others under rotation.

    Returns ``(idx, angle, score)``, each (N, k): neighbour indices, the
    rotation (radians) turning the patch onto that neighbour, and the peak
    normalised correlation. ``window``: only rotations within +/- that many
    radians (modulo 2 pi / symmetry) are considered. ``every``: also return
    the (N, N) matrices of every pair's peak correlation (its diagonal 1) and
    rotation.
    """
    n = spec.shape[0]
    k = min(k, n - 1)
    outside = _outside(n_angles, window, symmetry, spec.device)
    idx, ang, score, all_scores, all_angles = [], [], [], [], []
    for s in range(0, n, chunk):
        best, angle = _best_rotation(spec[s : s + chunk], spec, n_angles, outside)
        rows = torch.arange(best.shape[0], device=best.device)
        if every:
            all_scores.append(best.clone())
            all_scores[-1][rows, rows + s] = 1.0
            all_angles.append(angle)
        best[rows, rows + s] = -math.inf  # not its own neighbour
        top = best.topk(k, dim=1)
        idx.append(top.indices)
        score.append(top.values)
        ang.append(angle.gather(1, top.indices))
    out = (torch.cat(idx), torch.cat(ang), torch.cat(score))
    return (*out, torch.cat(all_scores), torch.cat(all_angles)) if every else out


def synchronize(idx, angle, score, *, sharpness: float = 16.0, iterations: int = 100) -> np.ndarray:
    """Angles (radians) that best agree with the pairwise rotations of a neighbour graph.

    ``angle[i, m]`` is the rotation from patch ``i`` onto patch ``idx[i, m]``;
    the solution maximises ``sum w cos(theta_j - theta_i - angle_ij)``. Edge
    weights are ``score ** sharpness``, so the closest matches dominate (an
    edge between two different shapes carries an arbitrary rotation, and
    scores lower). The phases start from the leading eigenvector of the
    normalised Hermitian matrix of ``w exp(-i angle)`` (Singer's spectral
    relaxation) and are refined by the generalised power method, which
    measured better on rotated digits (within-digit correlation 0.68 -> 0.71).

    Examples
    --------
    >>> theta = np.array([0.0, 1.0, 2.0, 3.0])
    >>> idx = np.array([[1, 3], [2, 0], [3, 1], [0, 2]])
    >>> rel = theta[idx] - theta[:, None]
    >>> est = synchronize(idx, rel, np.ones_like(rel))
    >>> np.round(np.angle(np.exp(1j * (est - est[0]))), 6)
    array([0., 1., 2., 3.])
    """
    import scipy.sparse as sp

    idx, angle, score = (_numpy(v) for v in (idx, angle, score))
    n = idx.shape[0]
    rows = np.repeat(np.arange(n), idx.shape[1])
    w = _edge_weights(score, sharpness).ravel()
    h = sp.coo_matrix((w * np.exp(-1j * angle.ravel().astype(np.float64)), (rows, idx.ravel())), shape=(n, n)).tocsr()
    h = (h + h.conj().T) * 0.5
    deg = np.asarray(abs(h).sum(1)).ravel() + 1e-12
    d = sp.diags(1.0 / np.sqrt(deg))
    vec = leading_eigenvectors(d @ h @ d)[:, 0]
    return np.angle(_power_phases(h, vec / np.sqrt(deg), iterations))


def _power_phases(h, phase: np.ndarray, iterations: int) -> np.ndarray:
    """Generalised power method: phases that best agree with the Hermitian matrix ``h``, from a start."""
    for _ in range(iterations):
        phase = h @ (phase / np.maximum(np.abs(phase), 1e-300))
    return phase


def link_groups(theta, idx, score, all_scores: torch.Tensor, all_angles: torch.Tensor, *,
                groups: int = LINK_GROUPS, matches: int = LINK_MATCHES, sharpness: float = 16.0,
                seed: int = 0) -> np.ndarray:
    """Synchronised angles (radians) with the zeros of groups of similar patches tied together.

    Each patch links only to its closest matches, so patches of two kinds (the
    two species of a crystal) form two groups with no link between them, and
    :func:`synchronize` gives each its own arbitrary zero: a checkerboard of
    two angles across one grain. Here the neighbour graph (``idx``, ``score``)
    is split into ``groups`` by spectral clustering; every patch's
    ``matches`` best matches in every other group (from ``all_scores`` and
    ``all_angles``, every pair's peak correlation and rotation) vote, weighted
    by score ** sharpness, for the offset between the two groups' zeros; the
    offsets are synchronised like the patches were, and each group turned by
    its own. Groups whose best matches disagree (different shapes) vote with
    little weight.

    Examples
    --------
    >>> theta = np.array([0.0, 0.0, 2.0, 2.0])   # two kinds of patch, one orientation, zeros 2 rad apart
    >>> idx, score = np.array([[1], [0], [3], [2]]), np.full((4, 1), 0.99)   # each links to its own kind
    >>> every = torch.tensor([[1, .99, .8, .8], [.99, 1, .8, .8], [.8, .8, 1, .99], [.8, .8, .99, 1]])
    >>> out = link_groups(theta, idx, score, every, torch.zeros(4, 4), groups=2, matches=1)
    >>> round(float(np.angle(np.exp(1j * (out[2] - out[0])))), 6) + 0.0
    0.0
    """
    theta = np.asarray(_numpy(theta), dtype=np.float64)
    n = len(theta)
    if n <= groups or groups < 2:
        return theta
    label = spectral_clusters(_numpy(idx), _numpy(score), groups, seed=seed)
    scores, angles = _numpy(all_scores), _numpy(all_angles)  # float32: (N, N) each
    rows = np.arange(n)[:, None]
    offsets = np.zeros((groups, groups), dtype=complex)
    for b in range(groups):
        members = np.flatnonzero(label == b)
        m = min(matches, len(members))
        if m == 0:
            continue
        top = members[np.argpartition(-scores[:, members], m - 1, axis=1)[:, :m]]
        # theta_j - theta_i should equal the rotation i -> j; what is left is the groups' offset.
        vote = _edge_weights(scores[rows, top], sharpness) * np.exp(1j * (theta[:, None] + angles[rows, top] - theta[top]))
        np.add.at(offsets[:, b], label, vote.sum(1))
    np.fill_diagonal(offsets, 0.0)
    h = (offsets + offsets.conj().T) / 2
    phase = _power_phases(h, leading_eigenvectors(h)[:, 0], 100)
    return theta - np.angle(phase)[label]


def _numpy(v) -> np.ndarray:
    return np.asarray(v.cpu() if hasattr(v, "cpu") else v)


def _edge_weights(score, sharpness: float = 16.0) -> np.ndarray:
    """Graph edge weights from match scores: the closest matches dominate."""
    return np.clip(_numpy(score).astype(np.float64), 0.0, None) ** sharpness + 1e-12


def window_loss(spec: torch.Tensor, idx, score, window: float, *, symmetry: int = 1, n_angles: int = 64,
                sharpness: float = 16.0, tolerance: float = 0.05, chunk: int = 256) -> float:
    """Share of the patches whose best match needs a rotation beyond ``window``.

    ``idx``/``score``: the neighbours from :func:`rotation_neighbours`, best
    first; only each patch's best match is tested (more edges bring in more
    matches between different shapes, whose rotation is arbitrary). It counts
    as lost when its best score within +/- ``window`` radians is below
    ``1 - tolerance`` times its best score overall; patches weigh
    ``score ** sharpness``.

    Examples
    --------
    >>> from napari_rvae.core.synthetic import make_rotated_shapes
    >>> for max_angle in (30, 180):
    ...     x, _ = make_rotated_shapes(300, 24, max_angle=max_angle, seed=0)
    ...     spec = angular_spectra(torch.as_tensor(x))
    ...     idx, _, score = rotation_neighbours(spec, 10, 64)
    ...     print(max_angle, window_loss(spec, idx, score, math.pi / 2) <= LIMITED_RANGE_LOSS)
    30 True
    180 False
    """
    outside = _outside(n_angles, window, symmetry, spec.device)
    if outside is None:
        return 0.0
    idx = torch.as_tensor(idx, device=spec.device)[:, :1]
    score = torch.as_tensor(score, device=spec.device)[:, :1]
    inside = []
    for s in range(0, idx.shape[0], chunk):
        cross = (spec[s : s + chunk, None].conj() * spec[idx[s : s + chunk]]).sum(2)  # (B, k, F)
        corr = torch.fft.irfft(cross, n=n_angles, dim=-1)
        inside.append(_masked(corr, outside).max(-1).values)
    lost = (torch.cat(inside) < (1.0 - tolerance) * score).cpu().numpy()
    w = _edge_weights(score, sharpness)
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
    rel = np.asarray(_numpy(rel), dtype=np.float64) * symmetry
    turn = np.remainder(rel + math.pi, 2 * math.pi) - math.pi
    far = (np.abs(turn) > window * symmetry + 1e-6).mean(1)
    return float((far >= majority).mean()) if far.size else 0.0


def centre_on_mean_pose(theta, similarity: torch.Tensor, *, symmetry: int = 1, sharpness: float = 16.0,
                        chunk: int = 1024) -> np.ndarray:
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
    theta = torch.as_tensor(np.asarray(np.asarray(_numpy(theta), dtype=np.float64) * symmetry, dtype=np.float32),
                            device=similarity.device)
    pose = torch.polar(torch.ones_like(theta), theta).to(torch.complex64)
    mean = torch.empty_like(pose)
    for s in range(0, pose.shape[0], chunk):
        weight = similarity[s : s + chunk].float().clamp_min(0.0) ** sharpness
        first = weight.to(torch.complex64) @ pose
        agree = (pose[None, :] * first.conj()[:, None]).real > 0
        mean[s : s + chunk] = (weight * agree).to(torch.complex64) @ pose
    return torch.angle(pose * mean.conj()).cpu().numpy().astype(np.float64) / symmetry


def best_references(spec: torch.Tensor, ref_spec: torch.Tensor, *, k: int = 10, n_angles: int = 64,
                    sharpness: float = 16.0, chunk: int = 512, candidates: int = 32,
                    bound_frequencies: int = 12, window: float | None = None, symmetry: int = 1):
    """Each patch's ``k`` best matches in a reference, under rotation.

    Returns ``(index, weight, rotation)``, each (N, k): reference indices,
    ``score ** sharpness`` and the rotation (radians) turning the reference
    patch onto the patch. Speed: the per-frequency cross-spectra come from one
    complex matrix product; the sum of their magnitudes bounds the peak
    correlation from above, and its part over the lowest ``bound_frequencies``
    (where digits and atom columns have most of their energy) ranks the
    references; only the ``candidates`` best get the inverse FFT and peak
    search. ``window``: only rotations within +/- that many radians (modulo
    2 pi / symmetry) are considered.
    """
    outside = _outside(n_angles, window, symmetry, spec.device)
    ref_t = ref_spec.conj().permute(2, 0, 1)  # (F, M, R)
    # One-sided spectrum: every frequency but 0 (and Nyquist) stands for two.
    twice = torch.full((ref_spec.shape[-1],), 2.0, device=ref_spec.device)
    twice[0] = 1.0
    parts = []
    for s in range(0, spec.shape[0], chunk):
        cross = ref_t @ spec[s : s + chunk].permute(2, 1, 0)  # (F, M, B)
        bound = (cross[:bound_frequencies].abs() * twice[:bound_frequencies, None, None]).sum(0)  # (M, B)
        cand = bound.topk(min(candidates, bound.shape[0]), dim=0).indices.T  # (B, C)
        picked = cross.permute(2, 1, 0).gather(1, cand[..., None].expand(-1, -1, cross.shape[0]))  # (B, C, F)
        best, angle = _peak(_masked(torch.fft.irfft(picked, n=n_angles, dim=-1), outside), n_angles)
        top = best.topk(min(k, best.shape[1]), dim=1)
        # float32 throughout (MPS has no float64); the floor keeps an all-zero vote defined.
        weight = top.values.clamp_min(0.0) ** sharpness + 1e-30
        parts.append((cand.gather(1, top.indices), weight, angle.gather(1, top.indices)))
    return tuple(torch.cat(p) for p in zip(*parts))


def reference_angles(spec: torch.Tensor, ref_spec: torch.Tensor, ref_theta: torch.Tensor, *, symmetry: int = 1,
                     k: int = 10, n_angles: int = 64, window: float | None = None, spread: bool = False):
    """Angles (radians) of patches from their best matches in a synchronised reference.

    The ``k`` best matches vote for ``theta_ref + rotation`` with weight
    ``score ** 16``; a reference patch itself gets back its own angle.
    ``window``: the reference's rotation range (:class:`Reference`).
    ``spread``: also return each angle's standard error (radians): the votes'
    weighted circular standard deviation over the square root of their
    effective number. Uncalibrated: the models scale it
    (``RVAE.calibrate_angle_sd``).
    """
    index, weight, rot = best_references(spec, ref_spec, k=k, n_angles=n_angles, window=window, symmetry=symmetry)
    phase = ref_theta[index] * symmetry + rot * symmetry
    votes = (weight * torch.polar(torch.ones_like(phase), phase)).sum(1)
    theta = torch.remainder(torch.angle(votes).float() / symmetry, 2 * math.pi / symmetry)
    if not spread:
        return theta
    total = weight.sum(1)
    length = (votes.abs() / total).clamp(1e-6, 1.0)
    relative = weight / weight.max(1, keepdim=True).values  # squares of the raw weights underflow float32
    effective = relative.sum(1) ** 2 / (relative**2).sum(1)
    return theta, (torch.sqrt(-2.0 * torch.log(length)) / symmetry / effective.sqrt()).float()


def angular_spectra(patches: torch.Tensor, symmetry: int = 1, n_angles: int = 64) -> torch.Tensor:
    """(N, P, P) patches to the rotation-comparable spectra the other functions take."""
    return _spectra(polar_transform(patches, n_angles), int(symmetry))


def pick_anchors(n: int, max_anchors: int, *, seed: int = 0, include=None) -> torch.Tensor:
    """Sorted indices of at most ``max_anchors`` of ``n`` patches: ``include`` first, the rest at random."""
    if n <= max_anchors:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    if include is not None and len(include):
        must = torch.as_tensor(np.asarray(include), dtype=torch.long)[:max_anchors]
        rest = order[~torch.isin(order, must)]
        order = torch.cat([must, rest])
    return order[:max_anchors].sort().values


@dataclass
class Reference:
    """A synchronised reference: what a model keeps to align any patch.

    ``window``: half-width (radians) of the rotation range the angles were
    measured in, ``None`` for the full circle (angle zero arbitrary, one for
    all patches that match each other under some rotation); ``loss``: the range test's statistic
    (:func:`window_loss`); ``concentration``: the length of the mean direction
    of the angles found within the window; ``beyond``: the share of patches
    whose neighbours nearly all lie beyond the window
    (:func:`beyond_window_share`); NaN where not measured.
    """

    spec: torch.Tensor
    theta: torch.Tensor
    window: float | None = None
    loss: float = float("nan")
    concentration: float = float("nan")
    beyond: float = float("nan")


def build_reference(spec: torch.Tensor, *, symmetry: int = 1, k: int = 10, n_angles: int = 64,
                    max_anchors: int = MAX_ANCHORS, keep: int | None = None, rotation_range: str = "auto",
                    seed: int = 0) -> Reference:
    """Synchronise (at most ``max_anchors`` of) the patches into a :class:`Reference`.

    ``rotation_range``: ``auto`` tests whether the rotations stay within
    +/-90 degrees of a common upright for 1-fold content and takes the full
    circle (modulo 360/n) for n-fold content (module docstring, step 4);
    ``full`` and ``limited`` skip the test. ``keep``: keep only that many of
    the synchronised anchors (at random), a smaller reference that is faster
    to match against.
    """
    if rotation_range not in ROTATION_RANGES:
        raise ValueError(f"rotation_range must be one of {ROTATION_RANGES}, not {rotation_range!r}")
    spec = spec[pick_anchors(spec.shape[0], max_anchors, seed=seed).to(spec.device)]
    if spec.shape[0] < 2:
        return Reference(spec, torch.zeros(spec.shape[0], device=spec.device))
    window, loss, concentration, beyond = limited_window(symmetry), float("nan"), float("nan"), float("nan")
    idx, rel, score, all_scores, all_angles = rotation_neighbours(spec, k, n_angles, every=True)
    if rotation_range == "auto" and symmetry > 1:
        rotation_range = "full"
    if rotation_range == "auto":
        loss = window_loss(spec, idx, score, window, symmetry=symmetry, n_angles=n_angles)
        beyond = beyond_window_share(rel, window, symmetry=symmetry)
    theta = None
    if rotation_range == "limited" or (
        rotation_range == "auto" and loss <= LIMITED_RANGE_LOSS and beyond <= LIMITED_RANGE_BEYOND
    ):
        w_idx, w_rel, w_score, similar, _ = rotation_neighbours(spec, max(k, LIMITED_NEIGHBOURS), n_angles,
                                                                window=window, symmetry=symmetry, every=True)
        theta = synchronize(w_idx, w_rel * symmetry, w_score) / symmetry
        concentration = float(np.abs(np.exp(1j * symmetry * theta).mean()))
        if rotation_range == "auto" and concentration < LIMITED_RANGE_CONCENTRATION:
            theta = None  # consistent angles that cover the circle: not a limited range after all
        else:
            # Similar within the window: a shape and its upside-down look-alike are not.
            theta = centre_on_mean_pose(theta, similar, symmetry=symmetry)
    if theta is None:
        window = None
        theta = synchronize(idx, rel * symmetry, score)
        theta = link_groups(theta, idx, score, all_scores, all_angles * symmetry, seed=seed) / symmetry
    if not np.isfinite(theta).all():  # the caller (training) then goes on without alignment, and says so
        raise FloatingPointError("the synchronised angles are not finite")
    theta = torch.as_tensor(np.asarray(theta, dtype=np.float32), device=spec.device)  # MPS: no float64
    if keep is not None and spec.shape[0] > keep:
        subset = pick_anchors(spec.shape[0], keep, seed=seed + 1).to(spec.device)
        spec, theta = spec[subset], theta[subset]
    return Reference(spec, theta, window, loss, concentration, beyond)


def coarse_angles(patches, *, symmetry: int = 1, k: int = 10, n_angles: int = 64, max_anchors: int = MAX_ANCHORS,
                  rotation_range: str = "auto", seed: int = 0) -> np.ndarray:
    """One consistent rotation angle per patch (radians, counter-clockwise as displayed).

    Over the full circle the zero is arbitrary: one for all patches that
    match each other under some rotation (:func:`link_groups`);
    within a limited range it is the mean pose of similar patches (see
    :func:`build_reference`). With ``symmetry`` n the angles are defined
    modulo ``2 pi / n`` and lie in ``[0, 2 pi / n)``.

    Parameters
    ----------
    patches : array_like or Tensor, shape (N, P, P)
    symmetry : int
        n-fold rotational symmetry of the content.
    k : int
        Neighbours per patch in the synchronisation graph.
    n_angles : int
        Angular samples of the polar images (the pairwise search's step is
        ``360 / n_angles`` degrees before sub-step refinement).
    max_anchors : int
        At most this many patches are synchronised with each other (cost grows
        as its square); every patch then takes its angle from its best anchors.
    rotation_range : {"auto", "full", "limited"}
        Whether the rotations stay within +/-90 degrees (/ n) of a common
        upright: tested (``auto``) or given.

    Examples
    --------
    >>> from napari_rvae.core.synthetic import make_rotated_shapes
    >>> x, true = make_rotated_shapes(200, 24, seed=0)
    >>> est = np.rad2deg(coarse_angles(x))
    >>> err = np.angle(np.exp(1j * np.deg2rad(est - true)))
    >>> bool(np.rad2deg(np.abs(err - np.angle(np.exp(1j * err).mean()))).mean() < 5)
    True
    """
    x = patches if torch.is_tensor(patches) else torch.as_tensor(np.asarray(patches, dtype=np.float32))
    x = x.float().reshape(x.shape[0], x.shape[-1], x.shape[-1])
    spec = angular_spectra(x, symmetry, n_angles)
    ref = build_reference(spec, symmetry=symmetry, k=k, n_angles=n_angles, max_anchors=max_anchors,
                          rotation_range=rotation_range, seed=seed)
    if ref.spec.shape[0] < 2:
        return np.zeros(x.shape[0])
    theta = reference_angles(spec, ref.spec, ref.theta, symmetry=symmetry, k=k, n_angles=n_angles, window=ref.window)
    return theta.cpu().numpy().astype(np.float64)


def rotate_patches(x: torch.Tensor, theta: torch.Tensor, *, mask: bool = True) -> torch.Tensor:
    """Turn (B, P, P) patches *back* by ``theta`` (radians): undoes a counter-clockwise turn.

    Pixels outside the inscribed disk are set to 0 (``mask``), so every turned
    patch has the same (empty) corners.
    """
    b, p = x.shape[0], x.shape[-1]
    c, s = torch.cos(-theta), torch.sin(-theta)
    zero = torch.zeros_like(c)
    mat = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)], -2).to(x.dtype)
    grid = F.affine_grid(mat, (b, 1, p, p), align_corners=True)
    out = F.grid_sample(x.reshape(b, 1, p, p), grid, align_corners=True)[:, 0]
    return out * disk(p).to(device=x.device, dtype=x.dtype) if mask else out


def disk(patch_size: int) -> torch.Tensor:
    """(P, P) soft-edged disk: what any rotation of the patch keeps inside the frame."""
    lin = torch.linspace(-1.0, 1.0, patch_size)
    r = torch.sqrt(lin[:, None] ** 2 + lin[None, :] ** 2)
    return (1.0 - r).mul(patch_size / 2.0).clamp(0.0, 1.0)
