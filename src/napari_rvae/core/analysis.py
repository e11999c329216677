"""Image + points in, per-atom results out: what the widgets run in their worker.

:func:`analyse_iter` is :func:`~napari_rvae.core.train.train_iter` with patch
extraction before it and encoding after it; it yields the same
:class:`~napari_rvae.core.train.Progress` reports and returns an
:class:`Analysis`. :func:`apply_model` does the same with a trained model and
no training.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .bond_order import with_lattice_check
from .config import ModelConfig, TrainConfig
from .encode import encode
from .models import RVAE
from .train import Progress, TrainResult, resolve_class_window, train_iter


@dataclass
class Analysis:
    """Results for the points that had a patch, plus what happened to the rest."""

    table: pd.DataFrame  # encode()'s columns, one row per kept point, in input order
    kept: np.ndarray  # indices of the input points that have a row in ``table``
    dropped: np.ndarray  # indices of input points dropped at the image edge
    centers: np.ndarray  # (len(kept), 2) y, x of the kept points
    model: RVAE
    training: TrainResult | None = None
    # Wall times: "extract" (patches), "encode", "total"; training's own is in ``training.seconds``.
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        return len(self.kept) + len(self.dropped)


def _patches(image, points_yx, patch_size, edge):
    from .patches import extract_patches

    return extract_patches(image, np.asarray(points_yx, dtype=float), patch_size, edge=edge)


def analyse_iter(
    image,
    points_yx,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    labels=None,
    edge: str = "drop",
    stop=None,
) -> Generator[Progress, None, Analysis]:
    """Extract patches, train, encode. ``labels`` are per input point (-1 unknown)."""
    t_start = time.perf_counter()
    ps = _patches(image, points_yx, model_config.patch_size, edge)
    kept_labels = None if labels is None else np.asarray(labels)[ps.kept]
    train_config = resolve_class_window(train_config, model_config, ps.centers)
    t_extract = time.perf_counter() - t_start
    result = yield from train_iter(ps.patches, model_config, train_config, labels=kept_labels, stop=stop)
    t_enc = time.perf_counter()
    table = encode(result.model, ps.patches, labels=kept_labels if model_config.class_input else None,
                   notes=result.notes)
    table = with_lattice_check(table, ps.centers, result.model.config.symmetry)
    t_end = time.perf_counter()
    seconds = {"extract": t_extract, "encode": t_end - t_enc, "total": t_end - t_start}
    return Analysis(table, ps.kept, ps.dropped, ps.centers, result.model, result, seconds)


def apply_model(image, points_yx, model: RVAE, *, labels=None, edge: str = "drop") -> Analysis:
    """Encode the points of an image with an already trained model."""
    t_start = time.perf_counter()
    ps = _patches(image, points_yx, model.config.patch_size, edge)
    kept_labels = None if labels is None else np.asarray(labels)[ps.kept]
    t_enc = time.perf_counter()
    table = encode(model, ps.patches, labels=kept_labels if model.config.class_input else None)
    table = with_lattice_check(table, ps.centers, model.config.symmetry)
    t_end = time.perf_counter()
    seconds = {"extract": t_enc - t_start, "encode": t_end - t_enc, "total": t_end - t_start}
    return Analysis(table, ps.kept, ps.dropped, ps.centers, model, seconds=seconds)
