"""Levelling a tilted topograph: flat afterwards, the same atoms found, the input untouched."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_rvae.core.detect import detect_atoms
from napari_rvae.core.errors import InputError
from napari_rvae.core.level import LEVELS, level_image, line_level, plane_level

from .lattice_util import lattice_positions, render

SHAPE = (160, 192)


@pytest.fixture(scope="module")
def lattice():
    pts = lattice_positions(SHAPE, 10.0, border=4.0, seed=1)
    return render(SHAPE, pts, 1.6, noise=0.02, seed=1).astype(np.float64)


def tilt(shape, dy=0.04, dx=-0.03):
    """A plane rising by 0.04 per row and falling by 0.03 per column: over the image about 6 times the atoms' contrast."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    return 2.0 + dy * y + dx * x


def plane_coefficients(image):
    h, w = image.shape
    y, x = np.mgrid[:h, :w]
    design = np.c_[np.ones(image.size), y.ravel(), x.ravel()]
    coef, *_ = np.linalg.lstsq(design, image.ravel(), rcond=None)
    return coef


def matched(a, b, tol=0.25):
    """How many positions of ``a`` have a position of ``b`` within ``tol`` px."""
    dist, _ = cKDTree(b).query(a)
    return int((dist < tol).sum())


def test_plane_levelling_removes_the_tilt(lattice):
    tilted = lattice + tilt(SHAPE)
    flat = plane_level(tilted)
    assert np.abs(plane_coefficients(flat)[1:]).max() < 1e-6
    # What is left is the lattice itself, levelled the same way.
    np.testing.assert_allclose(flat, plane_level(lattice), atol=1e-5)
    assert np.ptp(flat) < 0.5 * np.ptp(tilted)


def test_line_levelling_removes_scan_line_offsets(lattice):
    rng = np.random.default_rng(3)
    offsets = rng.normal(0, 0.5, (SHAPE[0], 1))  # each scan line at its own height, as the feedback leaves them
    striped = lattice + tilt(SHAPE) + offsets
    np.testing.assert_allclose(line_level(striped), line_level(lattice), atol=1e-5)
    np.testing.assert_allclose(np.median(line_level(striped), axis=1), 0.0, atol=1e-6)
    # A plane alone cannot undo the stripes.
    assert np.abs(plane_level(striped) - plane_level(lattice)).max() > 0.5


@pytest.mark.parametrize("method", ["plane", "lines"])
def test_detection_on_the_levelled_tilt_finds_the_untilted_atoms(lattice, method):
    # margin: line levelling shifts each row by its own median, which can lift a corner pixel into a "feature".
    reference = detect_atoms(lattice, margin=3)[["y", "x"]].to_numpy()
    tilted = (
        lattice + tilt(SHAPE) + (np.random.default_rng(4).normal(0, 0.5, (SHAPE[0], 1)) if method == "lines" else 0)
    )
    before = tilted.copy()
    found = detect_atoms(level_image(tilted, method), margin=3)[["y", "x"]].to_numpy()
    assert len(reference) > 200
    assert len(found) == len(reference)
    assert matched(found, reference) == len(reference)
    np.testing.assert_array_equal(tilted, before)  # levelling returns a new array
    # Without levelling the tilt misleads the detector: levelling is what helps.
    raw = detect_atoms(tilted, margin=3)[["y", "x"]].to_numpy().reshape(-1, 2)
    assert matched(raw, reference) < 0.9 * len(reference)


def test_none_is_a_float32_copy_and_unknown_methods_are_refused(lattice):
    copy = level_image(lattice, "none")
    assert copy.dtype == np.float32 and not np.shares_memory(copy, lattice)
    assert LEVELS == ("none", "plane", "lines")
    with pytest.raises(InputError, match="Unknown levelling 'median'"):
        level_image(lattice, "median")
