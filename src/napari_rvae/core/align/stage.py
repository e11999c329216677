"""Coarse alignment as a stage of the data path: patches -> aligned patches -> model.

The model only stores the reference (its ``ref_*`` buffers, so that model files
carry it); :class:`CoarseAlignment` fits that reference from the training
patches and turns any patch back by its coarse angle before the rVAE reads it.
The rVAE then learns the content and what rotation is left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..rotation import rotate_patches
from .matching import reference_angles
from .reference import MAX_ANCHORS, REFERENCE_SIZE, build_reference, pick_anchors
from .rotation_range import (
    LIMITED_RANGE_BEYOND,
    LIMITED_RANGE_CONCENTRATION,
    LIMITED_RANGE_LOSS,
)
from .spectra import angular_spectra


@dataclass(frozen=True)
class CoarsePose:
    """What the stage turned each patch back by: ``angle`` (B,) in radians and its ``angle_sd`` (B,).

    ``angle_sd`` is the votes' uncalibrated standard error
    (:func:`~napari_rvae.core.align.reference_angles`).
    """

    angle: torch.Tensor
    angle_sd: torch.Tensor


class CoarseAlignment:
    """The coarse-alignment stage of a model, reading and writing the reference it stores.

    Parameters
    ----------
    model : RVAE
        Holds the configuration (``coarse_alignment``, ``symmetry``,
        ``patch_size``, ``rotation_range``) and the reference buffers
        ``ref_spectra``, ``ref_theta``, ``ref_window`` and ``ref_range_test``.
    """

    def __init__(self, model):
        self.model = model
        self.config = model.config

    @property
    def fitted(self) -> bool:
        """Whether patches are turned: alignment chosen and its reference filled by training."""
        return bool(self.config.coarse_alignment) and self.model.ref_theta.numel() > 0

    @property
    def window(self) -> float | None:
        """Half-width (radians) of the stored reference's rotation range; ``None``: the full circle."""
        window = float(self.model.ref_window)
        return None if window >= math.pi / self.config.symmetry else window

    def fit(self, x: torch.Tensor, *, seed: int = 0) -> None:
        """Synchronise normalised training patches (B, P*P) into the model's stored reference."""
        model = self.model
        anchors = pick_anchors(x.shape[0], MAX_ANCHORS, seed=seed).to(x.device)
        ref = build_reference(
            self._spectra(x[anchors]),
            symmetry=self.config.symmetry,
            keep=REFERENCE_SIZE,
            rotation_range=self.config.rotation_range,
            seed=seed,
        )
        model.ref_spectra = torch.view_as_real(ref.spec).to(torch.float16)
        model.ref_theta = ref.theta.float()
        model.ref_window.fill_(math.pi if ref.window is None else ref.window)
        model.ref_range_test.copy_(torch.tensor([ref.loss, ref.concentration, ref.beyond]))

    def __call__(
        self, x: torch.Tensor, chunk: int = 4096, *, inplace: bool = False
    ) -> tuple[torch.Tensor, CoarsePose | None]:
        """``(turned patches (B, P*P), their CoarsePose)``; ``(x, None)`` without alignment.

        ``inplace`` overwrites ``x`` (training's own copy: saves its size in memory).
        """
        if not self.fitted:
            return x, None
        p, n = self.config.patch_size, self.config.symmetry
        ref = torch.view_as_complex(self.model.ref_spectra.float().contiguous())
        out, angles, errors = (x if inplace else torch.empty_like(x)), [], []
        for s in range(0, x.shape[0], chunk):
            part = x[s : s + chunk]
            theta, error = reference_angles(
                self._spectra(part), ref, self.model.ref_theta, symmetry=n, window=self.window, spread=True
            )
            out[s : s + chunk] = rotate_patches(part.reshape(-1, p, p), theta.to(x.dtype)).reshape(part.shape)
            angles.append(theta)
            errors.append(error)
        return out, CoarsePose(torch.cat(angles), torch.cat(errors))

    def summary(self) -> dict | None:
        """How the coarse alignment measured angles (for reports); ``None`` without one."""
        if not self.fitted:
            return None
        window = self.window
        loss, concentration, beyond = (float(v) for v in self.model.ref_range_test)
        if window is None:
            text = (
                "Rotations of any size: the angle's zero is arbitrary (one for all patches that match "
                "each other under some rotation)."
            )
        else:
            text = (
                f"Rotations within +/-{math.degrees(window):.0f} deg of a common upright: angles are measured "
                "from the mean pose of similar patches."
            )
        return {
            "description": text,
            "rotation_range": "full" if window is None else "limited",
            "window_deg": None if window is None else round(math.degrees(window), 3),
            "range_test_loss": _rounded(loss),
            "range_test_threshold": LIMITED_RANGE_LOSS,
            "range_test_concentration": _rounded(concentration),
            "range_test_min_concentration": LIMITED_RANGE_CONCENTRATION,
            "range_test_beyond": _rounded(beyond),
            "range_test_max_beyond": LIMITED_RANGE_BEYOND,
            "reference_patches": int(self.model.ref_theta.numel()),
        }

    def _spectra(self, x: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        return angular_spectra(x.reshape(-1, p, p).float(), self.config.symmetry)


def _rounded(statistic: float) -> float | None:
    """A range-test statistic for a report: ``None`` where it was not measured (NaN)."""
    return None if math.isnan(statistic) else round(statistic, 4)


def aligned_posterior(model, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The data path of encoding: the alignment stage, then the model's posterior.

    ``x``: normalised patches (B, P*P). The model reads them turned back by
    their coarse angle and reports the pose in each patch's own frame
    (``RVAE.posterior``'s ``coarse``).
    """
    aligned, coarse = CoarseAlignment(model)(x)
    return model.posterior(aligned, y, coarse=coarse)
