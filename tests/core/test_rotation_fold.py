"""The encoder's rotated copies folded into its first layer: the same numbers as sampling them."""

import pytest
import torch

from napari_rvae.core.models import Encoder
from napari_rvae.core.rotation_fold import rotated_first_layer, rotation_operator


@pytest.mark.parametrize("patch_size, k", [(16, 8), (15, 16)])
def test_operator_is_grid_sample(patch_size, k):
    torch.manual_seed(0)
    enc = Encoder(patch_size, 2, 8, 2, n_rotations=k)
    x = torch.rand(5, patch_size * patch_size)
    copies = enc._copies(x)  # (B, K, N) by grid_sample
    op = rotation_operator(enc.grids, enc.mask)
    n = patch_size * patch_size
    assert op.shape == (k * n, n)
    folded = (op.to_dense().reshape(k, n, n).transpose(1, 2) @ x.t()).permute(2, 0, 1)  # S_k x
    torch.testing.assert_close(folded, copies, rtol=0, atol=1e-5)
    # Sparse: at most four source pixels per output pixel and rotation.
    assert op._nnz() <= 4 * k * n


@pytest.mark.parametrize("n_cond", [0, 3])
def test_folded_layer_matches_layer_on_copies_with_gradients(n_cond):
    torch.manual_seed(1)
    p, k = 12, 8
    enc = Encoder(p, 2, 16, 2, n_rotations=k, n_cond=n_cond)
    x = torch.rand(4, p * p)
    cond = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1]), 3).float() if n_cond else None
    layer = enc.body[0]
    xs = enc._copies(x)
    if cond is not None:
        xs = torch.cat([xs, cond.unsqueeze(1).expand(-1, k, -1)], dim=-1)
    ref = layer(xs)
    fast = rotated_first_layer(layer, x, cond, rotation_operator(enc.grids, enc.mask), k)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    g_ref = torch.autograd.grad(ref.tanh().square().sum(), (layer.weight, layer.bias))
    g_fast = torch.autograd.grad(fast.tanh().square().sum(), (layer.weight, layer.bias))
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_encoder_turning_by_one_step_turns_the_pose():
    """The folded encoder keeps the pooling's exact equivariance (a quarter turn, K = 4)."""
    torch.manual_seed(2)
    p = 16
    enc = Encoder(p, 2, 16, 2, n_rotations=4, translation=False)
    img = torch.rand(3, p, p) * (torch.rand(3, p, p) > 0.5)
    loc, _, _ = enc(img.reshape(3, -1))
    loc90, _, _ = enc(torch.rot90(img, 1, dims=(1, 2)).reshape(3, -1))  # +90 deg as displayed
    u, u90 = torch.complex(loc[:, 0], loc[:, 1]), torch.complex(loc90[:, 0], loc90[:, 1])
    torch.testing.assert_close(u90, u * 1j, rtol=1e-4, atol=1e-4)  # the rotation vector turns by 90 deg
    torch.testing.assert_close(loc90[:, 2:], loc[:, 2:], rtol=1e-4, atol=1e-4)  # content unchanged
