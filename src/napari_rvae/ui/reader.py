"""npe2 reader: microscope files (DM3/DM4, EMD, SER, MRC, calibrated TIFF, SXM, GWY, IBW) as image layers.

All the reading is done by :func:`napari_rvae.core.readers.read_image_file`;
this module only turns its :class:`ImageData` into napari layer data tuples.
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_rvae.core.errors import InputError
from napari_rvae.core.readers import ImageData, read_image_file

# What napari routes to us (see napari.yaml); .npy/.png are left to napari's builtins.
READER_EXTENSIONS = (".dm3", ".dm4", ".emd", ".ser", ".mrc", ".tif", ".tiff", ".sxm", ".gwy", ".ibw")


def get_reader(path):
    """Return a reader function for ``path``, or None when this plugin cannot read it."""
    if isinstance(path, (list, tuple)):
        if not path:
            return None
        paths = [os.fspath(p) for p in path]
    elif isinstance(path, (str, os.PathLike)):
        paths = [os.fspath(path)]
    else:
        return None
    if not all(Path(p).suffix.lower() in READER_EXTENSIONS for p in paths):
        return None
    if any(os.path.isdir(p) for p in paths):
        return None
    return _make_reader(paths)


def _make_reader(paths):
    def reader(_path=None):
        layers = []
        for p in paths:
            layers.extend(layer_data_tuple(img) for img in read_image_file(p))
        return layers

    return reader


def _napari_unit(unit):
    """The unit as napari (pint) accepts it, or None."""
    if not unit:
        return None
    try:
        import pint

        pint.get_application_registry().Unit(unit)
    except Exception:  # noqa: BLE001 - pint raises several error types for unknown units
        return None
    return unit


def layer_data_tuple(img: ImageData):
    """napari ``(data, kwargs, "image")`` for one :class:`ImageData`."""
    rgb = bool(img.metadata.get("rgb", False))
    nspatial = img.data.ndim - (1 if rgb else 0)
    scale = tuple(img.scale) if len(img.scale) == nspatial else (1.0,) * nspatial
    metadata = dict(img.metadata)
    metadata["unit"] = img.unit
    metadata["pixel_size"] = float(scale[-1])
    kwargs = {"name": img.name, "scale": scale, "metadata": metadata}
    if rgb:
        kwargs["rgb"] = True
    axis_units = img.metadata.get("axis_units")
    if isinstance(axis_units, (list, tuple)) and len(axis_units) == nspatial:
        units = [_napari_unit(u) for u in axis_units]
    else:
        units = [None] * nspatial
        units[-2:] = [_napari_unit(img.unit)] * min(2, nspatial)
    if any(u is not None for u in units):
        kwargs["units"] = tuple(u if u is not None else "pixel" for u in units)
    return (img.data, kwargs, "image")


__all__ = ["get_reader", "layer_data_tuple", "InputError"]
