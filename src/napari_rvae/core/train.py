"""Training: one generator that yields progress and returns the trained model.

The CLI, the napari widget and the tests all drive :func:`train_iter`; there
is no other training loop. Contract:

* It yields :class:`Progress` at least once per epoch (and every ~0.2 s within
  long epochs), from the caller's thread: a napari thread worker turns each
  yield into a GUI update.
* ``stop`` is anything with ``is_set()`` (a ``threading.Event``) or a
  zero-argument callable. It is checked before every optimisation step; when it
  fires, training ends after the current step and the model trained so far is
  returned with ``stopped=True``. Discarding that model ("abort") is the caller's
  choice.
* The inputs are copied into tensors at the start; nothing the caller owns is
  touched afterwards.
* Seeded: the same seed, data and device give the same loss curve on the CPU.
* Given a trained ``model``, training goes on (:mod:`.resume`): with the
  model's own settings, Adam's state and the loss history of its earlier runs.
* Under torchrun (:mod:`.ddp`) every process runs this loop on its share of
  each batch and they train one model, the one a single process trains.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import pyro
import torch
import torch.nn.functional as F

from . import ddp
from .align import CoarseAlignment
from .angle_sd import calibrate_angle_sd
from .budget import Budget
from .config import SYMMETRY_AUTO, ModelConfig, TrainConfig
from .decoder import resolve_compute_dtype
from .device import resolve_device
from .dynamo_import import import_dynamo_safely
from .errors import InputError
from .labels import check_labels
from .memory import free_cached_memory, is_out_of_memory
from .models import RVAE
from .objective import Objective
from .resume import (
    FRESH_OPTIMIZER_NOTE,
    TrainingState,
    earlier_epochs,
    random_streams,
    restore_optimizer,
    restore_random_streams,
)

StopFlag = Callable[[], bool]
# Patches that calibrate angle_sd after training (core/angle_sd.py): two encodings of them.
CALIBRATION_PATCHES = 1000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """One report from a running training."""

    epoch: int  # 1-based epoch in progress
    epochs: int
    step: int  # steps done in this epoch
    steps_per_epoch: int
    loss: float  # mean loss per patch over the epoch so far (negative ELBO)
    seconds: float  # since training started
    epoch_done: bool = False
    epochs_before: int = 0  # epochs of the model's earlier runs: a continued loss curve starts after them

    @property
    def fraction(self) -> float:
        return ((self.epoch - 1) + self.step / max(self.steps_per_epoch, 1)) / max(self.epochs, 1)

    @property
    def eta_seconds(self) -> float:
        f = self.fraction
        return self.seconds * (1.0 - f) / f if f > 0 else float("nan")


@dataclass
class TrainResult:
    """The trained model and how it got there."""

    model: RVAE
    history: list[float] = field(default_factory=list)  # mean loss per patch, per epoch (earlier runs' first)
    epochs_run: int = 0  # in this run
    stopped: bool = False
    device: str = "cpu"
    seconds: float = 0.0
    n_patches: int = 0
    alignment_error: str | None = None  # why the coarse alignment failed (the rVAE alone then measured angles)
    notes: list[str] = field(default_factory=list)
    # How the symmetry was set: {"chosen": n, "source": "given"} or core.symmetry's estimate summary.
    symmetry: dict = field(default_factory=dict)
    class_window: int | None = None  # pixels the similarity-graph classes were found on; None: whole patches
    train_config: TrainConfig | None = None  # the settings as the run used them ("auto" class window resolved)
    # Training went on from a trained model: its epochs before this run, how many of ``history``'s
    # entries are theirs, and whether Adam's state went on too.
    epochs_before: float = 0.0
    history_before: int = 0
    optimizer_resumed: bool = False
    processes: int = 1  # processes that trained the model together (torchrun, core/ddp.py)
    # What the run trained on and for how long (core/budget.py); set by core.analysis, None elsewhere.
    budget: Budget | None = None

    @property
    def epochs_total(self) -> float:
        """Epochs the model has been trained in all, earlier runs included."""
        return self.epochs_before + self.epochs_run

    @property
    def alignment(self) -> dict | None:
        """How angles were measured, for reports and status lines; ``None`` without alignment."""
        if self.alignment_error is not None:
            return {
                "description": "Coarse alignment failed on these data; the rVAE alone measured the angles "
                f"({self.alignment_error}).",
                "status": "failed",
                "error": self.alignment_error,
                "rotation_range": None,
            }
        return CoarseAlignment(self.model).summary()

    @property
    def patches_per_second(self) -> float:
        return self.n_patches * self.epochs_run / self.seconds if self.seconds > 0 else 0.0


def _is_stopped(stop) -> bool:
    if stop is None:
        return False
    if hasattr(stop, "is_set"):
        return bool(stop.is_set())
    return bool(stop())


def train_iter(
    patches,
    model_config: ModelConfig,
    train_config: TrainConfig = TrainConfig(),
    *,
    labels=None,
    stop=None,
    model: RVAE | None = None,
    distributed: ddp.DistContext | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Train an rVAE-family model on a patch stack, yielding :class:`Progress`.

    Parameters
    ----------
    patches : array_like, shape (N, P, P)
        The patches; P must equal ``model_config.patch_size``.
    model_config, train_config
        What to build and how to train it.
    labels : array_like of int, optional
        Classes for ``crvae`` (all) or ``ssrvae`` (``-1`` where unknown).
    stop : threading.Event or callable, optional
        Checked before every step; see the module docstring.
    model : RVAE, optional
        Continue training this model instead of a fresh one: its own config
        holds (``model_config`` is not used; the patch size must match), and
        its ``training_state`` (:mod:`.resume`) carries the loss history,
        Adam's state and, under the same seed, the random streams on.
    distributed : DistContext, optional
        Train one model across a process group (:mod:`.ddp`); default: the
        group :func:`.ddp.init_from_env` joined, if any. Every process passes
        the same patches and settings; ``batch_size`` is the global batch.

    Returns
    -------
    TrainResult
        As the generator's return value (``StopIteration.value``); use
        :func:`train` to get it directly.
    """
    threads_before = torch.get_num_threads()
    distributed = distributed if distributed is not None else ddp.current()
    # Under torchrun, OMP_NUM_THREADS (torchrun's per-process setting) decides.
    if train_config.threads and not (distributed is not None and "OMP_NUM_THREADS" in os.environ):
        # torch's thread count is process-wide: set for the run, put back after it.
        torch.set_num_threads(int(train_config.threads))
    try:
        return (
            yield from _train_steps(
                patches, model_config, train_config, labels=labels, stop=stop, model=model, dist=distributed
            )
        )
    finally:
        torch.set_num_threads(threads_before)


