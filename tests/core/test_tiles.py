"""Chunked detection and patch cutting (core/tiles) agree with the whole frame, bit for bit.

The lattices put atoms exactly on the tiles' core borders and make tied maxima
(2 x 2 blocks and long bars of equal integer values, whose filter responses are
exact plateaus) straddle them: the tiled result must be the whole frame's, with
no duplicate and no loss.
"""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from napari_rvae.core import detect as det
from napari_rvae.core.detect import (
    DetectionSettings,
    detect_atoms,
    detect_with,
    detection_candidates,
    detection_halo,
    detection_settings,
    finish_detection,
)
from napari_rvae.core.errors import InputError
from napari_rvae.core.patches import extract_patches
from napari_rvae.core.synthetic import make_lattice
from napari_rvae.core.tiles import (
    Tile,
    cut_tile,
    detect_tiled,
    detection_settings_tiled,
    frame_points,
    owned,
    tile_candidates,
    tile_grid,
)

TILE = 16


def blocks(shape, spacing, offset, value=10.0):
    """2 x 2 blocks of one integer value: each gives a 2 x 2 plateau of tied responses."""
    img = np.zeros(shape)
    for y in range(offset[0], shape[0] - 1, spacing):
        for x in range(offset[1], shape[1] - 1, spacing):
            img[y : y + 2, x : x + 2] = value
    return img


def border_lattice():
    """Blocks straddling core borders (rows and columns 15|16, 31|32, ...), Gaussian atoms centred
    exactly on core starts, and a bar of tied maxima along a core border (row 64), across cores."""
    img = np.zeros((112, 96))
    img[:56] = blocks((56, 96), TILE, (TILE - 1, TILE - 1))
    yy, xx = np.mgrid[:112, :96]
    for cy, cx in [(5 * TILE, TILE), (5 * TILE, 3 * TILE), (6 * TILE, 2 * TILE)]:
        img += np.round(20 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0))
    img[4 * TILE, 5:91] = 7.0
    return img


def read(img):
    f = img.astype(np.float32)
    return lambda rows, cols: f[rows, cols]


# ---------------------------------------------------------------------------------------------
# detect_atoms: the refactor kept its output


def _old_detect_atoms(image, *, sigma=None, min_distance=None, threshold=0.1, dark=False, margin=0, refine=True):
    """A copy of detect_atoms as it was before the split (its helpers are unchanged)."""
    img = det._image(image)
    if img is None:
        return det._empty_frame()
    if dark:
        img = -img
    sigma = float(det.estimate_feature_size(img) if sigma is None else sigma)
    md = int(round(max(2, int(round(1.5 * sigma))) if min_distance is None else min_distance))
    resp = det._dog_response(img, sigma)
    noise = det._noise_std(img) * det._dog_gain(sigma)
    peak = float(resp.max())
    if not peak > 0:
        return det._empty_frame()
    floor = max(det._NOISE_K * noise, 1e-6 * peak)
    mask = (resp == ndi.maximum_filter(resp, size=2 * md + 1, mode="nearest")) & (resp > np.float32(floor))
    iy, ix = np.nonzero(mask)
    strength = resp[iy, ix].astype(np.float64)
    if iy.size == 0:
        return det._empty_frame()
    keep = strength >= threshold * float(np.percentile(strength, 99))
    iy, ix, strength = iy[keep], ix[keep], strength[keep]
    iy, ix, strength = _old_suppress_ties(iy, ix, strength, md)
    pts = np.column_stack([iy, ix]).astype(np.float64)
    if refine and pts.shape[0]:
        pts = det.refine_positions(img, pts, sigma=sigma)
    if margin > 0:
        pts, strength = det._within_margin(pts, strength, img.shape, margin)
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    return pd.DataFrame({"y": pts[order, 0], "x": pts[order, 1], "strength": strength[order]})


def _old_suppress_ties(iy, ix, strength, md):
    """The tie rule, point by point: in strength-then-raster order, a kept maximum drops the later ones
    within ``md`` px (Chebyshev)."""
    order = np.lexsort((ix, iy, -strength))
    rank = np.empty(iy.size, int)
    rank[order] = np.arange(iy.size)
    removed = np.zeros(iy.size, bool)
    for i in order:
        if not removed[i]:
            removed |= (np.abs(iy - iy[i]) <= md) & (np.abs(ix - ix[i]) <= md) & (rank > rank[i])
    keep = ~removed
    return iy[keep], ix[keep], strength[keep]


@pytest.mark.parametrize(
    "image, options",
    [
        (make_lattice((96, 112), seed=0).image, {}),
        (make_lattice((96, 112), seed=1).image, {"dark": True, "margin": 4}),
        (make_lattice((96, 112), seed=2).image, {"refine": False, "threshold": 0.4}),
        (blocks((48, 48), 7, (2, 3)), {"sigma": 1.0}),
    ],
)
def test_detect_atoms_as_before_and_as_detect_with(image, options):
    before = _old_detect_atoms(image, **options)
    now = detect_atoms(image, **options)
    assert len(now) > 10
    pd.testing.assert_frame_equal(now, before, check_exact=True)
    pd.testing.assert_frame_equal(detect_with(image, detection_settings(image, **options)), now, check_exact=True)


