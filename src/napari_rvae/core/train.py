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
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from pyro.infer import TraceEnum_ELBO, TraceMeanField_ELBO

from .align import CoarseAlignment
from .angle_sd import calibrate_angle_sd
from .config import SYMMETRY_AUTO, ModelConfig, TrainConfig
from .decoder import resolve_compute_dtype
from .device import resolve_device
from .dynamo_import import import_dynamo_safely
from .errors import InputError
from .memory import free_cached_memory, is_out_of_memory
from .models import RVAE

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
    history: list[float] = field(default_factory=list)  # mean loss per patch, per epoch
    epochs_run: int = 0
    stopped: bool = False
    device: str = "cpu"
    seconds: float = 0.0
    n_patches: int = 0
    alignment_error: str | None = None  # why the coarse alignment failed (the rVAE alone then measured angles)
    notes: list[str] = field(default_factory=list)
    # How the symmetry was set: {"chosen": n, "source": "given"} or core.symmetry's estimate summary.
    symmetry: dict = field(default_factory=dict)
    class_window: int | None = None  # pixels the similarity-graph classes were found on; None: whole patches

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


def check_labels(labels, n: int, config: ModelConfig) -> np.ndarray | None:
    """Validate class labels: ints in [0, C), ``-1`` meaning unknown (ssrvae only)."""
    if not config.needs_labels:
        return None
    if labels is None:
        raise InputError(f"Model {config.kind!r} needs class labels (a labels column).")
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise InputError(f"There are {lab.size} labels for {n} patches.")
    if not np.issubdtype(lab.dtype, np.number):
        raise InputError("Class labels must be whole numbers (0, 1, 2, ...), with -1 or empty for unknown.")
    lab = np.where(np.isfinite(lab.astype(float)), lab, -1).astype(np.int64)
    if config.traits.labels == "all" and (lab < 0).any():
        raise InputError(f"{config.kind} needs a class for every patch; {(lab < 0).sum()} have none (use ssrvae for a few labels).")
    if (lab >= config.n_classes).any() or (lab < -1).any():
        raise InputError(f"Class labels must lie in 0..{config.n_classes - 1} (found {lab.min()}..{lab.max()}).")
    if not (lab >= 0).any():
        raise InputError(f"{config.kind} needs at least one labelled patch.")
    return lab


