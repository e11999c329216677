"""Tests for napari_rvae.core.detect on synthetic lattices with known column positions."""

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from napari_rvae.core.detect import (
    detect_atoms,
    estimate_feature_size,
    refine_positions,
)
from napari_rvae.core.errors import InputError

try:  # tests/ and tests/core/ are packages
    from .lattice_util import make_lattice, render
except ImportError:  # run as loose files (rootdir-relative imports)
    from lattice_util import make_lattice, render


def match(detected, truth, shape, border=4.0, tol=1.5):
    """Precision, recall (within ``tol`` px), ignoring points within ``border`` px of the edge."""
    h, w = shape

    def inner(p):
        return (p[:, 0] >= border) & (p[:, 1] >= border) & (p[:, 0] <= h - 1 - border) & (p[:, 1] <= w - 1 - border)

    d_det, _ = cKDTree(truth).query(detected)
    d_true, _ = cKDTree(detected).query(truth)
    return np.mean(d_det[inner(detected)] < tol), np.mean(d_true[inner(truth)] < tol)


@pytest.mark.parametrize(
    "kind, spacing, sigma, noise",
    [("hex", 12.0, 2.0, 0.15), ("square", 12.0, 2.0, 0.2), ("hex", 20.0, 3.5, 0.2), ("square", 30.0, 2.5, 0.2)],
)
def test_recall_precision_moderate_noise(kind, spacing, sigma, noise):
    img, truth = make_lattice((256, 256), spacing, sigma, kind=kind, noise=noise, jitter=0.3, seed=7)
    df = detect_atoms(img)
    precision, recall = match(df[["y", "x"]].to_numpy(), truth, img.shape)
    assert precision > 0.99 and recall > 0.99


def test_dataframe_format_and_order():
    img, truth = make_lattice((128, 160), 12.0, 2.0, noise=0.05)
    df = detect_atoms(img)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["y", "x", "strength"]
    assert df["y"].dtype == np.float64 and df["x"].dtype == np.float64
    assert list(df.index) == list(range(len(df)))
    yx = df[["y", "x"]].to_numpy()
    order = np.lexsort((yx[:, 1], yx[:, 0]))
    assert np.array_equal(order, np.arange(len(df)))
    assert (df["strength"] > 0).all()
    # columns cut by the border are reported, but always inside the image
    assert yx.min() >= 0 and yx[:, 0].max() <= 127 and yx[:, 1].max() <= 159


def test_refined_positions_clean_within_tenth_pixel():
    img, truth = make_lattice((160, 160), 12.0, 2.0, jitter=0.3, border=6, seed=3)
    for method in ("com", "gaussian"):
        det = detect_atoms(img, sigma=2.0, refine_method=method)[["y", "x"]].to_numpy()
        assert len(det) == len(truth)
        d, _ = cKDTree(det).query(truth)
        assert d.max() < 0.1, method
    # unrefined: integer pixels
    raw = detect_atoms(img, sigma=2.0, refine=False)[["y", "x"]].to_numpy()
    assert np.all(raw == np.round(raw))


@pytest.mark.parametrize("method", ["com", "gaussian"])
def test_refine_positions_from_rough_start(method):
    truth = np.array([[20.3, 30.7], [40.5, 12.25], [55.9, 50.1]])
    img = render((72, 72), truth, 2.2, background=0.3)
    start = np.rint(truth) + np.array([[0.4, -0.4], [-0.5, 0.5], [0.3, 0.3]])
    out = refine_positions(img, start, sigma=2.0, method=method)  # sigma slightly off on purpose
    assert out.shape == (3, 2) and out.dtype == np.float64
    assert np.abs(out - truth).max() < 0.1
    out_default = refine_positions(img, start, method=method)  # sigma estimated
    assert np.abs(out_default - truth).max() < 0.1


def test_refine_positions_empty_and_bad():
    img = render((32, 32), [[16, 16]], 2.0)
    assert refine_positions(img, np.zeros((0, 2)), sigma=2).shape == (0, 2)
    with pytest.raises(InputError, match="refinement method"):
        refine_positions(img, [[16, 16]], sigma=2, method="fit")
    with pytest.raises(InputError, match="NaN"):
        refine_positions(img, [[16, np.nan]], sigma=2)


@pytest.mark.parametrize("spacing, sigma", [(12.0, 2.0), (20.0, 3.5), (30.0, 2.5), (8.0, 1.3)])
def test_estimate_feature_size(spacing, sigma):
    img, _ = make_lattice((256, 256), spacing, sigma, noise=0.1)
    est = estimate_feature_size(img)
    assert 0.7 * sigma < est < 1.3 * sigma


