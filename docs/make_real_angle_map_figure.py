"""Render docs/images/real-regions-angle-map.png from benchmarks/bench_real.py's regions run.

Run the benchmark first (it keeps every run under --workdir), then:
    python docs/make_real_angle_map_figure.py /tmp/bench_real
The figure: the MoS2 scan with five disks turned by 2, 5, 12, 25 and 40 degrees
pasted back, and the angle map the CLI's defaults made of it (3-fold: period 120).
"""

import json
import sys
from pathlib import Path

from matplotlib.patches import Circle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_real import ANGLES, region_layouts
from make_angle_map_figure import scan_and_angle_map
from napari_rvae.core.readers import read_image_file

work = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bench_real")
run = work / "regions0-defaults"
scan = read_image_file(run / "image.tif")[0].data
report = json.loads((run / "out" / "report.json").read_text())
args = json.loads((work / "results.json").read_text())["args"]
regions = region_layouts(scan.shape, "single", args["radius"], ANGLES)[0]

fig, axes = scan_and_angle_map(
    scan,
    read_image_file(run / "out" / "angle_map.tif")[0].data,
    360.0 / report["model_config"]["symmetry"],
    [
        "MoS2 HAADF (temul-toolkit), five disks turned and pasted back",
        f"angle map, CLI defaults ({report['symmetry']['chosen']}-fold, estimated)",
    ],
    size=(11, 5.2),
)
for ax in axes:
    for turn, y, x in regions:
        ax.add_patch(Circle((x, y), args["radius"], fill=False, color="white", lw=1))
        ax.text(x, y - args["radius"] - 8, f"+{turn:g}°", color="white", ha="center", va="bottom", fontsize=9)
fig.tight_layout()
out = Path(__file__).parent / "images" / "real-regions-angle-map.png"
fig.savefig(out)
print(f"wrote {out}")
