"""Movie outputs: points.csv, Parquet, map stacks and frames.csv written frame by frame."""

import io
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from napari_rvae.core import movie_outputs
from napari_rvae.core.circstats import circular_mean_spread
from napari_rvae.core.movie_outputs import MovieWriter, frame_summary, frames_figure
from napari_rvae.core.outputs import OutputDir
from napari_rvae.core.readers import read_image_file

SHAPE = (6, 8)


@dataclass(frozen=True)
class Src:
    """What MovieWriter reads of core/stack.Source."""

    name: str
    n_frames: int
    frame_shape: tuple = SHAPE
    pixel_size: float | None = 0.25
    unit: str | None = "nm"
    is_stack: bool = True
    frame_interval_s: float | None = None


@dataclass
class Frame:
    """What MovieWriter reads of core/movie.FrameResult."""

    source: int
    frame: int
    table: pd.DataFrame
    maps: dict
    dropped: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


def table(angles, classes, t=0):
    n = len(angles)
    y = np.arange(n, dtype=float) + 0.5 + t
    x = np.arange(n, dtype=float) * 2.0
    return pd.DataFrame(
        {
            "y": y,
            "x": x,
            "angle": np.asarray(angles, dtype=np.float32),
            "class": np.asarray(classes, dtype=np.int64),
            "z0": np.linspace(-1, 1, n),
            "y_nm": y * 0.25,
            "x_nm": x * 0.25,
        }
    )


def maps_for(t, shape=SHAPE):
    angle = np.full(shape, 10.0 * t, np.float32)
    angle[0, 0] = np.nan
    return {"angle_map": angle, "class_map": np.full(shape, t + 1, np.int32), "other_map": np.ones(shape)}


# Three frames; frame 1 has no atoms (and no maps); angles wrap around 0 / 180.
STREAM = [
    (table([178.0, 2.0, 4.0], [0, 0, 1], 0), maps_for(0)),
    (table([], [], 1), {}),
    (table([90.0, 100.0], [1, 1], 2), maps_for(2)),
]


def write_stream(folder, *, parquet=None, several=False, interval=None):
    sources = [Src("movie.tif", 3, frame_interval_s=interval)]
    with OutputDir(folder) as out:
        writer = MovieWriter(out, sources, several_files=several, period=180.0, n_classes=2, parquet=parquet)
        for t, (tab, maps) in enumerate(STREAM):
            writer.add(Frame(0, t, tab, maps, dropped=np.arange(t)))
        files = writer.close()
    return writer, files


