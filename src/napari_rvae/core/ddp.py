"""Data-parallel training over several processes with torch.distributed (torchrun).

``torchrun --nproc_per_node=N napari-rvae train ...`` starts N copies of the
program; :func:`init_from_env` joins them into one process group (gloo for
CPU tensors, NCCL with one GPU per process for CUDA ones). Training then
runs the same loop in every process (core/train.py) on one model wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`:

* every process holds the whole patch stack and draws the same shuffled
  order from the same seeded generator; each takes its contiguous share of
  every global batch (:meth:`DistContext.rows`), so the global batch is the
  one-process batch;
* the loss of the process's share is computed *inside* the DDP module's
  forward (:class:`DistributedLoss`): DDP only all-reduces the gradients of
  what its forward computed;
* the ELBO is a sum over patches while DDP averages gradients over the N
  processes: each process's share is scaled by N, so the average is the
  one-process gradient, whatever the sizes of the shares (an uneven last
  batch included). Terms of the whole batch (jrvae's class balance) are
  computed from all-reduced sums with autograd (``torch.distributed.nn``);
  their backward already sums over processes, so they are not scaled;
* the sampled noise is the one-process noise: :class:`GlobalNoise` draws
  each reparameterised site's standard-normal noise for the whole global
  batch from the (identically seeded) global generator and keeps this
  process's rows, exactly as ``Normal.rsample`` would have drawn it in one
  process. A process with no rows in a branch still draws (on one dummy row
  weighted 0), so every generator stays in step and every process's graph
  touches the same parameters.

With one process nothing here is used: the one-process loop is unchanged.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.distributions import Independent, Normal
from torch.nn.parallel import DistributedDataParallel

from .models import RVAE
from .objective import CLASSIFIER_WEIGHT, Objective

# torchrun's variables (https://pytorch.org/docs/stable/elastic/run.html#environment-variables).
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group."""

    rank: int
    world_size: int
    local_rank: int = 0
    # A second group for the collectives inside the loss's autograd graph: they never
    # interleave with DDP's own gradient all-reduces on the default group.
    loss_group: object = None

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and reports progress (rank 0)."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This process's contiguous share of ``n`` rows (sizes differ by at most one)."""
        return slice(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    def device(self, device: torch.device) -> torch.device:
        """The device this process trains on: its own GPU (``cuda:LOCAL_RANK``) for CUDA."""
        if device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device


_CURRENT: DistContext | None = None


def current() -> DistContext | None:
    """The context :func:`init_from_env` set up, or None in a single process."""
    return _CURRENT


def init_from_env(backend: str | None = None) -> DistContext | None:
    """Join torchrun's process group when started by torchrun with more than one process.

    Parameters
    ----------
    backend : str, optional
        torch.distributed's backend; default gloo for CPU tensors and, where
        CUDA exists, NCCL for CUDA tensors (``"cpu:gloo,cuda:nccl"``).

    Returns
    -------
    DistContext or None
        None when ``WORLD_SIZE`` is unset or 1: one process, nothing changes.
        Otherwise the context, also returned by :func:`current`. With CUDA the
        process's current device is ``cuda:LOCAL_RANK``.
    """
    global _CURRENT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if _CURRENT is not None:
        return _CURRENT
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)
    if backend is None:
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    _CURRENT = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.new_group())
    return _CURRENT


def shutdown() -> None:
    """Leave the process group (at the end of the job, in every process)."""
    global _CURRENT
    if dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = None


