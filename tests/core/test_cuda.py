"""CUDA: training with the data on the GPU and mixed precision; skipped without a GPU.

Run on a GPU machine with ``pytest -m cuda tests/core/test_cuda.py``.
"""

import numpy as np
import pytest
import torch

from napari_rvae.core import ModelConfig, TrainConfig, encode, train
from napari_rvae.core.circstats import circular_correlation
from napari_rvae.core.decoder import SpatialDecoder, resolve_compute_dtype

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_auto_precision_on_cuda_is_bfloat16_where_supported():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    assert resolve_compute_dtype("auto", "cuda") == expected


def test_decoder_bfloat16_on_cuda_matches_float32_on_cpu():
    torch.manual_seed(0)
    cpu = SpatialDecoder(16, 2, 64, 3)
    gpu = SpatialDecoder(16, 2, 64, 3).cuda()
    gpu.load_state_dict(cpu.state_dict())
    gpu.compute_dtype = torch.bfloat16
    z, theta, shift = torch.randn(32, 2), torch.rand(32) * 6, torch.randn(32, 2) * 0.1
    ref = cpu(z, theta.cos(), theta.sin(), shift)
    out = gpu(z.cuda(), theta.cos().cuda(), theta.sin().cuda(), shift.cuda())
    assert out.dtype == torch.float32 and out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), ref, rtol=0.0, atol=0.05)


@pytest.mark.parametrize("precision", ["auto", "float32"])
def test_training_on_cuda_learns_the_angle(glyph_stack, precision):
    patches, angles = glyph_stack
    cfg = ModelConfig(kind="rvae", patch_size=16, latent_dim=2, hidden_dim=64, angle_prior=2.0)
    result = train(patches, cfg, TrainConfig(epochs=30, batch_size=50, lr=3e-3, device="cuda", precision=precision))
    assert result.device.startswith("cuda")
    assert next(result.model.parameters()).device.type == "cuda"
    assert np.isfinite(result.history).all() and result.history[-1] < 0.8 * result.history[0]
    table = encode(result.model, patches, device="cuda")
    assert abs(circular_correlation(table["angle"], angles)) > 0.8
