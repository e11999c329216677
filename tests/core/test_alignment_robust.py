"""The alignment cannot take a run down: eigen-solver fallbacks, degenerate data, a failed alignment."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from napari_rvae.core import eigen
from napari_rvae.core.align import stage
from napari_rvae.core.config import ModelConfig, TrainConfig
from napari_rvae.core.pipeline import run_train
from napari_rvae.core.synthetic import make_rotated_shapes


def _near_degenerate(n=300, seed=0):
    """A normalised Hermitian matrix whose two leading eigenvalues nearly coincide."""
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))[0]
    values = np.concatenate([[1.0, 1.0 - 1e-9], rng.uniform(-0.9, 0.9, n - 2)])
    return (q * values) @ q.conj().T, q[:, :2]


@pytest.mark.parametrize("route", ["dense", "subspace"])
def test_leading_eigenvectors_fall_back_when_arpack_gives_up(monkeypatch, route):
    m, top = _near_degenerate()
    monkeypatch.setattr(eigen, "ARPACK_MAXITER", 1)  # ARPACK cannot converge in one restart
    if route == "subspace":
        monkeypatch.setattr(eigen, "DENSE_LIMIT", 0)
    vec = eigen.leading_eigenvectors(sp.csr_matrix(m))[:, 0]
    # Any vector of the (nearly degenerate) leading eigenspace will do.
    in_space = np.linalg.norm(top.conj().T @ vec) / np.linalg.norm(vec)
    assert np.isfinite(vec).all() and in_space > 0.99


def test_real_symmetric_fallback_gives_k_vectors(monkeypatch):
    monkeypatch.setattr(eigen, "ARPACK_MAXITER", 1)
    monkeypatch.setattr(eigen, "DENSE_LIMIT", 0)
    block = sp.block_diag([np.full((50, 50), 1 / 50)] * 3).tocsr()  # three clusters: eigenvalue 1, thrice
    vecs = eigen.leading_eigenvectors(block, 3)
    assert vecs.shape == (150, 3) and np.isfinite(vecs).all()
    # each vector is constant within each cluster (the leading eigenspace)
    for v in vecs.T:
        assert np.allclose(v.reshape(3, 50).std(1), 0, atol=1e-6)


def _degenerate_sets():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16] - 7.5
    blob = np.exp(-(yy**2 + xx**2) / 18).astype(np.float32)
    shapes, _ = make_rotated_shapes(40, 16, seed=1)
    return {
        "identical": np.repeat(shapes[:1], 60, 0),
        "noise": rng.random((60, 16, 16), dtype=np.float32),
        "symmetric blob": np.repeat(blob[None], 60, 0) + 1e-3 * rng.random((60, 16, 16), dtype=np.float32),
        "constant": np.ones((60, 16, 16), np.float32),
        "one patch": shapes[:1],
        "two patches": shapes[:2],
        "three patches": shapes[:3],
        "duplicated": np.concatenate([shapes[:10]] * 6),
    }


@pytest.mark.parametrize("name", list(_degenerate_sets()))
def test_degenerate_data_give_finite_angles_and_a_complete_folder(name, tmp_path):
    x = _degenerate_sets()[name]
    np.save(tmp_path / "x.npy", x)
    report = run_train(
        tmp_path / "x.npy",
        tmp_path / "run",
        model_config=ModelConfig(patch_size=16, hidden_dim=16),
        train_config=TrainConfig(epochs=1, batch_size=20, device="cpu"),
    )
    table = pd.read_csv(tmp_path / "run" / "points.csv")
    assert len(table) == len(x)
    assert np.isfinite(table.to_numpy(dtype=float)).all(), table.describe()
    assert report["alignment"] is not None  # measured (or failed and said so), never silently absent
    assert sorted(report["files"]) == sorted(p.name for p in (tmp_path / "run").iterdir())


def test_failed_alignment_continues_with_the_rvae_alone_and_says_so(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise np.linalg.LinAlgError("eigenvalues did not converge")

    monkeypatch.setattr(stage, "build_reference", broken)
    x, _ = make_rotated_shapes(80, 16, seed=0)
    np.save(tmp_path / "x.npy", x)
    said = []
    report = run_train(
        tmp_path / "x.npy",
        tmp_path / "run",
        model_config=ModelConfig(patch_size=16, hidden_dim=16),
        train_config=TrainConfig(epochs=1, batch_size=40, device="cpu"),
        say=said.append,
    )
    assert report["alignment"]["status"] == "failed" and "LinAlgError" in report["alignment"]["error"]
    assert report["model_config"]["alignment"] == "none"
    assert any("alignment failed" in s for s in said)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["alignment"]["status"] == "failed"
    assert {"model.pt", "points.csv", "report.json"} <= {p.name for p in (tmp_path / "run").iterdir()}


def test_one_shape_over_the_full_circle_with_the_cli_defaults(tmp_path):
    """Issue #19's crash case: 2,000 patches of one glyph at every angle."""
    x, true = make_rotated_shapes(2000, 28, seed=0)
    np.save(tmp_path / "glyph.npy", x)
    report = run_train(
        tmp_path / "glyph.npy",
        tmp_path / "run",
        model_config=ModelConfig(patch_size=28),
        train_config=TrainConfig(epochs=1, device="cpu"),
    )
    assert report["alignment"]["rotation_range"] == "full"
    est = pd.read_csv(tmp_path / "run" / "points.csv")["angle"].to_numpy()
    err = np.angle(np.exp(1j * np.deg2rad(est - true)))
    err = np.rad2deg(np.abs(np.angle(np.exp(1j * (err - np.angle(np.exp(1j * err).mean()))))))
    assert err.mean() <= 5.0, err.mean()
