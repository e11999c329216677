"""Take the README's GUI walkthrough on the bundled real STM image (two screenshots).

Run once, under a display or Xvfb (``xvfb-run -a python docs/make_stm_screenshots.py``);
it writes docs/images/stm-pick.png (File > Open Sample, Pick atoms with plane levelling)
and docs/images/stm-train.png (Train rVAE on the levelled copy, 6-fold, finished, with its layers).
Nothing is mocked: the plugin's own widgets detect, train and draw, with the settings
the README gives.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from make_screenshots import wait

IMAGES = Path(__file__).parent / "images"
SAMPLE = "STM step edge and atoms (SPIEPy)"  # napari_rvae.ui.samples.STM_SAMPLE_NAME


def save(viewer, name: str) -> None:
    from PIL import Image

    for _ in range(20):
        QApplication.instance().processEvents()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    out = IMAGES / name
    # A 128-colour palette keeps the PNG small without visible loss on a GUI.
    Image.fromarray(np.asarray(shot)[..., :3]).quantize(128).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


def main() -> int:
    viewer = napari.Viewer(title="napari-rvae")
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-rvae", "stm")
    _, pick = viewer.window.add_plugin_dock_widget("napari-rvae", "Pick atoms")
    pick.level.setCurrentText("plane")
    pick.sigma.setValue(2.5)  # the size estimate reads the step, not the atoms, on this image
    pick.patch_size.setValue(24)
    t0 = time.perf_counter()
    pick.detect()
    wait(lambda: not pick.busy and f"{SAMPLE} atoms" in viewer.layers)
    print(f"detection: {len(viewer.layers[f'{SAMPLE} atoms'].data)} atoms in {time.perf_counter() - t0:.1f} s")
    viewer.layers[SAMPLE].visible = False
    save(viewer, "stm-pick.png")

    _, train = viewer.window.add_plugin_dock_widget("napari-rvae", "Train rVAE", tabify=False)
    train.image_combo.setCurrentText(f"{SAMPLE} levelled (plane)")
    train.points_combo.setCurrentText(f"{SAMPLE} atoms")
    train.form.patch_size.setValue(24)
    train.form.epochs.setValue(20)
    train.form.symmetry.setCurrentText("6")  # a close-packed layer; auto reads 1-fold here (see the README)
    t0 = time.perf_counter()
    train.train()
    wait(lambda: not train.busy, timeout=900)
    print(f"training from the widget: {time.perf_counter() - t0:.1f} s; status: {train.status.text()}")
    save(viewer, "stm-train.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
