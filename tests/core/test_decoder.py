"""The spatial decoder: its fast path against a plain concatenated-coordinate MLP,
broadcasting over an enumerated class dimension, and mixed precision."""

import math

import numpy as np
import pytest
import torch

from napari_rvae.core import InputError, ModelConfig, TrainConfig, train
from napari_rvae.core.decoder import (
    SpatialDecoder,
    bf16_is_fast,
    pixel_grid,
    resolve_compute_dtype,
)


def reference_decode(dec: SpatialDecoder, z, theta, shift, y=None):
    """The textbook spatial generator: rotate and shift the grid, concatenate [c, z], run the MLP."""
    grid = dec.grid  # (N, 2)
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    gx, gy = grid[None, :, 0:1], grid[None, :, 1:2]
    # R(theta)^-1 applied to (x, y) - shift: the template appears turned by +theta.
    px, py = gx - shift[:, None, 0:1], gy - shift[:, None, 1:2]
    coords = torch.cat([c * px + s * py, -s * px + c * py], dim=-1)  # (B, N, 2)
    h = coords @ dec.coord.weight.t() + dec.latent(z)[:, None, :]
    if y is not None:
        h = h + dec.cls(y)[:, None, :]
    h = torch.tanh(h)
    for lin in dec.hidden:
        h = torch.tanh(lin(h))
    return dec.out(h).squeeze(-1)


@pytest.fixture
def decoder():
    torch.manual_seed(0)
    return SpatialDecoder(patch_size=12, latent_dim=3, width=16, layers=3, n_classes=4)


def test_fast_path_matches_concatenated_mlp(decoder):
    torch.manual_seed(1)
    z, theta, shift = torch.randn(5, 3), torch.rand(5) * 2 * math.pi, torch.randn(5, 2) * 0.2
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 1]), 4).float()
    fast = decoder(z, torch.cos(theta), torch.sin(theta), shift, y)
    assert fast.shape == (5, 144) and fast.dtype == torch.float32
    torch.testing.assert_close(fast, reference_decode(decoder, z, theta, shift, y), rtol=1e-5, atol=1e-5)


def test_no_pose_is_angle_zero_no_shift(decoder):
    z = torch.randn(4, 3)
    upright = decoder(z)
    posed = decoder(z, torch.ones(4), torch.zeros(4), torch.zeros(4, 2))
    torch.testing.assert_close(upright, posed)


def test_quarter_turn_turns_the_image_counter_clockwise(decoder):
    z = torch.randn(1, 3)
    p = 12
    upright = decoder(z).reshape(p, p)
    turned = decoder(z, torch.tensor([0.0]), torch.tensor([1.0])).reshape(p, p)
    # +90 deg, counter-clockwise as displayed (row 0 at the top) = np.rot90.
    np.testing.assert_allclose(turned.detach().numpy(), np.rot90(upright.detach().numpy()), atol=1e-5)


def test_broadcasts_over_enumerated_classes(decoder):
    """Pyro's parallel enumeration hands y as (C, 1, C) against a batch of B."""
    b, n_cls = 6, 4
    z, theta, shift = torch.randn(b, 3), torch.rand(b), torch.randn(b, 2) * 0.1
    y_enum = torch.eye(n_cls).reshape(n_cls, 1, n_cls)
    out = decoder(z, torch.cos(theta), torch.sin(theta), shift, y_enum)
    assert out.shape == (n_cls, b, 144)
    for k in range(n_cls):
        yk = torch.nn.functional.one_hot(torch.full((b,), k), n_cls).float()
        torch.testing.assert_close(out[k], decoder(z, torch.cos(theta), torch.sin(theta), shift, yk))


def test_state_dict_keys_are_stable(decoder):
    # Model files saved before the fast path must still load.
    assert set(decoder.state_dict()) == {
        "coord.weight",
        "latent.weight",
        "latent.bias",
        "cls.weight",
        "hidden.0.weight",
        "hidden.0.bias",
        "hidden.1.weight",
        "hidden.1.bias",
        "out.weight",
        "out.bias",
    }


def test_bfloat16_compute_is_close_and_returns_float32(decoder):
    torch.manual_seed(2)
    z, theta, shift = torch.randn(8, 3), torch.rand(8) * 6, torch.randn(8, 2) * 0.1
    x = (torch.rand(8, 144) > 0.6).float()

    def loss_and_grad():
        decoder.zero_grad()
        out = decoder(z, torch.cos(theta), torch.sin(theta), shift)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out, x, reduction="sum")
        loss.backward()
        return out, loss, decoder.hidden[0].weight.grad.clone()

    out32, loss32, g32 = loss_and_grad()
    decoder.compute_dtype = torch.bfloat16
    out16, loss16, g16 = loss_and_grad()
    assert out16.dtype == torch.float32 and decoder.hidden[0].weight.grad.dtype == torch.float32
    assert not torch.equal(out16, out32)  # it really ran in bfloat16
    torch.testing.assert_close(out16, out32, rtol=0.0, atol=0.05)
    assert abs(loss16.item() - loss32.item()) < 1e-3 * abs(loss32.item())
    assert ((g16 - g32).norm() / g32.norm()).item() < 0.05


def test_resolve_compute_dtype():
    assert resolve_compute_dtype("float32", "cpu") == torch.float32
    assert resolve_compute_dtype("bfloat16", "cpu") == torch.bfloat16
    expected = torch.bfloat16 if bf16_is_fast("cpu") else torch.float32
    assert resolve_compute_dtype("auto", "cpu") == expected
    with pytest.raises(ValueError):
        resolve_compute_dtype("float16", "cpu")
    with pytest.raises(InputError, match="Precision"):
        TrainConfig(precision="half")


def test_pixel_grid_orientation():
    g = pixel_grid(3)
    # Row-major, x to the right, y up: first pixel is top-left (-1, +1).
    assert g[0].tolist() == [-1.0, 1.0] and g[2].tolist() == [1.0, 1.0] and g[6].tolist() == [-1.0, -1.0]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_training_is_reproducible_and_decodes_in_float32(glyph_stack, precision):
    patches, _ = glyph_stack
    cfg = ModelConfig(patch_size=16, hidden_dim=32, encoder_rotations=1)
    tc = TrainConfig(epochs=2, batch_size=50, seed=5, precision=precision)
    a, b = train(patches[:100], cfg, tc), train(patches[:100], cfg, tc)
    assert a.history == b.history
    assert a.model.decoder.compute_dtype is None  # decoding after training runs in float32


def test_bfloat16_learns_as_well_as_float32(glyph_stack):
    patches, _ = glyph_stack
    cfg = ModelConfig(patch_size=16, hidden_dim=32, encoder_rotations=1)
    h32 = train(patches[:200], cfg, TrainConfig(epochs=6, batch_size=50, lr=3e-3, precision="float32")).history
    h16 = train(patches[:200], cfg, TrainConfig(epochs=6, batch_size=50, lr=3e-3, precision="bfloat16")).history
    assert h16[-1] < 0.9 * h16[0]  # it learns
    # Same curve at first (rounding differences grow along the trajectory), and no worse at the end.
    assert abs(h16[0] - h32[0]) < 0.01 * h32[0], (h16, h32)
    assert h16[-1] < 1.05 * h32[-1], (h16, h32)
