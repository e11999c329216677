"""The command line on movies and several scans: real files in and out, the layout said, clear errors.

Most runs use ``--workers 0`` (every frame in this process); one module-wide
LocalCluster serves the runs that go through ``--scheduler``.
"""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_rvae.cli import main

from .test_cli import gaussian_lattice

FAST = ["--epochs", "1", "--hidden-dim", "32", "--batch-size", "50", "--patch-size", "16"]
FAST += ["--symmetry", "1", "--angle-prior", "2", "--align", "none"]


def run_cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def scheduler():
    """The address of a two-worker LocalCluster, as ``--scheduler`` takes it."""
    from napari_rvae.core.cluster import compute_client

    with compute_client(workers=2) as client:
        yield client.scheduler.address


@pytest.fixture
def movie(tmp_path):
    """A (3, 96, 96) TIFF movie: the lattice drifting by a pixel a frame."""
    img, pts = gaussian_lattice()
    stack = np.stack([np.roll(img, t, axis=1) for t in range(3)])
    tifffile.imwrite(tmp_path / "movie.tif", stack, photometric="minisblack")
    return tmp_path / "movie.tif", pts


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-rvae: error: ")
    return lines[0]


def test_movie_tiff_is_read_as_frames_and_says_so(movie, tmp_path, capsys, scheduler):
    path, _ = movie
    out = tmp_path / "run"
    assert run_cli("train", path, "--out", out, "--scheduler", scheduler, *FAST) == 0
    err = capsys.readouterr().err
    assert "Layout: movie" in err
    table = pd.read_csv(out / "points.csv")
    assert list(table.columns[:3]) == ["frame", "y", "x"] and "angle" in table
    assert sorted(set(table["frame"])) == [0, 1, 2]
    report = json.loads((out / "report.json").read_text())
    assert report["layout"]["kind"] == "movie" and report["layout"]["reason"]
    assert report["frames"] == 3 and report["inputs"][0]["frames"] == 3
    assert report["cluster"]["scheduler"] == scheduler and report["cluster"]["workers"] == 2
    assert report["training_sample"]["n_total"] == report["n_patches"] == len(table)
    with tifffile.TiffFile(out / "angle_map.tif") as tif:
        assert tif.asarray().shape == (3, 96, 96)


def test_movie_report_checks_the_angles_of_every_frame(movie, tmp_path):
    """report.json's lattice check and angle warnings cover the whole movie, as one image's cover it."""
    from napari_rvae.core.angle_checks import angle_warnings

    path, _ = movie
    trained, encoded = tmp_path / "run", tmp_path / "again"
    assert run_cli("train", path, "--out", trained, "--workers", "0", *FAST, "--quiet") == 0
    assert run_cli("encode", path, "--model", trained / "model.pt", "--out", encoded, "--workers", "0", "--quiet") == 0
    for out in (trained, encoded):
        table = pd.read_csv(out / "points.csv")
        report = json.loads((out / "report.json").read_text())
        check = report["lattice_check"]
        assert check is not None and check["frames"] == 3 and check["psi_n"] in (4, 6)
        assert check["flagged"] == int(table["angle_psi_flag"].sum())
        assert report["angle_warnings"] == angle_warnings(table, 1)


def test_a_movie_that_says_its_frame_interval_gets_time_in_frames_csv(tmp_path):
    img, _ = gaussian_lattice()
    stack = np.stack([np.roll(img, t, axis=1) for t in range(3)]).astype(np.float32)
    tifffile.imwrite(tmp_path / "timed.tif", stack, imagej=True, metadata={"axes": "TYX", "finterval": 2.0})
    out = tmp_path / "run"
    assert run_cli("train", tmp_path / "timed.tif", "--out", out, "--workers", "0", *FAST, "--quiet") == 0
    frames = pd.read_csv(out / "frames.csv")
    np.testing.assert_allclose(frames["time_s"], [0.0, 2.0, 4.0])
    assert json.loads((out / "report.json").read_text())["inputs"][0]["frame_interval_s"] == 2.0


def test_several_files_and_a_glob_share_one_model(tmp_path, capsys):
    img, _ = gaussian_lattice()
    for i in range(2):
        tifffile.imwrite(tmp_path / f"scan{i}.tif", np.roll(img, 2 * i, axis=0))
    out = tmp_path / "run"
    assert (
        run_cli(
            "train", tmp_path / "scan0.tif", tmp_path / "scan1.tif", "--out", out, "--workers", "0", *FAST, "--quiet"
        )
        == 0
    )
    table = pd.read_csv(out / "points.csv")
    assert list(table.columns[:4]) == ["file", "frame", "y", "x"]
    assert sorted(set(table["file"])) == ["scan0.tif", "scan1.tif"]
    report = json.loads((out / "report.json").read_text())
    assert [i["name"] for i in report["inputs"]] == ["scan0.tif", "scan1.tif"]
    assert report["cluster"]["workers"] == 0
    capsys.readouterr()
    again = tmp_path / "again"
    assert run_cli("encode", tmp_path / "scan*.tif", "--model", out / "model.pt", "--out", again, "--workers", "0") == 0
    assert "Layout:" in capsys.readouterr().err
    encoded = pd.read_csv(again / "points.csv")
    np.testing.assert_allclose(encoded["angle"], table["angle"], atol=1e-5)