def class_window_size(window, patch_size: int) -> int | None:
    """The window's side in pixels, of the patch's parity (so its centre stays the atom's), or None for all of it."""
    if not isinstance(window, int) or isinstance(window, bool):
        return None
    window += (int(patch_size) - window) % 2
    return window if window < int(patch_size) else None


def central(patches: torch.Tensor, window: int | None) -> torch.Tensor:
    """The central ``window`` x ``window`` pixels of (N, P, P) patches (all of them for None)."""
    if window is None:
        return patches
    start = (patches.shape[-1] - window) // 2
    return patches[:, start : start + window, start : start + window]


def class_window_for(points_yx, patch_size: int) -> int | None:
    """``class_window="auto"`` for atoms at ``points_yx``: 4/3 of their typical spacing, at least 8 px.

    The column and its near surroundings, not its neighbours: on polycrystals
    with a second species at random sites (5-30 %, square and hexagonal, 4
    grains at random angles, spacing 12 px) the similarity-graph classes of
    the whole 32 px patch matched the species with ARI -0.10 to 0.22 (they
    follow grains and boundaries), of its central 16 px 0.97-1.00
    (docs/science.md). None when that is the whole patch.
    """
    from .maps import typical_spacing

    pts = np.asarray(points_yx, dtype=float).reshape(-1, 2)
    if len(pts) < 2:
        return None
    return class_window_size(max(8, int(round(4.0 / 3.0 * typical_spacing(pts)))), patch_size)


