"""The training budget: a small data set keeps full passes; a large one is sampled, and every patch is encoded."""

import numpy as np
import pytest

from napari_rvae.cli import build_parser
from napari_rvae.core import InputError, ModelConfig, TrainConfig
from napari_rvae.core.analysis import _training_part, train_patches_iter
from napari_rvae.core.budget import (
    MAX_EPOCHS,
    MIN_EPOCHS,
    STEP_BUDGET,
    allocate,
    stratified_sample,
    training_budget,
)
from napari_rvae.core.patches import extract_patches
from napari_rvae.core.report import analysis_report
from napari_rvae.core.synthetic import make_lattice
from napari_rvae.core.train import drive


def test_small_data_keeps_full_passes():
    small = training_budget(1000, 100)
    assert (small.epochs, small.n_sample, small.n_total, small.steps) == (MAX_EPOCHS, 1000, 1000, 500)
    readme = training_budget(1583, 100)  # the README's sample: full passes, twice its published 20 epochs
    assert (readme.epochs, readme.n_sample, readme.steps) == (40, 1583, 640) and not readme.sampled
    mid = training_budget(5000, 100)  # fewer passes, still every patch
    assert mid.n_sample == mid.n_total == 5000 and MIN_EPOCHS <= mid.epochs < MAX_EPOCHS
    given = training_budget(100_000, 100, epochs=20)  # a number keeps its meaning
    assert (given.epochs, given.n_sample, given.steps) == (20, 100_000, 20_000)
    assert training_budget(30, 100).steps == MAX_EPOCHS  # the batch is clamped to the data


def test_large_data_is_sampled_within_the_step_budget():
    big = training_budget(100_000, 100)
    assert big.sampled and big.n_total == 100_000 and big.n_sample < 20_000
    assert big.steps <= STEP_BUDGET and big.epochs == MIN_EPOCHS
    assert "stratified sample" in big.reason
    for n in (1, 99, 1200, 1201, 6399, 6401, 10**7):
        b = training_budget(n, 100)
        assert b.steps <= max(STEP_BUDGET, MAX_EPOCHS) and 1 <= b.n_sample <= n
    # The sample never shrinks as the data grow.
    sizes = [training_budget(n, 100).n_sample for n in range(1000, 40_000, 777)]
    assert sizes == sorted(sizes)


def test_allocation_keeps_small_strata():
    take = allocate([9000, 500, 20, 3], 1000)
    assert take.sum() == 1000 and take[2] == 20 and take[3] == 3
    assert take[1] >= 1000 * 500 / 9523  # at least its share
    assert (allocate([5] * 10, 7) <= 1).all()  # more strata than half the sample: one each at most


def _two_kinds(n=2000, minority=0.05, seed=0):
    """Noisy, randomly turned 16 px patches: a round column (majority) and a bright dumbbell."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16] - 7.5
    kind = (rng.random(n) < minority).astype(int)
    out = np.empty((n, 16, 16), np.float32)
    for i in range(n):
        a = rng.uniform(0, 2 * np.pi)
        img = np.exp(-(yy**2 + xx**2) / 8)
        if kind[i]:
            dy, dx = 4 * np.sin(a), 4 * np.cos(a)
            img = 1.5 * img + np.exp(-((yy - dy) ** 2 + (xx - dx) ** 2) / 4)
        out[i] = img + rng.normal(0, 0.05, (16, 16))
    return out, kind


def test_stratified_sample_keeps_a_minority_and_is_deterministic():
    patches, kind = _two_kinds()
    pick = stratified_sample(patches, 200, seed=3)
    assert len(pick) == 200 and np.all(np.diff(pick) > 0)
    assert kind[pick].mean() >= kind.mean()  # at least its share (5 %)
    assert np.array_equal(pick, stratified_sample(patches, 200, seed=3))
    assert not np.array_equal(pick, stratified_sample(patches, 200, seed=4))
    assert np.array_equal(stratified_sample(patches, 10_000), np.arange(len(patches)))


def test_small_groups_and_few_labels_stay_in_the_sample():
    patches, _ = _two_kinds(2000, minority=0.0)
    frame = np.zeros(2000, int)
    frame[:12] = 1  # a frame with few atoms
    kept = np.isin(np.arange(12), stratified_sample(patches, 200, groups=frame)).sum()
    assert kept >= 6  # its share would be 1.2: split over the clusters, each piece gets a floor
    labels = np.full(2000, -1)
    labels[[5, 700, 1500]] = [0, 1, 1]  # ssrvae's few labels
    budget = training_budget(2000, 100, step_budget=20, min_epochs=10)  # a sample of 200
    x, lab = _training_part(patches, labels, None, budget, seed=0)
    assert len(x) == len(lab) == budget.n_sample == 200
    assert sorted(lab[lab >= 0].tolist()) == [0, 1, 1]


def test_sampled_training_encodes_every_patch():
    lat = make_lattice((160, 160), spacing=10.0, grains=((80, 80, 20.0),), seed=0)
    ps = extract_patches(lat.image, lat.points, 16)
    n = len(ps.patches)
    model_config = ModelConfig(kind="rvae", patch_size=16, hidden_dim=32, alignment="none")
    train_config = TrainConfig(epochs="auto", batch_size=20, device="cpu")
    budget = training_budget(n, 20, step_budget=6, min_epochs=2)  # a tiny cap: 60 patches, 2 passes
    assert budget.sampled and budget.n_sample == 60
    analysis = drive(train_patches_iter(ps.patches, ps.centers, model_config, train_config, budget=budget))
    assert analysis.training.n_patches == 60 and analysis.training.epochs_run == 2
    assert len(analysis.table) == n and np.isfinite(analysis.table["angle"]).all()
    report = analysis_report(analysis, train_config, command="napari", sources={})
    assert report["budget"] == budget.to_dict() and report["n_patches"] == n
    assert report["train_config"]["epochs"] == 2


def test_epochs_setting_is_auto_or_a_positive_number():
    assert TrainConfig(epochs="auto").epochs == "auto"
    for bad in (0, -3, 2.5, "ten", None, True):
        with pytest.raises(InputError):
            TrainConfig(epochs=bad)
    parser = build_parser()
    args = parser.parse_args(["train", "in.tif", "--out", "o"])
    assert args.epochs == "auto"
    assert parser.parse_args(["train", "in.tif", "--out", "o", "--epochs", "7"]).epochs == 7
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "in.tif", "--out", "o", "--epochs", "0"])
