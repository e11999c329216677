"""Results as layers over the scan: points with features, angle map, arrows, class map.

:func:`show_results` runs on the GUI thread (the Train widget calls it from its
worker's ``returned`` handler); the maps, the only heavy part, come ready from
the worker (:func:`napari_rvae.core.exports.result_maps`), so a 4096 x 4096
scan does not freeze the viewer for the ~1.5 s its tessellation takes. Every
layer it makes is registered to the source image (same scale, translate and
units) and tagged in
``layer.metadata[META]`` with its run and role, so that a re-run replaces
exactly this run's layers and the Latent explorer can find the analysis. The
user's own layers are never modified or removed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from napari.utils import Colormap
from napari.utils.colormaps import DirectLabelColormap

from napari_rvae.core.bond_order import lattice_period
from napari_rvae.core.errors import InputError
from napari_rvae.core.exports import point_colors, result_maps, write_maps_tiff
from napari_rvae.core.maps import (
    class_colors,
    cyclic_colors,
    orientation_vectors,
    typical_spacing,
)
from napari_rvae.core.points_io import write_csv_atomic

META = "napari_rvae"  # the metadata key that marks (and describes) a layer made here
ROLES = ("angle_map", "psi_map", "class_map", "orientation", "points")  # bottom to top
COLOR_BY = ("angle", "class")


def cyclic_colormap(name: str = "rvae cyclic") -> Colormap:
    """A napari colormap for angles: the core's colour wheel, closed so 0 and the period agree."""
    colors = cyclic_colors(256)
    colors = np.vstack([colors, colors[:1]])
    return Colormap(colors, name=name, display_name="cyclic (angle)", controls=np.linspace(0.0, 1.0, len(colors)))


def class_label_colormap(n_classes: int) -> DirectLabelColormap:
    """Labels colours matching the points' class colours (label k + 1 is class k)."""
    color_dict = {None: np.zeros(4), 0: np.zeros(4)}
    for k, rgba in enumerate(class_colors(np.arange(max(int(n_classes), 1)))):
        color_dict[k + 1] = rgba
    return DirectLabelColormap(color_dict=color_dict)


def unproxied(obj):
    """The object behind napari's plugin proxy (or ``obj`` itself).

    napari hands plugin widgets a proxy viewer whose every attribute access
    returns a fresh proxy, so ``is`` never matches the same layer twice and a
    model read from ``metadata`` would be proxied on every call.
    """
    return getattr(obj, "__wrapped__", obj)


def results_meta(layer) -> dict | None:
    """The napari-rvae description of a layer made by :func:`show_results`, or None."""
    meta = getattr(unproxied(layer), "metadata", None) or {}
    info = meta.get(META)
    return info if isinstance(info, dict) else None


def run_layers(viewer, run_name: str) -> list:
    """This run's result layers in the viewer (found by metadata, not by name)."""
    return [lay for lay in viewer.layers if (results_meta(lay) or {}).get("run") == run_name]


def image_shape(image_layer) -> tuple[int, int]:
    """(H, W) of a 2-D (or RGB) image layer's full-resolution data."""
    data = image_layer.data[0] if getattr(image_layer, "multiscale", False) else image_layer.data
    shape = tuple(int(s) for s in np.shape(data))
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
    """The image's pixel size (x axis) and unit for TIFF export; None when uncalibrated."""
    if image_layer is None:
        return None, None
    units = getattr(image_layer, "units", None)
    unit = None if units is None else str(units[-1])
    if unit in (None, "", "pixel", "px", "dimensionless"):
        return None, None
    return float(image_layer.scale[-1]), {"micrometer": "µm", "nanometer": "nm", "angstrom": "Å"}.get(unit, unit)


def results_features(analysis, points_layer=None) -> pd.DataFrame:
    """``y``, ``x`` (image pixels), the encoded columns, then the source points' own columns.

    The source's feature columns are carried for the kept points when the
    source still has one row per analysed point (the user may have edited it
    while training ran); columns the results also have are not carried.
    """
    centers = np.asarray(analysis.centers, dtype=float).reshape(-1, 2)
    table = analysis.table.reset_index(drop=True)
    parts = [pd.DataFrame({"y": centers[:, 0], "x": centers[:, 1]}), table]
    if points_layer is not None:
        source = points_layer.features
        if len(source.columns) and len(source) == analysis.n_points:
            carried = source.iloc[np.asarray(analysis.kept, dtype=int)].reset_index(drop=True)
            carried = carried.drop(columns=[c for c in carried.columns if c in table.columns or c in ("y", "x")])
            parts.append(carried)
    return pd.concat(parts, axis=1)


