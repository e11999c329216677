"""Data-parallel training (core/ddp.py): two gloo processes train the one-process model.

One spawn of two processes runs every case (starting processes is the slow part); the
test process trains the same cases alone and compares.
"""

import itertools
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from napari_rvae.core import ModelConfig, TrainConfig, ddp, train
from napari_rvae.core.models import RVAE

from ..conftest import rotated_glyphs

# 82 patches in batches of 27: 27, 27, 27 and a last batch of 1. The processes take 13 and 14
# rows of the full batches (uneven), and 0 and 1 of the last (one process has nothing of it).
N_PATCHES, BATCH = 82, 27
# float32: with bfloat16 decoder layers ("auto" on some CPUs) the sums over shares and over the
# whole batch differ in bfloat16's last bits, and so the runs.
SETTINGS = TrainConfig(epochs=2, batch_size=BATCH, seed=5, device="cpu", threads=1, precision="float32")


def _cases():
    """(model config, train config, labels) per case: every term of the objective in some case."""
    labels = np.full(N_PATCHES, -1)
    labels[:6], labels[6:12] = 0, 1  # ssrvae: labelled and unlabelled patches in most batches
    small = {"patch_size": 16, "hidden_dim": 16}
    plain = {"alignment": "none", "encoder_rotations": 1, **small}  # the rvae case fits the alignment
    return {
        # Coarse alignment (fitted on rank 0, its reference shared) and the plain ELBO.
        "rvae": (ModelConfig(kind="rvae", **small), SETTINGS, None),
        # No class targets: the class-balance term of the whole batch, all-reduced.
        "jrvae": (
            ModelConfig(kind="jrvae", n_classes=2, **plain),
            TrainConfig(**{**SETTINGS.to_dict(), "graph_targets": False}),
            None,
        ),
        # The class as the decoder's input, known for every patch.
        "crvae": (ModelConfig(kind="crvae", n_classes=2, **plain), SETTINGS, np.arange(N_PATCHES) % 2),
        # Labelled and unlabelled branches, similarity-graph targets and the classifier term.
        "ssrvae": (ModelConfig(kind="ssrvae", n_classes=2, **plain), SETTINGS, labels),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _bypassed_step(ctx, patches) -> float:
    """One step whose loss skips DDP's forward: the largest parameter difference between the processes."""
    cfg = ModelConfig(kind="rvae", patch_size=16, hidden_dim=16, alignment="none")
    torch.manual_seed(0)
    model = RVAE(cfg)
    x = model.normalize(torch.as_tensor(patches))
    loss_fn = ddp.DistributedLoss(model, x, None, None, torch.Generator(), ctx)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss, _ = loss_fn.ddp.module(torch.arange(20), 1.0)  # the wrapped module, not DDP itself
    loss.backward()
    optim.step()
    params = [torch.empty_like(_flat(model)) for _ in range(ctx.world_size)]
    dist.all_gather(params, _flat(model))
    return float((params[0] - params[1]).abs().max())


PLAIN_RVAE = ModelConfig(kind="rvae", patch_size=16, hidden_dim=16, alignment="none", encoder_rotations=1)


def _resumed(patches):
    """One epoch, then one more from the trained model (Adam's state and the streams go on): (history, parameters)."""
    one = TrainConfig(**{**SETTINGS.to_dict(), "epochs": 1})
    first = train(patches, PLAIN_RVAE, one)
    more = train(patches, PLAIN_RVAE, one, model=first.model)
    return more.history, _flat(more.model)


def _stopped_on_rank_1(ctx, patches):
    """A run whose stop flag is raised in rank 1 only, before its third step: (epochs run, parameters)."""
    checks = []

    def stop():
        checks.append(1)
        return ctx.rank == 1 and len(checks) == 3

    result = train(patches, PLAIN_RVAE, SETTINGS, stop=stop)
    return result.stopped, result.epochs_run, _flat(result.model)


def _worker(rank: int, world: int, port: int, out: str, patches) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    ctx = ddp.init_from_env()
    try:
        found = {}
        for name, (model_config, train_config, labels) in _cases().items():
            result = train(patches, model_config, train_config, labels=labels)  # the group joined above
            assert result.processes == world
            found[name] = (result.history, {k: v.clone() for k, v in result.model.state_dict().items()})
        found["resumed"] = _resumed(patches)
        found["stopped"] = _stopped_on_rank_1(ctx, patches)
        found["bypassed"] = _bypassed_step(ctx, patches)
        found["shared"] = [ddp.broadcast_array(a if ctx.is_main else None, ctx) for a in (patches, None, np.arange(3))]
        torch.save(found, os.path.join(out, f"rank{rank}.pt"))
    finally:
        ddp.shutdown()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both processes' results and the one-process results, per case."""
    patches = rotated_glyphs(N_PATCHES)[0]
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out), patches), nprocs=2, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    alone = {}
    for name, (model_config, train_config, labels) in _cases().items():
        result = train(patches, model_config, train_config, labels=labels)
        alone[name] = (result.history, result.model.state_dict())
    return ranks, alone


