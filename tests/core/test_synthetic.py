import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from napari_rvae.core.errors import InputError
from napari_rvae.core.synthetic import (
    SyntheticLattice,
    make_lattice,
    make_rotated_digits,
    make_rotated_shapes,
    wrap_angle,
)


@pytest.fixture(scope="module")
def lattice():
    return make_lattice((160, 160), spacing=12.0, grains=((40, 40, 0.0), (40, 120, 30.0), (120, 80, -55.0)), seed=3)


def test_lattice_fields(lattice):
    lat = lattice
    assert isinstance(lat, SyntheticLattice)
    assert lat.image.shape == (160, 160) and lat.image.dtype == np.float32
    n = len(lat)
    assert lat.points.shape == (n, 2) and n > 100
    assert lat.angle_deg.shape == lat.grain.shape == lat.species.shape == (n,)
    assert set(np.unique(lat.grain)) == {0, 1, 2}
    assert set(np.unique(lat.species)) == {0, 1}
    assert lat.pixel_size > 0 and isinstance(lat.unit, str)
    assert np.all((lat.points >= 0) & (lat.points <= 159))
    for k, (_, _, a) in enumerate(lat.grains):
        assert np.allclose(lat.angle_deg[lat.grain == k], a)


def test_lattice_is_seeded():
    a = make_lattice((64, 64), seed=5)
    b = make_lattice((64, 64), seed=5)
    c = make_lattice((64, 64), seed=6)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


def test_lattice_atoms_are_bright_and_spacing(lattice):
    lat = lattice
    on = map_coordinates(lat.clean, lat.points.T, order=1)
    assert np.median(on) > 5 * np.median(lat.clean)
    # nearest-neighbour distance equals the lattice constant inside grains
    from scipy.spatial import cKDTree

    d, _ = cKDTree(lat.points).query(lat.points, k=2)
    assert abs(np.median(d[:, 1]) - 12.0) < 0.5


def test_motif_points_along_the_grain_angle_ccw_as_displayed(lattice):
    """The weak satellite sits at angle_deg counter-clockwise as displayed (y down)."""
    lat = lattice
    for k in range(3):
        sel = (lat.grain == k) & (lat.species == 0)
        pts = lat.points[sel]
        t = np.deg2rad(lat.angle_deg[sel][0])
        step = 0.33 * lat.spacing * np.array([-np.sin(t), np.cos(t)])
        fwd = map_coordinates(lat.clean, (pts + step).T, order=1)
        back = map_coordinates(lat.clean, (pts - step).T, order=1)
        assert np.median(fwd - back) > 0.2


def test_second_species_region():
    lat = make_lattice((128, 128), second_species="region", region_radius=30, seed=0)
    r = np.hypot(lat.points[:, 0] - 64, lat.points[:, 1] - 64)
    assert np.all(lat.species[r < 29] == 1) and np.all(lat.species[r > 31] == 0)


def test_hexagonal_lattice():
    lat = make_lattice((96, 96), lattice="hexagonal", grains=((48, 48, 10.0),), seed=0)
    from scipy.spatial import cKDTree

    _, idx = cKDTree(lat.points).query(lat.points, k=7)
    inner = np.all(np.abs(lat.points - 48) < 30, axis=1)
    d = np.linalg.norm(lat.points[idx[inner, 1:]] - lat.points[inner, None], axis=-1)
    assert np.allclose(np.median(d, axis=0), 12.0, atol=0.6)  # six equal neighbours


@pytest.mark.parametrize(
    "kwargs",
    [dict(shape=(4, 4)), dict(spacing=2.0), dict(lattice="triangle"), dict(second_species="x"), dict(grains=())],
)
def test_lattice_bad_input(kwargs):
    with pytest.raises(InputError):
        make_lattice(**{"shape": (64, 64), **kwargs})


def test_rotated_shapes_known_angles():
    p, a = make_rotated_shapes(n=20, size=28, max_angle=90, seed=1)
    assert p.shape == (20, 28, 28) and p.dtype == np.float32
    assert p.min() >= 0 and p.max() <= 1 and a.shape == (20,)
    assert np.all(np.abs(a) <= 90)
    # counter-rotating by the known angle recovers the unrotated glyph
    from skimage.transform import rotate

    p0, _ = make_rotated_shapes(n=1, size=28, max_angle=0)
    for i in range(3):
        back = rotate(p[i].astype(float), -a[i], order=1)
        assert np.corrcoef(back.ravel(), p0[0].ravel())[0, 1] > 0.9
    # the glyph is not rotationally symmetric
    half = rotate(p0[0].astype(float), 180, order=1)
    assert np.corrcoef(half.ravel(), p0[0].ravel())[0, 1] < 0.6


def test_rotated_digits():
    p, a, d = make_rotated_digits(n=50, size=28, max_angle=45, seed=0)
    assert p.shape == (50, 28, 28) and p.dtype == np.float32
    assert p.min() >= 0 and p.max() <= 1 and p.max() > 0.5
    assert np.all(np.abs(a) <= 45)
    assert d.shape == (50,) and set(d) <= set(range(10))
    # borders stay empty (the digit is padded before rotation)
    assert p[:, 0, :].max() < 0.05
    p2, a2, d2 = make_rotated_digits(n=50, size=28, max_angle=45, seed=0)
    np.testing.assert_array_equal(p, p2)


def test_rotated_digits_source_images():
    """Above 1,797 patches the handwritten images repeat; ``source`` says which one each patch is."""
    p, a, d, source = make_rotated_digits(n=2000, size=16, max_angle=180, seed=3, return_source=True)
    p2, _, d2 = make_rotated_digits(n=2000, size=16, max_angle=180, seed=3)
    np.testing.assert_array_equal(p, p2)  # asking for the sources changes nothing else
    assert source.shape == (2000,) and len(np.unique(source)) < 2000
    for s in np.unique(source)[:50]:
        assert len(set(d[source == s])) == 1  # one image, one digit


def test_rotated_digits_without_sklearn(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("no sklearn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="scikit-learn") as info:
        make_rotated_digits(n=2)
    assert isinstance(info.value, InputError)


@pytest.mark.parametrize("fn", [make_rotated_shapes, make_rotated_digits])
def test_rotated_bad_input(fn):
    with pytest.raises(InputError):
        fn(n=0)
    with pytest.raises(InputError):
        fn(n=2, max_angle=200)


def test_wrap_angle():
    np.testing.assert_allclose(wrap_angle([0, 180, -180, 190, -190, 540]), [0, 180, 180, -170, 170, 180])


def test_second_species_at_random_sites_takes_the_asked_share():
    from napari_rvae.core.synthetic import make_lattice

    lat = make_lattice((256, 256), second_species="random", second_fraction=0.15, seed=0)
    assert 0.10 < lat.species.mean() < 0.20
    none = make_lattice((128, 128), second_species="random", second_fraction=0.0, seed=0)
    assert none.species.sum() == 0
