"""The training budget's constants: training throughput, the sample's cost, the budget per size.

Prints Markdown for docs/speed.md ("Training budget"):

1. Training throughput on the synthetic lattice's 32 x 32 patches (CLI model
   defaults, symmetry auto): one run of 1 epoch and one of ``--epochs`` epochs;
   the difference is the per-epoch cost (patches per wall second and per CPU
   second), the 1-epoch run less one epoch the fixed preparation (symmetry
   estimate, coarse alignment, angle_sd calibration). CPU seconds are printed
   because a shared machine's wall clock says more about the others' load.
2. ``stratified_sample`` of 10,000 from 100,000 patches: wall and CPU seconds.
3. The budget ``training_budget`` gives for a range of patch counts.

Options: ``--side`` (lattice side in pixels, default 512: 1,583 patches),
``--epochs`` (default 4), ``--threads`` (default 2).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from napari_rvae.core.budget import stratified_sample, training_budget
from napari_rvae.core.config import ModelConfig, TrainConfig
from napari_rvae.core.patches import extract_patches
from napari_rvae.core.synthetic import make_lattice
from napari_rvae.core.train import train


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def throughput(side: int, epochs: int, threads: int) -> None:
    lattice = make_lattice((side, side), seed=0)
    x = extract_patches(lattice.image, lattice.points, 32).patches
    cfg = ModelConfig(symmetry="auto")
    runs = {}
    for e in (1, epochs):
        runs[e] = _timed(lambda e=e: train(x, cfg, TrainConfig(epochs=e, threads=threads)))
    (_, w1, c1), (_, we, ce) = runs[1], runs[epochs]
    visits = len(x) * (epochs - 1)
    print(f"load average {os.getloadavg()[0]:.1f}; {len(x):,} patches, {threads} threads")
    print("| what | wall s | CPU s | patches / wall s | patches / CPU s |\n|---|---:|---:|---:|---:|")
    print(
        f"| {epochs - 1} epochs (difference) | {we - w1:.1f} | {ce - c1:.1f} | {visits / (we - w1):.0f} | {visits / (ce - c1):.0f} |"
    )
    prep_w, prep_c = w1 - (we - w1) / (epochs - 1), c1 - (ce - c1) / (epochs - 1)
    print(f"| preparation (1-epoch run less an epoch) | {prep_w:.1f} | {prep_c:.1f} | | |")


def sample_cost() -> None:
    x = np.random.default_rng(0).random((100_000, 32, 32), dtype=np.float32)
    _, wall, cpu = _timed(lambda: stratified_sample(x, 10_000))
    print(f"\nstratified_sample 10,000 of 100,000: {wall:.1f} s wall, {cpu:.1f} s CPU (load {os.getloadavg()[0]:.1f})")


def budgets() -> None:
    print("\n| patches | epochs | trained on | steps |\n|---:|---:|---:|---:|")
    for n in (500, 1583, 2000, 5000, 10_000, 20_000, 100_000, 1_000_000):
        b = training_budget(n, 100)
        print(f"| {n:,} | {b.epochs} | {b.n_sample:,} | {b.steps:,} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    budgets()
    sample_cost()
    throughput(args.side, args.epochs, args.threads)
