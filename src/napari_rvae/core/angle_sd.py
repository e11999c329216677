"""Calibrating ``angle_sd``: the reported angle's error bar against the angle's own noise.

Training ends with :func:`calibrate_angle_sd`, which stores one factor in the
model (``angle_sd_scale``, saved in the model file); the posterior multiplies
every ``angle_sd`` by it.
"""

from __future__ import annotations

import math

import torch

from .align import aligned_posterior
from .rotation import rotate_patches


@torch.no_grad()
def calibrate_angle_sd(model, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> float:
    """Scale ``angle_sd`` so that it covers about 68 % of the angle's own noise; returns the factor.

    The noise is measured as the equivariance check on a whole image does:
    each patch of ``x`` (normalised, (B, P*P); a sample of the training
    patches) is turned by a random angle (10-40 % of the period, either sense)
    and encoded again through the data path (alignment stage and model);
    ``d = angle(turned) - angle - turn`` should be 0. The factor is the 68th
    percentile of ``|d| / sqrt(sd^2 + sd_turned^2)``, so that about 68 % of
    such differences lie within their error bar. Measured on the MoS2 scan
    (``benchmarks/bench_real.py``): the uncalibrated spread of the votes was
    2-4 times too large, the rVAE's own posterior spread 6-50 times
    (docs/science.md).

    Parameters
    ----------
    model : RVAE
        A trained model; its ``angle_sd_scale`` is set.
    x : Tensor, shape (B, P*P)
        Normalised patches as given (not turned by the alignment stage).
    y : Tensor, shape (B, C), optional
        One-hot classes, for models whose encoder reads them.
    seed : int
        Seeds the random turns.
    """
    cfg = model.config
    if not cfg.pose_model or x.shape[0] < 2:
        return float(model.angle_sd_scale)
    p, period = cfg.patch_size, 2 * math.pi / cfg.symmetry
    gen = torch.Generator().manual_seed(seed)
    size = torch.rand(x.shape[0], generator=gen) * 0.3 + 0.1
    sense = torch.where(torch.rand(x.shape[0], generator=gen) < 0.5, -1.0, 1.0)
    turn = (size * sense * period).to(x.device, x.dtype)
    # No disk: the corners a turn leaves empty lie outside the circle the angle reads,
    # as with a turned image, where no patch has empty corners.
    turned = rotate_patches(x.reshape(-1, p, p), -turn, mask=False).reshape(x.shape)
    model.angle_sd_scale.fill_(1.0)
    before, after = aligned_posterior(model, x, y), aligned_posterior(model, turned, y)
    n = cfg.symmetry
    d = torch.angle(torch.polar(torch.ones_like(turn), n * (after["angle"] - before["angle"] - turn))) / n
    bar = torch.sqrt(before["angle_sd"] ** 2 + after["angle_sd"] ** 2)
    ratio = (d.abs() / bar.clamp_min(1e-12)).float()
    ratio = ratio[torch.isfinite(ratio)]
    scale = float(torch.quantile(ratio, 0.68)) if ratio.numel() else 1.0
    if not (math.isfinite(scale) and scale > 0):
        scale = 1.0
    model.angle_sd_scale.fill_(scale)
    return scale
