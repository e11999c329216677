"""Tests for napari_rvae.core.patches: exact against a slow reference, edges, normalisation, errors."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_rvae.core.errors import InputError
from napari_rvae.core.patches import PatchSet, edge_dropped_count, extract_patches

SCIPY_MODE = {"reflect": "reflect", "nearest": "nearest", "constant": "grid-constant"}


def reference(image, points, p, mode="nearest", cval=0.0):
    """Slow, obviously correct: one map_coordinates call per point."""
    img = np.asarray(image, np.float64)
    c = (p - 1) / 2
    k = np.arange(p)
    out = []
    for y, x in points:
        yy, xx = np.meshgrid(y + k - c, x + k - c, indexing="ij")
        out.append(ndi.map_coordinates(img, [yy, xx], order=1, mode=mode, cval=cval))
    return np.array(out).reshape(-1, p, p)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.normal(size=(97, 120)).astype(np.float32)


@pytest.mark.parametrize("p", [8, 15, 32])
def test_matches_reference_interior(image, p):
    rng = np.random.default_rng(p)
    pts = np.column_stack([rng.uniform(p / 2, 97 - 1 - p / 2, 300), rng.uniform(p / 2, 120 - 1 - p / 2, 300)])
    ps = extract_patches(image, pts, p)
    assert isinstance(ps, PatchSet)
    assert ps.patches.dtype == np.float32 and ps.patches.shape == (300, p, p)
    assert ps.dropped.size == 0 and ps.kept.tolist() == list(range(300))
    assert ps.centers.dtype == np.float64 and np.array_equal(ps.centers, pts)
    np.testing.assert_allclose(ps.patches, reference(image, pts, p), atol=1e-5)


def test_patch_centre_is_the_point():
    yy, xx = np.mgrid[:64, :64]
    img = (3.0 * yy + 0.5 * xx).astype(np.float32)  # linear: bilinear sampling is exact
    ps = extract_patches(img, [[30.3, 20.7]], 9)
    assert ps.patches[0, 4, 4] == pytest.approx(3 * 30.3 + 0.5 * 20.7, abs=1e-4)
    ps = extract_patches(img, [[30.3, 20.7]], 10)  # even: centre between the middle pixels
    assert ps.patches[0, 4:6, 4:6].mean() == pytest.approx(3 * 30.3 + 0.5 * 20.7, abs=1e-4)


def test_many_chunks_match_reference(image):
    rng = np.random.default_rng(5)
    n = 5000  # more than one chunk
    pts = np.column_stack([rng.uniform(5, 91, n), rng.uniform(5, 114, n)])
    ps = extract_patches(image, pts, 8)
    sel = rng.choice(n, 50, replace=False)
    np.testing.assert_allclose(ps.patches[sel], reference(image, pts[sel], 8), atol=1e-5)


def test_drop_edges_exact():
    h, w, p = 60, 80, 16
    c = (p - 1) / 2  # 7.5
    pts = np.array(
        [
            [30, 40],  # interior
            [c, 40],  # exactly at the top limit: kept
            [c - 0.01, 40],  # just over the top: dropped
            [h - 1 - c, 40],  # bottom limit: kept
            [h - 1 - c + 0.01, 40],  # dropped
            [30, c],  # left limit: kept
            [30, c - 0.5],  # dropped
            [30, w - 1 - c],  # right limit: kept
            [30, w - 1 - c + 1e-6],  # dropped
            [0, 0],  # corner: dropped
            [h - 1, w - 1],  # corner: dropped
        ]
    )
    img = np.random.default_rng(1).random((h, w))
    ps = extract_patches(img, pts, p)
    assert ps.dropped.tolist() == [2, 4, 6, 8, 9, 10]
    assert ps.kept.tolist() == [0, 1, 3, 5, 7]
    assert ps.kept.dtype == np.int64 and ps.dropped.dtype == np.int64
    assert edge_dropped_count(img.shape, pts, p) == 6
    assert edge_dropped_count((3, *img.shape), pts, p) == 6
    np.testing.assert_allclose(ps.patches, reference(img, pts[ps.kept], p), atol=1e-5)
    assert ps.summary() == "5 patches of 16 x 16; 6 points within 8 px of the edge dropped"


@pytest.mark.parametrize("edge", ["reflect", "nearest", "constant"])
def test_edge_modes_match_reference(image, edge):
    rng = np.random.default_rng(2)
    pts = np.column_stack([rng.uniform(-0.5, 96.5, 400), rng.uniform(-0.5, 119.5, 400)])
    pts[:4] = [[-0.5, -0.5], [96.5, 119.5], [0, 119], [96, 0]]
    ps = extract_patches(image, pts, 16, edge=edge, cval=0.25)
    assert ps.patches.shape == (400, 16, 16) and ps.dropped.size == 0
    assert ps.kept.tolist() == list(range(400))
    np.testing.assert_allclose(ps.patches, reference(image, pts, 16, SCIPY_MODE[edge], 0.25), atol=1e-5)


def test_constant_default_is_median(image):
    ps = extract_patches(image, [[0, 0]], 8, edge="constant")
    assert ps.patches[0, 0, 0] == pytest.approx(float(np.median(image)), abs=1e-6)


def test_normalize_patch(image):
    pts = [[40, 50], [20.5, 30.5]]
    ps = extract_patches(image, pts, 16, normalize="patch")
    np.testing.assert_allclose(ps.patches.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(ps.patches.std(axis=(1, 2)), 1, atol=1e-4)
    raw = extract_patches(image, pts, 16).patches
    z = (raw - raw.mean(axis=(1, 2), keepdims=True)) / raw.std(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(ps.patches, z, atol=1e-4)


def test_normalize_patch_constant_is_safe():
    img = np.zeros((64, 64), np.float32)
    img[40:, 40:] = 5.0
    ps = extract_patches(img, [[10, 10], [50, 50], [40, 40]], 8, normalize="patch")
    assert np.isfinite(ps.patches).all()
    assert np.all(ps.patches[0] == 0) and np.all(ps.patches[1] == 0)


@pytest.mark.parametrize("mode", ["global", "minmax"])
def test_normalize_stack(image, mode):
    pts = np.array([[40, 50], [20.5, 30.5], [60, 60]])
    ps = extract_patches(image, pts, 16, normalize=mode)
    raw = extract_patches(image, pts, 16).patches.astype(np.float64)
    if mode == "global":
        want = (raw - raw.mean()) / raw.std()
        assert ps.patches.mean() == pytest.approx(0, abs=1e-5)
        assert ps.patches.std() == pytest.approx(1, abs=1e-4)
    else:
        want = (raw - raw.min()) / (raw.max() - raw.min())
        assert ps.patches.min() == 0 and ps.patches.max() == pytest.approx(1)
    np.testing.assert_allclose(ps.patches, want, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float64, np.float32])
def test_any_dtype(dtype):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 200, (50, 70)).astype(dtype)
    pts = np.column_stack([rng.uniform(8, 41, 20), rng.uniform(8, 61, 20)])
    ps = extract_patches(img, pts, 12)
    assert ps.patches.dtype == np.float32
    np.testing.assert_allclose(ps.patches, reference(img, pts, 12), atol=1e-4)


def test_noncontiguous_slice_of_stack():
    rng = np.random.default_rng(4)
    stack = rng.normal(size=(70, 3, 90)).astype(np.float32)
    img = stack[:, 1, ::-1]  # 2-D, strided and reversed view
    assert not img.flags.c_contiguous
    pts = np.column_stack([rng.uniform(0, 69, 50), rng.uniform(0, 89, 50)])
    for edge in ("drop", "reflect"):
        ps = extract_patches(img, pts, 10, edge=edge)
        mode = "reflect" if edge == "reflect" else "nearest"
        np.testing.assert_allclose(ps.patches, reference(img, pts[ps.kept], 10, mode), atol=1e-5)


def test_patch_as_large_as_image():
    img = np.random.default_rng(6).random((16, 20))
    ps = extract_patches(img, [[7.5, 9.5], [7.5, 10.0], [7.0, 9.5]], 16)
    assert ps.kept.tolist() == [0, 1] and ps.dropped.tolist() == [2]
    np.testing.assert_allclose(ps.patches, reference(img, [[7.5, 9.5], [7.5, 10.0]], 16), atol=1e-5)


def test_constant_image_is_allowed():
    ps = extract_patches(np.full((32, 32), 7, np.uint8), [[16, 16]], 8, normalize="patch")
    assert np.all(ps.patches == 0)


def test_summary_without_drops():
    ps = extract_patches(np.random.default_rng(0).random((64, 64)), [[32, 32]] * 3, 32, edge="nearest")
    assert ps.summary() == "3 patches of 32 x 32"
    assert len(ps) == 3


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(points=[[10, 10]], patch_size=4), ["too small", "at least 8"]),
        (dict(points=[[10, 10]], patch_size=41), ["larger than the image", "40"]),
        (dict(points=[[10, 10]], patch_size=8.5), ["whole number"]),
        (dict(points=[10, 10, 10], patch_size=8), ["(N, 2)"]),
        (dict(points=np.zeros((3, 3)), patch_size=8), ["(N, 2)"]),
        (dict(points=[[10, np.nan], [np.nan, 1], [5, 5]], patch_size=8), ["2 of 3", "NaN", "point 0"]),
        (dict(points=[[10, 10], [10, 60], [-3, 5]], patch_size=8), ["2 of 3", "outside", "point 1", "x=60"]),
        (dict(points=np.zeros((0, 2)), patch_size=8), ["no points"]),
        (dict(points=[], patch_size=8), ["no points"]),
        (dict(points=[[10, 10]], patch_size=8, edge="wrap"), ["edge mode", "reflect"]),
        (dict(points=[[10, 10]], patch_size=8, normalize="zscore"), ["normalize", "minmax"]),
    ],
)
def test_bad_input_messages(kwargs, words):
    img = np.random.default_rng(0).random((40, 50))
    with pytest.raises(InputError) as err:
        extract_patches(img, **kwargs)
    for word in words:
        assert word in str(err.value)


def test_bad_image():
    with pytest.raises(InputError, match="2-D"):
        extract_patches(np.zeros((4, 5, 40, 40)), [[10, 10]], 8)
