"""The pairwise search: each patch's most similar others under rotation, and at what turn.

The cross-correlation of two angular spectra over all rotations is one
inverse FFT; its peak gives the relative rotation (refined to sub-step
precision) and the similarity.
"""

from __future__ import annotations

import math

import torch


def outside_window(n_angles: int, window: float | None, symmetry: int, device) -> torch.Tensor | None:
    """(A,) mask of the rotation steps farther than ``window`` from 0 (modulo 2 pi / symmetry)."""
    if window is None or window >= math.pi / symmetry:
        return None
    period = 2 * math.pi / symmetry
    lag = torch.arange(n_angles, device=device, dtype=torch.float32) * (2 * math.pi / n_angles)
    lag = torch.remainder(lag + period / 2, period) - period / 2
    return lag.abs() > window + 1e-6


def masked_correlation(corr: torch.Tensor, outside: torch.Tensor | None) -> torch.Tensor:
    # Far below any normalised correlation (which lies in [-1, 1]).
    return corr if outside is None else corr.masked_fill(outside, -4.0)


def _best_rotation(spec_a: torch.Tensor, spec_b: torch.Tensor, n_angles: int, outside=None):
    """Peak of the rotational cross-correlation of every a with every b.

    Returns ``(score, angle)``, each (A, B): the normalised correlation at the
    peak and the rotation (radians) that turns a onto b, refined to sub-step
    precision with a parabola through the peak. ``outside``: rotation steps
    not to consider (see :func:`outside_window`).
    """
    corr = torch.fft.irfft(torch.einsum("irf,jrf->ijf", spec_a.conj(), spec_b), n=n_angles, dim=-1)
    return correlation_peak(masked_correlation(corr, outside), n_angles)


def correlation_peak(corr: torch.Tensor, n_angles: int):
    """Peak value and sub-step position (radians) along the last axis of circular correlations."""
    best, arg = corr.max(-1)
    prev = corr.gather(-1, ((arg - 1) % n_angles)[..., None])[..., 0]
    nxt = corr.gather(-1, ((arg + 1) % n_angles)[..., None])[..., 0]
    den = prev - 2 * best + nxt
    frac = torch.where(den.abs() > 1e-12, 0.5 * (prev - nxt) / den.where(den.abs() > 1e-12, torch.ones_like(den)), 0.0)
    angle = (arg.float() + frac.clamp(-0.5, 0.5)) * (2 * math.pi / n_angles)
    return best, angle


def rotation_neighbours(
    spec: torch.Tensor,
    k: int,
    n_angles: int,
    chunk: int = 128,
    *,
    window: float | None = None,
    symmetry: int = 1,
    every: bool = False,
):
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
    outside = outside_window(n_angles, window, symmetry, spec.device)
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
