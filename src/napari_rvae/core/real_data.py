"""A real atom-resolved image, found in a package the user installed (never downloaded, never shipped).

No permissively licensed package on PyPI ships a real STEM image in its wheel
(searched 2026-11-28: atomai, pyTEMlib, pycroscopy and stemtool ship none;
rosettasciio downloads its test files; atomap, abTEM and ncempy are GPL-3).
temul-toolkit (GPL-3.0) ships a HAADF-STEM image of Se-implanted MoS2
(Hadley et al., the TEMUL toolkit) in its wheel. napari-rvae does not copy,
bundle or import it: it only reads the file from the user's own install,
so the image stays under its package's licence.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

REAL_SAMPLE_PACKAGE = "temul-toolkit"
REAL_SAMPLE_FILE = "temul/example_data/experimental/example_Se_implanted_MoS2.dm3"
REAL_SAMPLE_CREDIT = (
    "HAADF-STEM image of Se-implanted MoS2 (1024 x 1024, 0.0127 nm/px), from the temul-toolkit package "
    "(TEMUL toolkit, GPL-3.0), read from your own install of it."
)


def real_sample_path() -> Path:
    """Where the real example image lies, or an InputError saying how to get it."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(distribution(REAL_SAMPLE_PACKAGE).locate_file(REAL_SAMPLE_FILE))
    except PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise InputError(
            "The real STEM sample is read from the temul-toolkit package (GPL-3.0), which is not installed. "
            "Install its data (no dependencies needed) with: pip install --no-deps temul-toolkit; "
            "reading .dm3 files also needs: pip install 'napari-rvae[formats]'."
        )
    return path