@pytest.mark.parametrize("kind", ["rvae", "crvae", "jrvae", "ssrvae"])
def test_two_processes_train_the_one_process_model(runs, kind):
    ranks, alone = runs
    history, state = alone[kind]
    assert len(history) == SETTINGS.epochs
    for found_history, found_state in (r[kind] for r in ranks):
        np.testing.assert_allclose(found_history, history, rtol=1e-5, atol=0)
        assert found_state.keys() == state.keys()
        for key, value in state.items():  # parameters, normalisation, alignment reference, angle_sd's scale
            torch.testing.assert_close(found_state[key], value, rtol=0, atol=1e-5, equal_nan=True, msg=key)


@pytest.mark.parametrize("kind", ["rvae", "crvae", "jrvae", "ssrvae"])
def test_both_processes_hold_the_same_model(runs, kind):
    (history0, state0), (history1, state1) = (r[kind] for r in runs[0])
    assert history0 == history1
    for key, value in state0.items():
        torch.testing.assert_close(state1[key], value, rtol=0, atol=0, equal_nan=True, msg=key)


def test_training_goes_on_across_processes_as_in_one(runs):
    whole = train(rotated_glyphs(N_PATCHES)[0], PLAIN_RVAE, SETTINGS)
    for history, params in (r["resumed"] for r in runs[0]):
        np.testing.assert_allclose(history, whole.history, rtol=1e-5, atol=0)
        torch.testing.assert_close(params, _flat(whole.model), rtol=0, atol=1e-5)


def test_a_stop_in_one_process_stops_all_after_the_same_step(runs):
    (stopped0, epochs0, params0), (stopped1, epochs1, params1) = (r["stopped"] for r in runs[0])
    assert stopped0 and stopped1
    assert epochs0 == epochs1 == 2 * BATCH / N_PATCHES  # two steps of the first epoch
    assert torch.equal(params0, params1)


def test_a_loss_outside_ddps_forward_trains_a_model_per_process(runs):
    # The gradients of a loss DDP's forward did not compute are not all-reduced.
    assert runs[0][0]["bypassed"] > 1e-4


def test_rank_0s_arrays_reach_every_process(runs):
    patches = rotated_glyphs(N_PATCHES)[0]
    for found in runs[0]:
        shared, none, small = found["shared"]
        assert none is None and small.tolist() == [0, 1, 2] and small.dtype == np.arange(3).dtype
        assert shared.dtype == patches.dtype and np.array_equal(shared, patches)


def test_every_row_of_a_batch_goes_to_exactly_one_process():
    for n in (0, 1, 2, 27, 100):
        for world in (1, 2, 3, 8):
            shares = [ddp.DistContext(rank, world).rows(n) for rank in range(world)]
            sizes = [s.stop - s.start for s in shares]
            assert shares[0].start == 0 and shares[-1].stop == n and max(sizes) - min(sizes) <= 1
            assert all(a.stop == b.start for a, b in itertools.pairwise(shares))


def test_one_process_joins_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ddp.init_from_env() is None and ddp.current() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert ddp.init_from_env() is None
