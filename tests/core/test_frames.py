"""One model over a stack's frames in this process: the same patches, encodings and maps as frame by frame."""

import numpy as np
import pandas as pd
import pytest

from napari_rvae.core.analysis import analyse_iter, apply_model
from napari_rvae.core.config import ModelConfig, TrainConfig
from napari_rvae.core.detect import detect_atoms
from napari_rvae.core.errors import InputError
from napari_rvae.core.exports import result_maps
from napari_rvae.core.frames import (
    analyse_frames_iter,
    apply_model_frames,
    cut_frames,
    frame_indices,
    frame_spacing,
    paint_frames,
    split_by_frame,
)
from napari_rvae.core.maps import typical_spacing
from napari_rvae.core.patches import extract_patches
from napari_rvae.core.synthetic import make_lattice
from napari_rvae.core.train import drive


@pytest.fixture(scope="module")
def stack():
    """Three 96 px frames of different lattices, and (t, y, x) atoms listed out of frame order."""
    frames = [make_lattice((96, 96), seed=s).image for s in range(3)]
    pts = [
        np.column_stack([np.full(len(a), t), a])
        for t, a in enumerate(detect_atoms(f)[["y", "x"]].to_numpy() for f in frames)
    ]
    points = np.concatenate([pts[2], pts[0], pts[1]])
    return np.stack(frames), points


def test_split_and_frame_indices():
    groups = split_by_frame([3, 1, 3, 1, 0])
    assert [t for t, _ in groups] == [0, 1, 3]
    assert [idx.tolist() for _, idx in groups] == [[4], [1, 3], [0, 2]]
    assert frame_indices([[0.4, 1, 1], [2.0, 1, 1]], 3).tolist() == [0, 2]
    with pytest.raises(InputError, match="outside the stack's frames 0 to 2"):
        frame_indices([[3.0, 1, 1]], 3)


def test_cut_frames_is_extract_patches_per_frame(stack):
    movie, points = stack
    reads = []
    fp = cut_frames(lambda t: reads.append(t) or movie[t], points, 16, n_frames=3)
    assert reads == [0, 1, 2]  # one plane at a time, each once
    assert np.all(np.diff(fp.kept) > 0)
    assert len(fp.kept) + len(fp.dropped) == len(points)
    for t in range(3):
        rows = np.flatnonzero(points[:, 0] == t)
        ps = extract_patches(movie[t], points[rows, 1:], 16)
        mine = fp.frames == t
        np.testing.assert_array_equal(fp.kept[mine], rows[ps.kept])
        np.testing.assert_array_equal(fp.patches[mine], ps.patches)
        np.testing.assert_array_equal(fp.centers[mine], ps.centers)


def test_one_model_encodes_each_frame_as_the_2d_path(stack):
    movie, points = stack
    model_config = ModelConfig(patch_size=16, hidden_dim=16, symmetry=1)
    analysis = drive(
        analyse_frames_iter(lambda t: movie[t], points, model_config, TrainConfig(epochs=2, batch_size=64), n_frames=3)
    )
    table = analysis.table
    assert table.columns[0] == "frame" and len(table) == len(analysis.kept)
    assert analysis.training.n_patches == len(analysis.kept)
    again = apply_model_frames(lambda t: movie[t], points, analysis.model, n_frames=3)
    for t in range(3):
        rows = np.flatnonzero(points[:, 0] == t)
        single = apply_model(movie[t], points[rows, 1:], analysis.model)
        mine = (table["frame"] == t).to_numpy()
        np.testing.assert_allclose(table.loc[mine, "angle"], single.table["angle"], atol=1e-4)
        np.testing.assert_allclose(again.table.loc[mine, "z0"], single.table["z0"], atol=1e-5)
        # The lattice check sees this frame's neighbours only.
        np.testing.assert_allclose(table.loc[mine, "psi_angle"], single.table["psi_angle"], atol=1e-6)
    # Training goes on from the model, over the frames again.
    more = drive(
        analyse_frames_iter(
            lambda t: movie[t], points, model_config, TrainConfig(epochs=1, batch_size=64), model=analysis.model
        )
    )
    assert more.training.epochs_before == 2 and more.training.epochs_run == 1
    # The same 2-D path when there is one frame.
    one = points[points[:, 0] == 0]
    a2 = drive(analyse_iter(movie[0], one[:, 1:], model_config, TrainConfig(epochs=1, batch_size=64, seed=1)))
    a3 = drive(analyse_frames_iter(lambda t: movie[t], one, model_config, TrainConfig(epochs=1, batch_size=64, seed=1)))
    np.testing.assert_allclose(a3.table.drop(columns="frame").to_numpy(float), a2.table.to_numpy(float), atol=1e-5)


def test_paint_frames_stacks_the_2d_maps(stack):
    movie, points = stack
    frames = np.array([2, 2, 0, 0, 0])
    centers = np.array([[20.0, 20], [20, 40], [30, 30], [30, 50], [50, 30]])
    table = pd.DataFrame({"frame": frames, "angle": [10.0, 20, 30, 40, 50], "class": [0, 1, 1, 0, 1]})
    radius = frame_spacing(centers, frames)
    assert radius == pytest.approx(typical_spacing(centers[2:]))
    maps = paint_frames((3, 64, 64), centers, table, period=180.0)
    assert maps["angle_map"].shape == (3, 64, 64) and maps["class_map"].shape == (3, 64, 64)
    assert np.isnan(maps["angle_map"][1]).all() and (maps["class_map"][1] == 0).all()
    for t in (0, 2):
        idx = np.flatnonzero(frames == t)
        ref = result_maps((64, 64), centers[idx], table.iloc[idx].reset_index(drop=True), period=180.0, radius=radius)
        np.testing.assert_array_equal(maps["angle_map"][t], ref["angle_map"])
        np.testing.assert_array_equal(maps["class_map"][t], ref["class_map"])
