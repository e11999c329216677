"""Reading and writing per-point tables (CSV).

Accepted input: a CSV with ``y,x`` columns (pixels, napari's axis order), or
napari's own Points CSV (``index,axis-0,axis-1[,...]``; for more than two axes
the last two are the image plane). Every other column is carried through.
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
        yx, drop = ["y", "x"], ["y", "x"]
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
    return pd.concat([out, carried], axis=1)


def write_csv_atomic(table: pd.DataFrame, path) -> Path:
    """Write a CSV through a temp file, so a reader never sees half of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=path.parent)
    os.close(fd)
    try:
        table.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
