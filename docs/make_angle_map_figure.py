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


def scan_and_angle_map(scan, angle, period, titles, size=(10, 5)):
    """A figure: the scan, and the scan under its angle map (cyclic colours over ``period`` degrees)."""
    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.imshow(scan, cmap="gray")
    ax2.imshow(scan, cmap="gray")
    im = ax2.imshow(np.ma.masked_invalid(angle), cmap="hsv", vmin=0, vmax=period, alpha=0.6)
    for ax, title in zip((ax1, ax2), titles):
        ax.set_title(title)
        ax.set_axis_off()
    label = "angle (deg, counter-clockwise" + (f", modulo {period:g})" if period < 360 else ")")
    fig.colorbar(im, ax=ax2, fraction=0.046, label=label)
    return fig, (ax1, ax2)


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "example")
    fig, _ = scan_and_angle_map(
        read_image_file(folder / "lattice.tif")[0].data,
        read_image_file(folder / "run" / "angle_map.tif")[0].data,
        360.0,
        ["synthetic polycrystal (grains at 0, 30, -55 deg)", "angle of each atom (napari-rvae, 20 epochs)"],
    )
    fig.tight_layout()
    out = Path(__file__).parent / "images" / "lattice-angle-map.png"
    fig.savefig(out)
    print(f"wrote {out}")
