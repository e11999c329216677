"""Angular synchronisation: one angle per patch that agrees best with the pairwise rotations.

Singer's spectral relaxation (the leading eigenvector of a Hermitian matrix of
the pairwise rotations' phases) refined by the generalised power method; over
the full circle, groups of similar patches with few links between them are
then given one zero (:func:`link_groups`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..eigen import leading_eigenvectors
from ..spectral import spectral_clusters

# Groups of the neighbour graph whose zeros are tied together: see docs/science.md#link_groups-and-link_matches
LINK_GROUPS = 4
# Best matches per patch in every other group that vote for the offset: see docs/science.md#link_groups-and-link_matches
LINK_MATCHES = 5


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

    idx, angle, score = (as_numpy(v) for v in (idx, angle, score))
    n = idx.shape[0]
    rows = np.repeat(np.arange(n), idx.shape[1])
    w = edge_weights(score, sharpness).ravel()
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


def link_groups(
    theta,
    idx,
    score,
    all_scores: torch.Tensor,
    all_angles: torch.Tensor,
    *,
    groups: int = LINK_GROUPS,
    matches: int = LINK_MATCHES,
    sharpness: float = 16.0,
    seed: int = 0,
) -> np.ndarray:
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
    theta = np.asarray(as_numpy(theta), dtype=np.float64)
    n = len(theta)
    if n <= groups or groups < 2:
        return theta
    label = spectral_clusters(as_numpy(idx), as_numpy(score), groups, seed=seed)
    scores, angles = as_numpy(all_scores), as_numpy(all_angles)  # float32: (N, N) each
    rows = np.arange(n)[:, None]
    offsets = np.zeros((groups, groups), dtype=complex)
    for b in range(groups):
        members = np.flatnonzero(label == b)
        m = min(matches, len(members))
        if m == 0:
            continue
        top = members[np.argpartition(-scores[:, members], m - 1, axis=1)[:, :m]]
        # theta_j - theta_i should equal the rotation i -> j; what is left is the groups' offset.
        vote = edge_weights(scores[rows, top], sharpness) * np.exp(
            1j * (theta[:, None] + angles[rows, top] - theta[top])
        )
        np.add.at(offsets[:, b], label, vote.sum(1))
    np.fill_diagonal(offsets, 0.0)
    h = (offsets + offsets.conj().T) / 2
    phase = _power_phases(h, leading_eigenvectors(h)[:, 0], 100)
    return theta - np.angle(phase)[label]


def as_numpy(v) -> np.ndarray:
    return np.asarray(v.cpu() if hasattr(v, "cpu") else v)


def edge_weights(score, sharpness: float = 16.0) -> np.ndarray:
    """Graph edge weights from match scores: the closest matches dominate."""
    return np.clip(as_numpy(score).astype(np.float64), 0.0, None) ** sharpness + 1e-12
