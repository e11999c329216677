"""napari-rvae: rotationally invariant VAEs for atom-resolved images.

Importing the package is cheap: the compute lives in :mod:`napari_rvae.core`
(no Qt, no napari), the viewer side in :mod:`napari_rvae.ui`.
"""

try:
    from importlib.metadata import version as _version

    __version__ = _version("napari-rvae")
except Exception:  # noqa: BLE001  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
