"""Continuing a training run: what a trained model carries from its earlier runs.

:func:`~napari_rvae.core.train.train_iter` leaves a :class:`TrainingState` on
the model it trained (``model.training_state``): the loss per epoch so far,
the epochs run, Adam's state and the random streams. Model files store it
(:mod:`.modelfile`) as tensors, plain numbers and lists only, so loading stays
``torch.load(weights_only=True)``. Given such a model, ``train_iter`` carries
on: Adam's moments and step count go on, the history grows, and with the same
seed the batch order and the sampling noise go on where they stopped, so on
the CPU three epochs, saved, loaded and three more equal six in one run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

FRESH_OPTIMIZER_NOTE = (
    "The model holds no optimizer state (a model file from before napari-rvae stored it, or a model not "
    "trained by it): training went on with a fresh Adam optimizer."
)


@dataclass
class TrainingState:
    """How a model was trained so far."""

    history: list[float] = field(default_factory=list)  # mean loss per patch, per epoch, all runs
    epochs: float = 0.0  # epochs run in all (fractional when a run was stopped within an epoch)
    seed: int | None = None  # the seed of the runs: the random streams below continue only under it
    optimizer: dict | None = None  # torch.optim.Adam.state_dict(), on the CPU
    rng: dict | None = None  # {"shuffle": batch-order generator state, "torch": torch's global CPU state}

    def to_payload(self) -> dict:
        """The state as a model file stores it: tensors, numbers, lists and dicts."""
        return {
            "history": [float(v) for v in self.history],
            "epochs": float(self.epochs),
            "seed": self.seed,
            "optimizer": _on_cpu(self.optimizer),
            "rng": _on_cpu(self.rng),
        }

    @classmethod
    def from_payload(cls, payload) -> TrainingState:
        """The state back from :meth:`to_payload`'s dict (as ``torch.load`` returned it)."""
        if not isinstance(payload, dict):
            raise ValueError("its training state is not a dict")
        history = [float(v) for v in payload.get("history", [])]
        seed = payload.get("seed")
        return cls(
            history=history,
            epochs=float(payload.get("epochs", len(history))),
            seed=None if seed is None else int(seed),
            optimizer=payload.get("optimizer"),
            rng=payload.get("rng"),
        )


def _on_cpu(value):
    """``value`` with every tensor detached and on the CPU (containers rebuilt, numbers kept)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def restore_optimizer(optim: torch.optim.Optimizer, state: TrainingState | None, lr: float) -> bool:
    """Load the stored Adam state into ``optim`` (learning rate: this run's ``lr``); False if there is none
    or it does not fit the model's parameters (``optim`` then stays fresh)."""
    if state is None or not state.optimizer:
        return False
    stored = copy.deepcopy(state.optimizer)  # Adam updates its moments in place: the model's record stays as it was
    params = [p for group in optim.param_groups for p in group["params"]]
    moments = stored.get("state", {})
    for index, param in enumerate(params):
        avg = moments.get(index, {}).get("exp_avg")
        if avg is not None and tuple(avg.shape) != tuple(param.shape):
            return False
    try:
        optim.load_state_dict(stored)
    except (ValueError, KeyError, TypeError):
        return False
    for group in optim.param_groups:
        group["lr"] = lr
    return True


def restore_random_streams(state: TrainingState | None, seed: int, shuffle: torch.Generator) -> bool:
    """Put the batch-order generator and torch's global generator where the stored run left them,
    if it ran with ``seed``; False otherwise (they stay seeded afresh)."""
    if state is None or state.seed != seed or not state.rng:
        return False
    shuffle.set_state(state.rng["shuffle"])
    torch.set_rng_state(state.rng["torch"])
    return True


def random_streams(shuffle: torch.Generator) -> dict:
    """The batch-order generator's and torch's global CPU generator's states, for :class:`TrainingState`."""
    return {"shuffle": shuffle.get_state(), "torch": torch.get_rng_state()}


def earlier_epochs(state: TrainingState | None) -> int:
    """Epochs the model was trained before (the history's length): the KL warm-up and the loss
    curve go on after them."""
    return 0 if state is None else len(state.history)
