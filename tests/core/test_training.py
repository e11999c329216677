import threading

import numpy as np
import pytest
import torch

from napari_rvae.core import (
    InputError,
    ModelConfig,
    TrainConfig,
    encode,
    load_model,
    result_columns,
    save_model,
    train,
    train_iter,
)
from napari_rvae.core.circstats import aligned_errors, circular_correlation

FAST = TrainConfig(epochs=30, batch_size=50, lr=3e-3, seed=0, device="cpu")


@pytest.fixture(scope="module")
def trained(glyph_stack):
    patches, angles = glyph_stack
    cfg = ModelConfig(kind="rvae", patch_size=16, latent_dim=2, hidden_dim=64, angle_prior=2.0)
    return train(patches, cfg, FAST)


def test_rvae_latent_angle_tracks_rotation(trained, glyph_stack):
    patches, angles = glyph_stack
    table = encode(trained.model, patches)
    rho = circular_correlation(table["angle"], angles)
    err, sign = aligned_errors(table["angle"], angles)
    assert rho > 0.8, rho  # chance is ~0
    assert sign == 1  # positive = counter-clockwise as displayed, like skimage.transform.rotate
    assert np.median(err) < 12


def test_progress_is_reported_and_loss_falls(glyph_stack):
    patches, _ = glyph_stack
    seen = []
    result = train(
        patches[:100],
        ModelConfig(patch_size=16, hidden_dim=32),
        TrainConfig(epochs=4, batch_size=50),
        callback=seen.append,
    )
    assert [p.epoch for p in seen if p.epoch_done] == [1, 2, 3, 4]
    assert result.epochs_run == 4 and len(result.history) == 4
    assert result.history[-1] < result.history[0]
    assert result.device == "cpu" and result.patches_per_second > 0


def test_same_seed_same_result(glyph_stack):
    patches, _ = glyph_stack
    cfg, tc = ModelConfig(patch_size=16, hidden_dim=32), TrainConfig(epochs=2, batch_size=50, seed=3)
    a, b = train(patches[:100], cfg, tc), train(patches[:100], cfg, tc)
    assert a.history == b.history
    c = train(patches[:100], cfg, TrainConfig(epochs=2, batch_size=50, seed=4))
    assert c.history != a.history


def test_stop_flag_keeps_partial_model(glyph_stack):
    patches, _ = glyph_stack
    stop = threading.Event()
    gen = train_iter(
        patches, ModelConfig(patch_size=16, hidden_dim=32), TrainConfig(epochs=50, batch_size=50), stop=stop
    )
    first = next(gen)
    stop.set()
    reports = [first]
    try:
        while True:
            reports.append(next(gen))
    except StopIteration as fin:
        result = fin.value
    assert result.stopped
    assert 0 < result.epochs_run < 50
    assert len(encode(result.model, patches[:10])) == 10


def test_fewer_patches_than_batch_still_trains(glyph_stack):
    patches, _ = glyph_stack
    cfg = ModelConfig(patch_size=16, hidden_dim=32)
    result = train(patches[:7], cfg, TrainConfig(epochs=3, batch_size=100))
    assert result.epochs_run == 3
    before = {k: v.clone() for k, v in result.model.state_dict().items()}
    # Encoding must never change the model.
    encode(result.model, patches[:7])
    after = result.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_encode_columns(trained, glyph_stack):
    patches, _ = glyph_stack
    table = encode(trained.model, patches[:20])
    assert list(table.columns) == result_columns(trained.model)
    assert list(table.columns[:5]) == ["angle", "dx", "dy", "z0", "z1"]
    assert table["angle"].between(0, 360).all()


def test_vae_has_no_pose_columns(glyph_stack):
    patches, _ = glyph_stack
    result = train(
        patches[:60], ModelConfig(kind="vae", patch_size=16, hidden_dim=32), TrainConfig(epochs=1, batch_size=30)
    )
    assert list(encode(result.model, patches[:5]).columns) == ["z0", "z1", "z0_sd", "z1_sd"]


def test_crvae_uses_labels(glyph_stack):
    patches, _ = glyph_stack
    labels = np.arange(100) % 2
    cfg = ModelConfig(kind="crvae", patch_size=16, hidden_dim=32, n_classes=2)
    result = train(patches[:100], cfg, TrainConfig(epochs=2, batch_size=50), labels=labels)
    table = encode(result.model, patches[:100], labels=labels)
    assert (table["class"].to_numpy() == labels).all()
    with pytest.raises(InputError, match="needs each patch's class"):
        encode(result.model, patches[:10])
    with pytest.raises(InputError, match="needs class labels"):
        train(patches[:10], cfg, FAST)


def test_symmetry_wraps_angles(glyph_stack):
    patches, _ = glyph_stack
    cfg = ModelConfig(patch_size=16, hidden_dim=32, symmetry=4)
    result = train(patches[:60], cfg, TrainConfig(epochs=1, batch_size=30))
    assert encode(result.model, patches[:60])["angle"].between(0, 90).all()


def test_model_file_round_trip(trained, glyph_stack, tmp_path):
    patches, _ = glyph_stack
    path = save_model(trained.model, tmp_path / "m.pt", extra={"note": "x"})
    model, extra = load_model(path)
    assert extra == {"note": "x"} and model.config == trained.model.config
    np.testing.assert_allclose(
        encode(model, patches[:30]).to_numpy(), encode(trained.model, patches[:30]).to_numpy(), atol=1e-5
    )


def test_bad_model_files_are_refused(tmp_path, trained):
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(InputError, match="not a readable"):
        load_model(junk)
    good = save_model(trained.model, tmp_path / "good.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(InputError):
        load_model(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(InputError, match="not a napari-rvae model"):
        load_model(foreign)


def test_loading_never_runs_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').write('pwned')",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": "napari-rvae-model", "x": Evil()}, fh)
    with pytest.raises(InputError):
        load_model(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(patch_size=4), "too small"),
        (dict(latent_dim=0), "at least 1"),
        (dict(kind="nope"), "Unknown model"),
        (dict(kind="jrvae"), "at least 2 classes"),
    ],
)
def test_bad_model_config(kwargs, match):
    with pytest.raises(InputError, match=match):
        ModelConfig(**kwargs)


def test_bad_training_input(glyph_stack):
    patches, _ = glyph_stack
    cfg = ModelConfig(patch_size=16, hidden_dim=32)
    with pytest.raises(InputError, match="model expects 16"):
        train(np.zeros((5, 20, 20), np.float32), cfg, FAST)
    bad = patches[:5].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        train(bad, cfg, FAST)
    with pytest.raises(InputError, match="device"):
        train(patches[:5], cfg, TrainConfig(device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            train(patches[:5], cfg, TrainConfig(device="cuda"))


def test_threads_setting_is_put_back():
    """TrainConfig.threads holds for the run only (torch's thread count is process-wide)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = np.random.default_rng(0).random((20, 16, 16)).astype(np.float32)
        seen = []
        train(
            x,
            ModelConfig(patch_size=16, hidden_dim=16),
            TrainConfig(epochs=1, threads=1),
            callback=lambda p: seen.append(torch.get_num_threads()),
        )
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
