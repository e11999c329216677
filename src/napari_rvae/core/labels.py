"""Class labels: from a points column to class codes, and checked against a model.

A labels column holds class names (any values; empty means unknown). Training
turns them into codes ``0..C-1`` in sorted order (:func:`class_codes`) and
stores the names in the model file; encoding with a trained model maps the
names back (:func:`codes_for_names`, :func:`labels_for_model`). :func:`check_labels` and
:func:`encoding_labels` say what each model kind needs (``core/config.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import ModelConfig
from .errors import InputError


def class_codes(values: pd.Series) -> tuple[np.ndarray, list]:
    """Map a labels column to codes 0..C-1 (sorted class names), ``-1`` where empty."""
    missing = values.isna() | (values.astype(str).str.strip() == "")
    names = sorted(pd.unique(values[~missing]), key=lambda v: (str(type(v)), v))
    lookup = {name: i for i, name in enumerate(names)}
    codes = np.array([-1 if m else lookup[v] for v, m in zip(values, missing)], dtype=np.int64)
    return codes, [v.item() if isinstance(v, np.generic) else v for v in names]


def labels_for_model(codes, names, model_names) -> np.ndarray | None:
    """Class codes (0..C-1 over ``names``, -1 unknown) renumbered to a trained model's ``model_names``.

    Raises
    ------
    InputError
        If a class is not one the model was trained on.
    """
    if codes is None or not model_names or list(names or []) == list(model_names):
        return codes
    lookup = {name: i for i, name in enumerate(model_names)}
    unknown = [name for name in names if name not in lookup]
    if unknown:
        raise InputError(
            f"Class {unknown[0]!r} is not among the classes the model was trained on ({', '.join(map(str, model_names))})."
        )
    mapping = np.array([lookup[name] for name in names] + [-1], dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    return mapping[np.where(codes >= 0, codes, len(names))]


def codes_for_names(values, class_names) -> np.ndarray:
    """The codes of a labels column's ``values`` among a trained model's ``class_names`` (-1 where empty)."""
    codes, names = class_codes(pd.Series(values))
    return labels_for_model(codes, names, class_names)


def check_labels(labels, n: int, config: ModelConfig) -> np.ndarray | None:
    """Validate training labels: ints in [0, C), ``-1`` meaning unknown where the kind allows it."""
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
        raise InputError(
            f"{config.kind} needs a class for every patch; {(lab < 0).sum()} have none (use ssrvae for a few labels)."
        )
    if (lab >= config.n_classes).any() or (lab < -1).any():
        raise InputError(f"Class labels must lie in 0..{config.n_classes - 1} (found {lab.min()}..{lab.max()}).")
    if not (lab >= 0).any():
        raise InputError(f"{config.kind} needs at least one labelled patch.")
    return lab


def encoding_labels(labels, config: ModelConfig, n: int) -> np.ndarray | None:
    """The labels a trained model reads when encoding ``n`` patches: every patch's class
    for a class-input model (crvae), none for the others."""
    if not config.class_input:
        return None
    if labels is None:
        raise InputError(f"A {config.kind} model needs each patch's class to encode it (a labels column).")
    lab = np.asarray(labels).astype(np.int64)
    if lab.shape != (n,):
        raise InputError(f"There are {lab.size} labels for {n} patches.")
    if (lab < 0).any():
        raise InputError(f"A {config.kind} model needs a class for every point; {(lab < 0).sum()} have none.")
    if (lab >= config.n_classes).any():
        raise InputError(f"This model knows {config.n_classes} classes but the labels hold {lab.max() + 1}.")
    return lab
