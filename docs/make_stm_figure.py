"""Render docs/images/stm-angle-map.png and print the README's numbers for the bundled STM image.

Run the README's STM commands first (they write into one folder), then:
    python docs/make_stm_figure.py stm_example [run]
The figure: the plane-levelled topograph with the atoms detected, and the same under the angle
map of the run (default folder ``run``). Printed: how ordered the angles are (the resultant
length of the angles on their circle: 1 when all atoms share one angle, about 1/sqrt(N) when
they are random) and the bond-orientational order psi_4 / psi_6 of the positions.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from make_angle_map_figure import scan_and_angle_map
from napari_rvae.core.bond_order import bond_orientation
from napari_rvae.core.level import level_image
from napari_rvae.core.readers import read_image_file

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "stm_example")
scan = level_image(read_image_file(folder / "stm.tif")[0].data, "plane")
run = folder / (sys.argv[2] if len(sys.argv) > 2 else "run")
table = pd.read_csv(run / "points.csv")
report = json.loads((run / "report.json").read_text())
period = 360.0 / report["model_config"]["symmetry"]


def circular_mean(angles_deg, period):
    """The mean of angles modulo ``period`` (degrees), and its resultant length (1: all equal)."""
    z = np.exp(2j * np.pi * np.asarray(angles_deg) / period).mean()
    return float(np.angle(z) * period / (2 * np.pi) % period), float(abs(z))


print(f"{len(table)} atoms encoded; symmetry {report['symmetry']['chosen']}-fold ({report['symmetry']['source']})")
mean, r = circular_mean(table["angle"], period)
print(
    f"angle: mean {mean:.1f} deg (mod {period:g}), resultant {r:.2f} (random: about {1 / np.sqrt(len(table)):.2f}), "
    f"median angle_sd {table['angle_sd'].median():.1f} deg; lattice check flagged {int(table['angle_psi_flag'].sum())}"
)
for n in (4, 6):
    psi, order = bond_orientation(table[["y", "x"]].to_numpy(), n)
    print(
        f"psi_{n}: median order {np.nanmedian(order):.2f}, resultant of its angles {circular_mean(psi[np.isfinite(psi)], 360 / n)[1]:.2f}"
    )
print(f"seconds: {json.dumps({k: round(v, 1) for k, v in report['seconds'].items()})}")

fig, (ax1, ax2) = scan_and_angle_map(
    scan,
    read_image_file(run / "angle_map.tif")[0].data,
    period,
    ["STM topograph (SPIEPy demo), plane-levelled, atoms found", f"angle of each atom ({report['epochs_run']} epochs)"],
    size=(11, 5.2),
)
ax1.plot(table["x"], table["y"], ".", color="red", ms=1.5)
fig.tight_layout()
out = Path(__file__).parent / "images" / f"stm-angle-map{'' if run.name == 'run' else '-' + run.name}.png"
fig.savefig(out)
print(f"wrote {out}")
