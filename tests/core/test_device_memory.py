"""Out of GPU memory during training or encoding: the batch is halved, the run goes on and says so.

No GPU here: the device's out-of-memory error is raised by the ELBO / the
encoder whenever a batch is larger than what "fits" (the only stand-in in
these tests; everything else is the real training and encoding).
"""

import numpy as np
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from napari_rvae.core.config import ModelConfig, TrainConfig
from napari_rvae.core.encode import encode
from napari_rvae.core.errors import InputError
from napari_rvae.core.models import RVAE
from napari_rvae.core.synthetic import make_rotated_shapes
from napari_rvae.core.train import train

FITS = 16


@pytest.fixture
def small_gpu(monkeypatch):
    real = TraceMeanField_ELBO.differentiable_loss
    seen = []

    def loss(self, model, guide, x, *args, **kwargs):
        seen.append(len(x))
        if len(x) > FITS:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, model, guide, x, *args, **kwargs)

    monkeypatch.setattr(TraceMeanField_ELBO, "differentiable_loss", loss)
    return seen


def test_training_halves_the_batch_until_it_fits(small_gpu):
    x, _ = make_rotated_shapes(100, 16, seed=0)
    result = train(
        x,
        ModelConfig(patch_size=16, hidden_dim=16, alignment="none"),
        TrainConfig(epochs=2, batch_size=64, device="cpu"),
    )
    assert len(result.history) == 2 and np.isfinite(result.history).all()
    assert max(n for n in small_gpu[3:]) <= FITS  # 64 -> 32 -> 16, then every step fits
    assert [n for n in result.notes if "ran out of memory with batches of 64" in n]
    assert [n for n in result.notes if "batches of 32; training went on with batches of 16" in n]


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            RuntimeError("MPS backend out of memory (MPS allocated: 18 GB)"),
            (InputError, "even with one patch per batch"),
        ),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), (RuntimeError, "shapes cannot be multiplied")),
    ],
)
def test_memory_that_never_fits_says_so_and_other_errors_stay_errors(monkeypatch, error, expected):
    def loss(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(TraceMeanField_ELBO, "differentiable_loss", loss)
    x, _ = make_rotated_shapes(8, 16, seed=0)
    with pytest.raises(expected[0], match=expected[1]):
        train(x, ModelConfig(patch_size=16, hidden_dim=16, alignment="none"), TrainConfig(epochs=1, batch_size=4))


def test_encoding_halves_the_batch_and_gives_the_same_table(monkeypatch):
    x, _ = make_rotated_shapes(60, 16, seed=0)
    model = RVAE(ModelConfig(patch_size=16, hidden_dim=16, alignment="none"))
    expected = encode(model, x, batch_size=10)
    real = model.posterior

    def posterior(xb, *args, **kwargs):
        if len(xb) > 10:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(xb, *args, **kwargs)

    monkeypatch.setattr(model, "posterior", posterior)
    notes = []
    table = encode(model, x, batch_size=40, notes=notes)
    np.testing.assert_allclose(table.to_numpy(), expected.to_numpy(), rtol=1e-5, atol=1e-6)
    assert len(notes) == 2 and "batches of 40" in notes[0] and "batches of 10" in notes[1]