def test_points_csv_has_frame_in_front_and_every_row(tmp_path):
    writer, files = write_stream(tmp_path / "run")
    points = pd.read_csv(tmp_path / "run" / "points.csv")
    assert list(points.columns) == ["frame", "y", "x", "angle", "class", "z0", "y_nm", "x_nm"]
    assert points["frame"].tolist() == [0, 0, 0, 2, 2]
    expected = pd.concat([STREAM[0][0], STREAM[2][0]], ignore_index=True)
    pd.testing.assert_frame_equal(points.drop(columns="frame"), expected, check_dtype=False)
    assert writer.rows == 5 and writer.dropped == 3
    assert files == ["points.csv", "angle_map.tif", "class_map.tif", "frames.csv", "frames.png"]
    assert (tmp_path / "run" / "frames.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "run" / "points.parquet").exists()


def test_maps_are_calibrated_stacks_with_one_page_per_frame(tmp_path):
    write_stream(tmp_path / "run")
    angle = read_image_file(tmp_path / "run" / "angle_map.tif")[0]
    assert angle.data.shape == (3, *SHAPE) and angle.metadata["axes"] == "TYX"
    assert angle.scale == (1.0, 0.25, 0.25) and angle.unit == "nm"
    assert np.isnan(angle.data[0, 0, 0]) and angle.data[0, 1, 1] == 0.0
    assert np.isnan(angle.data[1]).all()  # the frame without atoms
    assert (angle.data[2, 1:] == 20.0).all()
    classes = read_image_file(tmp_path / "run" / "class_map.tif")[0]
    assert classes.data.dtype == np.uint16
    assert [int(classes.data[t].max()) for t in range(3)] == [1, 0, 3]
    assert not (tmp_path / "run" / "other_map.tif").exists()  # not among map_names


def test_frames_csv_matches_hand_computed_circular_statistics(tmp_path):
    write_stream(tmp_path / "run")
    frames = pd.read_csv(tmp_path / "run" / "frames.csv")
    assert list(frames.columns) == [
        "frame",
        "atoms",
        "angle_mean",
        "angle_spread",
        "class_0_fraction",
        "class_1_fraction",
    ]
    assert frames["atoms"].tolist() == [3, 0, 2]
    # Frame 0 straddles the wrap at 180: its mean is near 1.33, not near 61.
    k = 2 * math.pi / 180.0
    c = (math.cos(178 * k) + math.cos(2 * k) + math.cos(4 * k)) / 3
    s = (math.sin(178 * k) + math.sin(2 * k) + math.sin(4 * k)) / 3
    assert frames["angle_mean"][0] == pytest.approx((math.atan2(s, c) / k) % 180, abs=1e-9)
    assert frames["angle_mean"][0] == pytest.approx(4 / 3, abs=0.01)
    assert frames["angle_spread"][0] == pytest.approx(math.sqrt(-2 * math.log(math.hypot(c, s))) / k, abs=1e-9)
    three = np.array([178.0, 2.0, 4.0])
    assert frames["angle_spread"][0] == pytest.approx(stats.circstd(three, high=180.0, low=0.0), abs=1e-9)
    assert frames["angle_mean"][2] == pytest.approx(95.0, abs=1e-9)
    assert frames[["class_0_fraction", "class_1_fraction"]].iloc[0].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert frames[["class_0_fraction", "class_1_fraction"]].iloc[2].tolist() == [0.0, 1.0]
    assert frames.iloc[1][["angle_mean", "angle_spread", "class_0_fraction"]].isna().all()


def test_circular_mean_just_below_the_period_and_cancelling_angles():
    mean, spread = circular_mean_spread([179.0, 178.0, 1.0], period=180.0)
    assert mean == pytest.approx(stats.circmean([179.0, 178.0, 1.0], high=180.0, low=0.0), abs=1e-9)
    assert 179.0 < mean < 180.0
    assert circular_mean_spread([5.0], 60.0) == (5.0, 0.0)
    assert math.isnan(circular_mean_spread([0.0, 180.0])[0]) and circular_mean_spread([0.0, 180.0])[1] == math.inf
    summary = frame_summary(pd.DataFrame({"y": [1.0]}), period=360.0, n_classes=0)
    assert summary["atoms"] == 1 and math.isnan(summary["angle_mean"]) and len(summary) == 3


@pytest.mark.parametrize("parquet, limit, written", [(True, 2_000_000, True), (None, 4, True), (None, 5, False)])
def test_parquet_holds_the_csv_table(tmp_path, monkeypatch, parquet, limit, written):
    monkeypatch.setattr(movie_outputs, "PARQUET_ROWS", limit)
    monkeypatch.setattr(movie_outputs, "_CHUNK_ROWS", 2)  # several chunks, several row groups
    _, files = write_stream(tmp_path / "run", parquet=parquet, several=True)
    assert ("points.parquet" in files) is written
    if not written:
        return
    pq = pd.read_parquet(tmp_path / "run" / "points.parquet")
    csv = pd.read_csv(tmp_path / "run" / "points.csv")
    assert list(pq.columns) == list(csv.columns) == ["file", "frame", "y", "x", "angle", "class", "z0", "y_nm", "x_nm"]
    pd.testing.assert_frame_equal(pq.drop(columns="file"), csv.drop(columns="file"), check_dtype=False)
    assert pq["file"].tolist() == ["movie.tif"] * 5
    assert pq["angle"].dtype == np.float32 and pq["class"].dtype == np.int64 and pq["frame"].dtype == np.int64


def test_several_files_name_their_maps_and_rows(tmp_path):
    sources = [Src("a.tif", 2), Src("b.dm3", 1, frame_shape=(5, 7), pixel_size=None, unit=None, is_stack=False)]
    with OutputDir(tmp_path / "run") as out:
        writer = MovieWriter(out, sources, several_files=True, period=360.0, n_classes=2)
        writer.add(Frame(0, 0, table([10.0], [0]), maps_for(0)))
        writer.add(Frame(0, 1, table([20.0, 30.0], [1, 0]), maps_for(1)))
        writer.add(Frame(1, 0, table([40.0], [1]), maps_for(4, (5, 7))))
        files = writer.close()
    run = tmp_path / "run"
    assert set(files) >= {"a_angle_map.tif", "a_class_map.tif", "b_angle_map.tif", "b_class_map.tif"}
    points = pd.read_csv(run / "points.csv")
    assert list(points.columns[:3]) == ["file", "frame", "y"]
    assert points["file"].tolist() == ["a.tif", "a.tif", "a.tif", "b.dm3"]
    frames = pd.read_csv(run / "frames.csv")
    assert frames[["file", "frame", "atoms"]].values.tolist() == [["a.tif", 0, 1], ["a.tif", 1, 2], ["b.dm3", 0, 1]]
    a = read_image_file(run / "a_angle_map.tif")[0]
    b = read_image_file(run / "b_angle_map.tif")[0]
    assert a.data.shape == (2, *SHAPE) and a.unit == "nm"
    assert b.data.shape == (5, 7) and b.data[1, 1] == 40.0 and b.unit is None


def test_a_map_seen_late_is_filled_for_earlier_frames_and_other_inputs(tmp_path):
    sources = [Src("a.tif", 2), Src("b.tif", 2)]
    with OutputDir(tmp_path / "run") as out:
        writer = MovieWriter(out, sources, several_files=True, period=360.0, n_classes=0, map_names=("angle_map",))
        writer.add(Frame(0, 0, table([], []), {}))
        writer.add(Frame(0, 1, table([5.0], [0]), maps_for(1)))
        writer.close()
    a = read_image_file(tmp_path / "run" / "a_angle_map.tif")[0].data
    b = read_image_file(tmp_path / "run" / "b_angle_map.tif")[0].data
    assert np.isnan(a[0]).all() and a[1, 2, 2] == 10.0 and np.isnan(b).all() and b.shape == (2, *SHAPE)
    assert list(pd.read_csv(tmp_path / "run" / "frames.csv").columns) == [
        "file",
        "frame",
        "atoms",
        "angle_mean",
        "angle_spread",
    ]


def test_a_failure_inside_the_output_dir_leaves_no_file(tmp_path):
    target = tmp_path / "run"
    with pytest.raises(RuntimeError, match="stopped"), OutputDir(target) as out:
        writer = MovieWriter(out, [Src("movie.tif", 3)], several_files=False, period=180.0, n_classes=2)
        writer.add(Frame(0, 0, *STREAM[0]))
        raise RuntimeError("stopped")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_frames_out_of_order_or_with_other_columns_are_refused(tmp_path):
    with OutputDir(tmp_path / "run") as out:
        writer = MovieWriter(out, [Src("movie.tif", 3)], several_files=False, period=180.0, n_classes=2)
        writer.add(Frame(0, 1, *STREAM[0]))
        with pytest.raises(ValueError, match="came after"):
            writer.add(Frame(0, 0, *STREAM[0]))
        with pytest.raises(ValueError, match="came after"):
            writer.add(Frame(0, 1, *STREAM[0]))
        with pytest.raises(ValueError, match="not in the inputs"):
            writer.add(Frame(0, 3, *STREAM[0]))
        with pytest.raises(ValueError, match="columns"):
            writer.add(Frame(0, 2, STREAM[0][0].drop(columns="z0"), {}))
        writer.abort()
    with pytest.raises(ValueError, match="One input"):
        MovieWriter(tmp_path, [Src("a", 1), Src("b", 1)], several_files=False, period=360.0, n_classes=0)


def _held(obj, seen=None):
    """Arrays and tables reachable from an object's state, and the total length of its containers."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return [], 0
    seen.add(id(obj))
    if isinstance(obj, (np.ndarray, pd.DataFrame, pd.Series)):
        return [obj], 0
    items = []
    if isinstance(obj, dict):
        items = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        items = list(obj)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("napari_rvae"):
        items = list(vars(obj).values())
    found, length = [], len(items) if isinstance(obj, (dict, list, tuple, set)) else 0
    for item in items:
        f, n = _held(item, seen)
        found += f
        length += n
    return found, length


def test_the_writer_keeps_no_frame_data_between_frames(tmp_path):
    """Memory flat in the number of frames: after each add the state holds no table or array, and its size stays."""
    with OutputDir(tmp_path / "run") as out:
        writer = MovieWriter(out, [Src("movie.tif", 6)], several_files=False, period=180.0, n_classes=2)
        sizes = []
        for t in range(6):
            tab, maps = STREAM[t % 3]
            writer.add(Frame(0, t, tab, maps))
            found, length = _held(writer)
            assert found == []
            sizes.append(length)
        writer.close()
    assert len(set(sizes[2:])) == 1  # the maps' files are laid out by frame 2; nothing grows after


def test_frames_figure_without_classes_has_one_panel():
    frames = pd.DataFrame(
        {"frame": [0, 1], "atoms": [1, 0], "angle_mean": [3.0, np.nan], "angle_spread": [1.0, np.nan]}
    )
    assert len(frames_figure(frames, period=60.0).axes) == 1
    frames["class_0_fraction"] = [1.0, np.nan]
    frames["file"] = ["a", "b"]
    fig = frames_figure(frames, period=60.0)
    fig.savefig(io.BytesIO(), format="png")
    assert len(fig.axes) == 2 and len(fig.axes[1].lines) == 2  # the class line and where input b starts
    names = fig.axes[0].child_axes[0].get_xticklabels()
    assert [t.get_text() for t in names] == ["a", "b"]


def test_parquet_keeps_text_that_looks_missing(tmp_path):
    csv = tmp_path / "t.csv"
    frame = pd.DataFrame({"name": ["NA", None, "b"], "v": np.array([1.5, np.nan, 2.0], np.float32)})
    frame.to_csv(csv, index=False)
    rows = movie_outputs.csv_to_parquet(csv, tmp_path / "t.parquet", {"name": object, "v": np.float32}, chunk_rows=2)
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert rows == 3 and back["name"].tolist()[0] == "NA" and back["name"].isna().tolist() == [False, True, False]
    assert back["v"].dtype == np.float32 and np.isnan(back["v"][1])


def test_a_map_of_another_shape_is_refused(tmp_path):
    with OutputDir(tmp_path / "run") as out:
        writer = MovieWriter(out, [Src("movie.tif", 3)], several_files=False, period=180.0, n_classes=2)
        with pytest.raises(ValueError, match=r"frame 0 is \(5, 5\)"):
            writer.add(Frame(0, 0, table([1.0], [0]), {"angle_map": np.zeros((5, 5), np.float32)}))
        writer.abort()


def test_frames_csv_gives_the_time_where_the_file_does(tmp_path):
    write_stream(tmp_path / "timed", interval=0.25)
    frames = pd.read_csv(tmp_path / "timed" / "frames.csv")
    assert list(frames.columns[:3]) == ["frame", "time_s", "atoms"]
    np.testing.assert_allclose(frames["time_s"], [0.0, 0.25, 0.5])
    fig = frames_figure(frames, period=180.0)
    assert fig.axes[-1].get_xlabel() == "time (s)"
    write_stream(tmp_path / "untimed")
    frames = pd.read_csv(tmp_path / "untimed" / "frames.csv")
    assert "time_s" not in frames and frames_figure(frames, period=180.0).axes[-1].get_xlabel() == "frame"
