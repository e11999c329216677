"""Rotated copies folded into a linear layer: ``W (S_k x)`` computed as ``(W S_k) x``.

The rotation-pooled encoder reads K copies of each patch, each turned by a
fixed angle with bilinear sampling and masked to a disk. Every copy is a fixed
linear map of the patch, ``copy_k = S_k x`` with ``S_k`` sparse (at most four
source pixels per output pixel), and the first layer is linear too, so its
output for copy k is ``(W S_k) x``. Folding ``S_k`` into the weight (a sparse
product of a few million multiply-adds, redone each step while training)
replaces sampling B x K images and a (B*K, P*P) temporary by one dense GEMM
``x @ [W S_1 ... W S_K]^T``: the same multiply-adds as the layer alone, and
about 3-10x faster for the encoder as a whole on the CPU (docs/speed.md).
"""

from __future__ import annotations

import torch


def rotation_operator(grids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sparse (K*N, N) operator ``T`` with ``T[k*N + j, o] = S_k[o, j]`` (N = P*P).

    ``grids`` (K, P, P, 2) are ``F.grid_sample`` grids (bilinear, zero padding,
    ``align_corners=True``) and ``mask`` (N,) the disk applied to the patch
    before sampling, so ``copy_k = S_k x = grid_sample(mask * x, grids[k])``
    flattened: the same four-corner weights ``grid_sample`` uses.
    """
    k, p = grids.shape[0], grids.shape[1]
    n = p * p
    ix = (grids[..., 0].reshape(k, n) + 1.0) * 0.5 * (p - 1)  # column, align_corners=True
    iy = (grids[..., 1].reshape(k, n) + 1.0) * 0.5 * (p - 1)  # row
    x0, y0 = torch.floor(ix), torch.floor(iy)
    fx, fy = ix - x0, iy - y0
    out = torch.arange(n, device=grids.device).expand(k, n)
    rot = torch.arange(k, device=grids.device)[:, None].expand(k, n)
    rows, cols, vals = [], [], []
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        cx, cy = (x0 + dx).long(), (y0 + dy).long()
        inside = (cx >= 0) & (cx < p) & (cy >= 0) & (cy < p) & (w > 0)  # zero padding outside
        j = (cy * p + cx)[inside]
        rows.append(rot[inside] * n + j)
        cols.append(out[inside])
        vals.append(w[inside] * mask[j])
    index = torch.stack([torch.cat(rows), torch.cat(cols)])
    return torch.sparse_coo_tensor(index, torch.cat(vals), (k * n, n), check_invariants=True).coalesce()


def folded_weight(weight: torch.Tensor, operator: torch.Tensor, n_rotations: int) -> torch.Tensor:
    """(N, K*H) weight with column block k = ``(W S_k)^T``, for ``x @ result``.

    ``weight`` (H, N) is the layer's weight on the patch pixels.
    """
    h, n = weight.shape
    stacked = torch.sparse.mm(operator, weight.t())  # (K*N, H): block k = S_k^T W^T
    return stacked.reshape(n_rotations, n, h).permute(1, 0, 2).reshape(n, n_rotations * h)


def rotated_first_layer(layer: torch.nn.Linear, x: torch.Tensor, cond, operator: torch.Tensor, n_rotations: int):
    """The pre-activations (B, K, H) of ``layer`` on the K rotated copies of ``x`` (B, N).

    ``cond`` (B, C) or None: extra inputs appended to every copy (their
    weight columns follow the N pixel columns).
    """
    n = x.shape[-1]
    w = layer.weight
    pre = (x @ folded_weight(w[:, :n], operator, n_rotations)).view(x.shape[0], n_rotations, w.shape[0])
    bias = layer.bias if cond is None else layer.bias + cond @ w[:, n:].t()
    return pre + (bias if bias.ndim == 1 else bias[:, None, :])
