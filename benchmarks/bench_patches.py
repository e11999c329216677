"""Benchmark the "atoms in, patches out" step on a 4096 x 4096 synthetic lattice.

Run: ``python benchmarks/bench_patches.py [--write docs/benchmarks-patches.md]``

Times ``detect_atoms`` (sigma estimated, refinement on) on a hexagonal lattice of
~100,000 Gaussian columns with noise, and ``extract_patches`` for 100,000 points (detected columns at least P/2 from
the edge), patch 32 (edge="drop", normalize="none" and "patch"). Timings are
the first and the best of ``--repeat`` runs (wall clock, ``time.perf_counter``). Memory is the peak of
Python-tracked allocations during one call (``tracemalloc``: numpy registers its
buffers with it), next to the size of the returned patch array.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "core"))

from lattice_util import make_lattice  # noqa: E402

from napari_rvae.core.detect import detect_atoms  # noqa: E402
from napari_rvae.core.patches import extract_patches  # noqa: E402

MACHINE = "2-core CPU dev machine"


def best_time(fn, repeat):
    """(first, best) wall-clock seconds over ``repeat`` calls, and the last result."""
    times = []
    out = None
    for _ in range(repeat):
        out = None  # free the previous result first
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return (times[0], min(times)), out


def _within(df, truth, tol=0.5):
    from scipy.spatial import cKDTree

    d, _ = cKDTree(truth).query(df[["y", "x"]].to_numpy())
    return float(np.mean(d < tol))


def peak_mb(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    out = fn()
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", type=Path, default=None, help="Markdown file to write the results to")
    args = ap.parse_args(argv)

    n = args.size
    # spacing chosen so the lattice has ~5 % more columns than points: enough
    # left after dropping the columns within P/2 of the edge
    spacing = float(np.sqrt(n * n / (1.05 * args.points * np.sqrt(3) / 2)))
    image, truth = make_lattice((n, n), spacing, 2.5, noise=0.1, seed=1)
    rows = []

    t, df = best_time(lambda: detect_atoms(image), args.repeat)
    rows.append(
        (
            f"detect_atoms, {n}x{n} float32, {len(truth):,} columns (sigma estimated, refine com)",
            f"{t[0]:.2f}",
            f"{t[1]:.2f}",
            "",
            f"{len(df):,} found, {_within(df, truth):.1%} within 0.5 px of a true column",
        )
    )

    rng = np.random.default_rng(0)
    pts = df[["y", "x"]].to_numpy()
    c = (args.patch - 1) / 2
    pts = pts[((pts >= c) & (pts <= n - 1 - c)).all(axis=1)]
    if len(pts) >= args.points:
        pts = pts[np.sort(rng.choice(len(pts), args.points, replace=False))]
    else:
        pts = np.column_stack([rng.uniform(20, n - 21, args.points), rng.uniform(20, n - 21, args.points)])
        pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    out_mb = args.points * args.patch**2 * 4 / 2**20
    for normalize in ("none", "patch"):
        t, ps = best_time(lambda: extract_patches(image, pts, args.patch, normalize=normalize), args.repeat)
        del ps
        mem, ps = peak_mb(lambda: extract_patches(image, pts, args.patch, normalize=normalize))
        rows.append(
            (
                f"extract_patches, {args.points:,} points (atom positions, y-sorted), P={args.patch}, "
                f"normalize={normalize}",
                f"{t[0]:.2f}",
                f"{t[1]:.2f}",
                f"{mem:.0f} (output {out_mb:.0f})",
                f"{len(ps):,} patches",
            )
        )
        del ps
    shuffled = rng.permutation(pts)
    t, ps = best_time(lambda: extract_patches(image, shuffled, args.patch), args.repeat)
    rows.append(
        (
            f"extract_patches, same points in random order, P={args.patch}",
            f"{t[0]:.2f}",
            f"{t[1]:.2f}",
            "",
            f"{len(ps):,} patches",
        )
    )
    del ps

    header = f"| step | first call (s) | best of {args.repeat} (s) | peak traced memory, MiB (tracemalloc) | result |"
    lines = [header, "|---|---:|---:|---:|---|"] + ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.write:
        now = _dt.date.today().isoformat()
        info = (
            f"{MACHINE} ({os.cpu_count()} logical CPUs, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}, numpy {np.__version__})"
        )
        text = f"""# Benchmarks: atom detection and patch extraction

Measured on {now} on the {info}, shared with other work at the time,
by `python benchmarks/bench_patches.py --write docs/benchmarks-patches.md`.

Input: {n} x {n} float32 synthetic hexagonal lattice, {len(truth):,} Gaussian columns
(sigma 2.5 px, spacing {spacing:.1f} px, peak 1 on background 0.1, Gaussian noise 0.1).
Times are wall clock: the first call (cold: fresh output pages) and the best of {args.repeat}. Memory is the peak of allocations traced by
`tracemalloc` during one call (numpy buffers included), not the process RSS; the
output array alone is shown in brackets.

{table}

Targets (issue #3): detect_atoms < 10 s, extract_patches (100,000 x 32 x 32) < 1 s with peak
memory not much above the output.
"""
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
        print(f"written to {args.write}")


if __name__ == "__main__":
    main()
