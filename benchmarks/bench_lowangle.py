"""Small rotations on synthetic crystals (issue #17, target 3): low-angle grains and a bent lattice.

Run: ``python benchmarks/bench_lowangle.py`` (every case and estimator, 20
epochs), ``--epochs 3`` for a quick run; ``--write-docs`` puts the table into
docs/science.md (its own section, replaced on the next write).

Cases (:func:`napari_rvae.core.synthetic.make_lattice`, the true atom
positions as points, patch 24 px, spacing 12 px):

* **Low-angle grains**: four Voronoi grains at 10, 11, 12 and 15 degrees
  (misorientations 1, 2 and 5 degrees against the first), 384 x 384 px.
  Scored: the circular mean of ``angle`` over each grain's atoms that lie more
  than half a patch from every atom of another grain, minus the first
  grain's; error = measured step - true step.
* **Bent lattice**: one grain bent so that its orientation rises linearly by
  10 degrees from the left edge to the right (``bend_deg``), 192 x 384 px.
  Scored: ``angle`` minus each atom's true local orientation, less its
  circular mean (the zero is arbitrary), averaged in eight bins along x; the
  largest bin mean is the profile error; ``bend`` is the slope of a line
  fitted to ``angle`` against the true orientation, times 10.

Two motifs: a hexagonal lattice of round columns (6-fold; psi_6) and the
product's square lattice of dumbbells (1-fold motif; psi_4 sees only the
square lattice, so its period is 90 degrees). The product runs with its
defaults (``--symmetry auto``); the run stops if the estimate is not the
motif's symmetry. Atoms whose patch leaves the image are dropped by the
product and not scored.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree

from bench_real import MACHINE, circmean, estimate, wrap, write_docs
from napari_rvae.core.synthetic import make_lattice

TITLE = "## Synthetic small rotations: low-angle grains and bending (issue #17)"
START, END = "<!-- bench_lowangle:start -->", "<!-- bench_lowangle:end -->"
GRAINS = [(96.0, 96.0, 10.0), (96.0, 288.0, 11.0), (288.0, 96.0, 12.0), (288.0, 288.0, 15.0)]
BEND = 10.0
BINS = 8

# motif -> (make_lattice keywords, estimators: (row label, CLI arguments, period in degrees or psi order))
MOTIFS = {
    "hexagonal, round columns": (
        dict(lattice="hexagonal", satellite_amplitude=0.0),
        [("`train` (defaults: auto, expects 6-fold)", [], 60.0), ("psi_6 (no learning)", 6, 60.0)],
    ),
    "square, dumbbells": (
        dict(lattice="square"),
        [("`train` (defaults: auto, expects 1-fold)", [], 360.0), ("psi_4 (no learning)", 4, 90.0)],
    ),
}


def run_estimator(row, image, points, folder, args):
    label, how, period = row
    if isinstance(how, int):  # psi_n: the shared estimate() takes (label, None, n)
        angle, _, sec, n = estimate((label, None, how), image, points, folder, args)
    else:
        angle, _, sec, n = estimate((label, how, int(round(360.0 / period))), image, points, folder, args)
    if not np.isclose(360.0 / n, period):
        raise SystemExit(f"{label}: the angles came out {n}-fold, the row expects a period of {period:g} deg")
    return angle, sec


def low_angle(kwargs, row, args, folder):
    lat = make_lattice((384, 384), spacing=12.0, grains=GRAINS, second_species="none", seed=args.seed, **kwargs)
    points = pd.DataFrame(lat.points, columns=["y", "x"])
    angle, sec = run_estimator(row, lat.image, points, folder, args)
    period = row[2]
    other = [cKDTree(lat.points[lat.grain != g]) for g in range(len(GRAINS))]
    means = []
    for g in range(len(GRAINS)):
        d, _ = other[g].query(lat.points)
        mine = (lat.grain == g) & (d > args.patch_size / 2) & np.isfinite(angle)
        means.append(circmean(angle[mine], period))
    errors = {
        f"{GRAINS[g][2] - GRAINS[0][2]:g}": float(wrap(means[g] - means[0] - (GRAINS[g][2] - GRAINS[0][2]), period))
        for g in range(1, len(GRAINS))
    }
    return {"errors": errors, "seconds": sec}


def bent(kwargs, row, args, folder):
    lat = make_lattice(
        (192, 384),
        spacing=12.0,
        grains=[(96.0, 192.0, 0.0)],
        bend_deg=BEND,
        second_species="none",
        seed=args.seed,
        **kwargs,
    )
    points = pd.DataFrame(lat.points, columns=["y", "x"])
    angle, sec = run_estimator(row, lat.image, points, folder, args)
    period = row[2]
    ok = np.isfinite(angle)
    diff = wrap(angle[ok] - lat.angle_deg[ok], period)
    diff = wrap(diff - circmean(diff, period), period)
    x = lat.points[ok, 1]
    edges = np.linspace(x.min(), x.max() + 1e-9, BINS + 1)
    which = np.digitize(x, edges) - 1
    profile = [float(diff[which == b].mean()) for b in range(BINS) if (which == b).any()]
    unwrapped = lat.angle_deg[ok] + diff  # the estimate, unwrapped around the truth
    slope = float(np.polyfit(lat.angle_deg[ok], unwrapped, 1)[0])
    return {
        "profile": profile,
        "profile_error": float(np.max(np.abs(profile))),
        "bend": slope * BEND,
        "atoms": int(ok.sum()),
        "seconds": sec,
    }


def markdown(res: dict, args, seconds: float, command: str) -> str:
    steps = [f"{g[2] - GRAINS[0][2]:g}" for g in GRAINS[1:]]
    head = [
        "motif",
        "estimator",
        *[f"grains {s}° apart: error" for s in steps],
        "bent 10°: profile error",
        "bent: measured bend",
        "time (s)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for motif, rows in res.items():
        for label, r in rows.items():
            la, be = r["low_angle"], r["bent"]
            cells = [
                motif,
                label,
                *[f"{la['errors'][s]:+.2f}" for s in steps],
                f"{be['profile_error']:.2f}",
                f"{be['bend']:.2f}",
                f"{la['seconds'] + be['seconds']:.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    today = _dt.date.today().isoformat()
    note = (
        f"Measured {today} on a {MACHINE} (torch {torch.__version__}), {seconds / 60:.1f} min in all. "
        f"Command: `{command}` ({args.epochs} epochs, patch {args.patch_size}, seed {args.seed}). "
        "Low-angle: four grains at 10, 11, 12 and 15 deg, error of each grain's step from the first (degrees). "
        f"Bent: orientation rising linearly by {BEND:g} deg across 384 px; profile error: largest of {BINS} "
        "binned means of angle minus the true local orientation (offset removed); measured bend: fitted slope "
        f"times {BEND:g}."
    )
    return "\n".join(lines) + "\n\n" + note


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patch-size", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/bench_lowangle", help="images, points, CLI outputs, results.json")
    ap.add_argument("--write-docs", action="store_true", help="put the table into docs/science.md")
    args = ap.parse_args(argv)
    command = " ".join(["python benchmarks/bench_lowangle.py", *(sys.argv[1:] if argv is None else argv)])
    t0 = time.perf_counter()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    res = {}
    for motif, (kwargs, rows) in MOTIFS.items():
        res[motif] = {}
        for row in rows:
            slug = re.sub(r"[^a-z0-9]+", "-", f"{motif} {row[0]}".lower()).strip("-")
            la = low_angle(kwargs, row, args, work / f"low-{slug}")
            be = bent(kwargs, row, args, work / f"bent-{slug}")
            res[motif][row[0]] = {"low_angle": la, "bent": be}
            print(
                f"{motif} | {row[0]}: low-angle errors "
                + ", ".join(f"{s}: {e:+.2f}" for s, e in la["errors"].items())
                + f"; bent: profile error {be['profile_error']:.2f}, bend {be['bend']:.2f}",
                flush=True,
            )
    seconds = time.perf_counter() - t0
    table_md = markdown(res, args, seconds, command)
    (work / "results.json").write_text(json.dumps({"args": vars(args), "seconds": seconds, **res}, indent=1))
    print()
    print(table_md)
    if args.write_docs:
        write_docs(table_md, START, END, TITLE)


if __name__ == "__main__":
    sys.exit(main())
