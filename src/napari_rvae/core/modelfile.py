"""Model files: weights, config, normalisation and version in one file.

Loading never executes code from the file: it is read with
``torch.load(weights_only=True)``, which accepts only tensors and plain
containers, and the config is JSON text. A trained model's
:class:`~napari_rvae.core.resume.TrainingState` (loss history, epochs, Adam's
state, random streams) is stored under ``"training"`` so that training can go
on; files from before it lack the key and still load (training then goes on
with a fresh optimizer). The key's addition is compatible both ways (older
readers ignore it), so the format version stays 1.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .config import ModelConfig
from .errors import InputError
from .models import RVAE
from .resume import TrainingState

FORMAT = "napari-rvae-model"
FORMAT_VERSION = 1
SUFFIX = ".pt"


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("napari-rvae")
    except PackageNotFoundError:  # pragma: no cover - source tree without install
        return "unknown"


def save_model(model: RVAE, path, *, extra: dict | None = None) -> Path:
    """Write ``model`` to ``path`` atomically (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "config": json.dumps(model.config.to_dict()),
        "extra": json.dumps(extra or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if model.training_state is not None:
        payload["training"] = model.training_state.to_payload()
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_model(path, *, device="cpu") -> tuple[RVAE, dict]:
    """Read a model file; returns the model (in eval mode) and its ``extra`` dict.

    The model's ``training_state`` is the file's, or None for a file from
    before it was stored.

    Raises
    ------
    InputError
        If the file is missing, truncated, not a napari-rvae model, or from a
        newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for truncated or foreign files
        raise InputError(f"{path} is not a readable napari-rvae model file ({type(exc).__name__}).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is not a napari-rvae model file.")
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(
            f"{path} was written by a newer napari-rvae ({payload.get('package_version')}); please upgrade."
        )
    try:
        stored = json.loads(payload["config"])
        # Files from before coarse alignment existed hold plain rVAEs.
        stored.setdefault("alignment", "none")
        # ... and before the rotation range test: their references span the full circle.
        stored.setdefault("rotation_range", "full")
        config = ModelConfig.from_dict(stored)
        extra = json.loads(payload.get("extra", "{}"))
        model = RVAE(config)
        state = dict(payload["state_dict"])
        for key in ("ref_spectra", "ref_theta", "ref_window", "ref_range_test", "angle_sd_scale"):  # ditto: defaults
            state.setdefault(key, getattr(model, key))
        # ... and before the third range statistic ("beyond"): it reads as not measured.
        stats = state["ref_range_test"]
        state["ref_range_test"] = torch.cat([stats, model.ref_range_test[stats.numel() :]])
        model.load_state_dict(state)
        if "training" in payload:  # absent in files from before training could go on
            model.training_state = TrainingState.from_payload(payload["training"])
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any mismatch of shapes, keys or types means a damaged file
        raise InputError(f"{path} is damaged: its contents do not match a napari-rvae model ({exc}).") from None
    model.to(device).eval()
    return model, extra
