"""A real trained analysis of a two-grain lattice, made once per test process (shared by the results tests)."""

from __future__ import annotations

from functools import cache

import numpy as np

from napari_rvae.core.analysis import analyse_iter, apply_model
from napari_rvae.core.config import ModelConfig, TrainConfig
from napari_rvae.core.synthetic import make_lattice
from napari_rvae.core.train import drive

ROTATION = 40.0  # right grain minus left grain, degrees CCW
SCALE, TRANSLATE = (0.5, 0.5), (10.0, 20.0)  # a non-unit pixel size and an offset: layers must follow them


@cache
def two_grains():
    """A 96 x 192 lattice: grain 0 (left) at 0 deg, grain 1 (right) at +40 deg."""
    return make_lattice(
        (96, 192), spacing=12, grains=((48, 48, 0.0), (48, 144, ROTATION)), second_species="none", seed=0
    )


@cache
def trained_rvae():
    """A real 60-epoch rVAE training on the lattice's ~100 patches (a few seconds)."""
    lat = two_grains()
    return drive(
        analyse_iter(
            lat.image,
            lat.points,
            ModelConfig(patch_size=16, hidden_dim=32),
            TrainConfig(epochs=60, batch_size=32, lr=3e-3, device="cpu", threads=1),
        )
    )


@cache
def trained_crvae():
    """A class model (classes = grains) after a 2-epoch training: its class column is the grain."""
    lat = two_grains()
    analysis = drive(
        analyse_iter(
            lat.image,
            lat.points,
            ModelConfig(kind="crvae", n_classes=2, patch_size=16, hidden_dim=32),
            TrainConfig(epochs=2, batch_size=32, device="cpu", threads=1),
            labels=lat.grain,
        )
    )
    return analysis


def reapply(analysis):
    """The same model applied again (a new Analysis object, as the Apply button makes)."""
    lat = two_grains()
    labels = lat.grain if analysis.model.config.kind == "crvae" else None
    return apply_model(lat.image, lat.points, analysis.model, labels=labels)


def add_source(viewer, with_units=True):
    """The scan and its atoms as a user would have them: scaled, translated, with a feature column."""
    lat = two_grains()
    units = {"units": ("nm", "nm")} if with_units else {}
    img = viewer.add_image(lat.image.copy(), name="scan", scale=SCALE, translate=TRANSLATE, **units)
    pts = viewer.add_points(
        lat.points * np.asarray(SCALE) + np.asarray(TRANSLATE),
        name="atoms",
        scale=(1, 1),
        features={"grain": lat.grain, "note": ["user"] * len(lat.points)},
        **units,
    )
    return img, pts


def circular_mean(deg, period=360.0):
    phases = np.exp(2j * np.pi * np.asarray(deg, dtype=float) / period)
    return float(np.angle(np.nanmean(phases)) * period / (2 * np.pi)) % period


def circular_diff(a, b, period=360.0):
    return (a - b + period / 2) % period - period / 2
