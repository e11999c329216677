"""The rVAE family as Pyro model/guide pairs over plain torch modules.

The decoder is the article's coordinate-based "spatial generator": an MLP
evaluated at every pixel coordinate of the patch, with the coordinate grid
rotated (and shifted) by the sampled pose, so the content latents never need
to carry the angle.

Two choices matter for speed and for the science:

* The first decoder layer is split, ``W [c; z] = W_c c + W_z z``. The rotation
  and shift fold into a per-patch 2 x H matrix (``W_c R^-1``) and a per-patch
  bias, so the per-pixel work of the first layer is one small batched matmul
  instead of a wide one.
* The rotation latent lives on the plane, ``u ~ N(m, I)``, and the angle is its
  direction, ``theta = atan2(u) / n`` for n-fold symmetry. With ``m = 0`` the
  angle's prior is uniform over the circle, so rotations of any size are as
  likely as small ones and the encoder can move continuously round the circle
  (a scalar Gaussian angle cannot wrap). ``m > 0`` concentrates the prior near
  zero degrees, like the reference rVAE.

Coordinates are ``(x, y_up)`` in [-1, 1] with ``y_up`` pointing up on screen,
so a positive angle is a counter-clockwise rotation as displayed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .decoder import SpatialDecoder
from .rotation import disk, turn_back_grids, turn_vectors, unit_phase
from .rotation_fold import rotated_first_layer, rotation_operator

if TYPE_CHECKING:
    from .align import CoarsePose

# A per-head learning rate for the class head, whose logits start near zero: see docs/science.md#logit_gain
LOGIT_GAIN = 10.0

# Prior length of the rotation vector on top of the coarse angle (tied near zero): see docs/science.md#residual_angle_prior
RESIDUAL_ANGLE_PRIOR = 2.0


# Normalised values (training range 0..1) are bounded to +/- this for the Gaussian likelihood.
GAUSSIAN_BOUND = 1e4


def _mlp(n_in: int, width: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(n_in if i == 0 else width, width), nn.Tanh()]
    return nn.Sequential(*mods)


class Encoder(nn.Module):
    """Patch (and, for crVAE, the known class) to posterior parameters, rotation-pooled.

    The same MLP reads K rotated copies of the patch (turned back by
    ``2 pi k / K``). Pose outputs are pooled *equivariantly*: copy k's rotation
    vector is turned forward by ``n 2 pi k / K`` (n = symmetry) and its shift
    by ``2 pi k / K`` before averaging; everything else (content latents,
    spreads, class logits) is a plain average. So turning the input by a
    multiple of ``2 pi / K`` turns the inferred angle by exactly that much and
    leaves the content unchanged, by construction. A plain MLP encoder cannot
    learn that over the whole circle (its circular correlation stays at chance
    at +/-180 degrees); with the pooling the network only has to learn the
    angle *within* one ``2 pi / K`` step. K = 1 is the plain MLP encoder.

    Outputs ``(loc, scale, logits)`` with ``loc`` laid out as
    ``[u (2), shift (2, if any), z (latent_dim)]``; the spreads of ``u`` and of
    the shift are isotropic, so they too are rotation invariant.
    """

    def __init__(
        self,
        patch_size: int,
        latent_dim: int,
        width: int,
        layers: int,
        *,
        n_rotations: int = 1,
        symmetry: int = 1,
        pose: bool = True,
        translation: bool = True,
        n_cond: int = 0,
        n_logits: int = 0,
        attention: bool = True,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.n_rotations = int(n_rotations) if pose else 1
        self.pose, self.translation = pose, pose and translation
        self.body = _mlp(patch_size**2 + n_cond, width, layers)
        n_equi = (2 + (2 if self.translation else 0)) if pose else 0
        n_inv_scale = (1 + (1 if self.translation else 0)) if pose else 0
        self.equi = nn.Linear(width, n_equi) if n_equi else None
        self.loc = nn.Linear(width, latent_dim)
        self.log_scale = nn.Linear(width, latent_dim + n_inv_scale)
        self.logits = nn.Linear(width, n_logits) if n_logits else None
        self.score = nn.Linear(width, 1) if attention and self.n_rotations > 1 else None
        if pose:
            self._init_pose(n_inv_scale)
        k = self.n_rotations
        if k > 1:
            ang = 2.0 * math.pi * torch.arange(k, dtype=torch.float32) / k
            self.register_buffer("grids", turn_back_grids(ang, patch_size), persistent=False)
            self.register_buffer("mask", disk(patch_size).reshape(-1), persistent=False)
            self.register_buffer("rot_phase", unit_phase(symmetry * ang), persistent=False)
            self.register_buffer("shift_phase", unit_phase(ang), persistent=False)

    def _init_pose(self, n_pose_scales: int) -> None:
        """Start with a confident pose: a long rotation vector and small pose spreads.

        With the default initialisation the rotation vector is short next to
        its spread, so sampled angles are noise, the decoder learns a
        rotation-averaged blob and training sits on that plateau (the pose
        latent "collapses") for many epochs. The pooled encoder's angle is
        already equivariant when untrained, so handing it to the decoder from
        the first step makes the decoder learn an upright template at once.
        """
        with torch.no_grad():
            self.equi.weight[0:2].mul_(10.0)
            self.log_scale.bias[:n_pose_scales].fill_(-2.0)

    def _copies(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P*P) -> (B, K, P*P): the patch turned back by each of the K angles."""
        b, p, k = x.shape[0], self.patch_size, self.n_rotations
        img = (x * self.mask).reshape(b, 1, 1, p, p).expand(b, k, 1, p, p).reshape(b * k, 1, p, p)
        grid = self.grids.unsqueeze(0).expand(b, k, p, p, 2).reshape(b * k, p, p, 2)
        return F.grid_sample(img, grid, align_corners=True).reshape(b, k, p * p)

    def _rotation_operator(self) -> torch.Tensor:
        """``rotation_operator`` for this encoder's grids, built once per device."""
        op = self.__dict__.get("_rot_op")
        if op is None or op.device != self.grids.device:
            op = rotation_operator(self.grids, self.mask)
            self.__dict__["_rot_op"] = op
        return op

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        k = self.n_rotations
        if k > 1:
            # Speed: the K rotated copies folded into the first layer, one GEMM (see rotation_fold).
            pre = rotated_first_layer(self.body[0], x, cond, self._rotation_operator(), k)
            h = self.body[2:](torch.tanh(pre))  # (B, K, H)
        else:
            xs = x.unsqueeze(1)
            if cond is not None:
                xs = torch.cat([xs, cond.unsqueeze(1).expand(-1, k, -1)], dim=-1)
            h = self.body(xs)  # (B, K, H)
        # Pooling weights over the copies: uniform, or learned ("which copy looks
        # upright"), a soft coarse search over rotations. A softmax over copies
        # permutes with them, so pooling stays exactly equivariant.
        w = torch.softmax(self.score(h), dim=1) if self.score is not None else h.new_full((*h.shape[:2], 1), 1.0 / k)
        inv = (w * h).sum(1)
        log_scale = self.log_scale(inv).clamp(-10.0, 5.0)
        logits = self.logits(inv) * LOGIT_GAIN if self.logits is not None else None
        z_loc = self.loc(inv)
        if not self.pose:
            return z_loc, torch.exp(log_scale), logits
        e = self.equi(h)
        u, shift = e[..., 0:2], e[..., 2:4]
        if k > 1:
            u = turn_vectors(u, self.rot_phase)
            shift = turn_vectors(shift, self.shift_phase) if self.translation else shift
        parts_loc = [(w * u).sum(1)]
        parts_scale = [log_scale[:, 0:1].expand(-1, 2)]
        i = 1
        if self.translation:
            parts_loc.append((w * shift).sum(1))
            parts_scale.append(log_scale[:, 1:2].expand(-1, 2))
            i = 2
        parts_loc.append(z_loc)
        parts_scale.append(log_scale[:, i:])
        return torch.cat(parts_loc, -1), torch.exp(torch.cat(parts_scale, -1)), logits


