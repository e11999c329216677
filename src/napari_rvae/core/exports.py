"""Files made from results: map TIFFs with the pixel size and the latent PNG figure.

Figures are drawn on a :class:`matplotlib.figure.Figure` with an explicit Agg
canvas: no pyplot and no global backend switch, so the same code is safe inside
napari (whose Qt backend must stay as it is) and in the CLI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .maps import angle_colors, angle_map, class_colors, class_map, nearest_atom_index

ANGLE_MAP_FILE = "angle_map.tif"
CLASS_MAP_FILE = "class_map.tif"
LATENT_FIGURE_FILE = "latent.png"


def result_maps(
    shape,
    centers_yx,
    table: pd.DataFrame,
    *,
    period: float = 360.0,
    mode: str = "nearest",
    radius: float | None = None,
    psi_period: float | None = None,
) -> dict[str, np.ndarray]:
    """The maps a results table supports: ``{"angle_map": ..., "class_map": ..., "psi_map": ...}``.

    One tessellation serves every map. Tables without an ``angle`` column (a
    plain VAE) have no angle map; tables without ``class`` no class map; the
    lattice check's ``psi_angle`` (modulo ``psi_period``) makes a psi map when
    ``psi_period`` is given.
    """
    maps: dict[str, np.ndarray] = {}
    psi = psi_period is not None and "psi_angle" in table
    if "angle" not in table and "class" not in table and not psi:
        return maps
    index = nearest_atom_index(shape, centers_yx, radius)
    if "angle" in table:
        maps["angle_map"] = angle_map(
            shape, centers_yx, table["angle"].to_numpy(), period=period, mode=mode, radius=radius, index=index
        )
    if "class" in table:
        maps["class_map"] = class_map(shape, centers_yx, table["class"].to_numpy(), index=index)
    if psi:
        maps["psi_map"] = angle_map(
            shape,
            centers_yx,
            table["psi_angle"].to_numpy(dtype=float),
            period=psi_period,
            mode=mode,
            radius=radius,
            index=index,
        )
    return maps


def write_maps_tiff(
    folder, maps: dict[str, np.ndarray], *, pixel_size: float | None = None, unit: str | None = None, prefix: str = ""
) -> list[Path]:
    """Write each map as ``{prefix}{name}.tif`` (ImageJ TIFF with the pixel size); returns the paths."""
    from .readers import write_tiff

    folder = Path(folder)
    return [
        write_tiff(folder / f"{prefix}{name}.tif", data, pixel_size=pixel_size, unit=unit)
        for name, data in maps.items()
    ]


def latent_columns(table: pd.DataFrame) -> list[str]:
    """The latent mean columns ``z0, z1, ...`` of a results table, in order."""
    cols = [c for c in table.columns if isinstance(c, str) and c.startswith("z") and c[1:].isdigit()]
    return sorted(cols, key=lambda c: int(c[1:]))


def point_colors(table: pd.DataFrame, color_by: str = "angle", period: float = 360.0) -> np.ndarray:
    """RGBA per row: cyclic by angle, or by class; grey when the column is missing."""
    if color_by == "class" and "class" in table:
        return class_colors(table["class"].to_numpy())
    if "angle" in table:
        return angle_colors(table["angle"].to_numpy(), period)
    if "class" in table:
        return class_colors(table["class"].to_numpy())
    return np.tile(np.array([0.3, 0.5, 0.9, 1.0], np.float32), (len(table), 1))


def draw_scatter(ax, table: pd.DataFrame, xcol: str, ycol: str, *, color_by="angle", period=360.0, size=None):
    """The latent scatter on a matplotlib Axes; returns the PathCollection."""
    n = len(table)
    size = size if size is not None else float(np.clip(3000.0 / max(n, 1), 0.5, 12.0))
    coll = ax.scatter(
        table[xcol].to_numpy(),
        table[ycol].to_numpy(),
        s=size,
        c=point_colors(table, color_by, period),
        linewidths=0,
        rasterized=n > 5000,
    )
    ax.set_xlabel(xcol)
    ax.set_ylabel(ycol)
    return coll


def latent_figure(
    table: pd.DataFrame,
    model=None,
    *,
    dims=(0, 1),
    d: int = 10,
    angle_deg: float = 0.0,
    color_by: str = "angle",
    period: float | None = None,
    class_index: int = 0,
):
    """A two-panel figure: the latent scatter and the decoded latent manifold.

    Parameters
    ----------
    table : DataFrame
        Results with ``z*`` columns (and ``angle``/``class`` for colours).
    model : RVAE, optional
        Without a model the figure has the scatter only.
    dims : (int, int)
        The latent dimensions on the x and y axes.
    d : int
        Manifold images per side.
    angle_deg : float
        The angle the manifold is drawn at.
    color_by : {"angle", "class"}
    period : float, optional
        Angle period (default ``360 / model symmetry``).

    Returns
    -------
    matplotlib.figure.Figure
        With an Agg canvas attached (``fig.savefig`` works without pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .latent import latent_manifold

    zcols = latent_columns(table)
    if period is None:
        period = 360.0 / (model.config.symmetry if model is not None else 1)
    fig = Figure(figsize=(9.5, 4.5) if model is not None else (5, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if model is not None else 1, squeeze=False)[0]
    ax = axes[0]
    dims = tuple(int(i) for i in dims)
    if len(zcols) >= 2:
        xcol, ycol = f"z{dims[0]}", f"z{dims[1]}"
    else:
        xcol, ycol = (zcols[0] if zcols else table.columns[0]), ("angle" if "angle" in table else table.columns[0])
    draw_scatter(ax, table, xcol, ycol, color_by=color_by, period=period)
    what = "class" if color_by == "class" and "class" in table else ("angle" if "angle" in table else "")
    ax.set_title(f"Latent means ({len(table):,} atoms)" + (f", coloured by {what}" if what else ""), fontsize=9)
    if model is not None:
        rng = None
        if len(zcols) >= 2:
            lo = table[[xcol, ycol]].quantile(0.02).to_numpy()
            hi = table[[xcol, ycol]].quantile(0.98).to_numpy()
            hi = np.maximum(hi, lo + 1e-3)  # a collapsed latent still gets a drawable range
            # A latent with no finite value (a diverged model) has no range: the default one is drawn.
            if np.isfinite(lo).all() and np.isfinite(hi).all():
                rng = ((lo[0], hi[0]), (lo[1], hi[1]))
        mosaic = latent_manifold(model, d, dims=dims, z_range=rng, angle_deg=angle_deg, class_index=class_index)
        extent = None if rng is None else (rng[0][0], rng[0][1], rng[1][0], rng[1][1])
        axes[1].imshow(mosaic, cmap="gray", extent=extent, aspect="auto" if extent else "equal")
        axes[1].set_title(f"Decoded latent manifold ({d} x {d}, angle {angle_deg:g}°)", fontsize=9)
        if extent:
            axes[1].set_xlabel(xcol)
            axes[1].set_ylabel(ycol)
        else:
            axes[1].set_axis_off()
    return fig


def write_map_exports(out, inputs, table: pd.DataFrame, model) -> list[str]:
    """What the CLI writes besides points.csv for an image input: map TIFFs and latent.png.

    Parameters
    ----------
    out : OutputDir
        Files go to ``out.path(name)``.
    inputs : Inputs
        From :func:`~napari_rvae.core.pipeline.load_inputs`; patch-stack inputs
        (no image) get the figure only.
    table : DataFrame
        The results table (``y``, ``x`` and the encoded columns).
    model : RVAE

    Returns
    -------
    list of str
        The file names written, for ``report["files"]``.
    """
    files: list[str] = []
    period = 360.0 / model.config.symmetry
    if inputs.image is not None and {"y", "x"} <= set(table.columns):
        centers = table[["y", "x"]].to_numpy(dtype=float)
        psi_period = None
        if "psi_angle" in table:  # the lattice check's own map (core/bond_order.py: psi_4 or psi_6)
            from .bond_order import lattice_period

            psi_period = lattice_period(centers)
        maps = result_maps(inputs.image.shape, centers, table, period=period, psi_period=psi_period)
        for name, data in maps.items():
            from .readers import write_tiff

            fname = f"{name}.tif"
            write_tiff(out.path(fname), data, pixel_size=inputs.pixel_size, unit=inputs.unit)
            files.append(fname)
    if latent_columns(table):
        fig = latent_figure(table, model)
        fig.savefig(out.path(LATENT_FIGURE_FILE))
        files.append(LATENT_FIGURE_FILE)
    return files
