"""The compute core: patches, models, training, encoding, results and files.

Pure numpy / torch / pyro / scikit-image. It never imports Qt or napari
(``tests/core/test_import_boundary.py`` and the import-linter contract in
``pyproject.toml`` check it), so the CLI, scripts and the widgets share it.
"""

from .config import ModelConfig, TrainConfig
from .device import available_devices, resolve_device
from .encode import encode, result_columns
from .errors import InputError
from .modelfile import load_model, save_model
from .models import RVAE
from .train import Progress, TrainResult, train, train_iter

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
