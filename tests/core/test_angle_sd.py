"""angle_sd is calibrated: about 68 % of an angle's own noise lies within it (issue #17)."""

import math

import numpy as np
import pytest
import torch

from napari_rvae.core import ModelConfig, TrainConfig, encode, train
from napari_rvae.core.align import rotate_patches
from napari_rvae.core.patches import extract_patches
from napari_rvae.core.synthetic import make_lattice


def turned_copies(x, turn_deg):
    """The patches as given and each turned counter-clockwise by its ``turn_deg`` (no mask, as a turned image)."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    turned = rotate_patches(t, -torch.deg2rad(torch.as_tensor(turn_deg, dtype=torch.float32)), mask=False).numpy()
    return np.asarray(x), turned


@pytest.mark.parametrize("align", ["auto", "none"])
def test_angle_sd_covers_about_two_thirds_of_the_noise_under_a_turn(align):
    lat = make_lattice(
        (256, 256),
        spacing=12,
        grains=[(128, 128, 10.0)],
        lattice="hexagonal",
        satellite_amplitude=0.0,
        second_species="none",
        seed=3,
    )
    x = extract_patches(lat.image, lat.points, 24).patches
    result = train(
        x,
        ModelConfig(patch_size=24, hidden_dim=32, symmetry=6, alignment=align),
        TrainConfig(epochs=2, batch_size=64, device="cpu", seed=0),
    )
    scale = float(result.model.angle_sd_scale)
    assert math.isfinite(scale) and scale > 0 and scale != 1.0
    # Turns the calibration did not draw: another seed, from the same range (6-24 deg either way).
    rng = np.random.default_rng(7)
    turn = rng.uniform(6.0, 24.0, len(x)) * rng.choice([-1.0, 1.0], len(x))
    same, turned = turned_copies(x, turn)
    a, b = encode(result.model, same), encode(result.model, turned)
    d = (b["angle"] - a["angle"] - turn + 30.0) % 60.0 - 30.0
    bar = np.sqrt(a["angle_sd"] ** 2 + b["angle_sd"] ** 2)
    within = float(np.mean(np.abs(d) <= bar))
    assert 0.5 <= within <= 0.85, (within, scale, float(np.median(bar)), float(np.std(d)))


def test_uncalibrated_files_read_as_scale_one(tmp_path):
    from napari_rvae.core.modelfile import load_model, save_model

    x = np.random.default_rng(0).random((40, 16, 16)).astype(np.float32)
    model = train(x, ModelConfig(patch_size=16, hidden_dim=16), TrainConfig(epochs=1, device="cpu")).model
    path = save_model(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["angle_sd_scale"]  # as written before the calibration existed
    torch.save(payload, path)
    assert float(load_model(path)[0].angle_sd_scale) == 1.0
