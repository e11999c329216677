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

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from . import align
from .config import ModelConfig
from .decoder import SpatialDecoder
from .rotation_fold import rotated_first_layer, rotation_operator

# The class head reads rotation-pooled features, which vary little between
# patches, so its logits start near zero and Adam at lr 1e-3 takes hundreds of
# steps to make them decisive; a gain on the head is a per-head learning rate.
# Measured on rotated digits (ssrvae, 10 labels per digit, 1000 patches, 4
# epochs), with the classifier term of core/train.py: labelled patches 12 %
# right at gain 1, 74 % at gain 10 (docs/science.md).
LOGIT_GAIN = 10.0

# With coarse alignment the rVAE's own rotation comes on top of the
# synchronised angle, with a prior tied near zero like the reference rVAE's
# (u ~ N((2, 0), I)). It is a preference, not a bound: on rotated digits the
# rVAE still turns many patches far from their coarse angle, and lengths 4
# and 8 measured the same (docs/science.md).
RESIDUAL_ANGLE_PRIOR = 2.0


# Normalised values (training range 0..1) are bounded to +/- this for the Gaussian likelihood.
GAUSSIAN_BOUND = 1e4


def _mlp(n_in: int, width: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(n_in if i == 0 else width, width), nn.Tanh()]
    return nn.Sequential(*mods)


def rotation_grids(patch_size: int, n_rotations: int) -> torch.Tensor:
    """Sampling grids (K, P, P, 2) that turn a patch by ``-2 pi k / K``, k = 0..K-1.

    ``F.grid_sample(x, grid[k])`` undoes a counter-clockwise (as displayed)
    rotation by ``2 pi k / K``; checked against ``skimage.transform.rotate``.
    """
    t = -2.0 * math.pi * torch.arange(n_rotations, dtype=torch.float32) / n_rotations
    c, s = torch.cos(t), torch.sin(t)
    zero = torch.zeros_like(t)
    theta = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)], -2)
    return F.affine_grid(theta, (n_rotations, 1, patch_size, patch_size), align_corners=True)


