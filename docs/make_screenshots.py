"""Take the README's screenshot of the docked widgets during a real training.

Run once, under a display or Xvfb (``xvfb-run -a python docs/make_screenshots.py``);
it writes docs/images/train-widget.png. Nothing is mocked: the atoms are
detected and the model trained by the plugin's own widgets.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_rvae.core.synthetic import make_lattice

OUT = Path(__file__).parent / "images" / "train-widget.png"


def wait(condition, timeout=120.0):
    app, t0 = QApplication.instance(), time.monotonic()
    while not condition():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("the widget did not finish in time")


def main() -> int:
    viewer = napari.Viewer(title="napari-rvae")
    viewer.window.resize(1500, 950)
    lattice = make_lattice((384, 384), seed=0)
    viewer.add_image(lattice.image, name="lattice", colormap="gray")
    _, pick = viewer.window.add_plugin_dock_widget("napari-rvae", "Pick atoms")
    _, train = viewer.window.add_plugin_dock_widget("napari-rvae", "Train rVAE", tabify=False)
    pick.patch_size.setValue(24)
    pick.detect()
    wait(lambda: not pick.busy and "lattice atoms" in viewer.layers)

    train.points_combo.setCurrentText("lattice atoms")
    form = train.form
    form.patch_size.setValue(24)
    form.epochs.setValue(200)
    form.batch_size.setValue(64)
    train.train()
    wait(lambda: len(train.plot.x) >= 40)  # well into training: a real curve and time left
    train.plot.redraw()
    for _ in range(20):
        QApplication.instance().processEvents()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    train.stop()
    wait(lambda: not train.busy)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    # A 128-colour palette keeps the PNG small without visible loss on a GUI.
    Image.fromarray(np.asarray(shot)[..., :3]).quantize(128).save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
