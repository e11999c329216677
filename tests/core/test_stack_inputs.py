"""Inputs as frames (core/stack.py): layouts, many files, lazy reading, bad input, pickling."""

import pickle

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from napari_rvae.core.errors import InputError
from napari_rvae.core.image import as_image2d
from napari_rvae.core.readers import write_tiff
from napari_rvae.core.stack import (
    PATCH_STACK_MAX_SIDE,
    choose_layout,
    expand_input_paths,
    open_inputs,
    read_frame,
    read_window,
    scan_set_from_array,
)

RNG = np.random.default_rng(0)


def _movie(t=3, h=80, w=96, dtype=np.float32):
    return RNG.random((t, h, w)).astype(dtype)


# --- layout ---------------------------------------------------------------------------------


def test_tiff_movie_of_three_frames_is_a_movie_not_three_patches(tmp_path):
    movie = _movie(3, 256, 256)
    write_tiff(tmp_path / "movie.tif", movie, pixel_size=0.05, unit="nm")
    scans = open_inputs(tmp_path / "movie.tif")
    assert scans.layout.kind == "movie"
    assert "(3, 256, 256)" in scans.layout.reason and "--layout patches" in scans.layout.reason
    (src,) = scans.sources
    assert src.n_frames == 3 and src.frame_shape == (256, 256) and src.is_stack
    assert src.pixel_size == pytest.approx(0.05) and src.unit == "nm"
    assert scans.frames == [(0, 0), (0, 1), (0, 2)]
    np.testing.assert_array_equal(read_frame(src, 2), movie[2])


def test_small_square_planes_are_patches_unless_told_or_points_have_frames(tmp_path):
    np.save(tmp_path / "patches.npy", _movie(500, 32, 32))
    scans = open_inputs(tmp_path / "patches.npy")
    assert scans.layout.kind == "patches" and "--layout movie" in scans.layout.reason
    assert scans.sources[0].n_frames == 500 and scans.sources[0].data.numblocks == (1, 1, 1)  # not 500 tasks
    np.testing.assert_array_equal(read_frame(scans.sources[0], 499), np.load(tmp_path / "patches.npy")[499])
    assert open_inputs(tmp_path / "patches.npy", layout="movie").layout.kind == "movie"
    assert open_inputs(tmp_path / "patches.npy", has_frame_points=True).layout.kind == "movie"


def test_choose_layout_rules():
    side = PATCH_STACK_MAX_SIDE
    assert choose_layout((100, 120)).kind == "image"
    assert choose_layout((480, 640, 3)).kind == "image"  # RGB, as today
    assert choose_layout((10, side, side)).kind == "patches"
    assert choose_layout((10, side + 1, side + 1)).kind == "movie"
    assert choose_layout((10, 40, 50)).kind == "movie"  # not square: never patches
    assert choose_layout((10, 300, 300), "patches").kind == "patches"  # explicit wins
    assert choose_layout((100, 120), "movie").kind == "movie"
    with pytest.raises(InputError, match="patches are square"):
        choose_layout((10, 40, 50), "patches")
    with pytest.raises(InputError, match="--layout movie"):
        choose_layout((10, 300, 300), "image")
    with pytest.raises(InputError, match="not a stack of patches"):
        choose_layout((100, 120), "patches")
    with pytest.raises(InputError, match="choose one of"):
        choose_layout((100, 120), "frames")


def test_four_d_needs_a_plane_and_five_d_is_refused(tmp_path):
    data = RNG.random((2, 3, 40, 40)).astype(np.float32)
    np.save(tmp_path / "tzyx.npy", data)
    with pytest.raises(InputError, match=r"--plane \(0 to 2\)") as info:
        open_inputs(tmp_path / "tzyx.npy")
    assert "tzyx.npy" in str(info.value) and "(T, Z, Y, X)" in str(info.value)
    scans = open_inputs(tmp_path / "tzyx.npy", plane=1, layout="movie")
    np.testing.assert_array_equal(read_frame(scans.sources[0], 1), data[1, 1])
    with pytest.raises(InputError, match="outside"):
        open_inputs(tmp_path / "tzyx.npy", plane=3)
    np.save(tmp_path / "five.npy", np.zeros((2, 2, 2, 8, 8), np.float32))
    with pytest.raises(InputError, match=r"5 axes.*accepted are.*\(T, Z, Y, X\) with --plane"):
        open_inputs(tmp_path / "five.npy")


