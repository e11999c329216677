"""The core must stay usable without a GUI: importing it pulls in no Qt and no napari."""

import subprocess
import sys

FORBIDDEN = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy")


def test_core_imports_no_gui_modules():
    code = (
        "import sys, importlib, pkgutil\n"
        "import napari_rvae.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__):\n"
        "    importlib.import_module('napari_rvae.core.' + m.name)\n"
        "import napari_rvae.cli\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported GUI modules: {out.stdout.strip()}"
