"""The movie engine agrees with today's 2-D path, frame by frame and chunk by chunk.

One LocalCluster of two worker processes serves the whole module (starting one
takes seconds); the same task functions also run in this process (client=None).
"""

import numpy as np
import pytest

from napari_rvae.core.analysis import apply_model
from napari_rvae.core.config import ModelConfig, TrainConfig
from napari_rvae.core.detect import detect_atoms
from napari_rvae.core.movie import cut_patches, detect_frames, encode_frames, frame_groups
from napari_rvae.core.patches import extract_patches
from napari_rvae.core.stack import scan_set_from_array
from napari_rvae.core.train import train

from .lattice_util import render

PATCH = 16


def _lattice_frame(shape, offset, seed):
    """Gaussian atoms on a square lattice (spacing 8 px) with a weaker neighbour, so patches have an orientation."""
    ys = np.arange(offset[0], shape[0] - 2, 8.0)
    xs = np.arange(offset[1], shape[1] - 2, 8.0)
    pts = np.array([(y, x) for y in ys for x in xs])
    side = pts + np.array([0.0, 2.5])
    img = render(shape, np.vstack([pts, side]), 1.3, amplitude=np.r_[np.ones(len(pts)), 0.4 * np.ones(len(side))])
    img += np.random.default_rng(seed).normal(0, 0.01, shape).astype(np.float32)
    return img.astype(np.float32), pts


def _scans(frames):
    return scan_set_from_array(np.stack(frames).astype(np.float32), name="movie.tif", layout="movie")


