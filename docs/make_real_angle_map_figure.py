"""Render docs/images/real-regions-angle-map.png from benchmarks/bench_real.py's regions run.

Run the benchmark first (it keeps every run under --workdir), then:
    python docs/make_real_angle_map_figure.py /tmp/bench_real
The figure: the MoS2 scan with five disks turned by 2, 5, 12, 25 and 40 degrees
pasted back, and the angle map the CLI's defaults made of it (3-fold: period 120).
"""

import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_real import ANGLES, region_layouts  # noqa: E402

from napari_rvae.core.readers import read_image_file  # noqa: E402

work = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bench_real")
run = work / "regions0-defaults"
scan = read_image_file(run / "image.tif")[0].data
angle = read_image_file(run / "out" / "angle_map.tif")[0].data
report = json.loads((run / "out" / "report.json").read_text())
period = 360.0 / report["model_config"]["symmetry"]
args = json.loads((work / "results.json").read_text())["args"]
regions = region_layouts(scan.shape, "single", args["radius"], ANGLES)[0]

fig = Figure(figsize=(11, 5.2), dpi=100)
FigureCanvasAgg(fig)
ax1, ax2 = fig.subplots(1, 2)
ax1.imshow(scan, cmap="gray")
ax1.set_title("MoS2 HAADF (temul-toolkit), five disks turned and pasted back")
ax2.imshow(scan, cmap="gray")
im = ax2.imshow(np.ma.masked_invalid(angle), cmap="hsv", vmin=0, vmax=period, alpha=0.6)
ax2.set_title(f"angle map, CLI defaults ({report['symmetry']['chosen']}-fold, estimated)")
for ax in (ax1, ax2):
    for turn, y, x in regions:
        ax.add_patch(Circle((x, y), args["radius"], fill=False, color="white", lw=1))
        ax.text(x, y - args["radius"] - 8, f"+{turn:g}°", color="white", ha="center", va="bottom", fontsize=9)
    ax.set_axis_off()
fig.colorbar(im, ax=ax2, fraction=0.046, label=f"angle (deg, counter-clockwise, modulo {period:g})")
fig.tight_layout()
out = Path(__file__).parent / "images" / "real-regions-angle-map.png"
fig.savefig(out)
print(f"wrote {out}")
