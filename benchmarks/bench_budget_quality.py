"""Angle errors of a budget on a synthetic lattice: ``python bench_budget_quality.py SIDE EPOCHS``.

EPOCHS is ``auto`` or a number; prints the budget, times and the angle errors after one offset
and sign (median, and mean per grain). docs/speed.md ("Training budget") has its results.
"""

import os
import sys
import time

import numpy as np

from napari_rvae.core.analysis import train_patches_iter
from napari_rvae.core.circstats import aligned_errors
from napari_rvae.core.config import ModelConfig, TrainConfig
from napari_rvae.core.patches import extract_patches
from napari_rvae.core.synthetic import make_lattice
from napari_rvae.core.train import drive

side = int(sys.argv[1])
epochs = sys.argv[2]
lat = make_lattice((side, side), seed=0)
ps = extract_patches(lat.image, lat.points, 32)
truth = lat.angle_deg[ps.kept]
grain = lat.grain[ps.kept]
ep = epochs if epochs == "auto" else int(epochs)
t = time.perf_counter()
a = drive(train_patches_iter(ps.patches, ps.centers, ModelConfig(symmetry="auto"), TrainConfig(epochs=ep, threads=1)))
dt = time.perf_counter() - t
err, sign = aligned_errors(a.table["angle"].to_numpy(), truth)
per = {int(g): float(np.mean(err[grain == g])) for g in np.unique(grain)}
print(
    f"n={len(truth)} epochs={epochs} budget={a.training.budget} wall={dt:.0f}s train={a.training.seconds:.0f}s "
    f"median_err={np.median(err):.2f} per_grain_mean_err={per} load={os.getloadavg()[0]:.1f}",
    flush=True,
)