def resolve_class_window(train_config: TrainConfig, model_config: ModelConfig, points_yx=None) -> TrainConfig:
    """``train_config`` with ``class_window="auto"`` made a number (or None) for atoms at ``points_yx``.

    Only jrvae and ssrvae use the similarity-graph classes; without atom
    positions (a patch stack) the window is the whole patch.
    """
    if train_config.class_window != "auto" or not model_config.class_latent:
        return train_config
    window = None if points_yx is None else class_window_for(points_yx, model_config.patch_size)
    return replace(train_config, class_window=window)


def _resolve_symmetry(x_np, model_config: ModelConfig, model, seed: int) -> tuple[ModelConfig, dict]:
    """The config with a number for ``symmetry``, and how it was set (``TrainResult.symmetry``)."""
    if model is not None:  # training goes on: the model's own symmetry
        return replace(model_config, symmetry=model.config.symmetry), {
            "chosen": int(model.config.symmetry),
            "source": "model",
        }
    if model_config.symmetry != SYMMETRY_AUTO:
        return model_config, {"chosen": int(model_config.symmetry), "source": "given"}
    from .symmetry import estimate_symmetry

    found = estimate_symmetry(x_np, seed=seed)
    return replace(model_config, symmetry=found.symmetry), found.summary()


def _checked_patches(patches, model_config: ModelConfig) -> np.ndarray:
    """The patches as an array, or an InputError that says what is wrong with them."""
    x_np = np.asarray(patches)
    if x_np.ndim != 3 or x_np.shape[1] != x_np.shape[2]:
        raise InputError(f"Patches must be a stack of square images (N, P, P); got shape {x_np.shape}.")
    if x_np.shape[0] == 0:
        raise InputError("There are no patches to train on.")
    if x_np.shape[1] != model_config.patch_size:
        raise InputError(f"The patches are {x_np.shape[1]} px wide but the model expects {model_config.patch_size}.")
    if not np.isfinite(x_np).all():
        raise InputError("The patches contain NaN or infinite values.")
    with np.errstate(over="ignore"):
        if not np.isfinite(x_np.astype(np.float32, copy=False)).all():
            raise InputError(
                "The patches hold values beyond the float32 range (about 3.4e38) the model "
                "works in: scale them down first."
            )
    return x_np


def _new_model(raw: torch.Tensor, model_config: ModelConfig, seed: int, device) -> tuple[RVAE, ModelConfig, str | None]:
    """A fresh model fitted to the data's intensities (and coarse alignment); the config it was
    built with; why alignment failed, if it did (the rVAE alone then measures the angles)."""
    model = RVAE(model_config).to(device)
    model.fit_normalization(raw)
    if not model_config.coarse_alignment:
        return model, model_config, None
    try:
        CoarseAlignment(model).fit(model.normalize(raw), seed=seed)
        return model, model_config, None
    except Exception as exc:  # numerical trouble on unforeseen data must not end the run
        log.debug("Coarse alignment failed; training the rVAE alone", exc_info=exc)
        model_config = replace(model_config, alignment="none")
        model = RVAE(model_config).to(device)
        model.fit_normalization(raw)
        return model, model_config, f"{type(exc).__name__}: {exc}"


def _graph_targets(x_all, lab, model_config: ModelConfig, train_config: TrainConfig, notes: list[str]):
    """The classes of the rotation-invariant similarity graph (core/graph_classes.py), spread from
    the labels if any, for the class head to learn; None if they cannot be found."""
    from .graph_classes import graph_classes

    n, p = x_all.shape[0], model_config.patch_size
    try:
        # On a window (a column's own appearance) the classes are compared under any rotation.
        window = class_window_size(train_config.class_window, p)
        found = graph_classes(
            central(x_all.reshape(n, p, -1), window),
            model_config.n_classes,
            labels=lab,
            symmetry=1 if window else model_config.symmetry,
            seed=train_config.seed,
        )
        return torch.as_tensor(found, device=x_all.device)
    except Exception as exc:  # the class head can learn from the ELBO alone
        notes.append(
            f"The similarity-graph classes failed ({type(exc).__name__}: {exc}); "
            "the class head learned from the ELBO alone."
        )
        log.debug("graph_classes failed", exc_info=exc)
        return None


