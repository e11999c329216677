"""Render docs/images/lattice-angle-map.png from the README's main job.

Run the README's example first (it writes example/run), then:
    python docs/make_angle_map_figure.py example
"""

import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from napari_rvae.core.readers import read_image_file

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "example")
scan = read_image_file(folder / "lattice.tif")[0].data
angle = read_image_file(folder / "run" / "angle_map.tif")[0].data

fig = Figure(figsize=(10, 5), dpi=100)
FigureCanvasAgg(fig)
ax1, ax2 = fig.subplots(1, 2)
ax1.imshow(scan, cmap="gray")
ax1.set_title("synthetic polycrystal (grains at 0, 30, -55 deg)")
ax2.imshow(scan, cmap="gray")
im = ax2.imshow(np.ma.masked_invalid(angle), cmap="hsv", vmin=0, vmax=360, alpha=0.55)
ax2.set_title("angle of each atom (napari-rvae, 20 epochs)")
for ax in (ax1, ax2):
    ax.set_axis_off()
fig.colorbar(im, ax=ax2, fraction=0.046, label="angle (deg, counter-clockwise)")
fig.tight_layout()
out = Path(__file__).parent / "images" / "lattice-angle-map.png"
fig.savefig(out)
print(f"wrote {out}")