def test_rgb_image_is_its_luminance_as_today(tmp_path):
    rgb = (RNG.random((60, 70, 3)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.save(tmp_path / "rgb.npy", rgb)
    for name in ("rgb.tif", "rgb.npy"):
        scans = open_inputs(tmp_path / name)
        assert scans.layout.kind == "image" and any("luminance" in n for n in scans.notes)
        src = scans.sources[0]
        assert src.data.shape == (1, 60, 70) and not src.is_stack
        np.testing.assert_array_equal(read_frame(src, 0), as_image2d(rgb)[0])


# --- formats, lazily ------------------------------------------------------------------------


def _write_all_formats(tmp_path, movie):
    """The movie as .npy, TIFF, Zarr (array in a group), OME-Zarr, HDF5; the paths to open."""
    np.save(tmp_path / "m.npy", movie)
    tifffile.imwrite(tmp_path / "m.tif", movie, photometric="minisblack")
    g = zarr.open_group(tmp_path / "m.zarr", mode="w")
    g.create_array("frames", data=movie, chunks=(1, 16, 16))
    ome = zarr.open_group(tmp_path / "ome.zarr", mode="w")
    ome.create_array("0", data=movie, chunks=(1, 32, 32))
    ome.create_array("1", data=movie[:, ::2, ::2], chunks=(1, 32, 32))
    axes = [{"name": "t", "type": "time"}] + [{"name": a, "type": "space", "unit": "nanometer"} for a in "yx"]
    scale = [{"type": "scale", "scale": [1.0, 0.2, 0.2]}]
    ome.attrs["multiscales"] = [{"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}]
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["meta/info"] = np.arange(3)
        f["data/movie"] = movie
    return ["m.npy", "m.tif", "m.zarr", "ome.zarr", "m.h5", "m.h5::/data/movie"]


def test_every_format_reads_the_same_frames_and_windows(tmp_path):
    movie = _movie(3, 80, 96)
    for name in _write_all_formats(tmp_path, movie):
        scans = open_inputs(str(tmp_path / name), layout="movie")
        (src,) = scans.sources
        assert src.data.shape == movie.shape, name
        np.testing.assert_array_equal(read_frame(src, 1), movie[1], err_msg=name)
        window = read_window(src, 2, slice(10, 30), slice(40, 90))
        assert window.dtype == np.float32 and window.flags.writeable and not isinstance(window, np.memmap)
        np.testing.assert_array_equal(window, movie[2, 10:30, 40:90], err_msg=name)
    files = ["m.npy", "m.tif", "m.zarr", "ome.zarr", "m.h5", "m.h5::/data/movie"]
    names = [s.name for s in open_inputs([str(tmp_path / n) for n in files]).sources]
    assert names == ["m.npy", "m.tif", "m.zarr", "ome.zarr", "m.h5", "m.h5_data_movie"]
    ome = open_inputs(tmp_path / "ome.zarr").sources[0]
    assert ome.pixel_size == pytest.approx(0.2) and ome.unit == "nm"


def test_sources_pickle_and_read_in_another_process(tmp_path):
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    movie = _movie(3, 80, 96)
    sources = [open_inputs(str(tmp_path / n)).sources[0] for n in _write_all_formats(tmp_path, movie)]
    want = movie[1, 5:40, 7:70]
    for src in sources:
        back = pickle.loads(pickle.dumps(src))
        np.testing.assert_array_equal(read_window(back, 1, slice(5, 40), slice(7, 70)), want)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        windows = list(pool.map(read_window, sources, [1] * 6, [slice(5, 40)] * 6, [slice(7, 70)] * 6))
    for w in windows:
        np.testing.assert_array_equal(w, want)


def test_opening_a_zarr_movie_reads_only_the_frame_asked_for(tmp_path):
    movie = _movie(4, 32, 32)
    z = zarr.create_array(tmp_path / "movie.zarr", data=movie, chunks=(1, 16, 16))
    assert z.compressors  # garbage in a compressed chunk cannot decode: a read of it fails
    chunks = sorted(p for p in (tmp_path / "movie.zarr" / "c").rglob("*") if p.is_file())
    for p in chunks:
        if p.relative_to(tmp_path / "movie.zarr" / "c").parts[0] != "2":
            p.write_bytes(b"not a chunk")
    scans = open_inputs(tmp_path / "movie.zarr", layout="movie")
    src = scans.sources[0]
    np.testing.assert_array_equal(read_frame(src, 2), movie[2])
    np.testing.assert_array_equal(read_window(src, 2, slice(16, 32), slice(0, 16)), movie[2, 16:, :16])
    with pytest.raises(Exception):  # noqa: B017 (the proof that the other frames were never read)
        read_frame(src, 0)


def test_read_frame_cleans_nan_and_read_window_does_not(tmp_path):
    movie = _movie(2, 80, 80)
    movie[1, 3, 4] = np.nan
    np.save(tmp_path / "m.npy", movie)
    src = open_inputs(tmp_path / "m.npy").sources[0]
    assert np.isfinite(read_frame(src, 1)).all()
    assert np.isnan(read_window(src, 1, slice(0, 8), slice(0, 8))).sum() == 1
    with pytest.raises(InputError, match=r"Frame 2 is beyond m\.npy, which has 2 frames"):
        read_frame(src, 2)


def test_rosettasciio_stack_is_a_movie(tmp_path):
    pytest.importorskip("rsciio")
    mrcfile = pytest.importorskip("mrcfile")
    movie = _movie(4, 70, 90)
    with mrcfile.new(tmp_path / "x.mrc") as m:
        m.set_data(movie)
        m.voxel_size = (2.0, 2.0, 2.0)  # Å
    src = open_inputs(tmp_path / "x.mrc").sources[0]
    assert src.data.shape == (4, 70, 90) and src.unit == "nm" and src.pixel_size == pytest.approx(0.2)
    np.testing.assert_array_equal(
        read_window(pickle.loads(pickle.dumps(src)), 3, slice(0, 9), slice(5, 9)), movie[3, :9, 5:9]
    )


# --- several inputs -------------------------------------------------------------------------


def test_folder_glob_and_unique_names(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_tiff(tmp_path / folder / "scan.tif", RNG.random((70, 80)), pixel_size=0.1, unit="nm")
    write_tiff(tmp_path / "a" / "other.tif", RNG.random((90, 100)), pixel_size=0.2, unit="nm")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    assert [p.name for p in expand_input_paths(tmp_path / "a")] == ["other.tif", "scan.tif"]
    scans = open_inputs([str(tmp_path / "*" / "scan.tif"), tmp_path / "a"])
    assert [s.name for s in scans.sources] == ["a_scan.tif", "b_scan.tif", "other.tif"]
    assert scans.layout.kind == "image" and scans.n_frames == 3
    assert [s.frame_shape for s in scans.sources] == [(70, 80), (70, 80), (90, 100)]  # shapes may differ
    assert any("pixel sizes differ" in n and "not resampled" in n for n in scans.notes)


def test_images_and_a_movie_together_are_frames(tmp_path):
    write_tiff(tmp_path / "one.tif", RNG.random((70, 80)))
    np.save(tmp_path / "movie.npy", _movie(5, 100, 100))
    scans = open_inputs([tmp_path / "one.tif", tmp_path / "movie.npy"])
    assert scans.layout.kind == "movie" and scans.n_frames == 6
    assert scans.frames[:2] == [(0, 0), (1, 0)]
    assert not scans.notes  # same (no) calibration


def test_in_memory_array_reads_as_a_file_would():
    movie = _movie(3, 100, 100)
    scans = scan_set_from_array(movie, name="layer")
    assert scans.layout.kind == "movie" and scans.layout.reason.startswith("layer: ")
    np.testing.assert_array_equal(read_frame(scans.sources[0], 2), movie[2])


# --- bad input: one sentence each -----------------------------------------------------------


def test_bad_inputs_say_what_is_wrong(tmp_path):
    np.save(tmp_path / "patches.npy", _movie(20, 16, 16))
    write_tiff(tmp_path / "one.tif", RNG.random((70, 80)))
    zarr.open_group(tmp_path / "empty.zarr", mode="w").create_group("nothing")
    with h5py.File(tmp_path / "noimage.h5", "w") as f:
        f["x"] = np.arange(4)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    cases = {
        str(tmp_path / "*.dm4"): "No input files match",
        str(tmp_path / "empty"): "No input files match",
        str(tmp_path / "missing.tif"): "No such file",
        str(tmp_path / "notes.txt"): "unknown file type",
        str(tmp_path / "empty.zarr"): "Zarr group without an array",
        str(tmp_path / "empty.zarr") + "::nope": "has no array or group 'nope'",
        str(tmp_path / "noimage.h5"): "no numeric dataset of two or more axes",
        str(tmp_path / "noimage.h5") + "::/y": "/y in .* is not there; its datasets: /x",
    }
    for item, message in cases.items():
        with pytest.raises(InputError, match=message):
            open_inputs(item)
    with pytest.raises(InputError, match="patch stack is read alone"):
        open_inputs([tmp_path / "one.tif", tmp_path / "patches.npy"])
    with pytest.raises(InputError, match="choose one of"):
        open_inputs(tmp_path / "one.tif", layout="frames")


def test_frames_of_different_shapes_in_one_file_are_refused(tmp_path):
    path = tmp_path / "ragged.tif"
    tifffile.imwrite(path, RNG.random((40, 50)).astype(np.float32))
    tifffile.imwrite(path, RNG.random((60, 50)).astype(np.float32), append=True)
    with pytest.raises(InputError, match=r"frames of different shapes \(40 x 50, 60 x 50 px\)"):
        open_inputs(path)


# --- time between frames --------------------------------------------------------------------


def test_the_time_between_frames_is_read_where_the_file_says_it(tmp_path):
    movie = _movie(3, 80, 96)
    tifffile.imwrite(tmp_path / "ij.tif", movie, imagej=True, metadata={"axes": "TYX", "finterval": 0.5})
    tifffile.imwrite(
        tmp_path / "ij_ms.tif", movie, imagej=True, metadata={"axes": "TYX", "finterval": 40, "tunit": "ms"}
    )
    ome = zarr.open_group(tmp_path / "ome.zarr", mode="w")
    ome.create_array("0", data=movie, chunks=(1, 80, 96))
    axes = [{"name": "t", "type": "time", "unit": "millisecond"}]
    axes += [{"name": a, "type": "space", "unit": "nanometer"} for a in "yx"]
    scale = [{"type": "scale", "scale": [250.0, 0.2, 0.2]}]
    ome.attrs["multiscales"] = [{"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}]
    np.save(tmp_path / "plain.npy", movie)
    expected = {"ij.tif": 0.5, "ij_ms.tif": 0.04, "ome.zarr": 0.25, "plain.npy": None}
    for name, seconds in expected.items():
        (src,) = open_inputs(tmp_path / name, layout="movie").sources
        assert src.frame_interval_s == (None if seconds is None else pytest.approx(seconds)), name
    # Planes read as patches have no time.
    tifffile.imwrite(tmp_path / "p.tif", movie[:, :32, :32], imagej=True, metadata={"axes": "TYX", "finterval": 0.5})
    assert open_inputs(tmp_path / "p.tif", layout="patches").sources[0].frame_interval_s is None
    assert open_inputs(tmp_path / "p.tif", layout="movie").sources[0].frame_interval_s == pytest.approx(0.5)
