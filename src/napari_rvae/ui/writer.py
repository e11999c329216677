"""npe2 writers (*File > Save Layers*): points with their features as CSV, maps as calibrated TIFF.

The files are the CLI's: a points CSV that ``napari-rvae encode --points``
and napari's own CSV reader both read (:func:`napari_rvae.core.points_io.points_table`),
and an ImageJ TIFF with the pixel size that this plugin's reader opens
calibrated (:func:`napari_rvae.core.readers.write_tiff`). Both appear
atomically: a failed save leaves no half-written file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from napari_rvae.core.errors import InputError
from napari_rvae.core.points_io import points_table, write_csv_atomic
from napari_rvae.core.readers import write_tiff

from .layers import scale_and_unit


def write_points_csv(path: str, data, meta: dict) -> list[str]:
    """Write one Points layer (``data``: (N, D) coordinates, ``meta``: its state) as a points CSV.

    Columns ``y, x`` (the layer's data coordinates: the image's pixels for
    layers registered onto it, as the result layers are), the features,
    ``y_<unit>, x_<unit>`` where the layer has a scale in a physical unit, and
    napari's ``axis-*`` columns.
    """
    features = meta.get("features")
    pixel_size, unit = scale_and_unit(meta.get("scale", (1.0, 1.0))[-2:], meta.get("units"))
    table = points_table(
        data, pd.DataFrame(features) if features is not None else None, pixel_size=pixel_size, unit=unit
    )
    return [str(write_csv_atomic(table, path))]


def write_map_tiff(path: str, data, meta: dict) -> list[str]:
    """Write one Image or Labels layer (a map, a scan) as an ImageJ TIFF with its pixel size and unit."""
    if meta.get("rgb"):
        raise InputError("RGB images are saved by napari's own writers; napari-rvae writes maps and scans.")
    if meta.get("multiscale"):
        data = data[0]  # the full resolution level
    array = np.asarray(data)
    pixel_size, unit = scale_and_unit(meta.get("scale", (1.0,))[-1:], meta.get("units"))
    return [str(write_tiff(Path(path), array, pixel_size=pixel_size, unit=unit))]
