"""Looking into a trained model: reconstructions and the latent manifold.

The manifold is the article's ``manifold2d``: decode a d x d grid over two
latent dimensions (the others held at a fixed value) and tile the decoded
patches into one image. Decoding takes an explicit angle, so the manifold can
be drawn at any rotation; reconstructions decode each patch at its own encoded
pose (angle and shift).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .align import aligned_posterior
from .errors import InputError
from .models import RVAE


def _class_onehot(model: RVAE, classes, n: int, device) -> torch.Tensor | None:
    cfg = model.config
    if not cfg.class_model:
        return None
    codes = np.broadcast_to(np.asarray(0 if classes is None else classes, dtype=np.int64), (n,))
    if codes.min() < 0 or codes.max() >= cfg.n_classes:
        raise InputError(f"Classes must be in 0..{cfg.n_classes - 1} for this model.")
    return F.one_hot(torch.as_tensor(codes.copy(), device=device), cfg.n_classes).float()


@torch.no_grad()
def reconstruct(model: RVAE, patches, *, labels=None) -> np.ndarray:
    """Each patch decoded from its own posterior mean (content, angle, shift, class).

    Parameters
    ----------
    model : RVAE
    patches : array_like, shape (B, P, P)
        Patches in data units, as given to :func:`~napari_rvae.core.encode.encode`.
    labels : array_like of int, optional
        Known classes (``crvae`` needs them; other class models use their own
        most likely class).

    Returns
    -------
    ndarray of float32, shape (B, P, P)
        Reconstructions in data units.
    """
    cfg = model.config
    x_np = np.asarray(patches, dtype=np.float32)
    if x_np.ndim == 2:
        x_np = x_np[None]
    if x_np.ndim != 3 or x_np.shape[1:] != (cfg.patch_size, cfg.patch_size):
        raise InputError(f"The model expects {cfg.patch_size} x {cfg.patch_size} patches, not {x_np.shape[1:]}.")
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        x = torch.as_tensor(np.ascontiguousarray(x_np), device=dev)
        y = _class_onehot(model, labels, len(x), dev) if cfg.class_input else None
        post = aligned_posterior(model, model.normalize(x), y)
        if cfg.class_latent:
            y = F.one_hot(post["class_prob"].argmax(-1), cfg.n_classes).float()
        angle = torch.rad2deg(post["decoder_angle"]) if cfg.pose_model else None
        out = model.decode(post["z"], angle_deg=angle, shift=post.get("shift"), y=y)
    finally:
        model.train(was_training)
    return out.cpu().numpy().astype(np.float32)


def manifold_grid(d: int, z_range=None, latent_dim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The latent values along the manifold's two axes: (values along x, values along y).

    ``z_range`` is ``((lo0, hi0), (lo1, hi1))``; by default the prior's
    central 90 % (about -1.64 to 1.64 standard deviations), as in the article.
    """
    if int(d) < 1:
        raise InputError(f"The manifold needs at least 1 x 1 images, not d = {d}.")
    d = int(d)
    if z_range is None:
        z_range = ((-1.645, 1.645),) * 2
    (lo0, hi0), (lo1, hi1) = z_range[0], z_range[1] if len(z_range) > 1 else z_range[0]
    return np.linspace(lo0, hi0, d), np.linspace(lo1, hi1, d)


@torch.no_grad()
def latent_manifold(
    model: RVAE,
    d: int = 8,
    *,
    dims=(0, 1),
    z_range=None,
    angle_deg: float = 0.0,
    class_index: int = 0,
    fixed=None,
) -> np.ndarray:
    """A d x d mosaic of patches decoded over a grid of two latent dimensions.

    Parameters
    ----------
    model : RVAE
    d : int
        Images per side.
    dims : (int, int)
        The latent dimensions along x (columns) and y (rows); with a
        one-dimensional latent the mosaic is one row over ``z0``.
    z_range : ((float, float), (float, float)), optional
        The ranges of the two dimensions (default: the prior's central 90 %).
    angle_deg : float
        The rotation every patch is drawn at (degrees counter-clockwise as
        displayed); ignored by models without a rotation.
    class_index : int
        The class to draw, for class models.
    fixed : array_like, optional
        Values of the other latent dimensions (default: 0, the prior's mean).

    Returns
    -------
    ndarray of float32, shape (rows * P, d * P)
        Rows run from high to low values of the y dimension, so the mosaic has
        the orientation of a scatter plot.
    """
    cfg = model.config
    p, k = cfg.patch_size, cfg.latent_dim
    dims = tuple(int(i) for i in dims)
    if any(i < 0 or i >= k for i in dims[: min(2, k)]):
        raise InputError(f"This model has latent dimensions z0..z{k - 1}; {dims} are not among them.")
    xs, ys = manifold_grid(d, z_range, k)
    rows = ys[::-1] if k >= 2 and dims[0] != dims[1] else np.zeros(1)
    base = np.zeros(k, dtype=np.float32) if fixed is None else np.asarray(fixed, dtype=np.float32).reshape(k)
    z = np.tile(base, (len(rows) * len(xs), 1))
    gy, gx = np.meshgrid(np.arange(len(rows)), np.arange(len(xs)), indexing="ij")
    z[:, dims[0]] = xs[gx.ravel()]
    if len(rows) > 1:
        z[:, dims[1]] = rows[gy.ravel()]
    dev = next(model.parameters()).device
    zt = torch.as_tensor(z, device=dev)
    y = _class_onehot(model, class_index, len(zt), dev)
    was_training = model.training
    model.eval()
    try:
        imgs = model.decode(zt, angle_deg=float(angle_deg) if cfg.pose_model else None, y=y).cpu().numpy()
    finally:
        model.train(was_training)
    mosaic = imgs.reshape(len(rows), len(xs), p, p).transpose(0, 2, 1, 3).reshape(len(rows) * p, len(xs) * p)
    return mosaic.astype(np.float32)