@pytest.fixture(scope="module")
def client():
    from napari_rvae.core.cluster import compute_client

    with compute_client(workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def movie():
    """Three different frames (shifted lattices) of 96 x 96 px."""
    return [_lattice_frame((96, 96), (4.0 + 1.3 * t, 5.0 + 0.7 * t), seed=t)[0] for t in range(3)]


@pytest.fixture(scope="module")
def model(movie):
    """A small rVAE trained briefly on the first frame (any trained model will do: both paths share it)."""
    pts = detect_atoms(movie[0])[["y", "x"]].to_numpy()
    patches = extract_patches(movie[0], pts, PATCH).patches
    cfg = ModelConfig(patch_size=PATCH, hidden_dim=32, latent_dim=2, symmetry=1, angle_prior=2.0, alignment="none")
    return train(patches, cfg, TrainConfig(epochs=1, batch_size=64, seed=0)).model


def _encoded_columns(table):
    return [c for c in table.columns if c not in ("y", "x", "strength") and table[c].dtype.kind == "f"]


def test_stack_matches_separate_2d_runs(client, movie, model):
    """Equivalence 1: frame by frame the same atoms, patches and encodings as T runs of today's 2-D path."""
    scans = _scans(movie)
    atoms = detect_frames(scans, {}, client=client)
    groups = frame_groups(atoms)
    patches, kept = cut_patches(scans, atoms, np.arange(len(atoms)), PATCH, client=client)
    results = list(encode_frames(scans, atoms, model, client=client))
    assert [(r.source, r.frame) for r in results] == [(0, 0), (0, 1), (0, 2)]
    for t, frame in enumerate(movie):
        alone = detect_atoms(frame)
        mine = atoms.iloc[groups[(0, t)]]
        np.testing.assert_allclose(mine[["y", "x"]].to_numpy(), alone[["y", "x"]].to_numpy(), rtol=0, atol=1e-6)
        ps = extract_patches(frame, alone[["y", "x"]].to_numpy(), PATCH)
        in_frame = np.isin(kept, groups[(0, t)])
        np.testing.assert_array_equal(patches[in_frame], ps.patches)
        today = apply_model(frame, alone[["y", "x"]].to_numpy(), model)
        table = results[t].table
        assert len(table) == len(today.table) and len(table) > 50
        np.testing.assert_array_equal(results[t].dropped, today.dropped)
        for col in _encoded_columns(today.table):
            np.testing.assert_allclose(
                table[col].to_numpy(), today.table[col].to_numpy(), rtol=0, atol=1e-5, err_msg=col
            )
        assert set(results[t].maps) >= {"angle_map", "psi_map"}
        assert results[t].maps["angle_map"].shape == frame.shape


def _border_lattice():
    """A 160 px frame cut in 64 px tiles: atoms centred exactly on tile borders, and flat-topped (tied) maxima."""
    shape = (160, 160)
    pts = np.array([(y, x) for y in np.arange(8.0, 156, 8.0) for x in np.arange(8.0, 156, 8.0)])
    img = render(shape, pts, 1.4, amplitude=1.0, background=0.1)
    # Saturation flattens every atom's top to a plateau of equal pixels: tied maxima everywhere,
    # including across the borders at 64 and 128 px, where atoms sit exactly.
    img = np.minimum(img, np.float32(0.9) * img.max()).astype(np.float32)
    img += np.random.default_rng(1).normal(0, 0.002, shape).astype(np.float32) * (img < 0.5)
    return img


def test_chunked_on_cluster_matches_in_memory(client, model):
    """Equivalence 2: tiles on two workers vs the whole frame here: same atoms once each, same patches."""
    frames = [_border_lattice(), np.roll(_border_lattice(), (3, 5), axis=(0, 1))]
    scans = _scans(frames)
    whole = detect_frames(scans, {}, client=None, tile=None)
    tiled = detect_frames(scans, {}, client=client, tile=64)
    assert len(whole) > 2 * 300
    key = ["source", "frame", "y", "x"]
    assert not tiled.duplicated(key).any()
    np.testing.assert_array_equal(tiled[["source", "frame"]].to_numpy(), whole[["source", "frame"]].to_numpy())
    np.testing.assert_allclose(tiled[["y", "x"]].to_numpy(), whole[["y", "x"]].to_numpy(), rtol=0, atol=1e-9)
    yx = whole[["y", "x"]].to_numpy()
    on_border = (np.abs(yx[:, :, None] - np.array([64.0, 128.0])) < 0.5).any(axis=(1, 2))
    assert on_border.sum() >= 10  # the test really has atoms on the borders
    rows = np.arange(len(whole))
    p_here, k_here = cut_patches(scans, whole, rows, PATCH)
    p_there, k_there = cut_patches(scans, tiled, rows, PATCH, client=client)
    np.testing.assert_array_equal(k_here, k_there)
    np.testing.assert_array_equal(p_here, p_there)
    here = list(encode_frames(scans, whole, model))
    there = list(encode_frames(scans, tiled, model, client=client))
    for a, b in zip(here, there):
        for col in _encoded_columns(a.table):
            np.testing.assert_allclose(b.table[col].to_numpy(), a.table[col].to_numpy(), rtol=0, atol=1e-6, err_msg=col)
        for name in a.maps:
            np.testing.assert_array_equal(np.isnan(a.maps[name]), np.isnan(b.maps[name]))


def test_detection_stops_between_frames(movie):
    """``stop`` ends detection after the frame in hand; the frames before are kept."""
    seen = []

    def on_frame(done, total):
        seen.append((done, total))

    class Stop:
        def is_set(self):
            return len(seen) >= 1

    atoms = detect_frames(_scans(movie), {}, on_frame=on_frame, stop=Stop())
    assert seen == [(1, 3)]
    assert set(atoms["frame"]) <= {0, 1}


def test_training_sample_cuts_only_the_sampled_patches(client, movie):
    """More patches than the budget: a stratified sample across the frames, cut as the whole frames cut them."""
    pytest.importorskip("napari_rvae.core.budget")
    from napari_rvae.core.movie import sample_patches

    scans = _scans(movie)
    atoms = detect_frames(scans, {})
    patches, rows, rule = sample_patches(scans, atoms, 60, PATCH, client=client, seed=3)
    assert len(patches) == len(rows) == 60 and "stratified" in rule
    assert (np.diff(rows) > 0).all()
    assert set(atoms["frame"].to_numpy()[rows]) == {0, 1, 2}  # every frame is represented
    expected, kept = cut_patches(scans, atoms, rows, PATCH)
    np.testing.assert_array_equal(kept, rows)
    np.testing.assert_array_equal(patches, expected)
    every, _, rule = sample_patches(scans, atoms, 10_000, PATCH)
    assert rule == "every patch" and len(every) == len(cut_patches(scans, atoms, np.arange(len(atoms)), PATCH)[0])


def test_a_lost_task_is_one_sentence_not_a_traceback(client):
    """A frame whose task the cluster lost (a worker killed over its memory limit) stops the job with one sentence."""
    import time

    from napari_rvae.core.errors import InputError
    from napari_rvae.core.movie import _results

    future = client.submit(time.sleep, 30, pure=False)
    future.cancel()
    with pytest.raises(InputError, match="A dask worker stopped while it worked on input 0, frame 3"):
        _results([future], (0, 3))