def test_settings_none_when_nothing_to_find():
    assert detection_settings(np.ones((32, 32))) is None
    assert len(detect_with(np.ones((32, 32)), None)) == 0
    assert len(detect_tiled(read(np.ones((32, 32))), (32, 32), None, tile=8)) == 0


# ---------------------------------------------------------------------------------------------
# the grid and ownership


def test_grid_cores_cover_the_frame_once():
    tiles = tile_grid((37, 50), 16, 5)
    cover = np.zeros((37, 50), int)
    for t in tiles:
        y0, y1, x0, x1 = t.core
        cover[y0:y1, x0:x1] += 1
        assert t.outer == (max(0, y0 - 5), min(37, y1 + 5), max(0, x0 - 5), min(50, x1 + 5))
    assert (cover == 1).all() and len(tiles) == 3 * 4


def test_every_point_owned_once_even_on_core_borders_and_beyond_the_frame():
    pts = np.array(
        [[16.0, 16.0], [15.999999999, 32.0], [0.0, 0.0], [-0.7, 5.0], [36.4, 49.3], [32.0, 47.9], [5.0, -1.4]]
    )
    tiles = tile_grid((37, 50), 16, 3)
    count = sum(owned(pts, t).astype(int) for t in tiles)
    assert count.tolist() == [1] * len(pts)
    assert owned(pts[:1], tiles[5]).tolist() == [True]  # (16, 16) starts the core at row 1, column 1
    assert not owned([[np.nan, 3.0]], tiles[0]).any()
    # without the frame's shape a core is only its half-open box
    assert owned([[-0.7, 5.0]], Tile(core=(0, 16, 0, 16), outer=(0, 19, 0, 19))).tolist() == [False]


# ---------------------------------------------------------------------------------------------
# chunked detection == whole-frame detection


@pytest.mark.parametrize("options", [{"sigma": 1.0}, {"sigma": 1.2, "refine_method": "gaussian", "margin": 3}])
def test_tiled_detection_on_core_borders_and_ties(options):
    img = border_lattice()
    s = detection_settings(img, **options)
    whole = detect_with(img, s)
    tiled = detect_tiled(read(img), img.shape, s, tile=TILE)
    pd.testing.assert_frame_equal(tiled, whole, check_exact=True)
    assert not tiled.duplicated(["y", "x"]).any()
    # the ties were there: more maxima than atoms, and some on both sides of a core border
    cand = detection_candidates(img, s)
    assert len(cand) > len(whole) + 50
    left, right = cand[cand["ix"] == TILE - 1], cand[cand["ix"] == TILE]
    assert set(left["iy"]) & set(right["iy"])
    # the first of each 2 x 2 plateau (top left, across the border from the others) wins
    whole0 = detect_with(img, replace(s, refine=False))
    pd.testing.assert_frame_equal(detect_tiled(read(img), img.shape, replace(s, refine=False), tile=TILE), whole0)
    kept = set(map(tuple, whole0[["y", "x"]].to_numpy().tolist()))
    b = 2 * TILE
    assert (b - 1, b - 1) in kept and not {(b - 1, b), (b, b - 1), (b, b)} & kept
    bar = whole0[whole0["y"] == 4 * TILE]["x"].to_numpy()
    assert len(bar) > 10 and (np.diff(bar) == 3).sum() > 5  # a chain of ties: every third pixel


def test_tiled_detection_on_a_lattice_with_candidates_as_tasks():
    img = make_lattice((120, 100), seed=5).image
    s = detection_settings(img)
    tiles = tile_grid(img.shape, 23, detection_halo(s))
    f = img.astype(np.float32)
    parts = [tile_candidates(f[t.rows, t.cols], t, s) for t in reversed(tiles)]  # any order
    got = finish_detection(pd.concat(parts, ignore_index=True), s, img.shape)
    pd.testing.assert_frame_equal(got, detect_atoms(img), check_exact=True)
    with pytest.raises(ValueError, match="overlap"):
        finish_detection(pd.concat(parts + parts[:1], ignore_index=True), s, img.shape)


@settings(deadline=None, max_examples=12, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.tuples(st.integers(20, 44), st.integers(20, 44)),
    spacing=st.integers(4, 9),
    offset=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    tile=st.integers(3, 30),
    sigma=st.sampled_from([0.8, 1.0, 1.5]),
    seed=st.integers(0, 2**16),
)
def test_tiled_detection_property(shape, spacing, offset, tile, sigma, seed):
    img = blocks(shape, spacing, offset)
    rng = np.random.default_rng(seed)
    img += rng.integers(0, 2, size=shape) * rng.integers(0, 2)  # sometimes integer noise too
    s = detection_settings(img, sigma=sigma)
    whole = detect_with(img, s)
    tiled = detect_tiled(read(img), img.shape, s, tile=tile)
    pd.testing.assert_frame_equal(tiled, whole, check_exact=True)