@dataclass
class _Prepared:
    """The model and the tensors a training loop runs on."""

    model: RVAE
    config: ModelConfig
    x: torch.Tensor  # normalised, flattened and (with alignment) coarsely turned patches
    labels: torch.Tensor | None
    targets: torch.Tensor | None  # classes the class head learns (class latent only)
    calibration: torch.Tensor  # indices of the patches that calibrate angle_sd afterwards
    calibration_x: torch.Tensor  # those patches as given (not turned)
    alignment_error: str | None
    notes: list[str]


def _prepare(x_np, lab, model_config: ModelConfig, train_config: TrainConfig, model, device) -> _Prepared:
    """Build (or move) the model and put the data in the form it trains on."""
    raw = torch.as_tensor(np.ascontiguousarray(x_np, dtype=np.float32)).to(device)
    fresh = model is None
    alignment_error = None
    if fresh:
        model, model_config, alignment_error = _new_model(raw, model_config, train_config.seed, device)
    else:
        model = model.to(device)
    # The decoder's per-pixel layers in bfloat16 where the device multiplies it natively (docs/speed.md).
    model.decoder.compute_dtype = resolve_compute_dtype(train_config.precision, device)
    notes: list[str] = []
    x_all = model.normalize(raw)
    del raw
    targets = None
    if model_config.class_latent and fresh and train_config.graph_targets:
        targets = _graph_targets(x_all, lab, model_config, train_config, notes)
    # angle_sd is calibrated after training on a sample of the patches as given.
    n = x_all.shape[0]
    calib = torch.randperm(n, generator=torch.Generator().manual_seed(train_config.seed))[:CALIBRATION_PATCHES]
    calib_x = x_all[calib.to(x_all.device)].clone()
    # With coarse alignment the rVAE trains on patches turned by their synchronised angle
    # and only learns what is left (core/align/).
    x_all = CoarseAlignment(model)(x_all, inplace=True)[0]
    labels = None if lab is None else torch.as_tensor(lab, device=device)
    if targets is None and labels is not None:
        targets = labels
    return _Prepared(model, model_config, x_all, labels, targets, calib, calib_x, alignment_error, notes)


def _prepare_run(x_np, lab, model_config: ModelConfig, train_config: TrainConfig, model, device, dist):
    """The symmetry found and the prepared model and data; in a process group, fitted on rank 0 only."""
    symmetry = data = None
    if dist is None or dist.is_main:
        model_config, symmetry = _resolve_symmetry(x_np, model_config, model, train_config.seed)
        torch.manual_seed(train_config.seed)
        pyro.set_rng_seed(train_config.seed)
        data = _prepare(x_np, lab, model_config, train_config, model, device)
    if dist is not None:
        symmetry, data = _shared_preparation(symmetry, data, x_np, lab, train_config, model, device, dist)
    return symmetry, data


def _shared_preparation(symmetry, data, x_np, lab, train_config: TrainConfig, model, device, dist):
    """Rank 0's symmetry, fitted model (normalisation, alignment reference), class targets and random
    state in every process; the others put the patches in training form with that model.

    Sharing the random state keeps the noise every process draws the one-process noise (core/ddp.py).
    A continued model is the same file in every process and is not sent.
    """
    payload = None
    if dist.is_main:
        state = None if model is not None else {k: v.cpu() for k, v in data.model.state_dict().items()}
        targets = None if data.targets is None else data.targets.cpu()
        payload = (data.config, symmetry, state, targets, data.alignment_error, data.notes, ddp.rng_state())
    config, symmetry, state, targets, error, notes, rng = ddp.broadcast_object(payload, dist)
    if not dist.is_main:
        torch.manual_seed(train_config.seed)
        pyro.set_rng_seed(train_config.seed)
        if model is None:
            model = RVAE(config)
            model.load_state_dict(state)
        data = _prepare(x_np, lab, config, train_config, model, device)  # a given model: nothing fitted
        data.targets = None if targets is None else targets.to(device)
        data.alignment_error, data.notes = error, notes
        ddp.set_rng_state(rng)
    return symmetry, data


