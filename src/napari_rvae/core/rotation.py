"""Plane rotation geometry shared by the models and the coarse alignment.

Angles are in radians, counter-clockwise as displayed (rows grow downwards,
so ``y`` up on screen is ``-row``). Patches are turned with
``F.grid_sample`` on grids from :func:`turn_back_grids`; 2-vectors (a rotation
latent, a shift) with :func:`turn_vectors`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def turn_back_grids(theta: torch.Tensor, patch_size: int, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sampling grids (B, P, P, 2) that turn a patch *back* by each angle of ``theta`` (B,).

    ``F.grid_sample(x, grid[b], align_corners=True)`` undoes a
    counter-clockwise (as displayed) rotation by ``theta[b]``; checked against
    ``skimage.transform.rotate``. ``dtype``: that of the grids (default:
    ``theta``'s); the angles' cosines are taken in ``theta``'s.
    """
    c, s = torch.cos(-theta), torch.sin(-theta)
    zero = torch.zeros_like(c)
    mat = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)], -2)
    if dtype is not None:
        mat = mat.to(dtype)
    return F.affine_grid(mat, (theta.shape[0], 1, patch_size, patch_size), align_corners=True)


def rotate_patches(x: torch.Tensor, theta: torch.Tensor, *, mask: bool = True) -> torch.Tensor:
    """Turn (B, P, P) patches *back* by ``theta`` (radians): undoes a counter-clockwise turn.

    Pixels outside the inscribed disk are set to 0 (``mask``), so every turned
    patch has the same (empty) corners.
    """
    b, p = x.shape[0], x.shape[-1]
    grid = turn_back_grids(theta, p, dtype=x.dtype)
    out = F.grid_sample(x.reshape(b, 1, p, p), grid, align_corners=True)[:, 0]
    return out * disk(p).to(device=x.device, dtype=x.dtype) if mask else out


def disk(patch_size: int) -> torch.Tensor:
    """(P, P) soft-edged disk: what any rotation of the patch keeps inside the frame."""
    lin = torch.linspace(-1.0, 1.0, patch_size)
    r = torch.sqrt(lin[:, None] ** 2 + lin[None, :] ** 2)
    return (1.0 - r).mul(patch_size / 2.0).clamp(0.0, 1.0)


def unit_phase(theta: torch.Tensor) -> torch.Tensor:
    """Angles (...) as (..., 2) ``(cos, sin)`` pairs, the form :func:`turn_vectors` takes."""
    return torch.stack([torch.cos(theta), torch.sin(theta)], -1)


def turn_vectors(v: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Rotate 2-vectors ``v`` (..., 2) counter-clockwise by angles given as ``(cos, sin)`` pairs.

    ``phase`` (..., 2) broadcasts against ``v`` without its last axis: one
    angle per vector, or per copy (K, 2) for vectors (B, K, 2).

    Examples
    --------
    >>> turn_vectors(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))   # a quarter turn
    tensor([[0., 1.]])
    """
    c, s = phase[..., 0], phase[..., 1]
    return torch.stack([v[..., 0] * c - v[..., 1] * s, v[..., 0] * s + v[..., 1] * c], -1)
