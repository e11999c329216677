import numpy as np
import pytest

from napari_rvae.core.errors import InputError
from napari_rvae.core.synthetic import make_movie, wrap_angle, write_movie_zarr

GRAINS = [(48.0, 40.0, 10.0, 2.0), (48.0, 120.0, -20.0, -1.5)]


def small_movie(**kw):
    args = dict(n_frames=6, shape=(96, 160), spacing=12.0, grains=GRAINS, boundary_velocity=(0.0, 3.0))
    args.update(kw)
    return make_movie(args.pop("n_frames"), seed=args.pop("seed", 4), second_species="none", **args)


def test_grains_turn_at_their_rates():
    movie = small_movie()
    for t in (0, 3, 5):
        want = wrap_angle([g[2] + g[3] * t for g in GRAINS])
        np.testing.assert_allclose(movie.grain_angles(t), want)
        truth = movie.truth(t)
        for k in range(len(GRAINS)):
            np.testing.assert_allclose(truth.angle_deg[truth.grain == k], want[k])
        frame = movie.frame(t)
        np.testing.assert_array_equal(frame.points, truth.points)
        np.testing.assert_array_equal(frame.angle_deg, truth.angle_deg)
        assert [g[2] for g in frame.grains] == pytest.approx(list(want))


def test_boundary_moves_over_lattices_that_stay():
    movie = small_movie(jitter=0.0, grains=[(g[0], g[1], g[2], 0.0) for g in GRAINS])
    first, last = movie.truth(0), movie.truth(5)
    np.testing.assert_allclose(movie.seeds(5)[0] - movie.seeds(0)[0], [0.0, 15.0])
    np.testing.assert_allclose(movie.seeds(5)[1], movie.seeds(0)[1])
    # grain 0's seed moves right: it takes atoms from grain 1, on grain 0's lattice
    assert (last.grain == 0).sum() > (first.grain == 0).sum() + 5
    on_first = {tuple(p) for p in np.round(first.points[first.grain == 0], 6)}
    assert on_first <= {tuple(p) for p in np.round(last.points[last.grain == 0], 6)}
    assert first.points[first.grain == 0, 1].max() < last.points[last.grain == 0, 1].max()


def test_frames_are_reproducible_and_independent():
    a, b, c = small_movie(), small_movie(), small_movie(seed=5)
    frames = list(a)
    assert len(frames) == len(a) == 6
    np.testing.assert_array_equal(frames[3].image, b.frame(3).image)
    assert not np.array_equal(frames[3].image, c.frame(3).image)
    assert not np.array_equal(frames[3].image, frames[4].image)
    img = frames[2]
    assert img.image.dtype == np.float32 and img.image.shape == (96, 160)
    yx = np.round(img.points).astype(int)
    assert img.clean[yx[:, 0], yx[:, 1]].mean() > 5 * img.clean.mean() - 4 * img.clean.min()


def test_distinct_frames_repeat_atoms_under_fresh_noise():
    movie = small_movie(distinct=2)
    np.testing.assert_array_equal(movie.truth(5).points, movie.truth(1).points)
    np.testing.assert_array_equal(movie.frame(5).clean, movie.frame(1).clean)
    assert not np.array_equal(movie.frame(5).image, movie.frame(1).image)


def test_zarr_round_trip(tmp_path):
    import zarr

    movie = small_movie(n_frames=3)
    seen = []
    write_movie_zarr(tmp_path / "m.zarr", movie, on_frame=seen.append)
    assert seen == [0, 1, 2]
    arr = zarr.open_array(str(tmp_path / "m.zarr"), mode="r")
    assert arr.shape == (3, 96, 160) and arr.chunks == (1, 96, 160) and arr.dtype == np.float32
    for t in range(3):
        np.testing.assert_array_equal(arr[t], movie.frame(t).image)
    assert arr.attrs["pixel_size"] == movie.options.pixel_size
    assert arr.attrs["synthetic_movie"]["grains"][1] == list(GRAINS[1])
    with pytest.raises(InputError, match="exists"):
        write_movie_zarr(tmp_path / "m.zarr", movie)
    write_movie_zarr(tmp_path / "m.zarr", small_movie(n_frames=2), overwrite=True, compressed=True)
    assert zarr.open_array(str(tmp_path / "m.zarr"), mode="r").shape == (2, 96, 160)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_frames=0), "at least one frame"),
        (dict(grains=[(1, 2, 3)]), "angle0_deg"),
        (dict(moving_grain=2), "moving_grain"),
        (dict(distinct=0), "distinct"),
    ],
)
def test_bad_recipes(kw, match):
    with pytest.raises(InputError, match=match):
        small_movie(**kw)


def test_frame_outside_the_movie():
    with pytest.raises(InputError, match="outside"):
        small_movie().truth(6)
