"""Reading and writing per-point tables (CSV).

Accepted input: a CSV with ``y,x`` columns (pixels, napari's axis order), or
napari's own Points CSV (``index,axis-0,axis-1[,...]``; for more than two axes
the last two are the image plane and the one before them the ``frame``). A
``frame`` column (whole numbers from 0) and a ``file`` column (which input)
place the points of a movie or of several files. Every other column is carried through,
except napari's ``axis-*`` copies of the coordinates in a file that has
``y,x`` too (as :func:`points_table` writes them).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

COORD_COLUMNS = ("y", "x")


def read_points_csv(path) -> pd.DataFrame:
    """Return a DataFrame whose first two columns are float ``y``, ``x``, then the carried columns."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Points file not found: {path}")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"The points file {path} is empty.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"The points file {path} is not a readable CSV ({exc}).") from None
    return points_from_table(table, source=str(path))


def points_from_table(table: pd.DataFrame, *, source: str = "points") -> pd.DataFrame:
    cols = [str(c).strip() for c in table.columns]
    table = table.copy()
    table.columns = cols
    axis_cols = sorted(
        (c for c in cols if c.startswith("axis-")),
        key=lambda c: int(c.split("-")[1]) if c.split("-")[1].isdigit() else 0,
    )
    if "y" in cols and "x" in cols:
        yx, drop = ["y", "x"], ["y", "x", *axis_cols]
    elif len(axis_cols) >= 2:
        yx, drop = axis_cols[-2:], axis_cols + (["index"] if "index" in cols else [])
    else:
        raise InputError(
            f"{source} needs columns 'y' and 'x' (pixels) or napari's 'axis-0','axis-1'; it has: {', '.join(cols) or 'none'}."
        )
    if len(table) == 0:
        raise InputError(f"{source} has no points.")
    coords = table[yx].apply(pd.to_numeric, errors="coerce")
    bad = coords.isna().any(axis=1) | ~np.isfinite(coords.to_numpy(dtype=float)).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"{source}: {int(bad.sum())} rows have missing or non-numeric coordinates (first: row {first + 1})."
        )
    out = pd.DataFrame({"y": coords[yx[0]].astype(float).to_numpy(), "x": coords[yx[1]].astype(float).to_numpy()})
    carried = table.drop(columns=drop).reset_index(drop=True)
    if len(axis_cols) >= 3 and "frame" not in cols:
        # napari's (t, y, x) points: the axis before the plane is the frame.
        carried.insert(0, "frame", table[axis_cols[-3]].to_numpy())
    if "frame" in carried:
        carried["frame"] = _frame_numbers(carried["frame"], source)
    return pd.concat([out, carried], axis=1)


def _frame_numbers(column: pd.Series, source: str) -> np.ndarray:
    """A ``frame`` column as int64, or an InputError naming the first row that is not a frame number."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values < 0) | (np.abs(values - np.rint(values)) > 1e-6)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{source}: the frame column must hold frame numbers 0, 1, 2, ...; row {first + 1} has {column.iloc[first]}."
        )
    return np.rint(values).astype(np.int64)


def has_frame_column(path) -> bool:
    """Whether a points CSV names each point's frame (a ``frame`` column, or napari's (t, y, x) axes)."""
    try:
        cols = [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except (OSError, ValueError, UnicodeDecodeError):
        return False  # read_points_csv says what is wrong with it
    return "frame" in cols or sum(c.startswith("axis-") for c in cols) >= 3


def write_csv_atomic(table: pd.DataFrame, path) -> Path:
    """Write a CSV through a temp file, so a reader never sees half of it."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"Cannot write {path}: the folder {path.parent} does not exist.")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=path.parent)
    os.close(fd)
    try:
        table.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# Column names stay ASCII for scripts: angstroms are given in nanometres.
_ASCII_UNITS = {"Å": ("nm", 0.1), "angstrom": ("nm", 0.1), "µm": ("um", 1.0), "μm": ("um", 1.0), "micron": ("um", 1.0)}


def calibrated_unit(unit: str | None, pixel_size: float) -> tuple[str, float]:
    """The unit for calibrated columns and the size of one pixel in it."""
    name, factor = _ASCII_UNITS.get((unit or "unit").strip(), ((unit or "unit").strip(), 1.0))
    return name, pixel_size * factor


def calibrated_columns(yx, pixel_size, unit: str | None) -> pd.DataFrame:
    """``y_<unit>``, ``x_<unit>``: positions (pixels) times the pixel size, from the image's corner.

    Parameters
    ----------
    yx : array_like, shape (N, 2)
        Positions in pixels.
    pixel_size : float or (float, float)
        One size for both axes, or (along y, along x).
    unit : str or None
        The image's unit; angstroms and micrometres get ASCII names (:func:`calibrated_unit`).

    Examples
    --------
    >>> calibrated_columns([[2.0, 4.0]], 0.5, "Å")
       y_nm  x_nm
    0   0.1   0.2
    """
    yx = np.asarray(yx, dtype=float).reshape(-1, 2)
    size_y, size_x = np.broadcast_to(np.asarray(pixel_size, dtype=float), (2,))
    name, factor_y = calibrated_unit(unit, float(size_y))
    _, factor_x = calibrated_unit(unit, float(size_x))
    return pd.DataFrame({f"y_{name}": yx[:, 0] * factor_y, f"x_{name}": yx[:, 1] * factor_x})


def points_table(coords, features: pd.DataFrame | None = None, *, pixel_size=None, unit=None) -> pd.DataFrame:
    """A points layer as one table both the CLI and napari's own CSV reader read.

    Columns: ``y, x`` (the last two coordinates, in pixels), the features,
    ``y_<unit>, x_<unit>`` when calibrated (as the CLI's points.csv), then
    napari's ``axis-0, axis-1[, ...]`` (every coordinate), which the CLI's
    reader skips. Feature columns of the same names are replaced by these.

    Parameters
    ----------
    coords : array_like, shape (N, D), D >= 2
        The points' data coordinates.
    features : DataFrame, optional
        One row per point.
    pixel_size : float or (float, float), optional
        The size of one pixel (y, x); without it no calibrated columns.
    unit : str, optional
    """
    coords = np.asarray(coords, dtype=float)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise InputError(f"Points need at least two coordinates each; these have shape {coords.shape}.")
    yx = pd.DataFrame({"y": coords[:, -2], "x": coords[:, -1]})
    axes = pd.DataFrame({f"axis-{i}": coords[:, i] for i in range(coords.shape[1])})
    calibrated = calibrated_columns(coords[:, -2:], pixel_size, unit) if pixel_size is not None else None
    made = {*yx.columns, *axes.columns, "index", *(calibrated.columns if calibrated is not None else ())}
    features = pd.DataFrame(index=range(len(coords))) if features is None else features.reset_index(drop=True)
    if len(features) != len(coords):
        raise InputError(f"The points have {len(coords)} rows but their features {len(features)}.")
    kept = features.drop(columns=[c for c in features.columns if c in made])
    return pd.concat([yx, kept, calibrated, axes], axis=1)
