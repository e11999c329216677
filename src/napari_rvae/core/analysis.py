"""Patches in, per-atom results out: the one end-to-end path.

The CLI (:mod:`.pipeline`) and the widgets run the same iterators: the CLI
reads files and cuts patches, then drives :func:`train_patches_iter` and
writes files; the widgets run :func:`analyse_iter` (which cuts the patches of
an image and its points first) in a worker and turn the result into layers.
They yield the :class:`~napari_rvae.core.train.Progress` reports of
:func:`~napari_rvae.core.train.train_iter` and return an :class:`Analysis`.
:func:`encode_patches` and :func:`apply_model` do the same with a trained
model and no training.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from . import ddp
from .bond_order import with_lattice_check
from .budget import Budget, stratified_sample, training_budget
from .config import ModelConfig, TrainConfig
from .encode import encode
from .models import RVAE
from .train import Progress, TrainResult, resolve_class_window, train_iter


@dataclass
class Analysis:
    """Results for the points that had a patch, plus what happened to the rest."""

    table: pd.DataFrame  # encode()'s columns (+ the lattice check for an image), one row per kept point
    kept: np.ndarray  # indices of the input points that have a row in ``table``
    dropped: np.ndarray  # indices of input points dropped at the image edge
    centers: np.ndarray | None  # (len(kept), 2) y, x of the kept points; None for a stack of patches
    model: RVAE
    training: TrainResult | None = None
    # Wall times: "extract" (patches), "encode", "total"; training's own is in ``training.seconds``.
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        return len(self.kept) + len(self.dropped)


def _encoded(model: RVAE, patches, centers, labels, notes) -> pd.DataFrame:
    """encode()'s table, with the bond-order lattice check where the atom positions are known."""
    table = encode(model, patches, labels=labels, notes=notes)
    if centers is not None:
        table = with_lattice_check(table, centers, model.config.symmetry)
    return table


def _training_part(patches, labels, groups, budget: Budget, seed: int):
    """The patches (and their labels) training sees: all of them, or the budget's stratified sample.

    The sample is stratified on ``groups`` crossed with the labels, so that
    every class given (a crvae's, an ssrvae's few) stays represented.
    """
    if not budget.sampled:
        return patches, labels
    strata = None if labels is None else np.asarray(labels)
    if groups is not None:
        g = np.asarray(groups)
        strata = g if strata is None else np.unique(np.stack([g, strata], 1), axis=0, return_inverse=True)[1]
    pick = stratified_sample(patches, budget.n_sample, groups=strata, seed=seed)
    return np.asarray(patches)[pick], None if labels is None else np.asarray(labels)[pick]


def train_patches_iter(
    patches,
    centers,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    labels=None,
    stop=None,
    model: RVAE | None = None,
    groups=None,
    budget: Budget | None = None,
) -> Generator[Progress, None, Analysis]:
    """Train on a patch stack (or the budget's sample of it), then encode every patch.

    ``centers``: the (N, 2) atom positions the patches were cut at, or None;
    ``labels`` per patch (-1 unknown); ``model``: a trained model whose
    training goes on (:func:`~.train.train_iter`); ``groups`` per patch (the
    frame of a movie, the file): each stays represented in a sample;
    ``budget``: the :class:`~.budget.Budget` to train under, by default
    :func:`~.budget.training_budget` of the patches and ``train_config.epochs``
    (an explicit number: that many passes over every patch, no sample).
    """
    t_start = time.perf_counter()
    # The class window from every atom: a sample's spacing would be wider than the lattice's.
    train_config = resolve_class_window(train_config, model_config, centers)
    if budget is None:
        budget = training_budget(len(patches), train_config.batch_size, train_config.epochs)
    train_config = replace(train_config, epochs=budget.epochs)
    x, lab = _training_part(patches, labels, groups, budget, train_config.seed)
    group = ddp.current()
    if group is not None:  # torchrun: the other processes train on exactly this (core/ddp.py)
        ddp.share_training(group, x, lab, model_config, train_config)
    result = yield from train_iter(x, model_config, train_config, labels=lab, stop=stop, model=model)
    result.budget = budget
    t_enc = time.perf_counter()
    table = _encoded(result.model, patches, centers, labels, notes=result.notes)
    t_end = time.perf_counter()
    kept = np.arange(len(patches))
    seconds = {"extract": 0.0, "encode": t_end - t_enc, "total": t_end - t_start}
    return Analysis(table, kept, np.array([], dtype=int), centers, result.model, result, seconds)


def encode_patches(model: RVAE, patches, centers=None, *, labels=None, notes=None) -> Analysis:
    """Encode a patch stack with a trained model (``centers`` as in :func:`train_patches_iter`)."""
    t_start = time.perf_counter()
    table = _encoded(model, patches, centers, labels, notes=notes)
    seconds = {"extract": 0.0, "encode": time.perf_counter() - t_start}
    seconds["total"] = seconds["encode"]
    return Analysis(table, np.arange(len(patches)), np.array([], dtype=int), centers, model, seconds=seconds)


def _cut(image, points_yx, patch_size, edge):
    from .patches import extract_patches

    return extract_patches(image, np.asarray(points_yx, dtype=float), patch_size, edge=edge)


def _with_cut(analysis: Analysis, ps, t_extract: float) -> Analysis:
    """The analysis of the kept patches, told which input points they were and which were dropped."""
    analysis.kept, analysis.dropped = ps.kept, ps.dropped
    analysis.seconds["extract"] = t_extract
    analysis.seconds["total"] += t_extract
    return analysis


def analyse_iter(
    image,
    points_yx,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    labels=None,
    edge: str = "drop",
    stop=None,
    model: RVAE | None = None,
    groups=None,
) -> Generator[Progress, None, Analysis]:
    """Cut patches at the points, train, encode. ``labels`` and ``groups`` (see
    :func:`train_patches_iter`) are per input point (-1 unknown label);
    ``model``: a trained model whose training goes on (patches cut at its size)."""
    t_start = time.perf_counter()
    if model is not None:
        model_config = model.config
    ps = _cut(image, points_yx, model_config.patch_size, edge)
    kept_labels = None if labels is None else np.asarray(labels)[ps.kept]
    kept_groups = None if groups is None else np.asarray(groups)[ps.kept]
    t_extract = time.perf_counter() - t_start
    analysis = yield from train_patches_iter(
        ps.patches,
        ps.centers,
        model_config,
        train_config,
        labels=kept_labels,
        stop=stop,
        model=model,
        groups=kept_groups,
    )
    return _with_cut(analysis, ps, t_extract)


def apply_model(image, points_yx, model: RVAE, *, labels=None, edge: str = "drop") -> Analysis:
    """Encode the points of an image with an already trained model."""
    t_start = time.perf_counter()
    ps = _cut(image, points_yx, model.config.patch_size, edge)
    kept_labels = None if labels is None else np.asarray(labels)[ps.kept]
    t_extract = time.perf_counter() - t_start
    return _with_cut(encode_patches(model, ps.patches, ps.centers, labels=kept_labels), ps, t_extract)