def encoder_rotations(config: ModelConfig) -> int:
    """How many rotated copies the encoder pools (``ModelConfig.encoder_rotations``, 0 = automatic).

    Measured on rotated digits (docs/science.md): the pooled encoder recovers
    angles over the whole circle, where a plain MLP is at chance; but with the
    prior tied near 0 degrees (small rotations) the plain encoder lines the
    digits up with one offset and the pooled one does not. After coarse
    alignment only small rotations are left, so "automatic" is the plain
    encoder there too.
    """
    if config.encoder_rotations:
        return int(config.encoder_rotations)
    return 16 if (config.angle_prior == 0 and not config.coarse_alignment) else 1


class RVAE(nn.Module):
    """Encoder + spatial decoder with Pyro ``model``/``guide`` for every kind.

    The module also carries the intensity normalisation learned from the
    training patches, so encoding new patches uses exactly the same scaling,
    and the coarse alignment's reference (``ref_*`` buffers), which the
    alignment stage fits and reads (:class:`~napari_rvae.core.align.CoarseAlignment`).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        n_pose = (2 + (2 if config.translation else 0)) if config.pose_model else 0
        self.n_pose = n_pose
        n_cls = config.n_classes if config.class_model else 0
        self.encoder = Encoder(
            config.patch_size,
            config.latent_dim,
            config.hidden_dim,
            config.hidden_layers,
            n_rotations=encoder_rotations(config),
            symmetry=config.symmetry,
            pose=config.pose_model,
            translation=config.translation,
            n_cond=n_cls if config.class_input else 0,
            n_logits=n_cls if config.class_latent else 0,
        )
        self.decoder = SpatialDecoder(
            config.patch_size, config.latent_dim, config.hidden_dim, config.hidden_layers, n_cls
        )
        # A coordinate MLP first learns a blurred blob (spectral bias) and sits on
        # that plateau for tens of epochs; steeper coordinate features let it draw
        # detail early. Measured on 500 rotated digits, 10 epochs: loss per patch
        # 236 with x4 against 305 with the default init (docs/science.md).
        with torch.no_grad():
            self.decoder.coord.weight.mul_(4.0)
        self.register_buffer("norm_offset", torch.tensor(0.0))
        self.register_buffer("norm_scale", torch.tensor(1.0))
        # The coarse alignment's synchronised reference, stored here so that model
        # files carry it; the stage (core/align/stage.py) fits and reads it. Angular
        # spectra as (real, imag) in float16 (a few MB), and their angles.
        # Empty until training fills them.
        self.register_buffer("ref_spectra", torch.zeros(0, 1, 1, 2, dtype=torch.float16))
        self.register_buffer("ref_theta", torch.zeros(0))
        # Its rotation range (align.Reference): the window's half-width in
        # radians (pi: the full circle) and the range test's statistics (loss,
        # concentration, beyond: align.Reference).
        self.register_buffer("ref_window", torch.tensor(math.pi))
        self.register_buffer("ref_range_test", torch.full((3,), float("nan")))
        # Factor that makes angle_sd cover about 68 % of an angle's own noise
        # (core/angle_sd.py); 1 until training measures it.
        self.register_buffer("angle_sd_scale", torch.tensor(1.0))
        # How it was trained so far (core/resume.py), for training to carry on; None until trained.
        self.training_state = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The reference's size depends on the training data: take the file's shape.
        for name in ("ref_spectra", "ref_theta"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- data scaling -------------------------------------------------------
    def fit_normalization(self, patches: torch.Tensor) -> None:
        """Map the training stack's robust range (0.1 / 99.9 percentiles) to [0, 1]."""
        flat = patches.reshape(-1)
        if flat.numel() > 2_000_000:
            gen = torch.Generator(device="cpu").manual_seed(0)
            idx = torch.randint(flat.numel(), (2_000_000,), generator=gen).to(flat.device)
            flat = flat[idx]
        lo, hi = torch.quantile(flat.float(), torch.tensor([0.001, 0.999], device=flat.device))
        if float(hi - lo) <= 0:
            lo, hi = flat.min(), flat.max()
        self.norm_offset.fill_(float(lo))
        # A constant stack has no range: unit scale, so that other values stay finite once scaled.
        self.norm_scale.fill_(float(hi - lo) if float(hi - lo) > 0 else 1.0)

    def normalize(self, patches: torch.Tensor) -> torch.Tensor:
        x = (patches.reshape(patches.shape[0], -1) - self.norm_offset) / self.norm_scale
        if self.config.likelihood == "bernoulli":
            x = x.clamp(0.0, 1.0)
        else:
            # Far outside the training range values mean nothing to the model; the bound keeps
            # its arithmetic finite (1e30 on a model trained near 0..1 overflowed to NaN).
            x = x.clamp(-GAUSSIAN_BOUND, GAUSSIAN_BOUND)
        return x

    # --- pose helpers -------------------------------------------------------
    def _rot_prior_loc(self, like: torch.Tensor) -> torch.Tensor:
        loc = torch.zeros(2, dtype=like.dtype, device=like.device)
        loc[0] = RESIDUAL_ANGLE_PRIOR if self.config.coarse_alignment else self.config.angle_prior
        return loc

    def angle_from_u(self, u: torch.Tensor) -> torch.Tensor:
        """Physical angle in radians from the planar rotation latent."""
        return torch.atan2(u[..., 1], u[..., 0]) / self.config.symmetry

    def _decode_pose(self, z, u=None, shift=None, y=None):
        if u is None:
            return self.decoder(z, y=y)
        theta = self.angle_from_u(u)
        return self.decoder(z, torch.cos(theta), torch.sin(theta), shift, y)

    def _likelihood(self, out: torch.Tensor):
        if self.config.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self.config.noise).to_event(1)

    # --- Pyro model and guide ---------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_scale: float = 1.0):
        """The generative process, for each patch independently:

        1. pose (rVAE kinds): a rotation vector ``u ~ N((m, 0), I)`` on the plane, whose
           direction is the angle, ``theta = atan2(u) / n`` for ``n``-fold symmetry
           (``m`` = 0: any angle alike; see :meth:`_rot_prior_loc`), and with
           ``translation`` a shift ``s ~ N(0, translation_prior^2 I)`` in grid units;
        2. content ``z ~ N(0, I)`` of ``latent_dim`` dimensions;
        3. class (jrvae, ssrvae): ``y ~ Categorical(uniform)`` over ``n_classes``, observed
           where a label is known; crvae reads ``y`` as a given input instead;
        4. pixels ``x ~ Bernoulli(logits=f(z, y; R(theta)^-1 (c - s)))`` (or Normal with
           ``noise``): the spatial decoder ``f`` evaluated at every pixel coordinate
           ``c`` turned and shifted by the pose.

        ``kl_scale`` weights the latents' prior terms (KL warm-up). ``x``: (B, P*P)
        normalised; ``y``: (B, C) one-hot or None.
        """
        cfg = self.config
        b = x.shape[0]
        with pyro.plate("patches", b):
            with pyro.poutine.scale(scale=kl_scale):
                u = shift = None
                if cfg.pose_model:
                    u = pyro.sample("rot", dist.Normal(self._rot_prior_loc(x), 1.0).expand([b, 2]).to_event(1))
                    if cfg.translation:
                        shift = pyro.sample(
                            "shift", dist.Normal(x.new_zeros(()), cfg.translation_prior).expand([b, 2]).to_event(1)
                        )
                z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0).expand([b, cfg.latent_dim]).to_event(1))
                if cfg.class_latent:
                    prior = dist.OneHotCategorical(logits=x.new_zeros(cfg.n_classes))
                    y = pyro.sample("y", prior.expand([b]), obs=y)
            out = self._decode_pose(z, u, shift, y)
            pyro.sample("obs", self._likelihood(out), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_scale: float = 1.0):
        cfg = self.config
        b = x.shape[0]
        cond = y if cfg.class_input else None
        loc, scale, logits = self.encoder(x, cond)
        with pyro.plate("patches", b), pyro.poutine.scale(scale=kl_scale):
            if cfg.class_latent and y is None:
                pyro.sample("y", dist.OneHotCategorical(logits=logits), infer={"enumerate": "parallel"})
            i = 0
            if cfg.pose_model:
                pyro.sample("rot", dist.Normal(loc[:, 0:2], scale[:, 0:2]).to_event(1))
                i = 2
                if cfg.translation:
                    pyro.sample("shift", dist.Normal(loc[:, 2:4], scale[:, 2:4]).to_event(1))
                    i = 4
            pyro.sample("z", dist.Normal(loc[:, i:], scale[:, i:]).to_event(1))

    def classify(self, x: torch.Tensor, y: torch.Tensor):
        """The classifier term as a model (Kingma et al.'s M2; Pyro's ``ss_vae_M2``
        example): the class head's ``q(y | x)`` scores known classes ``y`` (codes)
        as an observed site. Trained beside the ELBO under ``poutine.scale``, which
        sets its weight (core/train.py)."""
        with pyro.plate("known", x.shape[0]):
            pyro.sample("y_known", dist.Categorical(logits=self.encoder(x)[2]), obs=y)

    def classify_guide(self, x: torch.Tensor, y: torch.Tensor):
        """Nothing to infer: every class :meth:`classify` sees is observed."""

    # --- deterministic views (no sampling, no training) -----------------------
    @torch.no_grad()
    def posterior(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, coarse: CoarsePose | None = None
    ) -> dict[str, torch.Tensor]:
        """Posterior means and spreads for normalised, flattened patches.

        ``coarse``: the pose the alignment stage turned ``x`` back by
        (:func:`~napari_rvae.core.align.aligned_posterior` runs both); the
        reported angle, rotation vector and shift are then in the patch's own
        frame. ``decoder_angle`` is the pose the decoder draws at; ``angle``,
        the reported one, is the same without alignment and the coarse angle
        with it (measured the more accurate, docs/science.md), the rVAE's own
        remaining rotation then being ``residual_angle``.
        """
        cfg = self.config
        loc, scale, logits = self.encoder(x, y if cfg.class_input else None)
        out: dict[str, torch.Tensor] = {}
        i = 0
        if cfg.pose_model:
            u, us = loc[:, 0:2], scale[:, 0:2]
            out["u"] = u
            out["angle"] = self.angle_from_u(u)
            # Spread of the direction of u: the posterior's scale over its length, per symmetry.
            out["angle_sd"] = (us.pow(2).mean(-1).sqrt() / u.norm(dim=-1).clamp_min(1e-6)) / cfg.symmetry
            i = 2
            if cfg.translation:
                out["shift"], out["shift_sd"] = loc[:, 2:4], scale[:, 2:4]
                i = 4
            out["decoder_angle"] = out["angle"]
            if coarse is not None:
                # Back to the patch's frame: the decoder draws T(R^-1 (c - shift)), so the
                # patch's pose is the aligned one turned by the coarse angle.
                out["residual_angle"] = out["angle"]
                out["decoder_angle"] = out["angle"] + coarse.angle
                out["angle"] = coarse.angle
                out["angle_sd"] = coarse.angle_sd  # the reported angle's own spread, not the residual's
                out["u"] = turn_vectors(u, unit_phase(coarse.angle * cfg.symmetry).to(u.dtype))
                if "shift" in out:
                    out["shift"] = turn_vectors(out["shift"], unit_phase(coarse.angle).to(out["shift"].dtype))
        if "angle_sd" in out:
            out["angle_sd"] = out["angle_sd"] * self.angle_sd_scale
        out["z"], out["z_sd"] = loc[:, i:], scale[:, i:]
        if logits is not None:
            out["class_prob"] = torch.softmax(logits, dim=-1)
        return out

    @torch.no_grad()
    def decode(self, z: torch.Tensor, angle_deg=None, shift=None, y=None) -> torch.Tensor:
        """Images (B, P, P) in data units for latents ``z`` at a chosen pose.

        ``angle_deg`` (scalar or (B,)) is the rotation to draw the content at;
        ``None`` draws it upright. ``shift`` is in grid units.
        """
        p = self.config.patch_size
        if angle_deg is None or not self.config.pose_model:
            cos = sin = None
        else:
            theta = torch.as_tensor(angle_deg, dtype=z.dtype, device=z.device) * (math.pi / 180.0)
            theta = theta.expand(z.shape[0]) if theta.ndim == 0 else theta
            cos, sin = torch.cos(theta), torch.sin(theta)
        out = self.decoder(z, cos, sin, shift if self.config.pose_model else None, y)
        if self.config.likelihood == "bernoulli":
            out = torch.sigmoid(out)
        return (out * self.norm_scale + self.norm_offset).reshape(-1, p, p)