def test_detect_with_window_checks():
    img = make_lattice((64, 64), seed=0).image
    s = detection_settings(img)
    with pytest.raises(InputError, match="does not lie in"):
        detect_with(img[:40, :40], s, origin=(30, 0), frame_shape=(64, 64))
    bad = img.copy()
    bad[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        detect_with(bad[:40, :40], s, frame_shape=(64, 64))
    # a whole frame is read as detect_atoms reads it (NaN pixels filled with the median)
    pd.testing.assert_frame_equal(detect_with(bad, detection_settings(bad)), detect_atoms(bad), check_exact=True)


@pytest.mark.parametrize(
    "image, options",
    [
        (make_lattice((1030, 48), seed=6).image, {}),  # the feature size's central crop is a part of the frame
        (make_lattice((90, 70), seed=7).image, {"dark": True, "threshold": 0.3}),
        (blocks((40, 50), 6, (1, 2)), {"sigma": 1.0}),
        (np.full((40, 30), 3.0), {}),
        (np.pad(np.ones((1, 1)), ((5, 1094), (10, 13))), {}),  # a constant crop: one bright pixel outside it
    ],
)
def test_settings_read_tile_by_tile_are_the_whole_frames(image, options):
    f = image.astype(np.float32)
    tiled = detection_settings_tiled(lambda rows, cols: f[rows, cols], f.shape, tile=17, **options)
    assert tiled == detection_settings(f, **options)


def test_halo_formula():
    s = DetectionSettings(sigma=2.0, min_distance=3, floor=0.0, min_strength=0.0)
    # 3.5 sigma (7) + 3 sqrt(8) sigma (17) + min_distance (3); a patch of P asks for P + 1
    assert detection_halo(s) == 27 and detection_halo(s, 24) == 27 and detection_halo(s, 40) == 41


# ---------------------------------------------------------------------------------------------
# patches cut tile by tile == the whole frame's


def _tiled_patches(img, pts, p, edge, cval, halo, tile=TILE, normalize="none"):
    got = np.full((len(pts), p, p), np.nan, np.float32)
    count = np.zeros(len(pts), int)
    dropped = []
    for t in tile_grid(img.shape, tile, halo):
        own = np.flatnonzero(owned(pts, t))
        window = img[t.rows, t.cols]
        ps = cut_tile(window, t.origin, pts[own], p, edge=edge, cval=cval, frame_shape=img.shape, normalize=normalize)
        got[own[ps.kept]] = ps.patches
        count[own] += 1
        dropped += own[ps.dropped].tolist()
        assert np.array_equal(ps.centers, pts[own[ps.kept]])
    assert (count == 1).all()
    return got, sorted(dropped)


@pytest.mark.parametrize("p", [12, 17])
@pytest.mark.parametrize("edge", ["drop", "reflect", "nearest", "constant"])
def test_cut_tile_is_the_whole_frame_cut(p, edge):
    img = make_lattice((80, 96), seed=3).image.astype(np.float32)
    s = detection_settings(img)
    border = [[16.0, 16.0], [32.0, 47.999999], [0.0, 0.0], [-0.7, 40.3], [79.4, 50.0], [47.5, 95.0], [31.9999, 63.5]]
    pts = np.concatenate([detect_with(img, s)[["y", "x"]].to_numpy(), border])
    cval = float(np.median(img)) if edge == "constant" else None
    whole = extract_patches(img, frame_points(pts, img.shape), p, edge=edge, cval=cval)
    got, dropped = _tiled_patches(img, pts, p, edge, cval, detection_halo(s, p))
    assert dropped == whole.dropped.tolist()
    assert np.array_equal(got[whole.kept], whole.patches)  # bit for bit


def test_cut_tile_patch_normalisation_and_empty_tiles():
    img = make_lattice((64, 64), seed=4).image.astype(np.float32)
    pts = np.array([[20.25, 30.5], [33.0, 31.999]])
    whole = extract_patches(img, pts, 16, edge="reflect", normalize="patch")
    got, _ = _tiled_patches(img, pts, 16, "reflect", None, 17, normalize="patch")
    assert np.array_equal(got, whole.patches)
    empty = cut_tile(img[:30, :30], (0, 0), np.empty((0, 2)), 16, frame_shape=img.shape)
    assert empty.patches.shape == (0, 16, 16) and len(empty.kept) == 0


def test_cut_tile_refuses_what_would_differ():
    img = make_lattice((64, 64), seed=4).image.astype(np.float32)
    with pytest.raises(ValueError, match="cval"):
        cut_tile(img[10:50, 10:50], (10, 10), [[30.0, 30.0]], 16, edge="constant", frame_shape=img.shape)
    with pytest.raises(ValueError, match="too small"):
        cut_tile(img[20:36, 0:64], (20, 0), [[30.0, 30.0]], 16, frame_shape=img.shape)
    with pytest.raises(ValueError, match="whole stack"):
        cut_tile(img, (0, 0), [[30.0, 30.0]], 16, normalize="global")
    with pytest.raises(InputError, match="outside"):
        cut_tile(img[0:40, 0:40], (0, 0), [[30.0, 70.0]], 16, frame_shape=img.shape)