@pytest.mark.parametrize("columns", [["frame", "y", "x"], ["axis-0", "axis-1", "axis-2"]])
def test_points_with_frames_place_the_atoms(movie, tmp_path, columns):
    """A frame column, or napari's own (t, y, x) Points CSV."""
    path, pts = movie
    rows = [(t, y, x + t) for t in range(3) for y, x in pts]
    pd.DataFrame(rows, columns=columns).to_csv(tmp_path / "points.csv", index=False)
    out = tmp_path / "run"
    assert (
        run_cli("train", path, "--points", tmp_path / "points.csv", "--out", out, "--workers", "0", *FAST, "--quiet")
        == 0
    )
    table = pd.read_csv(out / "points.csv")
    report = json.loads((out / "report.json").read_text())
    assert len(table) + len(report["dropped_rows"]) == 3 * len(pts)


def test_detect_writes_the_frame_column(movie, tmp_path):
    path, _ = movie
    assert run_cli("detect", path, "--out", tmp_path / "found.csv", "--workers", "0", "--quiet") == 0
    found = pd.read_csv(tmp_path / "found.csv")
    assert list(found.columns[:3]) == ["frame", "y", "x"] and sorted(set(found["frame"])) == [0, 1, 2]


def test_a_blank_frame_has_no_atoms_and_the_movie_goes_on(movie, tmp_path):
    path, _ = movie
    stack = tifffile.imread(path)
    stack[1] = 0.5  # the beam was off for a frame
    tifffile.imwrite(tmp_path / "blank.tif", stack, photometric="minisblack")
    assert run_cli("detect", tmp_path / "blank.tif", "--out", tmp_path / "found.csv", "--workers", "0", "--quiet") == 0
    assert sorted(set(pd.read_csv(tmp_path / "found.csv")["frame"])) == [0, 2]


def test_unreachable_scheduler_is_one_line_and_writes_nothing(movie, tmp_path, capsys, monkeypatch):
    import napari_rvae.core.cluster as cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    path, _ = movie
    out = tmp_path / "run"
    assert run_cli("train", path, "--out", out, "--scheduler", "tcp://127.0.0.1:1", *FAST, "--quiet") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "Could not reach the dask scheduler at tcp://127.0.0.1:1" in line
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_points_beyond_the_stack_are_refused(movie, tmp_path, capsys):
    path, pts = movie
    pd.DataFrame({"frame": 3, "y": pts[:, 0], "x": pts[:, 1]}).to_csv(tmp_path / "points.csv", index=False)
    out = tmp_path / "run"
    code = run_cli("train", path, "--points", tmp_path / "points.csv", "--out", out, "--workers", "0", *FAST, "--quiet")
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "frame 3" in line and "3 frames" in line
    assert not out.exists() and not list(tmp_path.glob(".run*"))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--memory-limit", "lots"], "--memory-limit"),
        (["--points", "{dir}/nofile.csv", "--workers", "0"], "not found"),
    ],
)
def test_other_movie_mistakes_are_one_line(movie, tmp_path, capsys, args, words):
    path, _ = movie
    out = tmp_path / "run"
    args = [a.replace("{dir}", str(tmp_path)) for a in args]
    assert run_cli("train", path, "--out", out, *args, *FAST, "--quiet") == 2
    assert words in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_glob_matching_nothing_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", tmp_path / "nothing*.tif", "--out", out, *FAST, "--quiet") == 2
    assert "nothing*.tif" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_sample_movie_is_a_calibrated_movie_with_its_truth(tmp_path):
    from napari_rvae.core.stack import open_inputs

    assert run_cli("sample", "movie", "--out", tmp_path) == 0
    scans = open_inputs([tmp_path / "movie.tif"])
    assert scans.layout.kind == "movie" and scans.n_frames == 8
    assert scans.sources[0].frame_shape == (256, 256) and scans.sources[0].pixel_size == pytest.approx(0.25)
    truth = pd.read_csv(tmp_path / "movie_points.csv")
    assert list(truth.columns[:3]) == ["frame", "y", "x"] and sorted(truth["frame"].unique()) == list(range(8))
    # grain 0 turns by +2 degrees a frame
    grain0 = truth[truth["grain"] == 0].groupby("frame")["angle_true"].first()
    np.testing.assert_allclose(np.diff(grain0.to_numpy()), 2.0)