def disk_mask(patch_size: int) -> torch.Tensor:
    """(P*P,) soft-edged disk: what any rotation of the patch keeps inside the frame."""
    return align.disk(patch_size).reshape(-1)


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
            self.register_buffer("grids", rotation_grids(patch_size, k), persistent=False)
            self.register_buffer("mask", disk_mask(patch_size), persistent=False)
            self.register_buffer("rot_phase", torch.stack([torch.cos(symmetry * ang), torch.sin(symmetry * ang)], -1), persistent=False)
            self.register_buffer("shift_phase", torch.stack([torch.cos(ang), torch.sin(ang)], -1), persistent=False)

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

    @staticmethod
    def _turn(v: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """Rotate 2-vectors v (B, K, 2) by per-copy angles given as (K, 2) cos/sin."""
        c, s = phase[:, 0], phase[:, 1]
        return torch.stack([v[..., 0] * c - v[..., 1] * s, v[..., 0] * s + v[..., 1] * c], -1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        k = self.n_rotations
        if k > 1:
            # Speed (#7): the K rotated copies folded into the first layer, one GEMM (see rotation_fold).
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
            u = self._turn(u, self.rot_phase)
            shift = self._turn(shift, self.shift_phase) if self.translation else shift
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


def _turn(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotate 2-vectors (B, 2) counter-clockwise by angles (B,)."""
    return Encoder._turn(v, torch.stack([torch.cos(theta), torch.sin(theta)], -1).to(v.dtype))


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
    training patches, so encoding new patches uses exactly the same scaling.
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
        self.decoder = SpatialDecoder(config.patch_size, config.latent_dim, config.hidden_dim, config.hidden_layers, n_cls)
        # A coordinate MLP first learns a blurred blob (spectral bias) and sits on
        # that plateau for tens of epochs; steeper coordinate features let it draw
        # detail early. Measured on 500 rotated digits, 10 epochs: loss per patch
        # 236 with x4 against 305 with the default init (docs/science.md).
        with torch.no_grad():
            self.decoder.coord.weight.mul_(4.0)
        self.register_buffer("norm_offset", torch.tensor(0.0))
        self.register_buffer("norm_scale", torch.tensor(1.0))
        # Coarse alignment's synchronised reference (core/align.py): angular
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
        # (calibrate_angle_sd); 1 until training measures it.
        self.register_buffer("angle_sd_scale", torch.tensor(1.0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The reference's size depends on the training data: take the file's shape.
        for name in ("ref_spectra", "ref_theta"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- coarse alignment ---------------------------------------------------
    def fit_alignment(self, x: torch.Tensor, *, seed: int = 0) -> None:
        """Synchronise normalised training patches (B, P*P) into the stored reference."""
        anchors = align.pick_anchors(x.shape[0], align.MAX_ANCHORS, seed=seed).to(x.device)
        ref = align.build_reference(self._spectra(x[anchors]), symmetry=self.config.symmetry,
                                    keep=align.REFERENCE_SIZE, rotation_range=self.config.rotation_range, seed=seed)
        self.ref_spectra = torch.view_as_real(ref.spec).to(torch.float16)
        self.ref_theta = ref.theta.float()
        self.ref_window.fill_(math.pi if ref.window is None else ref.window)
        self.ref_range_test.copy_(torch.tensor([ref.loss, ref.concentration, ref.beyond]))

    @property
    def reference_window(self) -> float | None:
        """Half-width (radians) of the stored reference's rotation range; ``None``: the full circle."""
        window = float(self.ref_window)
        return None if window >= math.pi / self.config.symmetry else window

    def alignment_summary(self) -> dict | None:
        """How the coarse alignment measured angles (for reports); ``None`` without one."""
        if not self.config.coarse_alignment or self.ref_theta.numel() == 0:
            return None
        window = self.reference_window
        loss, concentration, beyond = (float(v) for v in self.ref_range_test)
        if window is None:
            text = ("Rotations of any size: the angle's zero is arbitrary (one for all patches that match "
                    "each other under some rotation).")
        else:
            text = (f"Rotations within +/-{math.degrees(window):.0f} deg of a common upright: angles are measured "
                    "from the mean pose of similar patches.")
        return {
            "description": text,
            "rotation_range": "full" if window is None else "limited",
            "window_deg": None if window is None else round(math.degrees(window), 3),
            "range_test_loss": None if math.isnan(loss) else round(loss, 4),
            "range_test_threshold": align.LIMITED_RANGE_LOSS,
            "range_test_concentration": None if math.isnan(concentration) else round(concentration, 4),
            "range_test_min_concentration": align.LIMITED_RANGE_CONCENTRATION,
            "range_test_beyond": None if math.isnan(beyond) else round(beyond, 4),
            "range_test_max_beyond": align.LIMITED_RANGE_BEYOND,
            "reference_patches": int(self.ref_theta.numel()),
        }

    def _spectra(self, x: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        return align.angular_spectra(x.reshape(-1, p, p).float(), self.config.symmetry)

    def coarse_align(self, x: torch.Tensor, chunk: int = 4096, *, inplace: bool = False, spread: bool = False):
        """``(turned patches (B, P*P), coarse angles (B,) in radians)``; ``(x, None)`` without alignment.

        ``inplace`` overwrites ``x`` (training's own copy: saves its size in memory).
        ``spread``: a third item, the angles' uncalibrated standard errors
        (:func:`~napari_rvae.core.align.reference_angles`; ``None`` without alignment).
        """
        if not self.config.coarse_alignment or self.ref_theta.numel() == 0:
            return (x, None, None) if spread else (x, None)
        p, n = self.config.patch_size, self.config.symmetry
        ref = torch.view_as_complex(self.ref_spectra.float().contiguous())
        out, angles, errors = (x if inplace else torch.empty_like(x)), [], []
        for s in range(0, x.shape[0], chunk):
            part = x[s : s + chunk]
            theta, error = align.reference_angles(self._spectra(part), ref, self.ref_theta, symmetry=n,
                                                  window=self.reference_window, spread=True)
            out[s : s + chunk] = align.rotate_patches(part.reshape(-1, p, p), theta.to(x.dtype)).reshape(part.shape)
            angles.append(theta)
            errors.append(error)
        return (out, torch.cat(angles), torch.cat(errors)) if spread else (out, torch.cat(angles))

    @torch.no_grad()
    def calibrate_angle_sd(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> float:
        """Scale ``angle_sd`` so that it covers about 68 % of the angle's own noise; returns the factor.

        The noise is measured as issue #17's equivariance check does on a whole
        image: each patch of ``x`` (normalised, (B, P*P); a sample of the
        training patches) is turned by a random angle (10-40 % of the period,
        either sense) and encoded again; ``d = angle(turned) - angle - turn``
        should be 0. The factor is the 68th percentile of
        ``|d| / sqrt(sd^2 + sd_turned^2)``, so that about 68 % of such
        differences lie within their error bar. Measured on the MoS2 scan
        (``benchmarks/bench_real.py``): the uncalibrated spread of the votes
        was 2-4 times too large, the rVAE's own posterior spread 6-50 times
        (docs/science.md).
        """
        if not self.config.pose_model or x.shape[0] < 2:
            return float(self.angle_sd_scale)
        p, period = self.config.patch_size, 2 * math.pi / self.config.symmetry
        gen = torch.Generator().manual_seed(seed)
        size = torch.rand(x.shape[0], generator=gen) * 0.3 + 0.1
        sense = torch.where(torch.rand(x.shape[0], generator=gen) < 0.5, -1.0, 1.0)
        turn = (size * sense * period).to(x.device, x.dtype)
        # No disk: the corners a turn leaves empty lie outside the circle the angle reads,
        # as with a turned image, where no patch has empty corners.
        turned = align.rotate_patches(x.reshape(-1, p, p), -turn, mask=False).reshape(x.shape)
        self.angle_sd_scale.fill_(1.0)
        before, after = self.posterior(x, y), self.posterior(turned, y)
        n = self.config.symmetry
        d = torch.angle(torch.polar(torch.ones_like(turn), n * (after["angle"] - before["angle"] - turn))) / n
        bar = torch.sqrt(before["angle_sd"] ** 2 + after["angle_sd"] ** 2)
        ratio = (d.abs() / bar.clamp_min(1e-12)).float()
        ratio = ratio[torch.isfinite(ratio)]
        scale = float(torch.quantile(ratio, 0.68)) if ratio.numel() else 1.0
        if not (math.isfinite(scale) and scale > 0):
            scale = 1.0
        self.angle_sd_scale.fill_(scale)
        return scale

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
    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None, *, aligned: bool = False) -> dict[str, torch.Tensor]:
        """Posterior means and spreads for normalised, flattened patches.

        With coarse alignment the patches are first turned by their coarse
        angle (skip with ``aligned=True`` if they already were); the reported
        angle, rotation vector and shift are then in the patch's own frame.
        ``decoder_angle`` is the pose the decoder draws at; ``angle``, the
        reported one, is the same without alignment and the coarse angle with
        it (measured the more accurate, docs/science.md), the rVAE's own
        remaining rotation then being ``residual_angle``.
        """
        cfg = self.config
        coarse = coarse_error = None
        if not aligned:
            x, coarse, coarse_error = self.coarse_align(x, spread=True)
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
                out["decoder_angle"] = out["angle"] + coarse
                out["angle"] = coarse
                out["angle_sd"] = coarse_error  # the reported angle's own spread, not the residual's
                out["u"] = _turn(u, coarse * cfg.symmetry)
                if "shift" in out:
                    out["shift"] = _turn(out["shift"], coarse)
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