def train_iter(
    patches,
    model_config: ModelConfig,
    train_config: TrainConfig = TrainConfig(),
    *,
    labels=None,
    stop=None,
    model: RVAE | None = None,
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
        Continue training this model instead of a fresh one.

    Returns
    -------
    TrainResult
        As the generator's return value (``StopIteration.value``); use
        :func:`train` to get it directly.
    """
    threads_before = torch.get_num_threads()
    if train_config.threads:
        # torch's thread count is process-wide: set for the run, put back after it.
        torch.set_num_threads(int(train_config.threads))
    try:
        return (yield from _train_steps(patches, model_config, train_config, labels=labels, stop=stop, model=model))
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
    if model_config.symmetry != SYMMETRY_AUTO:
        return model_config, {"chosen": int(model_config.symmetry), "source": "given"}
    if model is not None:  # training goes on: the model's own symmetry
        return replace(model_config, symmetry=model.config.symmetry), {"chosen": int(model.config.symmetry),
                                                                       "source": "model"}
    from .symmetry import estimate_symmetry

    found = estimate_symmetry(x_np, seed=seed)
    return replace(model_config, symmetry=found.symmetry), found.summary()


def _train_steps(patches, model_config: ModelConfig, train_config: TrainConfig, *, labels, stop, model):
    """:func:`train_iter`'s body (inputs checked here, threads set by the caller)."""
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
            raise InputError("The patches hold values beyond the float32 range (about 3.4e38) the model "
                             "works in: scale them down first.")
    lab = check_labels(labels, x_np.shape[0], model_config)

    model_config, symmetry = _resolve_symmetry(x_np, model_config, model, train_config.seed)
    device = resolve_device(train_config.device)
    torch.manual_seed(train_config.seed)
    pyro.set_rng_seed(train_config.seed)

    n = x_np.shape[0]
    raw = torch.as_tensor(np.ascontiguousarray(x_np, dtype=np.float32)).to(device)
    fresh = model is None
    alignment_error = None
    if fresh:
        model = RVAE(model_config).to(device)
        model.fit_normalization(raw)
        if model_config.coarse_alignment:
            try:
                CoarseAlignment(model).fit(model.normalize(raw), seed=train_config.seed)
            except Exception as exc:  # noqa: BLE001 - numerical trouble on unforeseen data must not end the run
                alignment_error = f"{type(exc).__name__}: {exc}"
                log.debug("Coarse alignment failed; training the rVAE alone", exc_info=exc)
                model_config = replace(model_config, alignment="none")
                model = RVAE(model_config).to(device)
                model.fit_normalization(raw)
    else:
        model = model.to(device)
    # Speed (#7): the decoder's per-pixel layers in bfloat16 where the device has it.
    model.decoder.compute_dtype = resolve_compute_dtype(train_config.precision, device)
    enum = model_config.class_latent
    notes: list[str] = []
    x_all = model.normalize(raw)
    del raw
    targets = None
    if enum and fresh and train_config.graph_targets:
        from .graph_classes import graph_classes

        # Science (#6): the class head learns the classes of the rotation-invariant
        # similarity graph (core/graph_classes.py), spread from the labels if any.
        try:
            # On a window (a column's own appearance) the classes are compared under any rotation.
            window = class_window_size(train_config.class_window, model_config.patch_size)
            found = graph_classes(central(x_all.reshape(n, model_config.patch_size, -1), window),
                                  model_config.n_classes, labels=lab,
                                  symmetry=1 if window else model_config.symmetry, seed=train_config.seed)
            targets = torch.as_tensor(found, device=device)
        except Exception as exc:  # noqa: BLE001 - the class head can learn from the ELBO alone
            notes.append(f"The similarity-graph classes failed ({type(exc).__name__}: {exc}); "
                         "the class head learned from the ELBO alone.")
            log.debug("graph_classes failed", exc_info=exc)
    # Science (#17): a sample of the patches as given, to calibrate angle_sd after training.
    calib = torch.randperm(n, generator=torch.Generator().manual_seed(train_config.seed))[:CALIBRATION_PATCHES]
    calib_x = x_all[calib.to(x_all.device)].clone()
    # Science (#6): with coarse alignment the rVAE trains on patches turned by
    # their synchronised angle and only learns what is left (see core/align.py).
    x_all = CoarseAlignment(model)(x_all, inplace=True)[0]
    n_cls = model_config.n_classes
    y_all = None
    if lab is not None:
        y_all = torch.as_tensor(lab, device=device)
    if targets is None and y_all is not None:
        targets = y_all

    elbo = TraceEnum_ELBO(max_plate_nesting=1) if enum else TraceMeanField_ELBO()
    import_dynamo_safely()  # the optimizer's first use imports it; see core/dynamo_import.py
    optim = torch.optim.Adam(model.parameters(), lr=train_config.lr)
    # A batch larger than the data would train nothing in some libraries: clamp it.
    batch = min(int(train_config.batch_size), n)
    labelled = torch.nonzero(targets >= 0).flatten() if (enum and targets is not None) else None

    gen = torch.Generator(device="cpu").manual_seed(train_config.seed)
    result = TrainResult(model=model, device=str(device), n_patches=n, alignment_error=alignment_error, notes=notes,
                         symmetry=symmetry,
                         class_window=class_window_size(train_config.class_window, model_config.patch_size))
    t0 = time.perf_counter()
    last_yield = t0
    model.train()
    for epoch in range(1, int(train_config.epochs) + 1):
        warm = train_config.kl_warmup_epochs
        kl_scale = min(1.0, epoch / warm) if warm > 0 else 1.0
        order = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros((), device=device)
        done = step = 0
        steps = math.ceil(n / batch)
        while done < n:
            if _is_stopped(stop):
                result.stopped = True
                break
            idx = order[done : done + batch]
            try:
                loss = _step_loss(model, elbo, x_all, idx, y_all, enum, n_cls, kl_scale, targets, labelled, gen)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled; the rest re-raised
                if not is_out_of_memory(exc):
                    raise
                loss = None
                optim.zero_grad(set_to_none=True)
                free_cached_memory(device)
                if batch == 1:
                    raise InputError(f"The {device} device ran out of memory even with one patch per batch; "
                                     "use a smaller patch size or hidden size, or --device cpu.") from None
                notes.append(f"The {device} device ran out of memory with batches of {batch}; "
                             f"training went on with batches of {batch // 2}.")
                batch //= 2
                steps = step + math.ceil((n - done) / batch)
                continue
            total = total + loss.detach()
            done += idx.numel()
            step += 1
            now = time.perf_counter()
            if now - last_yield > 0.2 and done < n:
                last_yield = now
                yield Progress(epoch, int(train_config.epochs), step, steps, float(total) / done, now - t0)
        if done == 0:
            break
        epoch_loss = float(total) / done
        if not math.isfinite(epoch_loss) or not all(torch.isfinite(p).all() for p in model.parameters()):
            raise InputError(
                "Training diverged (the loss became NaN or infinite); try a smaller learning rate."
            )
        result.history.append(epoch_loss)
        result.epochs_run = epoch if not result.stopped else epoch - 1 + done / n
        now = time.perf_counter()
        last_yield = now
        yield Progress(epoch, int(train_config.epochs), step, step, epoch_loss, now - t0, epoch_done=True)
        if result.stopped:
            break
    model.eval()
    model.decoder.compute_dtype = None  # decoding after training: float32, as saved
    if result.history:
        calib_y = None
        if model_config.class_input and y_all is not None:
            calib_y = F.one_hot(y_all[calib.to(y_all.device)], n_cls).to(calib_x.dtype)
        calibrate_angle_sd(model, calib_x, calib_y, seed=train_config.seed)
    result.seconds = time.perf_counter() - t0
    return result


def _step_loss(model, elbo, x_all, idx, y_all, enum, n_cls, kl_scale, targets, labelled, gen):
    """The loss of one optimisation step on the patches ``idx``."""
    xb = x_all[idx]
    if enum:
        yb = None if y_all is None else y_all[idx]
        return _class_latent_loss(model, elbo, xb, yb, n_cls, kl_scale, x_all, targets, labelled, gen)
    yb = F.one_hot(y_all[idx], n_cls).to(xb.dtype) if y_all is not None else None
    return elbo.differentiable_loss(model.model, model.guide, xb, yb, kl_scale)


# Weight of the classifier's mean cross-entropy per patch of the batch (the
# ELBO is summed over the batch). Kingma's alpha = 0.1 N gave about 1 nat per
# labelled patch against a ~300 nat ELBO: labelled patches stayed at chance.
CLASSIFIER_WEIGHT = 100.0
# Labelled patches whose cross-entropy each step sees (a random subset beyond).
CLASSIFIER_BATCH = 256
# jrvae: weight (per patch) of a penalty on the batch's mean class posterior
# straying from uniform, KL(mean_b q(y|x_b) || uniform). Without it one class
# wins every patch within an epoch (ARI 0.000); it uses no labels. Measured on
# 1000 rotated digits, 4 epochs, +/-180 deg: ARI 0.15 at 100 (0.04 at 10, 45 deg).
BALANCE_WEIGHT = 100.0


def _class_latent_loss(model, elbo, xb, yb, n_cls, kl_scale, x_all=None, targets=None, labelled=None, gen=None):
    """Loss for models with a discrete class latent (jrvae, ssrvae).

    ``targets`` are the classes the class head is taught (the graph's classes,
    see core/graph_classes.py, or the given labels); ``labelled`` indexes the
    patches that have one.

    Unlabelled patches marginalise the class by enumeration; labelled ones
    (ssrvae) observe it. Without labels (jrvae) the batch's mean class
    posterior is held near uniform, so the classes cannot collapse into one.
    The classifier's cross-entropy (Kingma et al.'s M2
    term) is taken over the labelled patches at *every* step, not only over
    those that happen to fall in the batch: with 10 labels among 1,000 patches
    a labelled patch would otherwise steer the classifier once per epoch. It is
    weighted per patch against the batch's ELBO, which is summed over patches
    and pixels (hundreds of nats per patch): Kingma's ``alpha = 0.1 N`` assumes
    a ~100 nat MNIST ELBO and left the classifier at chance here.
    """
    loss = xb.new_zeros(())
    if yb is None:
        loss = elbo.differentiable_loss(model.model, model.guide, xb, None, kl_scale)
        if BALANCE_WEIGHT > 0 and labelled is None:
            q = torch.softmax(model.encoder(xb)[2], -1).mean(0)
            loss = loss + BALANCE_WEIGHT * xb.shape[0] * (q * torch.log(q.clamp_min(1e-12) * n_cls)).sum()
    else:
        known = yb >= 0
        if (~known).any():
            loss = loss + elbo.differentiable_loss(model.model, model.guide, xb[~known], None, kl_scale)
        if known.any():
            yk = F.one_hot(yb[known], n_cls).to(xb.dtype)
            with warnings.catch_warnings():  # the class is observed here: nothing to enumerate, as intended
                warnings.filterwarnings("ignore", "TraceEnum_ELBO found no sample sites", UserWarning)
                loss = loss + elbo.differentiable_loss(model.model, model.guide, xb[known], yk, kl_scale)
    if labelled is not None and labelled.numel():
        pick = labelled
        if pick.numel() > CLASSIFIER_BATCH:
            pick = pick[torch.randperm(pick.numel(), generator=gen)[:CLASSIFIER_BATCH].to(pick.device)]
        logits = model.encoder(x_all[pick])[2]
        loss = loss + CLASSIFIER_WEIGHT * xb.shape[0] * F.cross_entropy(logits, targets[pick])
    return loss


def train(patches, model_config: ModelConfig, train_config: TrainConfig = TrainConfig(), *, callback=None, **kwargs) -> TrainResult:
    """Run :func:`train_iter` to the end; ``callback(progress)`` sees every report."""
    it = train_iter(patches, model_config, train_config, **kwargs)
    while True:
        try:
            progress = next(it)
        except StopIteration as fin:
            return fin.value
        if callback is not None:
            callback(progress)
