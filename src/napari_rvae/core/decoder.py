"""The spatial-generator decoder: an MLP over pixel coordinates, posed per patch.

The first layer is split, ``W [c; z] = W_c c + W_z z``: rotation and shift fold
into a per-patch 2 x H matrix (``W_c R^-1``) and a per-patch bias, so the
per-pixel work of that layer is one small batched matmul instead of a wide
one. The hidden layers then run over every pixel of every patch; that is where
training spends its time (over 99 % of the model's multiply-adds at 28 x 28).

Speed (measured in ``benchmarks/bench_speed.py``):

* Every per-pixel layer is one fused BLAS call (``baddbmm``/``addmm``, bias
  included) followed by an in-place activation; no (B, N, H) temporaries
  beyond the activations that backpropagation has to keep.
* ``tanh`` is computed as ``2 sigmoid(2 v) - 1`` with the affine parts folded
  into the weights (sigmoid costs about a third of tanh per value on the CPU).
* ``compute_dtype`` (set by training, see :func:`resolve_compute_dtype`) runs
  the per-pixel layers in bfloat16 where the processor multiplies bfloat16
  natively: about 4-5x the float32 matmul rate on AVX512-BF16 CPUs, half the
  memory traffic for ``tanh``. Weights, gradients, the optimiser, the logits
  and the loss stay float32 (mixed precision), so the learning curve matches
  float32 training to within run-to-run noise.
"""

from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("auto", "float32", "bfloat16")


def pixel_grid(patch_size: int) -> torch.Tensor:
    """(P*P, 2) coordinates ``(x, y_up)`` in [-1, 1], row-major over the patch."""
    lin = torch.linspace(-1.0, 1.0, patch_size)
    rows, cols = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([cols.reshape(-1), -rows.reshape(-1)], dim=-1)


def bf16_is_fast(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (faster than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        # oneDNN's check for AVX512-BF16 / AMX; without it bfloat16 is emulated and slower.
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        try:
            return bool(check()) if check is not None else False
        except RuntimeError:
            return False
    return False


def resolve_compute_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype the decoder's per-pixel layers run in for a training precision setting.

    Parameters
    ----------
    precision : {"auto", "float32", "bfloat16"}
        ``auto`` picks bfloat16 where the device multiplies it natively and
        float32 elsewhere.
    device : torch.device or str
        Where training runs.

    Returns
    -------
    torch.dtype
        ``torch.bfloat16`` or ``torch.float32``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else torch.float32
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


class SpatialDecoder(nn.Module):
    """MLP over pixel coordinates, posed per patch by rotation and shift.

    ``compute_dtype`` (plain attribute, not saved): dtype of the per-pixel
    layers; ``None`` (default) runs them in the dtype of ``z``.
    """

    def __init__(self, patch_size: int, latent_dim: int, width: int, layers: int, n_classes: int = 0):
        super().__init__()
        self.register_buffer("grid", pixel_grid(patch_size), persistent=False)
        self.coord = nn.Linear(2, width, bias=False)
        self.latent = nn.Linear(latent_dim, width)
        self.cls = nn.Linear(n_classes, width, bias=False) if n_classes else None
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(layers - 1))
        self.out = nn.Linear(width, 1)
        self.compute_dtype: torch.dtype | None = None

    def forward(self, z, cos=None, sin=None, shift=None, y=None) -> torch.Tensor:
        """Decode to (..., P*P) pixel values (Gaussian mean or Bernoulli logits).

        ``z`` (..., K); ``cos``/``sin`` (...,) of the rotation angle; ``shift``
        (..., 2) in grid units; ``y`` one-hot classes broadcastable to ``z``'s
        batch shape (enumerated classes add a leading dimension). The result
        has ``z``'s dtype whatever ``compute_dtype`` is.
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
        # Per-patch work is done; from here on everything is per pixel. Flatten the
        # leading dims (batch, and the class enumeration if any) into one.
        lead = torch.broadcast_shapes(bias.shape[:-1], a.shape[:-2])
        m, hdim, n = lead.numel(), w.shape[0], self.grid.shape[0]
        dt = self.compute_dtype or z.dtype
        a = a.expand(*lead, hdim, 2).reshape(m, hdim, 2).to(dt)
        bias = bias.expand(*lead, hdim).reshape(m, 1, hdim).to(dt)
        grid = self.grid.to(dt).expand(m, n, 2)
        # tanh(v) = 2 sigmoid(2 v) - 1, and sigmoid is about 3x cheaper per value on the CPU
        # (tanh was the largest elementwise cost). The scalings fold into the small weights:
        # each layer keeps s = sigmoid(2 v) and the next one reads t = 2 s - 1 as
        # W t + b = (2 W) s + (b - W 1). Same network, same parameters, same gradients.
        # sigmoid_ in place is safe: baddbmm/addmm do not need their output to backpropagate.
        h = torch.baddbmm(2.0 * bias, grid, 2.0 * a.transpose(1, 2)).sigmoid_().view(m * n, hdim)
        for lin in self.hidden:
            w, b = lin.weight, lin.bias
            h = torch.addmm((2.0 * (b - w.sum(1))).to(dt), h, (4.0 * w).to(dt).t()).sigmoid_()
        w, b = self.out.weight, self.out.bias
        out = torch.addmm((b - w.sum(1)).to(dt), h, (2.0 * w).to(dt).t())
        return out.view(*lead, n).to(z.dtype)
