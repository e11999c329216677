"""What the widgets read off napari layers: image shape, frames, geometry, pixel size, the plugin's tags.

One place for these, so that multiscale and RGB images, napari's plugin
proxy and the metadata that marks a results layer are handled the same way
by every widget. Everything here runs on the GUI thread and only reads.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Points

from napari_rvae.core.errors import InputError

META = "napari_rvae"  # the metadata key that marks (and describes) a layer made here
LABEL_COLUMN = "label"  # the points feature the Pick widget writes classes into, and Train reads them from
_UNCALIBRATED = ("", "pixel", "px", "dimensionless")
_UNIT_SYMBOLS = {"micrometer": "µm", "nanometer": "nm", "angstrom": "Å"}


def unproxied(obj):
    """The object behind napari's plugin proxy (or ``obj`` itself).

    napari hands plugin widgets a proxy viewer whose every attribute access
    returns a fresh proxy, so ``is`` never matches the same layer twice and a
    model read from ``metadata`` would be proxied on every call.
    """
    return getattr(obj, "__wrapped__", obj)


def results_meta(layer) -> dict | None:
    """The napari-rvae description of a layer made by :func:`~napari_rvae.ui.result_layers.show_results`, or None."""
    meta = getattr(unproxied(layer), "metadata", None) or {}
    info = meta.get(META)
    return info if isinstance(info, dict) else None


def is_results_points(layer) -> bool:
    """Whether a layer is a results points layer (it carries the analysis in its metadata)."""
    return isinstance(layer, Points) and (results_meta(layer) or {}).get("role") == "points"


def full_resolution_data(image_layer):
    """The layer's data at full resolution: level 0 of a multiscale pyramid, else the data itself."""
    return image_layer.data[0] if getattr(image_layer, "multiscale", False) else image_layer.data


def image_shape(image_layer) -> tuple[int, int]:
    """(H, W) of a 2-D (or RGB) image layer's full-resolution data."""
    shape = tuple(int(s) for s in np.shape(full_resolution_data(image_layer)))
    return shape[-3:-1] if getattr(image_layer, "rgb", False) else shape[-2:]


def image_geometry(image_layer) -> dict:
    """Layer keyword arguments that register a 2-D layer onto ``image_layer``."""
    if image_layer is None:
        return {}
    geometry = {"scale": tuple(image_layer.scale[-2:]), "translate": tuple(image_layer.translate[-2:])}
    units = getattr(image_layer, "units", None)
    if units is not None:
        geometry["units"] = tuple(units[-2:])
    return geometry


def pixel_size_and_unit(image_layer) -> tuple[float | None, str | None]:
    """The image's pixel size (x axis) and unit for reports and TIFF export; None when uncalibrated."""
    if image_layer is None:
        return None, None
    return scale_and_unit(image_layer.scale[-1:], getattr(image_layer, "units", None))


def scale_and_unit(scale, units) -> tuple[float | tuple | None, str | None]:
    """The physical size of a pixel along the last ``len(scale)`` axes, and the unit; None when uncalibrated.

    ``scale`` and ``units`` as a layer (or its saved state) has them: a single
    size comes back as a float, several as a tuple.
    """
    unit = None if units is None or not len(units) else str(units[-1])
    if unit is None or unit in _UNCALIBRATED:
        return None, None
    sizes = tuple(float(s) for s in scale)
    return (sizes[0] if len(sizes) == 1 else sizes), _UNIT_SYMBOLS.get(unit, unit)


def points_in_image_pixels(points_layer, image_layer) -> np.ndarray:
    """The points' ``(y, x)`` in the image's pixel grid (through both layers' scale and translate)."""
    pts = np.array(points_layer.data, dtype=np.float64, copy=True)
    if pts.ndim != 2 or pts.shape[0] == 0:
        return np.zeros((0, 2))
    world = pts[:, -2:] * np.asarray(points_layer.scale[-2:]) + np.asarray(points_layer.translate[-2:])
    if image_layer is None:
        return world
    return (world - np.asarray(image_layer.translate[-2:])) / np.asarray(image_layer.scale[-2:])


# ----------------------------------------------------------------------------
# stacks: image layers with a leading (frame) axis, points with (t, y, x)


def leading_shape(image_layer) -> tuple[int, ...]:
    """The image's axes before (y, x) (and before RGB's channels): ``()`` for a 2-D image, ``(T,)`` for a movie.

    Reads the shape only: a dask-backed layer stays lazy.
    """
    shape = tuple(int(s) for s in np.shape(full_resolution_data(image_layer)))
    return shape[:-3] if getattr(image_layer, "rgb", False) else shape[:-2]


def stack_frames(image_layer) -> int:
    """The number of frames of a ``(T, Y, X)`` image layer, 0 for a 2-D one.

    Raises
    ------
    InputError
        For more than one axis before ``(y, x)``.
    """
    lead = leading_shape(image_layer)
    if len(lead) > 1:
        raise InputError(
            f"The image {image_layer.name!r} has {len(lead) + 2} axes {lead + image_shape(image_layer)}: "
            "napari-rvae takes a 2-D image or a (T, Y, X) stack; make a layer of one plane per frame first."
        )
    return lead[0] if lead else 0


def current_frame(viewer, image_layer) -> int:
    """The frame of a ``(T, Y, X)`` image layer the viewer shows now (through its scale and translate)."""
    point = np.asarray(viewer.dims.point, dtype=float)
    world_t = point[-image_layer.ndim] if len(point) >= image_layer.ndim else 0.0
    t = int(np.rint((world_t - float(image_layer.translate[0])) / float(image_layer.scale[0])))
    return int(np.clip(t, 0, max(stack_frames(image_layer) - 1, 0)))


def points_in_frames(points_layer, image_layer) -> np.ndarray:
    """The points' ``(t, y, x)`` in the image's pixel grid, through both layers' scale and translate on every axis.

    Raises
    ------
    InputError
        When the points have no frame axis (a 2-D points layer over a stack).
    """
    pts = np.array(points_layer.data, dtype=np.float64, copy=True)
    if pts.ndim != 2 or pts.shape[0] == 0:
        return np.zeros((0, 3))
    if pts.shape[1] < 3:
        raise InputError(
            f"The points layer {points_layer.name!r} is 2-D but the image {image_layer.name!r} is a stack: "
            "detect on every frame in Pick atoms, or add points with a frame (t, y, x)."
        )
    world = pts[:, -3:] * np.asarray(points_layer.scale[-3:]) + np.asarray(points_layer.translate[-3:])
    return (world - np.asarray(image_layer.translate[-3:])) / np.asarray(image_layer.scale[-3:])


def stack_geometry(image_layer) -> dict:
    """Layer keyword arguments that register an n-D layer onto ``image_layer``: scale, translate, units of every axis."""
    if image_layer is None:
        return {}
    geometry = {"scale": tuple(image_layer.scale), "translate": tuple(image_layer.translate)}
    units = getattr(image_layer, "units", None)
    if units is not None:
        geometry["units"] = tuple(units)
    return geometry
