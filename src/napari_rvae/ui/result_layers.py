"""Results as layers over the scan: points with features, angle map, arrows, class map.

:func:`show_results` runs on the GUI thread (the Train widget calls it from its
worker's ``returned`` handler); the maps, the only heavy part, come ready from
the worker (:func:`napari_rvae.core.exports.result_maps`), so a 4096 x 4096
scan does not freeze the viewer for the ~1.5 s its tessellation takes. Every
layer it makes is registered to the source image (same scale, translate and
units on every axis) and tagged in
``layer.metadata[META]`` with its run and role, so that a re-run replaces
exactly this run's layers and the Latent explorer can find the analysis. The
user's own layers are never modified or removed.

A stack's analysis (its table has a ``frame`` column) makes n-D layers: the
maps as ``(T, Y, X)`` stacks, the points and arrows at ``(t, y, x)``; each
frame shows its own with the dims slider.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from napari.utils import Colormap
from napari.utils.colormaps import DirectLabelColormap

from napari_rvae.core.bond_order import lattice_period
from napari_rvae.core.errors import InputError
from napari_rvae.core.exports import point_colors, result_maps, write_maps_tiff
from napari_rvae.core.frames import frame_spacing, largest_frame, paint_frames
from napari_rvae.core.maps import (
    class_colors,
    cyclic_colors,
    orientation_vectors,
    typical_spacing,
)
from napari_rvae.core.points_io import write_csv_atomic

from .layers import (
    META,
    image_geometry,
    image_shape,
    leading_shape,
    pixel_size_and_unit,
    results_meta,
    stack_geometry,
)

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


def run_layers(viewer, run_name: str) -> list:
    """This run's result layers in the viewer (found by metadata, not by name)."""
    return [lay for lay in viewer.layers if (results_meta(lay) or {}).get("run") == run_name]


def results_features(analysis, points_layer=None) -> pd.DataFrame:
    """``y``, ``x`` (image pixels), the encoded columns, then the source points' own columns.

    A stack's table keeps its ``frame`` column first, before ``y``, ``x``.

    The source's feature columns are carried for the kept points when the
    source still has one row per analysed point (the user may have edited it
    while training ran); columns the results also have are not carried.
    """
    centers = np.asarray(analysis.centers, dtype=float).reshape(-1, 2)
    table = analysis.table.reset_index(drop=True)
    parts = [pd.DataFrame({"y": centers[:, 0], "x": centers[:, 1]}), table]
    if "frame" in table:
        parts = [table[["frame"]], parts[0], table.drop(columns="frame")]
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
    period = _checked_period(color_by, symmetry)
    run = _run_of(analysis, run_name, image_layer, points_layer, symmetry, period, radius, map_mode)
    table = run.table
    one_frame = run.centers if run.frames is None else run.centers[largest_frame(run.frames)]
    if psi_period is None and "psi_angle" in table and len(one_frame) >= 2:
        psi_period = lattice_period(one_frame)
    specs = []
    if image_layer is not None and ("angle" in table or "class" in table):
        if maps is None:
            maps = _maps(run, image_layer, psi_period)
        specs += _map_specs(run, maps, psi_period, analysis.model.config)
    if "angle" in table:
        specs.append(_orientation_spec(run))
    specs.append(_points_spec(run, results_features(analysis, points_layer), color_by))
    geometry = image_geometry(image_layer) if run.frames is None else stack_geometry(image_layer)
    return _replace_run_layers(viewer, run_name, specs, geometry)


def _maps(run: _Run, image_layer, psi_period: float | None) -> dict[str, np.ndarray]:
    """The run's maps over the image: 2-D, or ``(T, Y, X)`` stacks painted frame by frame."""
    shape = image_shape(image_layer)
    paint = result_maps
    if run.frames is not None:
        shape, paint = (*leading_shape(image_layer)[-1:], *shape), paint_frames
    options = dict(period=run.period, mode=run.map_mode, radius=run.radius, psi_period=psi_period)
    return paint(shape, run.centers, run.table, **options)


def _run_of(analysis, run_name, image_layer, points_layer, symmetry, period, radius, map_mode) -> _Run:
    """What every layer of a run shares: its atoms, table, period, spacing and tag."""
    centers = np.asarray(analysis.centers, dtype=float).reshape(-1, 2)
    table = analysis.table.reset_index(drop=True)
    frames = table["frame"].to_numpy(dtype=np.int64) if "frame" in table else None
    # Within a frame: atoms of different frames are not neighbours.
    spacing = typical_spacing(centers) if frames is None else frame_spacing(centers, frames)
    return _Run(
        name=run_name,
        centers=centers,
        frames=frames,
        table=table,
        period=period,
        spacing=spacing,
        radius=spacing if radius is None else float(radius),
        map_mode=map_mode,
        meta={
            "run": run_name,
            "analysis": analysis,
            "model": analysis.model,
            "symmetry": int(symmetry),
            "period": period,
            "image_layer": getattr(image_layer, "name", None),
            "source_points": getattr(points_layer, "name", None),
        },
    )