def _shrunk_batch(batch: int, device, notes: list[str], dist: ddp.DistContext | None = None) -> int:
    """The batch after the device ran out of memory: half of it, said in the notes."""
    free_cached_memory(device)
    if dist is not None:  # one process alone cannot change the global batch
        raise InputError(
            f"The {device} device ran out of memory with batches of {batch} patches over "
            f"{dist.world_size} processes; use --batch-size {max(batch // 2, 1)}."
        ) from None
    if batch == 1:
        raise InputError(
            f"The {device} device ran out of memory even with one patch per batch; "
            "use a smaller patch size or hidden size, or --device cpu."
        ) from None
    notes.append(
        f"The {device} device ran out of memory with batches of {batch}; training went on with batches of {batch // 2}."
    )
    return batch // 2


@dataclass
class _Loop:
    """A training loop's running state across epochs."""

    objective: Objective
    optim: torch.optim.Optimizer
    batch: int
    gen: torch.Generator
    result: TrainResult
    t0: float
    last_yield: float
    epochs_before: int = 0  # epochs of the model's earlier runs (KL warm-up and Progress go on after them)
    dist: ddp.DistContext | None = None  # the process group training runs across (core/ddp.py)


def _epoch(loop: _Loop, epoch: int, epochs: int, kl_scale: float, stop, device):
    """One pass over the patches in a shuffled order; yields Progress within long epochs.
    Returns (summed loss, patches done, steps done)."""
    n = loop.result.n_patches
    order = torch.randperm(n, generator=loop.gen).to(device)
    total = torch.zeros((), device=device)
    done = step = 0
    steps = math.ceil(n / loop.batch)
    while done < n:
        if ddp.any_process(_is_stopped(stop), loop.dist):  # together: every process takes the same steps
            loop.result.stopped = True
            break
        idx = order[done : done + loop.batch]
        try:
            loss = loop.objective(idx, kl_scale)
            loop.optim.zero_grad(set_to_none=True)
            loss.backward()
            loop.optim.step()
        except Exception as exc:  # only out-of-memory is handled; the rest re-raised
            if not is_out_of_memory(exc):
                raise
            loop.optim.zero_grad(set_to_none=True)
            loop.batch = _shrunk_batch(loop.batch, device, loop.result.notes, loop.dist)
            steps = step + math.ceil((n - done) / loop.batch)
            continue
        total = total + loop.objective.reported(loss)
        done += idx.numel()
        step += 1
        now = time.perf_counter()
        if now - loop.last_yield > 0.2 and done < n:
            loop.last_yield = now
            yield Progress(
                epoch, epochs, step, steps, float(total) / done, now - loop.t0, epochs_before=loop.epochs_before
            )
    return total, done, step


def _carry_on(model: RVAE, optim, gen: torch.Generator, train_config: TrainConfig, result: TrainResult) -> int:
    """Take up a trained model's run: its loss history, Adam's state and, under the same seed, the
    random streams. Returns the epochs it ran before (what the KL warm-up and progress go on from)."""
    state = model.training_state
    if state is not None:
        result.history = list(state.history)
        result.history_before, result.epochs_before = len(state.history), state.epochs
    result.optimizer_resumed = restore_optimizer(optim, state, train_config.lr)
    if not result.optimizer_resumed:
        result.notes.append(FRESH_OPTIMIZER_NOTE)
    restore_random_streams(state, train_config.seed, gen)
    return earlier_epochs(state)


def _check_finite(epoch_loss: float, model: RVAE, dist: ddp.DistContext | None = None) -> None:
    bad = not math.isfinite(epoch_loss) or not all(torch.isfinite(p).all() for p in model.parameters())
    if ddp.any_process(bad, dist):
        raise InputError("Training diverged (the loss became NaN or infinite); try a smaller learning rate.")


