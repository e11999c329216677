"""Maps from per-atom results, checked against known angles and brute force."""

import numpy as np
import pytest

from napari_rvae.core import maps
from napari_rvae.core.errors import InputError


def brute_nearest(shape, centers):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    c = np.rint(centers)
    d2 = (yy[..., None] - c[:, 0]) ** 2 + (xx[..., None] - c[:, 1]) ** 2
    return d2.min(-1), d2


def test_tessellation_matches_brute_force():
    rng = np.random.default_rng(1)
    shape = (37, 53)
    centers = rng.uniform(0, 1, (25, 2)) * (np.array(shape) - 1)
    index = maps.nearest_atom_index(shape, centers, radius=np.inf)
    best, d2 = brute_nearest(shape, centers)
    # Ties may go either way; the chosen atom must be at the minimum distance.
    chosen = np.take_along_axis(d2, index[..., None], -1)[..., 0]
    assert index.dtype == np.int32 and (index >= 0).all()
    np.testing.assert_array_equal(chosen, best)


def test_radius_leaves_far_pixels_empty_and_default_is_the_spacing():
    centers = np.array([[10.0, 10.0], [10.0, 20.0], [20.0, 10.0], [20.0, 20.0]])
    assert maps.typical_spacing(centers) == pytest.approx(10.0)
    amap = maps.angle_map((60, 60), centers, [5, 5, 5, 5])  # default radius 10 px
    assert amap[15, 15] == 5 and amap[10, 30] == 5  # 10 px from an atom: inside
    assert np.isnan(amap[50, 50]) and np.isnan(amap[10, 31])
    index = maps.nearest_atom_index((60, 60), centers, radius=3)
    assert index[10, 13] == 0 and index[10, 14] == -1


def test_nearest_map_gives_each_region_its_atoms_angle_exactly():
    # Two grains: left half atoms at 30 deg, right half at 70 deg (a 40 deg rotation).
    yy, xx = np.mgrid[4:60:8, 4:120:8]
    centers = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
    angles = np.where(centers[:, 1] < 60, 30.0, 70.0)
    amap = maps.angle_map((60, 124), centers, angles, radius=np.inf)
    assert amap.dtype == np.float32 and amap.shape == (60, 124)
    assert np.all(amap[:, :56] == 30) and np.all(amap[:, 64:] == 70)
    assert np.nanmedian(amap[:, 64:]) - np.nanmedian(amap[:, :56]) == 40


@pytest.mark.parametrize("period", [360.0, 180.0, 120.0, 90.0, 60.0])
def test_angles_wrap_at_the_period(period):
    centers = np.array([[5.0, 5.0], [5.0, 15.0], [5.0, 25.0]])
    angles = np.array([period + 10, -10.0, 2 * period + 1])
    amap = maps.angle_map((10, 30), centers, angles, period=period, radius=6)
    assert (
        amap[5, 5] == pytest.approx(10)
        and amap[5, 15] == pytest.approx(period - 10)
        and amap[5, 25] == pytest.approx(1)
    )
    assert np.nanmax(amap) < period


def test_smooth_map_averages_across_the_wrap():
    yy, xx = np.mgrid[4:80:8, 4:80:8]
    centers = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
    # Alternating 359 and 1 degrees: the circular mean is 0, a plain mean would say 180.
    angles = np.where((np.arange(len(centers)) % 2) == 0, 359.0, 1.0)
    smooth = maps.angle_map((80, 80), centers, angles, mode="smooth")
    inner = smooth[16:64, 16:64]
    assert np.isfinite(inner).all()
    dist_to_zero = np.minimum(inner, 360 - inner)
    assert dist_to_zero.max() < 1.5
    # With 4-fold symmetry 89 and 1 deg average to 0 (mod 90), not 45.
    angles4 = np.where((np.arange(len(centers)) % 2) == 0, 89.0, 1.0)
    smooth4 = maps.angle_map((80, 80), centers, angles4, mode="smooth", period=90)[16:64, 16:64]
    assert np.minimum(smooth4, 90 - smooth4).max() < 1.5
    # A uniform region keeps its angle.
    flat = maps.angle_map((80, 80), centers, np.full(len(centers), 123.0), mode="smooth")
    np.testing.assert_allclose(flat[8:72, 8:72], 123.0, atol=1e-3)


def test_class_map_labels_classes_plus_one_and_background_zero():
    centers = np.array([[5.0, 5.0], [5.0, 25.0], [25.0, 5.0]])
    cmap = maps.class_map((40, 40), centers, [0, 1, -1], radius=6)
    assert cmap.dtype == np.int32
    assert cmap[5, 5] == 1 and cmap[5, 25] == 2
    assert cmap[25, 5] == 0  # unknown class paints as background
    assert cmap[38, 38] == 0  # beyond the radius
    assert set(np.unique(cmap)) == {0, 1, 2}


def test_arrows_point_along_the_displayed_angle():
    v = maps.orientation_vectors([[10.0, 20.0], [10.0, 20.0], [3.0, 4.0]], [0.0, 90.0, 180.0], length=2.0)
    assert v.shape == (3, 2, 2)
    np.testing.assert_allclose(v[:, 0], [[10, 20], [10, 20], [3, 4]])
    # 0 deg: right; 90 deg counter-clockwise on screen: up, i.e. towards smaller y; 180: left.
    np.testing.assert_allclose(v[:, 1], [[0, 2], [-2, 0], [0, -2]], atol=1e-6)


def test_cyclic_colours_wrap_and_distinguish_angles():
    c = maps.angle_colors([0.0, 60.0, 30.0, 15.0, np.nan], period=60.0)
    assert c.shape == (5, 4) and c.dtype == np.float32
    np.testing.assert_allclose(c[0], c[1], atol=1e-6)  # 0 and the period agree
    assert np.abs(c[0] - c[2]).max() > 0.5 and np.abs(c[0] - c[3]).max() > 0.3
    np.testing.assert_allclose(c[4], [0.5, 0.5, 0.5, 1.0])
    wheel = maps.cyclic_colors(12)
    assert wheel.shape == (12, 4) and len({tuple(np.round(w, 3)) for w in wheel}) == 12
    cls = maps.class_colors([0, 1, 0, -1])
    np.testing.assert_array_equal(cls[0], cls[2])
    assert not np.allclose(cls[0], cls[1]) and np.allclose(cls[3, :3], 0.5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: maps.angle_map((10, 10), [[1, 1]], [1, 2]), "1 atoms but 2 angles"),
        (lambda: maps.angle_map((10, 10), [[1, 1]], [1], mode="cubic"), "map mode"),
        (lambda: maps.angle_map((10, 10), [[1, 1]], [1], period=0), "period"),
        (lambda: maps.class_map((10, 10), [[1, 1]], [0, 1]), "classes"),
        (lambda: maps.nearest_atom_index((0, 10), [[1, 1]]), "at least 1 x 1"),
        (lambda: maps.nearest_atom_index("big", [[1, 1]]), "two integers"),
    ],
)
def test_bad_input_is_a_plain_sentence(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_no_atoms_or_atoms_outside_give_empty_maps():
    assert (maps.nearest_atom_index((5, 5), np.zeros((0, 2))) == -1).all()
    assert np.isnan(maps.angle_map((5, 5), [[50.0, 50.0]], [10.0], radius=np.inf)).all()
