"""The compute core: patches, models, training, encoding, results and files.

Pure numpy / torch / pyro / scikit-image. It never imports Qt or napari
(``tests/core/test_import_boundary.py`` and the import-linter contract in
``pyproject.toml`` check it), so the CLI, scripts and the widgets share it.
"""

import importlib

from .config import ModelConfig, TrainConfig
from .errors import InputError

# torch and pyro load on first use of these names, not with the package: detection, reading and
# the CLI's start need neither (a dask worker that only detects stays about 185 MB smaller).
_LAZY = {
    "available_devices": ".device",
    "resolve_device": ".device",
    "encode": ".encode",
    "result_columns": ".encode",
    "load_model": ".modelfile",
    "save_model": ".modelfile",
    "RVAE": ".models",
    "Progress": ".train",
    "TrainResult": ".train",
    "train": ".train",
    "train_iter": ".train",
}

__all__ = [
    "RVAE",
    "InputError",
    "ModelConfig",
    "Progress",
    "TrainConfig",
    "TrainResult",
    "available_devices",
    "encode",
    "load_model",
    "resolve_device",
    "result_columns",
    "save_model",
    "train",
    "train_iter",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
