"""Time to a map on a large scan: the CLI's main job with its defaults on a ~100,000-atom polycrystal.

Full run (the target of the training budget: <= 3 minutes on the 2-core dev machine, per-grain
angle error <= 1 degree after one offset, a 5 % species as its own class with jrvae)::

    python benchmarks/bench_time_to_map.py --size 4096 --spacing 12.5 --grains 6

The scan (:func:`napari_rvae.core.synthetic.make_lattice`): a square lattice of dumbbells (a
1-fold motif), ``--grains`` Voronoi grains at seeded random places and angles, a second species
on a random 5 % of the sites. Two runs, each a fresh ``napari-rvae train SCAN --out DIR`` with
nothing else (detection, ``--epochs auto``, encoding, maps), then the same with ``--model jrvae
--classes 2``. Scored against the truth: each detected atom is matched to the nearest true
column (within 0.35 spacing); per grain, the circular mean of ``angle`` minus the true angle over
the atoms more than one spacing from another grain's columns; one sign and one offset are fitted
over the grains (``core.circstats.aligned_errors``); the error is what is left. Species: the
adjusted Rand index of ``class`` against the true species.

"Today's 50 epochs" is not run (about an hour): it is extrapolated from the run's own measured
training rate (``report.json``'s ``patches_per_second``) times 50 passes over every patch, and
said so. Wall seconds depend on the machine's load; the CPU seconds of the job (all processes)
are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from make_movie import cli, run_measured  # the benchmarks' shared helpers (benchmarks/ is the script's folder)
from napari_rvae.core.circstats import aligned_errors, circular_mean_spread
from napari_rvae.core.readers import write_tiff
from napari_rvae.core.synthetic import make_lattice


def make_scan(args, work: Path):
    """The polycrystal, written as a calibrated TIFF; its truth."""
    rng = np.random.default_rng(args.seed)
    seeds = rng.uniform(0.1, 0.9, size=(args.grains, 2)) * args.size
    angles = rng.uniform(-180.0, 180.0, size=args.grains)
    grains = tuple((float(y), float(x), float(a)) for (y, x), a in zip(seeds, angles))
    lat = make_lattice(
        (args.size, args.size),
        spacing=args.spacing,
        grains=grains,
        seed=args.seed,
        second_species="random",
        second_fraction=args.minority,
    )
    path = work / "scan.tif"
    write_tiff(path, lat.image, pixel_size=lat.pixel_size, unit=lat.unit)
    return path, lat


def score(run: Path, lat, spacing: float) -> dict:
    """Per-grain angle error after one sign and offset; species ARI; atoms found."""
    from sklearn.metrics import adjusted_rand_score

    table = pd.read_csv(run / "points.csv")
    report = json.loads((run / "report.json").read_text())
    period = 360.0 / report["model_config"]["symmetry"]
    dist, near = cKDTree(lat.points).query(table[["y", "x"]].to_numpy(), distance_upper_bound=0.35 * spacing)
    ok = np.isfinite(dist)
    grain = lat.grain[near[ok]]
    others = [cKDTree(lat.points[lat.grain != g]) for g in range(len(lat.grains))]
    inner = np.array([others[g].query(p)[0] > spacing for g, p in zip(grain, lat.points[near[ok]])])
    pred, true, g_in = table["angle"].to_numpy()[ok][inner], lat.angle_deg[near[ok]][inner], grain[inner]
    means, truths = [], []
    for g in np.unique(g_in):
        means.append(circular_mean_spread(pred[g_in == g], period)[0])
        truths.append(float(true[g_in == g][0]))  # one orientation per grain (no bend)
    errors, _ = aligned_errors(np.array(means), np.array(truths), period=period)
    out = {
        "atoms_true": int(len(lat.points)),
        "atoms_found": int(len(table)),
        "matched": int(ok.sum()),
        "grain_errors_deg": [round(float(e), 3) for e in errors],
        "max_grain_error_deg": round(float(errors.max()), 3),
        "period": period,
        "budget": report.get("budget"),
        "patches_per_second": report.get("patches_per_second"),
        "n_patches": report.get("n_patches"),
    }
    if "class" in table:
        out["species_ari"] = round(float(adjusted_rand_score(lat.species[near[ok]], table["class"].to_numpy()[ok])), 3)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--spacing", type=float, default=12.5)
    ap.add_argument("--grains", type=int, default=6)
    ap.add_argument("--minority", type=float, default=0.05, help="share of the second species")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-jrvae", action="store_true")
    ap.add_argument("--workdir", default="/tmp/bench_time_to_map")
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    scan, lat = make_scan(args, work)
    print(f"scan {args.size} x {args.size}: {len(lat.points):,} true atoms, {args.grains} grains", flush=True)
    rows = {}
    for name, extra in (("rvae", []), ("jrvae", ["--model", "jrvae", "--classes", "2"])):
        if name == "jrvae" and args.skip_jrvae:
            continue
        run = work / f"run_{name}"
        cmd = [*cli(), "train", str(scan), "--out", str(run), *extra]
        measured = run_measured(cmd, log=work / f"{name}.log")
        rows[name] = {**measured, **score(run, lat, args.spacing)}
        print(name, json.dumps(rows[name]), flush=True)
    fast = rows["rvae"]
    full_steps = 50 * fast["atoms_found"]
    rows["today_50_epochs_extrapolated_s"] = round(full_steps / fast["patches_per_second"], 0)
    rows["load_average"] = os.getloadavg()
    (work / "results.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