def _train_steps(patches, model_config: ModelConfig, train_config: TrainConfig, *, labels, stop, model, dist=None):
    """:func:`train_iter`'s body (inputs checked here, threads set by the caller)."""
    resuming = model is not None
    if resuming:  # training goes on: the model's own settings, whatever was asked
        model_config = model.config
    x_np = _checked_patches(patches, model_config)
    lab = check_labels(labels, x_np.shape[0], model_config)
    device = resolve_device(train_config.device)
    device = device if dist is None else dist.device(device)
    symmetry, data = _prepare_run(x_np, lab, model_config, train_config, model, device, dist)
    model, model_config, n = data.model, data.config, x_np.shape[0]

    import_dynamo_safely()  # the optimizer's first use imports it; see core/dynamo_import.py
    optim = torch.optim.Adam(model.parameters(), lr=train_config.lr)
    gen = torch.Generator(device="cpu").manual_seed(train_config.seed)
    result = TrainResult(
        model=model,
        device=str(device),
        n_patches=n,
        alignment_error=data.alignment_error,
        notes=data.notes,
        symmetry=symmetry,
        train_config=train_config,
        class_window=class_window_size(train_config.class_window, model_config.patch_size),
        processes=1 if dist is None else dist.world_size,
    )
    t0 = time.perf_counter()
    # A batch larger than the data would train nothing in some libraries: clamp it.
    batch = min(int(train_config.batch_size), n)
    objective = Objective if dist is None else partial(ddp.DistributedLoss, ctx=dist)
    loop = _Loop(objective(model, data.x, data.labels, data.targets, gen), optim, batch, gen, result, t0, t0, dist=dist)
    epochs, warm = int(train_config.epochs), train_config.kl_warmup_epochs
    loop.epochs_before = _carry_on(model, optim, gen, train_config, result) if resuming else 0
    model.train()
    for epoch in range(1, epochs + 1):
        kl_scale = min(1.0, (loop.epochs_before + epoch) / warm) if warm > 0 else 1.0
        total, done, step = yield from _epoch(loop, epoch, epochs, kl_scale, stop, device)
        if done == 0:
            break
        epoch_loss = float(total) / done
        _check_finite(epoch_loss, model, dist)
        result.history.append(epoch_loss)
        result.epochs_run = epoch if not result.stopped else epoch - 1 + done / n
        loop.last_yield = time.perf_counter()
        yield Progress(
            epoch,
            epochs,
            step,
            step,
            epoch_loss,
            loop.last_yield - t0,
            epoch_done=True,
            epochs_before=loop.epochs_before,
        )
        if result.stopped:
            break
    model.eval()
    model.decoder.compute_dtype = None  # decoding after training: float32, as saved
    # Taken before calibrating (which draws nothing from them), as the next epoch would find them.
    model.training_state = TrainingState(
        list(result.history), result.epochs_total, train_config.seed, optim.state_dict(), random_streams(gen)
    )
    if len(result.history) > result.history_before:
        _calibrate(model, data, train_config.seed)
    result.seconds = time.perf_counter() - t0
    return result


def _calibrate(model: RVAE, data: _Prepared, seed: int) -> None:
    """angle_sd's scale, from two encodings of the calibration patches (core/angle_sd.py)."""
    calib_y = None
    if data.config.class_input and data.labels is not None:
        calib_y = F.one_hot(data.labels[data.calibration.to(data.labels.device)], data.config.n_classes)
        calib_y = calib_y.to(data.calibration_x.dtype)
    calibrate_angle_sd(model, data.calibration_x, calib_y, seed=seed)


def drive(iterator: Generator[Progress, None, object], callback=None):
    """Run a progress-yielding job to its end; ``callback(progress)`` sees every report."""
    while True:
        try:
            progress = next(iterator)
        except StopIteration as fin:
            return fin.value
        if callback is not None:
            callback(progress)


def train(
    patches, model_config: ModelConfig, train_config: TrainConfig = TrainConfig(), *, callback=None, **kwargs
) -> TrainResult:
    """Run :func:`train_iter` to the end; ``callback(progress)`` sees every report."""
    return drive(train_iter(patches, model_config, train_config, **kwargs), callback)
