"""The real STM image napari-rvae ships: SPIEPy's atom-resolved demo image (BSD-2-Clause).

SPIEPy 0.2.1 (Stephan Zevenhuizen, Utrecht University) ships three real STM
topographs in its wheel; ``image_with_step_edge_and_atoms`` (512 x 512) is the
one with atomic resolution over a whole field: a close-packed lattice on two
terraces split by a monatomic step. Its BSD-2 licence allows redistribution
with the notice, which lies beside the data (``data/SPIEPY_NOTICE.txt``) and is
copied wherever the image is written. The file holds heights only: no lateral
calibration, so positions stay in pixels.

Pure core: no Qt, no napari.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np

STM_SAMPLE_FILE = "spiepy_step_edge_and_atoms.npy"
STM_NOTICE_FILE = "SPIEPY_NOTICE.txt"
STM_Z_UNIT = "nm"
STM_SAMPLE_SOURCE = "https://pypi.org/project/SPIEPy/0.2.1/ (spiepy/demo/image_with_step_edge_and_atoms.dat)"
STM_SAMPLE_CREDIT = (
    "Real STM topograph (512 x 512 px, heights in nm; no lateral calibration in the file) of a close-packed "
    "lattice on two terraces, from the demo data of SPIEPy 0.2.1 by Stephan Zevenhuizen (BSD-2-Clause; "
    "licence notice in napari_rvae/data/SPIEPY_NOTICE.txt)."
)


def _data_file(name: str) -> Path:
    return Path(str(files("napari_rvae") / "data" / name))


def stm_sample_image() -> np.ndarray:
    """The bundled STM topograph: (512, 512) float32 heights in nm, top row as SPIEPy shows it.

    Examples
    --------
    >>> img = stm_sample_image()
    >>> img.shape, img.dtype
    ((512, 512), dtype('float32'))
    """
    return np.load(_data_file(STM_SAMPLE_FILE))


def stm_notice_path() -> Path:
    """The licence notice that travels with the image (SPIEPy's BSD-2 text and what was changed)."""
    return _data_file(STM_NOTICE_FILE)


__all__ = [
    "stm_sample_image",
    "stm_notice_path",
    "STM_SAMPLE_CREDIT",
    "STM_SAMPLE_SOURCE",
    "STM_Z_UNIT",
    "STM_NOTICE_FILE",
]
