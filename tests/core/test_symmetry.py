"""The symmetry estimate (``--symmetry auto``): right on lattices, digits and a real MoS2 scan, and where it goes."""

import json

import numpy as np
import pytest

from napari_rvae.core import ModelConfig, TrainConfig, train
from napari_rvae.core.errors import InputError
from napari_rvae.core.patches import extract_patches
from napari_rvae.core.symmetry import MAX_COST, estimate_symmetry
from napari_rvae.core.synthetic import make_lattice, make_rotated_digits

GRAINS = [(100, 80, 0.0), (60, 220, 17.0), (200, 200, -40.0)]


def lattice_patches(seed=0, patch=24, **kw):
    lat = make_lattice((256, 256), spacing=12, grains=GRAINS, seed=seed, **kw)
    return extract_patches(lat.image, lat.points, patch).patches


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind, expected", [("hexagonal", 6), ("square", 4)])
def test_round_columns_get_the_lattice_symmetry(kind, expected, seed):
    found = estimate_symmetry(lattice_patches(seed, lattice=kind, second_species="none", satellite_amplitude=0.0))
    assert found.symmetry == expected, found.reason
    # A 6-fold lattice is 2- and 3-fold too: plausible, but no alternative to the choice.
    assert expected in found.plausible and found.alternatives == []
    assert found.costs[expected] < MAX_COST


@pytest.mark.parametrize("kind", ["hexagonal", "square"])
def test_dumbbells_on_any_lattice_are_one_fold(kind):
    found = estimate_symmetry(lattice_patches(0, lattice=kind))
    assert found.symmetry == 1, found.reason
    assert min(found.costs.values()) > MAX_COST


def test_rotated_digits_are_one_fold():
    x, _, _ = make_rotated_digits(600, seed=0)
    found = estimate_symmetry(x)
    assert found.symmetry == 1 and "1-fold" in found.reason


def test_real_mos2_scan_is_three_fold():
    """Mo columns with the three S columns around each inside a 32 px patch: 3-fold, not the lattice's 6."""
    from napari_rvae.core.detect import detect_atoms
    from napari_rvae.core.readers import read_image_file
    from napari_rvae.core.real_data import real_sample_path

    try:
        path = real_sample_path()
        image = np.asarray(read_image_file(path)[0].data, dtype=np.float64)
    except InputError as err:
        pytest.skip(str(err))
    points = detect_atoms(image)[["y", "x"]].to_numpy()
    found = estimate_symmetry(extract_patches(image, points, 32).patches)
    assert found.symmetry == 3 and found.plausible == [3], found.reason
    assert found.costs[6] > 2 * found.costs[3]


def test_too_few_patches_say_so_and_fall_back_to_one_fold():
    found = estimate_symmetry(np.random.default_rng(0).random((3, 16, 16)))
    assert found.symmetry == 1 and "Too few patches" in found.reason
    json.dumps(found.summary(), allow_nan=False)


def test_training_with_auto_builds_the_estimated_symmetry_and_says_how():
    x = lattice_patches(0, lattice="hexagonal", second_species="none", satellite_amplitude=0.0)
    fast = TrainConfig(epochs=1, batch_size=100, device="cpu")
    result = train(x, ModelConfig(patch_size=24, hidden_dim=32, symmetry="auto"), fast)
    assert result.model.config.symmetry == 6
    assert result.symmetry["source"] == "estimated" and result.symmetry["chosen"] == 6
    json.dumps(result.symmetry, allow_nan=False)
    given = train(x, ModelConfig(patch_size=24, hidden_dim=32, symmetry=2), fast)
    assert given.model.config.symmetry == 2 and given.symmetry == {"chosen": 2, "source": "given"}
    # Training on: the model's own symmetry, whatever "auto" would find now.
    more = train(x, ModelConfig(patch_size=24, hidden_dim=32, symmetry="auto"), fast, model=given.model)
    assert more.model.config.symmetry == 2 and more.symmetry["source"] == "model"


def test_unknown_symmetry_is_refused():
    with pytest.raises(InputError, match="auto"):
        ModelConfig(symmetry=5)
