"""The spatial-generator decoder: an MLP over pixel coordinates, posed per patch.

The first layer is split, ``W [c; z] = W_c c + W_z z``: rotation and shift fold
into a per-patch 2 x H matrix (``W_c R^-1``) and a per-patch bias, so the
per-pixel work of that layer is one small batched matmul instead of a wide
one. The hidden layers then run over every pixel of every patch; that is where
training spends its time.
"""

from __future__ import annotations

import torch
from torch import nn


def pixel_grid(patch_size: int) -> torch.Tensor:
    """(P*P, 2) coordinates ``(x, y_up)`` in [-1, 1], row-major over the patch."""
    lin = torch.linspace(-1.0, 1.0, patch_size)
    rows, cols = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([cols.reshape(-1), -rows.reshape(-1)], dim=-1)


class SpatialDecoder(nn.Module):
    """MLP over pixel coordinates, posed per patch by rotation and shift."""

    def __init__(self, patch_size: int, latent_dim: int, width: int, layers: int, n_classes: int = 0):
        super().__init__()
        self.register_buffer("grid", pixel_grid(patch_size), persistent=False)
        self.coord = nn.Linear(2, width, bias=False)
        self.latent = nn.Linear(latent_dim, width)
        self.cls = nn.Linear(n_classes, width, bias=False) if n_classes else None
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(layers - 1))
        self.out = nn.Linear(width, 1)

    def forward(self, z, cos=None, sin=None, shift=None, y=None) -> torch.Tensor:
        """Decode to (..., P*P) pixel values (Gaussian mean or Bernoulli logits).

        ``z`` (..., K); ``cos``/``sin`` (...,) of the rotation angle; ``shift``
        (..., 2) in grid units; ``y`` one-hot classes broadcastable to ``z``'s
        batch shape (enumerated classes add a leading dimension).
        """
        w = self.coord.weight  # (H, 2)
        bias = self.latent(z)
        if y is not None and self.cls is not None:
            bias = bias + self.cls(y)
        if cos is None:
            a = w.expand(*z.shape[:-1], *w.shape)
        else:
            c, s = cos[..., None], sin[..., None]
            # W_c R(theta)^-1: the grid is turned back so the template appears turned by +theta.
            a = torch.stack([w[:, 0] * c - w[:, 1] * s, w[:, 0] * s + w[:, 1] * c], dim=-1)
        if shift is not None:
            bias = bias - (a @ shift[..., None]).squeeze(-1)
        h = torch.tanh(torch.matmul(self.grid, a.transpose(-1, -2)) + bias[..., None, :])
        for lin in self.hidden:
            h = torch.tanh(lin(h))
        return self.out(h).squeeze(-1)
