"""Polar resampling and angular spectra: patches in a form compared under rotation.

A patch resampled on rings about its centre turns into a shift along the
angle; the FFT along the angle turns that shift into a phase, so the
cross-correlation at every rotation at once is one product of spectra
(:mod:`.search`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def angular_spectra(patches: torch.Tensor, symmetry: int = 1, n_angles: int = 64) -> torch.Tensor:
    """(N, P, P) patches to the rotation-comparable spectra the other functions take."""
    return _spectra(polar_transform(patches, n_angles), int(symmetry))