def any_process(flag: bool, ctx: DistContext | None) -> bool:
    """Whether ``flag`` holds in any process: stop, NaN and early-stop decisions are taken together."""
    if ctx is None:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's ``obj`` in every process (picklable; tensors on the CPU)."""
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_array(array, ctx: DistContext) -> np.ndarray | None:
    """Rank 0's numpy array (or None) in every process, sent as one tensor (no pickling of the data).

    For what rank 0 alone reads or computes before training (the patch stack, its labels).
    """
    meta = None if not ctx.is_main or array is None else (np.asarray(array).shape, np.asarray(array).dtype.str)
    meta = broadcast_object(meta, ctx)
    if meta is None:
        return None
    shape, dtype = meta
    if ctx.is_main:
        data = torch.from_numpy(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    else:
        data = torch.empty(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize, dtype=torch.uint8)
    dist.broadcast(data, src=0)
    return data.numpy().view(np.dtype(dtype)).reshape(shape)


def share_training(ctx: DistContext, patches, labels, model_config, train_config) -> None:
    """Rank 0: send the other processes exactly what it trains on (the budget's sample, the
    resolved settings), so that the sample, the class window and the epochs can't differ."""
    broadcast_array(patches, ctx)
    broadcast_array(labels, ctx)
    broadcast_object((model_config, train_config), ctx)


def train_beside_main(ctx: DistContext, *, model=None, stop=None) -> None:
    """A torchrun process other than rank 0: rank 0's training data, the same training, nothing written.

    Rank 0 alone reads the inputs, detects, encodes and writes (core/pipeline.py);
    ``model``: the model file a resumed run goes on from (every process reads it).
    """
    from .train import drive, train_iter  # train imports this module

    patches, labels = broadcast_array(None, ctx), broadcast_array(None, ctx)
    model_config, train_config = broadcast_object(None, ctx)
    drive(train_iter(patches, model_config, train_config, labels=labels, stop=stop, model=model))


def rng_state() -> dict:
    """The global torch generators' states (what the sampled noise is drawn from)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Put back :func:`rng_state`'s states."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class GlobalNoise(Messenger):
    """Draw the noise of reparameterised Normal sites for the whole global batch; keep rows ``offset:``.

    ``Normal.rsample`` draws ``eps`` of the batch's shape from the global
    generator and returns ``loc + eps * scale``. Drawing ``eps`` for all
    ``total`` rows (as one process would) and keeping this process's rows
    gives every patch the noise it gets in one process. Observed, replayed
    and enumerated sites are left alone (they draw nothing), and so are sites
    of other distributions (the guides sample only Normal latents).
    """

    def __init__(self, total: int, offset: int):
        super().__init__()
        self.total, self.offset = int(total), int(offset)

    def _pyro_sample(self, msg) -> None:
        if msg["is_observed"] or msg["value"] is not None or (msg.get("infer") or {}).get("enumerate"):
            return
        fn = msg["fn"]
        base = fn.base_dist if isinstance(fn, Independent) else fn
        if not isinstance(base, Normal):  # a plate's subsample site, for one
            return
        shape = base.batch_shape
        eps = torch.empty((self.total, *shape[1:]), dtype=base.loc.dtype, device=base.loc.device).normal_()
        msg["value"] = base.loc + eps[self.offset : self.offset + shape[0]] * base.scale


class ShardedObjective(Objective):
    """:class:`~napari_rvae.core.objective.Objective` for this process's share of each global batch.

    Called with the global batch's indices (the same in every process), it
    returns ``(loss, share)``: the loss to back-propagate, whose gradient
    averaged over the processes (what DDP does) is the one-process gradient,
    and this process's share of the one-process loss value (the shares sum to
    it).
    """

    def __init__(self, model: RVAE, x_all, labels, targets, gen: torch.Generator, ctx: DistContext):
        super().__init__(model, x_all, labels, targets, gen)
        self.ctx = ctx

    def __call__(self, idx: torch.Tensor, kl_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        world = self.ctx.world_size
        own = self._share_elbo(idx, kl_scale)
        if self.labelled is not None and self.labelled.numel():
            own = own + self._classifier_share(idx.numel())
        shared = self._balance_share(idx) if self.balanced else own.new_zeros(())
        # DDP averages gradients over the processes: N x each share sums them. The shared
        # term's backward already sums over processes (through the all-reduce).
        return world * own + shared, own.detach() + shared.detach() / world

    def _share_elbo(self, idx: torch.Tensor, kl_scale: float) -> torch.Tensor:
        """The ELBO summed over this process's rows of the batch, branch by branch as one process runs them."""
        rows = self.ctx.rows(idx.numel())
        if not self.enum or self.labels is None:
            given = not self.enum and self.labels is not None  # crvae: the class is an input
            return self._elbo_rows(idx, rows, given, kl_scale)
        known = self.labels[idx] >= 0
        loss = self.x_all.new_zeros(())
        for part, given in ((~known, False), (known, True)):
            if part.any():
                loss = loss + self._elbo_rows(idx[part], _rows_of(part, rows), given, kl_scale)
        return loss

    def _elbo_rows(self, idx: torch.Tensor, rows: slice, given: bool, kl_scale: float) -> torch.Tensor:
        """The ELBO of ``idx[rows]`` with the noise the whole ``idx`` gets in one process.

        With no rows here the noise is drawn all the same (on one row weighted 0):
        the generators stay in step and the graph touches the same parameters.
        """
        mine = idx[rows]
        weight = 1.0
        if mine.numel() == 0:
            mine, rows, weight = idx[:1], slice(0, 1), 0.0
        xb = self.x_all[mine]
        yb = F.one_hot(self.labels[mine], self.n_classes).to(xb.dtype) if given else None
        quiet = contextlib.nullcontext() if not (given and self.enum) else warnings.catch_warnings()
        with GlobalNoise(idx.numel(), rows.start), quiet:
            if given and self.enum:  # the class is observed here: nothing to enumerate, as intended
                warnings.filterwarnings("ignore", "TraceEnum_ELBO found no sample sites", UserWarning)
            loss = self.elbo.differentiable_loss(self.model.model, self.model.guide, xb, yb, kl_scale)
        return loss * weight

    def _classifier_share(self, batch: int) -> torch.Tensor:
        """This process's share of the classifier term (the pick is drawn alike everywhere)."""
        pick = self._classifier_pick()
        weight = CLASSIFIER_WEIGHT * batch / pick.numel()
        mine = pick[self.ctx.rows(pick.numel())]
        if mine.numel() == 0:
            return self._classifier_loss(pick[:1], weight) * 0.0
        return self._classifier_loss(mine, weight)

    def _balance_share(self, idx: torch.Tensor) -> torch.Tensor:
        """The class-balance term of the whole batch, from the all-reduced sum of class posteriors."""
        from torch.distributed.nn.functional import all_reduce  # with autograd

        mine = idx[self.ctx.rows(idx.numel())]
        weight = 1.0
        if mine.numel() == 0:
            mine, weight = idx[:1], 0.0
        total = torch.softmax(self.model.encoder(self.x_all[mine])[2], -1).sum(0) * weight
        with warnings.catch_warnings():  # its successor in torch 2.13 has no backward yet
            warnings.filterwarnings("ignore", ".*all_reduce is deprecated", FutureWarning)
            q = all_reduce(total, group=self.ctx.loss_group) / idx.numel()
        return self._balance_term(q, idx.numel())


