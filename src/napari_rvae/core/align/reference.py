"""The synchronised reference: what a model keeps to align any patch.

At most ``MAX_ANCHORS`` patches are synchronised with each other, and
``REFERENCE_SIZE`` of them are kept; every patch then takes its angle from its
best-matching reference patches (:mod:`.matching`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import ROTATION_RANGES
from .matching import reference_angles
from .rotation_range import limited_range_angles, limited_window
from .search import rotation_neighbours
from .spectra import angular_spectra
from .sync import link_groups, synchronize

# Patches synchronised with each other (the cost grows as its square): see docs/science.md#max_anchors
MAX_ANCHORS = 4000
# Of those, the reference a model keeps and matches every patch against: see docs/science.md#reference_size
REFERENCE_SIZE = 500


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


def build_reference(
    spec: torch.Tensor,
    *,
    symmetry: int = 1,
    k: int = 10,
    n_angles: int = 64,
    max_anchors: int = MAX_ANCHORS,
    keep: int | None = None,
    rotation_range: str = "auto",
    seed: int = 0,
) -> Reference:
    """Synchronise (at most ``max_anchors`` of) the patches into a :class:`Reference`.

    ``rotation_range``: ``auto`` tests whether the rotations stay within
    +/-90 degrees of a common upright for 1-fold content and takes the full
    circle (modulo 360/n) for n-fold content (:mod:`.rotation_range`);
    ``full`` and ``limited`` skip the test. ``keep``: keep only that many of
    the synchronised anchors (at random), a smaller reference that is faster
    to match against.
    """
    if rotation_range not in ROTATION_RANGES:
        raise ValueError(f"rotation_range must be one of {ROTATION_RANGES}, not {rotation_range!r}")
    spec = spec[pick_anchors(spec.shape[0], max_anchors, seed=seed).to(spec.device)]
    if spec.shape[0] < 2:
        return Reference(spec, torch.zeros(spec.shape[0], device=spec.device))
    window = limited_window(symmetry)
    idx, rel, score, all_scores, all_angles = rotation_neighbours(spec, k, n_angles, every=True)
    theta, loss, concentration, beyond = limited_range_angles(
        spec, idx, rel, score, symmetry=symmetry, k=k, n_angles=n_angles, rotation_range=rotation_range
    )
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


def coarse_angles(
    patches,
    *,
    symmetry: int = 1,
    k: int = 10,
    n_angles: int = 64,
    max_anchors: int = MAX_ANCHORS,
    rotation_range: str = "auto",
    seed: int = 0,
) -> np.ndarray:
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
    ref = build_reference(
        spec,
        symmetry=symmetry,
        k=k,
        n_angles=n_angles,
        max_anchors=max_anchors,
        rotation_range=rotation_range,
        seed=seed,
    )
    if ref.spec.shape[0] < 2:
        return np.zeros(x.shape[0])
    theta = reference_angles(spec, ref.spec, ref.theta, symmetry=symmetry, k=k, n_angles=n_angles, window=ref.window)
    return theta.cpu().numpy().astype(np.float64)
