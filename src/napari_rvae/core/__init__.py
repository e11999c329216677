"""The compute core: patches, models, training, encoding, results and files.

Pure numpy / torch / pyro / scikit-image. It never imports Qt or napari
(``tests/core/test_import_boundary.py`` and the import-linter contract in
``pyproject.toml`` check it), so the CLI, scripts and the widgets share it.
"""

from importlib import import_module

# Loaded on first use, so that reading a setting (the CLI's choices, core.config) does not import torch.
_WHERE = {
    "ModelConfig": "config",
    "TrainConfig": "config",
    "available_devices": "device",
    "resolve_device": "device",
    "encode": "encode",
    "result_columns": "encode",
    "InputError": "errors",
    "load_model": "modelfile",
    "save_model": "modelfile",
    "RVAE": "models",
    "Progress": "train",
    "TrainResult": "train",
    "train": "train",
    "train_iter": "train",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)


def __dir__():
    return __all__