def _rows_of(part: torch.Tensor, rows: slice) -> slice:
    """Where this process's rows of a batch fall among the batch's rows where ``part`` holds."""
    start = int(part[: rows.start].sum())
    return slice(start, start + int(part[rows].sum()))


class _StepLoss(nn.Module):
    """The module DDP wraps: its forward is the whole loss, so DDP sees every parameter it uses."""

    def __init__(self, objective: ShardedObjective):
        super().__init__()
        self.model = objective.model
        self.objective = objective

    def forward(self, idx: torch.Tensor, kl_scale: float):
        return self.objective(idx, kl_scale)


def _fixed_buffers() -> dict:
    """DDP's option not to re-send the buffers (normalisation, alignment reference: fixed while
    training) at every forward; its name changed in torch 2.13."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class DistributedLoss:
    """The training loop's objective in a process group: the loss through DDP's forward.

    Same interface as :class:`~napari_rvae.core.objective.Objective`: called
    with the global batch's indices it returns the loss to back-propagate
    (DDP all-reduces the gradients in ``backward``); :meth:`reported` gives
    the one-process loss value, summed over the processes.
    """

    def __init__(self, model: RVAE, x_all, labels, targets, gen: torch.Generator, ctx: DistContext):
        self.model, self.ctx = model, ctx
        objective = ShardedObjective(model, x_all, labels, targets, gen, ctx)
        device = x_all.device
        self.ddp = DistributedDataParallel(
            _StepLoss(objective),
            device_ids=[device.index] if device.type == "cuda" else None,
            **_fixed_buffers(),
            # Every process's graph touches every parameter at every step (a share with no rows
            # runs one row weighted 0), so no search for unused ones.
            find_unused_parameters=False,
        )
        self._share = None

    def __call__(self, idx: torch.Tensor, kl_scale: float) -> torch.Tensor:
        loss, self._share = self.ddp(idx, kl_scale)
        return loss

    def reported(self, loss: torch.Tensor) -> torch.Tensor:
        """The step's loss as one process counts it: the processes' shares, summed."""
        total = self._share.clone()
        dist.all_reduce(total)
        return total