def show_results(
    viewer,
    analysis,
    *,
    image_layer,
    points_layer=None,
    run_name: str,
    symmetry: int = 1,
    color_by: str = "angle",
    map_mode: str = "nearest",
    radius: float | None = None,
    maps: dict[str, np.ndarray] | None = None,
    psi_period: float | None = None,
) -> list:
    """Add (or replace) this run's result layers over the source image.

    Parameters
    ----------
    viewer : napari.Viewer
    analysis : napari_rvae.core.analysis.Analysis
        Centers in the image's pixels, one table row per center.
    image_layer : napari.layers.Image
        The analysed image; every result layer gets its scale, translate and units.
    points_layer : napari.layers.Points, optional
        The analysed points; its feature columns are carried into the results.
    run_name : str
        Names the layers (``"{run_name} atoms"``, ...); a later call with the
        same name replaces them.
    symmetry : int
        n-fold symmetry: angles, maps and colours wrap at ``360 / symmetry``.
    color_by : {"angle", "class"}
        How the points are coloured.
    map_mode : {"nearest", "smooth"}
        The angle map's interpolation (:func:`napari_rvae.core.maps.angle_map`).
    radius : float, optional
        Map pixels farther than this (image pixels) from any atom stay empty;
        default the typical atom spacing.
    maps : dict, optional
        This analysis's :func:`~napari_rvae.core.exports.result_maps` for the
        image's shape, ``period``, ``map_mode`` and ``radius``, computed off the
        GUI thread; computed here when not given.
    psi_period : float, optional
        The lattice check's period (degrees) for the psi map; found from the
        atoms when the table has ``psi_angle`` and it is not given.

    Returns
    -------
    list of napari layers
        The new layers, bottom to top: angle map, class map, orientation
        arrows (when the model has angles / classes), points.
    """
    if color_by not in COLOR_BY:
        raise InputError(f"Colour the points by one of {COLOR_BY}, not {color_by!r}.")
    if int(symmetry) < 1:
        raise InputError(f"The symmetry must be 1, 2, 3, 4 or 6, not {symmetry}.")
    period = 360.0 / int(symmetry)
    table = analysis.table.reset_index(drop=True)
    centers = np.asarray(analysis.centers, dtype=float).reshape(-1, 2)
    geometry = image_geometry(image_layer)
    spacing = typical_spacing(centers)
    radius = spacing if radius is None else float(radius)
    base = {"run": run_name, "analysis": analysis, "model": analysis.model, "symmetry": int(symmetry),
            "period": period, "image_layer": getattr(image_layer, "name", None),
            "source_points": getattr(points_layer, "name", None)}

    def meta(role: str, **more) -> dict:
        return {META: {**base, "role": role, **more}}

    has_angle, has_class = "angle" in table, "class" in table
    if psi_period is None and "psi_angle" in table and len(centers) >= 2:
        psi_period = lattice_period(centers)
    new = []
    if image_layer is not None and (has_angle or has_class):
        if maps is None:
            maps = result_maps(image_shape(image_layer), centers, table, period=period, mode=map_mode, radius=radius,
                               psi_period=psi_period)
        if "angle_map" in maps:
            new.append(("Image", maps["angle_map"], dict(
                name=f"{run_name} angle map", colormap=cyclic_colormap(), contrast_limits=(0.0, period),
                opacity=0.5, blending="translucent", metadata=meta("angle_map", map_mode=map_mode, radius=radius),
            )))
        if "psi_map" in maps and psi_period is not None:
            # The learning-free lattice check, hidden at first: switch it on to compare with the angle map.
            new.append(("Image", maps["psi_map"], dict(
                name=f"{run_name} psi map", colormap=cyclic_colormap(), contrast_limits=(0.0, psi_period),
                opacity=0.5, blending="translucent", visible=False,
                metadata=meta("psi_map", map_mode=map_mode, radius=radius, psi_period=psi_period),
            )))
        if "class_map" in maps:
            n_classes = int(getattr(analysis.model.config, "n_classes", 0) or table["class"].max() + 1)
            new.append(("Labels", maps["class_map"], dict(
                name=f"{run_name} class map", opacity=0.4, colormap=class_label_colormap(n_classes),
                metadata=meta("class_map", radius=radius),
            )))
    if has_angle:
        vectors = orientation_vectors(centers, table["angle"].to_numpy(), length=0.45 * spacing)
        new.append(("Vectors", vectors, dict(
            name=f"{run_name} orientation", edge_color=point_colors(table, "angle", period),
            edge_width=max(0.08 * spacing, 0.5), length=1.0, vector_style="arrow", metadata=meta("orientation"),
        )))
    features = results_features(analysis, points_layer)
    colors = point_colors(table, color_by, period)
    new.append(("Points", centers, dict(
        name=f"{run_name} atoms", features=features, face_color=colors, border_width=0, size=max(0.4 * spacing, 1.0),
        metadata=meta("points", color_by=color_by),
    )))

    # Replace the previous layers of this run only after the new ones were made.
    for old in run_layers(viewer, run_name):
        viewer.layers.remove(old)
    layers = []
    for kind, data, kwargs in new:
        add = getattr(viewer, f"add_{kind.lower()}")
        layers.append(add(data, **geometry, **kwargs))
    return layers


def recolor_points(layer, color_by: str) -> None:
    """Colour a results points layer by ``"angle"`` or ``"class"`` (no-op for other layers)."""
    info = results_meta(layer)
    if info is None or info.get("role") != "points":
        return
    layer.face_color = point_colors(layer.features, color_by, info.get("period", 360.0))
    info["color_by"] = color_by


def run_maps(viewer, run_name: str) -> dict[str, np.ndarray]:
    """This run's maps by role (``angle_map``, ``class_map``) as they are in the viewer."""
    return {info["role"]: np.asarray(lay.data) for lay in run_layers(viewer, run_name)
            if (info := results_meta(lay))["role"] in ("angle_map", "psi_map", "class_map")}


def export_maps_tiff(viewer, run_name: str, folder, image_layer=None) -> list[Path]:
    """Write this run's maps as ``{run} angle_map.tif`` etc., with the image's pixel size.

    Returns the written paths; raises InputError when the run has no maps.
    """
    maps = run_maps(viewer, run_name)
    if not maps:
        raise InputError(f"The run {run_name!r} has no maps in the viewer to export.")
    if image_layer is None:
        # The map layers carry the image's scale and units themselves.
        image_layer = next(lay for lay in run_layers(viewer, run_name) if results_meta(lay)["role"] in maps)
    pixel_size, unit = pixel_size_and_unit(image_layer)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_name)
    return write_maps_tiff(folder, maps, pixel_size=pixel_size, unit=unit, prefix=f"{safe}_")


def export_table_csv(points_layer, path) -> Path:
    """Write a results points layer's features (one row per atom) to CSV, atomically."""
    return write_csv_atomic(points_layer.features, path)