def test_dark_columns():
    img, truth = make_lattice((160, 160), 14.0, 2.0, noise=0.1, seed=2)
    dark = (1.5 - img).astype(np.float32)
    df = detect_atoms(dark, dark=True)
    precision, recall = match(df[["y", "x"]].to_numpy(), truth, img.shape)
    assert precision > 0.99 and recall > 0.99


def test_margin():
    img, truth = make_lattice((160, 160), 12.0, 2.0, noise=0.05)
    df = detect_atoms(img, margin=20)
    yx = df[["y", "x"]].to_numpy()
    assert yx.min() >= 20 and yx.max() <= 139
    inner = ((truth >= 21) & (truth <= 138)).all(axis=1)
    assert len(df) >= inner.sum()


def test_threshold_drops_weak_columns():
    truth = np.array([[20.0, 20.0], [20.0, 60.0], [60.0, 20.0], [60.0, 60.0]])
    img = render((80, 80), truth, 2.0, amplitude=[1.0, 1.0, 1.0, 0.2])
    assert len(detect_atoms(img, sigma=2.0, threshold=0.1)) == 4
    assert len(detect_atoms(img, sigma=2.0, threshold=0.5)) == 3


@pytest.mark.parametrize(
    "img",
    [
        np.zeros((64, 64)),
        np.full((50, 70), 3, np.uint8),
        np.random.default_rng(0).normal(size=(512, 512)).astype(np.float32),
        np.random.default_rng(1).poisson(20, size=(256, 256)).astype(np.uint16),
    ],
    ids=["zeros", "flat-uint8", "gaussian-noise", "poisson-noise"],
)
def test_flat_or_noise_gives_no_points(img):
    df = detect_atoms(img)
    assert len(df) == 0 and list(df.columns) == ["y", "x", "strength"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float64])
def test_any_dtype(dtype):
    img, truth = make_lattice((128, 128), 12.0, 2.0, noise=0.05, seed=4)
    scaled = (img - img.min()) / (img.max() - img.min()) * (250 if dtype == np.uint8 else 20000)
    df = detect_atoms(scaled.astype(dtype))
    precision, recall = match(df[["y", "x"]].to_numpy(), truth, img.shape)
    assert precision > 0.99 and recall > 0.99


def test_noncontiguous_slice_of_stack():
    img, truth = make_lattice((128, 128), 12.0, 2.0, noise=0.05, seed=5)
    stack = np.stack([np.zeros_like(img), img.T, np.zeros_like(img)], axis=-1)
    view = stack[:, :, 1].T  # the image again, as a strided view
    assert not view.flags.c_contiguous and np.array_equal(view, img)
    a = detect_atoms(view)
    b = detect_atoms(np.ascontiguousarray(img))
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(sigma=0), "sigma must be a positive"),
        (dict(sigma=-1.0), "sigma must be a positive"),
        (dict(min_distance=0), "minimum distance"),
        (dict(threshold=1.5), "between 0 and 1"),
        (dict(margin=-2), "margin"),
    ],
)
def test_bad_parameters(kwargs, words):
    img, _ = make_lattice((64, 64), 12.0, 2.0)
    with pytest.raises(InputError, match=words):
        detect_atoms(img, **kwargs)


def test_bad_image():
    with pytest.raises(InputError, match="2-D"):
        detect_atoms(np.zeros((3, 4, 32, 32)))
    with pytest.raises(InputError, match="constant"):
        estimate_feature_size(np.ones((32, 32)))


def test_defaults_find_the_atoms_of_the_real_stm_sample_across_its_step_edge():
    """The bundled STM image's step edge dominates its large scales: the column size must still be
    the atoms' (about 2.5 px), not the step's (40 px before the background was taken out)."""
    from napari_rvae.core.stm_sample import stm_sample_image

    image = stm_sample_image()
    assert 1.8 < estimate_feature_size(image) < 3.2
    found = detect_atoms(image)
    assert len(found) > 1400  # 1,515 with --level plane --sigma 2.5 (README); 1,525 with the defaults
    spacing = np.median(cKDTree(found[["y", "x"]].to_numpy()).query(found[["y", "x"]].to_numpy(), k=2)[0][:, 1])
    assert 8 < spacing < 13  # the layer's atoms, not noise between them


def test_feature_size_of_a_sparse_lattice_with_satellites_is_the_columns_own():
    """Columns of sigma 3 px, 48 px apart, each with a weak satellite 16 px away: the weak
    rings hid the spacing, and the estimate jumped between the satellites' scale and the
    lattice's (2.5 or 7.1 px) from one noisy frame to the next."""
    from napari_rvae.core.synthetic import make_lattice as synthetic_lattice

    estimates = [
        estimate_feature_size(synthetic_lattice((1024, 1024), 48.0, seed=seed, sigma=3.0, second_species="none").image)
        for seed in range(4)
    ]
    assert all(2.4 < e < 3.6 for e in estimates), estimates
    assert max(estimates) - min(estimates) < 0.2, estimates
