"""Image + points in, per-atom results out: what the widgets run in their worker.

:func:`analyse_iter` is :func:`~napari_rvae.core.train.train_iter` with patch
extraction before it and encoding after it; it yields the same
:class:`~napari_rvae.core.train.Progress` reports and returns an
:class:`Analysis`. :func:`apply_model` does the same with a trained model and
no training.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .config import ModelConfig, TrainConfig
from .encode import encode
from .models import RVAE
from .train import Progress, TrainResult, train_iter


@dataclass
class Analysis:
    """Results for the points that had a patch, plus what happened to the rest."""

    table: pd.DataFrame  # encode()'s columns, one row per kept point, in input order
    kept: np.ndarray  # indices of the input points that have a row in ``table``
    dropped: np.ndarray  # indices of input points dropped at the image edge
    centers: np.ndarray  # (len(kept), 2) y, x of the kept points
    model: RVAE
    training: TrainResult | None = None

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
    ps = _patches(image, points_yx, model_config.patch_size, edge)
    kept_labels = None if labels is None else np.asarray(labels)[ps.kept]
    result = yield from train_iter(ps.patches, model_config, train_config, labels=kept_labels, stop=stop)
    table = encode(result.model, ps.patches, labels=kept_labels if model_config.kind == "crvae" else None)
    return Analysis(table, ps.kept, ps.dropped, ps.centers, result.model, result)


def apply_model(image, points_yx, model: RVAE, *, labels=None, edge: str = "drop") -> Analysis:
    """Encode the points of an image with an already trained model."""
    ps = _patches(image, points_yx, model.config.patch_size, edge)
    kept_labels = None if labels is None else np.asarray(labels)[ps.kept]
    table = encode(model, ps.patches, labels=kept_labels if model.config.kind == "crvae" else None)
    return Analysis(table, ps.kept, ps.dropped, ps.centers, model)
