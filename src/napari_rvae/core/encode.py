"""Encoding patches into a per-patch table: angle, shifts, latents, class.

Encoding never changes the model: it runs the encoder's posterior means in
``eval``/``no_grad`` mode, and no optimiser is anywhere near it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .align import aligned_posterior
from .errors import InputError
from .labels import encoding_labels
from .memory import free_cached_memory, is_out_of_memory
from .models import RVAE


def result_columns(model: RVAE) -> list[str]:
    """The columns :func:`encode` writes, in order (a public contract)."""
    cfg = model.config
    cols: list[str] = []
    if cfg.pose_model:
        cols += ["angle", "dx", "dy"]
    cols += [f"z{i}" for i in range(cfg.latent_dim)]
    if cfg.class_model:
        cols += ["class", "class_prob"]
    if cfg.pose_model:
        cols += ["angle_sd"]
    cols += [f"z{i}_sd" for i in range(cfg.latent_dim)]
    if cfg.coarse_alignment:
        cols += ["angle_residual"]
    return cols


def encode(model: RVAE, patches, *, labels=None, batch_size: int = 4096, device=None, notes=None) -> pd.DataFrame:
    """Encode a patch stack into one row per patch.

    Parameters
    ----------
    model : RVAE
        A trained model.
    patches : array_like, shape (N, P, P)
    labels : array_like of int, optional
        The known classes, required by ``crvae`` (its encoder is conditioned on them).
    batch_size : int
        Patches per forward pass (memory only; results do not depend on it).
    device : torch.device, optional
        Defaults to the model's device.
    notes : list, optional
        Sentences for the user are appended here (a batch halved after the
        device ran out of memory).

    Returns
    -------
    pandas.DataFrame
        Columns from :func:`result_columns`: ``angle`` in degrees (counter-clockwise
        as displayed, in ``[0, 360 / symmetry)``), ``dx``/``dy`` in pixels (``dy``
        positive downwards, napari's axis 0), ``z0..``, and for class models
        ``class``/``class_prob``; then posterior spreads (``angle_sd`` in
        degrees, ``z*_sd``). With coarse alignment ``angle`` is the
        synchronised angle and ``angle_residual`` (degrees, within
        +/-180 / symmetry) the rVAE's own rotation on top of it: the decoder
        draws each patch at ``angle + angle_residual``.
    """
    cfg = model.config
    x_np = np.asarray(patches)
    if x_np.ndim != 3 or x_np.shape[1:] != (cfg.patch_size, cfg.patch_size):
        raise InputError(
            f"The model was trained on {cfg.patch_size} x {cfg.patch_size} patches; these have shape {x_np.shape[1:]}."
        )
    if x_np.shape[0] == 0:
        table = pd.DataFrame({c: np.zeros(0) for c in result_columns(model)})
        return table.astype({"class": np.int64}) if cfg.class_model else table
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.isfinite(np.asarray(x_np, dtype=np.float32)).all():
            raise InputError(
                "The patches hold NaN, infinite values or values beyond the float32 range "
                "(about 3.4e38): nothing can be encoded from them."
            )
    labels = encoding_labels(labels, cfg, x_np.shape[0])
    dev = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    try:
        start = 0
        while start < x_np.shape[0]:
            xb = torch.as_tensor(np.ascontiguousarray(x_np[start : start + batch_size], dtype=np.float32), device=dev)
            yb = None
            if cfg.class_input:
                yb = F.one_hot(torch.as_tensor(labels[start : start + batch_size], device=dev), cfg.n_classes).float()
            try:
                post = aligned_posterior(model, model.normalize(xb), yb)
            except Exception as exc:  # out of memory: halve the batch; anything else re-raised
                if not is_out_of_memory(exc) or batch_size == 1:
                    raise
                free_cached_memory(dev)
                if notes is not None:
                    notes.append(
                        f"Encoding ran out of memory on {dev} with batches of {batch_size}; "
                        f"it went on with batches of {batch_size // 2}."
                    )
                batch_size //= 2
                continue
            start += len(xb)
            cols = _columns(cfg, post, yb)
            for k, v in cols.items():
                parts.setdefault(k, []).append(v.detach().cpu().numpy().astype(np.float64))
    finally:
        model.train(was_training)
    table = pd.DataFrame({k: np.concatenate(v) for k, v in parts.items()}, columns=result_columns(model))
    if cfg.class_model:
        table["class"] = table["class"].astype(np.int64)
    return table


def _columns(cfg, post: dict[str, torch.Tensor], yb: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """One batch's result columns from the posterior (``yb``: the given classes of a class-input model)."""
    half = (cfg.patch_size - 1) / 2.0
    cols: dict[str, torch.Tensor] = {}
    if cfg.pose_model:
        period = 360.0 / cfg.symmetry
        cols["angle"] = torch.remainder(torch.rad2deg(post["angle"]), period)
        shift = post.get("shift")
        zeros = torch.zeros_like(post["angle"])
        # Grid units to pixels; y_up is flipped to napari's downward axis 0.
        cols["dx"] = shift[:, 0] * half if shift is not None else zeros
        cols["dy"] = -shift[:, 1] * half if shift is not None else zeros
    for i in range(cfg.latent_dim):
        cols[f"z{i}"] = post["z"][:, i]
    if cfg.class_model:
        if cfg.class_input:
            cols["class"] = yb.argmax(-1).float()
            cols["class_prob"] = torch.ones_like(cols["class"])
        else:
            prob, cls = post["class_prob"].max(-1)
            cols["class"], cols["class_prob"] = cls.float(), prob
    if cfg.pose_model:
        cols["angle_sd"] = torch.rad2deg(post["angle_sd"]).clamp_max(180.0 / math.sqrt(3))
    for i in range(cfg.latent_dim):
        cols[f"z{i}_sd"] = post["z_sd"][:, i]
    if cfg.coarse_alignment:
        # Already within +/-180 / symmetry (models.angle_from_u); absent before training fills the reference.
        cols["angle_residual"] = torch.rad2deg(post.get("residual_angle", torch.zeros_like(post["angle"])))
    return cols