# A layer to add: its kind ("Image", "Labels", ...), its data and the add_* keyword arguments.
LayerSpec = tuple[str, object, dict]


@dataclass(frozen=True)
class _Run:
    """What every result layer of one run is made from."""

    name: str
    centers: np.ndarray  # (N, 2) image pixels
    frames: np.ndarray | None  # the frame of each center on a stack; None for a 2-D image
    table: pd.DataFrame  # one row per center
    period: float  # degrees: angles wrap here
    spacing: float  # the typical atom spacing (image pixels): sizes the markers and arrows
    radius: float  # map pixels farther than this from any atom stay empty
    map_mode: str
    meta: dict  # the description every layer of the run carries in its metadata

    def tag(self, role: str, **more) -> dict:
        """A layer's metadata: the run's description, its role and what is particular to it."""
        return {META: {**self.meta, "role": role, **more}}

    def positions(self) -> np.ndarray:
        """Where the atoms are drawn: ``(y, x)``, or ``(t, y, x)`` on a stack."""
        return self.centers if self.frames is None else np.column_stack([self.frames, self.centers])


def _checked_period(color_by: str, symmetry: int) -> float:
    """The angle period (degrees) of an n-fold symmetry, after checking the display options."""
    if color_by not in COLOR_BY:
        raise InputError(f"Colour the points by one of {COLOR_BY}, not {color_by!r}.")
    if int(symmetry) < 1:
        raise InputError(f"The symmetry must be 1, 2, 3, 4 or 6, not {symmetry}.")
    return 360.0 / int(symmetry)


def _map_specs(run: _Run, maps: dict, psi_period: float | None, model_config) -> list[LayerSpec]:
    """The angle map, the psi map (hidden) and the class map, for those in ``maps``."""
    specs = []
    if "angle_map" in maps:
        tag = run.tag("angle_map", map_mode=run.map_mode, radius=run.radius)
        specs.append(_cyclic_map_spec(f"{run.name} angle map", maps["angle_map"], run.period, tag))
    if "psi_map" in maps and psi_period is not None:
        # The learning-free lattice check, hidden at first: switch it on to compare with the angle map.
        tag = run.tag("psi_map", map_mode=run.map_mode, radius=run.radius, psi_period=psi_period)
        specs.append(_cyclic_map_spec(f"{run.name} psi map", maps["psi_map"], psi_period, tag, visible=False))
    if "class_map" in maps:
        n_classes = int(getattr(model_config, "n_classes", 0) or run.table["class"].max() + 1)
        specs.append(
            (
                "Labels",
                maps["class_map"],
                dict(
                    name=f"{run.name} class map",
                    opacity=0.4,
                    colormap=class_label_colormap(n_classes),
                    metadata=run.tag("class_map", radius=run.radius),
                ),
            )
        )
    return specs


def _cyclic_map_spec(name: str, data, period: float, tag: dict, visible: bool = True) -> LayerSpec:
    """A map of angles (degrees modulo ``period``) over the scan, in the cyclic colours of the arrows."""
    style = dict(colormap=cyclic_colormap(), contrast_limits=(0.0, period), opacity=0.5, blending="translucent")
    return ("Image", data, dict(name=name, visible=visible, metadata=tag, **style))


def _orientation_spec(run: _Run) -> LayerSpec:
    """Arrows along each atom's angle, coloured like the angle map."""
    vectors = orientation_vectors(run.centers, run.table["angle"].to_numpy(), length=0.45 * run.spacing)
    if run.frames is not None:  # at (t, y, x), pointing within the frame
        start, direction = run.positions(), np.column_stack([np.zeros(len(vectors)), vectors[:, 1]])
        vectors = np.stack([start, direction], axis=1).astype(np.float32)
    return (
        "Vectors",
        vectors,
        dict(
            name=f"{run.name} orientation",
            edge_color=point_colors(run.table, "angle", run.period),
            edge_width=max(0.08 * run.spacing, 0.5),
            length=1.0,
            vector_style="arrow",
            metadata=run.tag("orientation"),
        ),
    )


def _points_spec(run: _Run, features: pd.DataFrame, color_by: str) -> LayerSpec:
    """The atoms with their results as features, coloured by angle or class."""
    return (
        "Points",
        run.positions(),
        dict(
            name=f"{run.name} atoms",
            features=features,
            face_color=point_colors(run.table, color_by, run.period),
            border_width=0,
            size=max(0.4 * run.spacing, 1.0),
            metadata=run.tag("points", color_by=color_by),
        ),
    )


def _replace_run_layers(viewer, run_name: str, specs: list[LayerSpec], geometry: dict) -> list:
    """Remove the run's previous layers, then add ``specs`` registered by ``geometry``; returns the new layers."""
    # Removed only now, after the new ones' data was made without error.
    for old in run_layers(viewer, run_name):
        viewer.layers.remove(old)
    layers = []
    for kind, data, kwargs in specs:
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
    return {
        info["role"]: np.asarray(lay.data)
        for lay in run_layers(viewer, run_name)
        if (info := results_meta(lay))["role"] in ("angle_map", "psi_map", "class_map")
    }


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
