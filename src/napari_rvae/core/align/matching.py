"""Reference matching: a patch's angle from its best matches in a synchronised reference.

Any patch, in training or encoding, takes its angle from the reference a model
stores: its best-matching reference patches vote for their own angle plus the
rotation onto the patch.
"""

from __future__ import annotations

import math

import torch

from .search import correlation_peak, masked_correlation, outside_window


def best_references(
    spec: torch.Tensor,
    ref_spec: torch.Tensor,
    *,
    k: int = 10,
    n_angles: int = 64,
    sharpness: float = 16.0,
    chunk: int = 512,
    candidates: int = 32,
    bound_frequencies: int = 12,
    window: float | None = None,
    symmetry: int = 1,
):
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
    outside = outside_window(n_angles, window, symmetry, spec.device)
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
        corr = masked_correlation(torch.fft.irfft(picked, n=n_angles, dim=-1), outside)
        best, angle = correlation_peak(corr, n_angles)
        top = best.topk(min(k, best.shape[1]), dim=1)
        # float32 throughout (MPS has no float64); the floor keeps an all-zero vote defined.
        weight = top.values.clamp_min(0.0) ** sharpness + 1e-30
        parts.append((cand.gather(1, top.indices), weight, angle.gather(1, top.indices)))
    return tuple(torch.cat(p) for p in zip(*parts))


def reference_angles(
    spec: torch.Tensor,
    ref_spec: torch.Tensor,
    ref_theta: torch.Tensor,
    *,
    symmetry: int = 1,
    k: int = 10,
    n_angles: int = 64,
    window: float | None = None,
    spread: bool = False,
):
    """Angles (radians) of patches from their best matches in a synchronised reference.

    The ``k`` best matches vote for ``theta_ref + rotation`` with weight
    ``score ** 16``; a reference patch itself gets back its own angle.
    ``window``: the reference's rotation range (:class:`~napari_rvae.core.align.Reference`).
    ``spread``: also return each angle's standard error (radians): the votes'
    weighted circular standard deviation over the square root of their
    effective number. Uncalibrated: training scales it
    (:func:`~napari_rvae.core.angle_sd.calibrate_angle_sd`).
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
