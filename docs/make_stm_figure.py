"""Render docs/images/stm-angle-map.png and print the README's numbers for the bundled STM image.

Run the README's STM commands first (they write into one folder), then:
    python docs/make_stm_figure.py stm_example
The figure: the plane-levelled topograph with the atoms detected, and the same under the angle
map of the 20-epoch run. The terraces are told apart by the smoothed levelled height (Otsu's
threshold); a monatomic step on one crystal keeps the lattice's orientation, so both terraces
should read the same angle.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from skimage.filters import threshold_otsu

from make_angle_map_figure import scan_and_angle_map
from napari_rvae.core.level import level_image
from napari_rvae.core.readers import read_image_file

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "stm_example")
scan = level_image(read_image_file(folder / "stm.tif")[0].data, "plane")
table = pd.read_csv(folder / "run" / "points.csv")
report = json.loads((folder / "run" / "report.json").read_text())
period = 360.0 / report["model_config"]["symmetry"]


def circular_mean(angles_deg, period):
    """The mean of angles modulo ``period`` (degrees), and its resultant length (1: all equal)."""
    z = np.exp(2j * np.pi * np.asarray(angles_deg) / period).mean()
    return float(np.angle(z) * period / (2 * np.pi) % period), float(abs(z))


# Terraces: the smoothed height's two levels (the step is about 20 px wide after smoothing).
height = gaussian_filter(scan, 8)
upper = height > threshold_otsu(height)
iy, ix = table["y"].round().astype(int), table["x"].round().astype(int)
table["terrace"] = np.where(upper[iy, ix], "upper", "lower")
print(f"{len(table)} atoms encoded; symmetry {report['symmetry']['chosen']}-fold ({report['symmetry']['source']})")
for name, rows in table.groupby("terrace"):
    mean, r = circular_mean(rows["angle"], period)
    psi_n = report["lattice_check"]["psi_n"]
    psi_mean, psi_r = circular_mean(rows["psi_angle"].dropna(), 360.0 / psi_n)
    print(
        f"{name} terrace: {len(rows)} atoms, angle mean {mean:.1f} deg (mod {period:g}, resultant {r:.2f}), "
        f"median angle_sd {rows['angle_sd'].median():.1f} deg; psi_{psi_n} angle mean {psi_mean:.1f} deg "
        f"(resultant {psi_r:.2f}), median order {rows['psi_order'].median():.2f}, "
        f"flagged {int(rows['angle_psi_flag'].sum())}"
    )
print(f"seconds: {json.dumps({k: round(v, 1) for k, v in report['seconds'].items()})}")

fig, (ax1, ax2) = scan_and_angle_map(
    scan,
    read_image_file(folder / "run" / "angle_map.tif")[0].data,
    period,
    ["STM topograph (SPIEPy demo), plane-levelled, atoms found", f"angle of each atom ({report['epochs_run']} epochs)"],
    size=(11, 5.2),
)
ax1.plot(table["x"], table["y"], ".", color="red", ms=1.5)
fig.tight_layout()
out = Path(__file__).parent / "images" / "stm-angle-map.png"
fig.savefig(out)
print(f"wrote {out}")
