"""Encoding a Zarr movie several times larger than the memory the job may use: it completes, all rows written.

Full run (after the movie engine and CLI are merged; 384 frames of 2048 x
2048 float32 = 6.4 GB on disk against a 2 GB cap)::

    python benchmarks/bench_movie_memory.py --frames 384 --size 2048 --memory-limit 2GB

Expected: about 30 min on an idle 2-core box (estimated from the CPU seconds
of the quick runs, 2026-11-29, under a load average of 15-18): ~4 min to
write the movie (4 distinct frames, fresh noise on each), ~2 min to train,
then ~6 CPU-s a frame to detect and encode ~7,000 atoms (2048 x 2048 px;
measured with ``--engine frames``), ~3 s a frame on two workers: ~20 min. ``--frames 128`` for a 2.1 GB movie
in a third of the time.

Quick run: ``--frames 8 --size 1024 --train-crop 512`` (about 1.5 min idle). ``--engine frames`` runs
today's 2-D path frame by frame instead (no cluster, no memory limit: the
reference for the row count and the memory of one frame).

Steps: (1) write the movie (:func:`napari_rvae.core.synthetic.make_movie` with
``distinct``: a few rendered frames repeated under fresh noise, square
dumbbells at spacing 24 px, sigma 3 px); (2) train a model with today's
``napari-rvae train`` on the top-left ``--train-crop`` pixels of frame 0
(quality is not the point here); (3) ``napari-rvae encode movie.zarr --model
M --out DIR --workers N --memory-limit CAP/N`` (dask's limit is per worker) as a subprocess while a thread
samples the resident memory of its whole process tree (the dask workers are
its children) every 50 ms; (4) check the results: points.csv has a row for
every atom (``--points truth``: the true columns are given as a (frame, y, x)
points file, so rows = given - dropped at the edge exactly; ``--points
detect``: the job detects, and every frame must hold between 97 % and 103 %
of its true atoms whose patch fits: columns, and their satellites where
they stand apart from them, see ``RESOLVED_SIGMAS``), every frame is present,
and the peak stays under the cap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from make_movie import MACHINE, bench_movie, bench_start, cli, run_measured, write_movie
from napari_rvae.core.readers import write_tiff
from napari_rvae.core.synthetic import satellite_positions

ENGINES = ("cli", "frames")


def parse_bytes(text: str) -> int:
    """'2GB', '1500MB', '2GiB' or a number of bytes."""
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 1e3, "mb": 1e6, "gb": 1e9, "b": 1}
    low = text.strip().lower()
    for unit, factor in units.items():
        if low.endswith(unit):
            return int(float(low[: -len(unit)]) * factor)
    return int(float(low))


def write_truth_points(movie, path: Path) -> int:
    """The true columns of every frame as a (frame, y, x) points file, frame by frame; how many."""
    n = 0
    with open(path, "w") as f:
        f.write("frame,y,x\n")
        for t in range(movie.n_frames):
            truth = movie.truth(t)
            pd.DataFrame({"frame": t, "y": truth.points[:, 0], "x": truth.points[:, 1]}).to_csv(
                f, header=False, index=False
            )
            n += len(truth)
    return n


def train(movie, args, work: Path) -> tuple[Path, float]:
    """model.pt from today's train on a crop of frame 0, and the seconds it took."""
    out = work / f"train-{args.train_crop}-{args.epochs}ep-p{args.patch_size}"
    if (out / "model.pt").exists():
        return out / "model.pt", 0.0
    crop = work / "train-crop.tif"
    write_tiff(crop, movie.frame(0).image[: args.train_crop, : args.train_crop])
    cmd = [*cli(), "train", str(crop), "--out", str(out), "--epochs", str(args.epochs)]
    cmd += ["--patch-size", str(args.patch_size), "--seed", "0", "--quiet"]
    return out / "model.pt", run_measured(cmd, log=work / "train.log")["seconds"]


def encode(movie_path: Path, model: Path, points: Path | None, out: Path, args) -> dict:
    """The encode job, measured: wall seconds and peak memory of its process tree."""
    if args.engine == "frames":
        cmd = [sys.executable, str(Path(__file__).with_name("bench_movie.py")), "--child", "frames"]
        cmd += ["--movie", str(movie_path), "--model", str(model), "--out", str(out), "--workers", "0"]
    else:
        cmd = [*cli(), "encode", str(movie_path), "--model", str(model), "--out", str(out), "--quiet"]
        per_worker = parse_bytes(args.memory_limit) // max(args.workers, 1) // 2**20
        cmd += ["--workers", str(args.workers), "--memory-limit", f"{per_worker}MiB"]
        if points is not None:
            cmd += ["--points", str(points)]
    return run_measured(cmd, log=out.parent / f"{out.name}.log")


# A satellite this many column sigmas from its column is an atom of its own in the image (its own
# maximum); nearer, it is a shoulder of the column. Measured with the defaults (sigma 3 px, satellite
# 45 % of a column): found by the detector at 16 px (5.3 sigma, spacing 48), not at 8 px (2.7 sigma, spacing 24).
RESOLVED_SIGMAS = 4.0


def true_atoms(movie, t: int) -> np.ndarray:
    """Every atom of frame ``t``: the columns and, where the motif has them apart (``RESOLVED_SIGMAS``),
    their satellites, which the detector then rightly finds."""
    truth = movie.truth(t)
    opts = movie.options
    if not opts.satellite_amplitude or opts.satellite_distance * movie.spacing < RESOLVED_SIGMAS * opts.sigma:
        return truth.points
    sat = satellite_positions(truth.points, truth.angle_deg, movie.spacing, movie.options)
    h, w = movie.shape
    inside = (sat[:, 0] >= 0) & (sat[:, 0] < h) & (sat[:, 1] >= 0) & (sat[:, 1] < w)
    return np.concatenate([truth.points, sat[inside]])


def check_rows(out: Path, movie, given: int | None, patch: int) -> dict:
    """Rows in points.csv against the atoms: every frame present, every atom a row (see the module's text)."""
    counts = np.zeros(movie.n_frames, dtype=int)
    for chunk in pd.read_csv(out / "points.csv", usecols=["frame"], chunksize=1_000_000):
        counts += np.bincount(chunk["frame"].to_numpy(), minlength=movie.n_frames)[: movie.n_frames]
    rows = int(counts.sum())
    h, w = movie.shape
    half = patch // 2
    fits = np.array(
        [
            int(((p[:, 0] >= half) & (p[:, 0] < h - half) & (p[:, 1] >= half) & (p[:, 1] < w - half)).sum())
            for p in (true_atoms(movie, t) for t in range(movie.n_frames))
        ]
    )
    ratio = counts / np.maximum(fits, 1)
    res = {"rows": rows, "frames_present": int((counts > 0).sum()), "fit_atoms": int(fits.sum())}
    res["row_ratio_min"], res["row_ratio_max"] = float(ratio.min()), float(ratio.max())
    report = out / "report.json"
    dropped = len(json.loads(report.read_text()).get("dropped_rows", [])) if report.exists() else None
    if given is not None and dropped is not None:
        res["ok"] = bool(rows == given - dropped and res["frames_present"] == movie.n_frames)
    else:
        res["ok"] = bool(res["frames_present"] == movie.n_frames and ratio.min() >= 0.97 and ratio.max() <= 1.03)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=ENGINES, default="cli")
    ap.add_argument("--frames", type=int, default=384)
    ap.add_argument("--size", type=int, default=2048, help="frame side, pixels")
    ap.add_argument("--spacing", type=float, default=24.0)
    ap.add_argument("--sigma", type=float, default=3.0, help="atom width, pixels")
    ap.add_argument("--distinct", type=int, default=4, help="rendered frames, repeated under fresh noise")
    ap.add_argument(
        "--memory-limit",
        default="2GB",
        help="the whole job's cap; encode --memory-limit (per worker) gets it / workers",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--points", choices=("detect", "truth"), default="detect")
    ap.add_argument("--train-crop", type=int, default=1024, help="train on this top-left square of frame 0")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--patch-size", type=int, default=32)
    ap.add_argument("--workdir", default="/tmp/bench_movie_memory")
    args = ap.parse_args(argv)
    command, work, say = bench_start("bench_movie_memory.py", argv, args.workdir)

    movie = bench_movie(args.frames, args.size, args.spacing, distinct=args.distinct, sigma=args.sigma)
    movie_path = work / f"movie-{args.frames}x{args.size}.zarr"
    gb = args.frames * args.size**2 * 4 / 1e9
    write_s = write_movie(movie_path, movie, say=say)
    say(f"movie: {movie_path} ({gb:.2f} GB, {write_s:.0f} s)")
    model, train_s = train(movie, args, work)
    say(f"model: {model} ({train_s:.0f} s)")
    given = None
    points = None
    if args.points == "truth" and args.engine == "cli":
        points = work / f"truth-{args.frames}x{args.size}.csv"
        given = write_truth_points(movie, points)
    out = work / f"encode-{args.engine}-{args.frames}x{args.size}"
    if out.exists():
        import shutil

        shutil.rmtree(out)  # the job refuses to write over a folder of results
    job = encode(movie_path, model, points, out, args)
    check = check_rows(out, movie, given, args.patch_size)
    cap = parse_bytes(args.memory_limit) / 2**20
    ok = bool(check["ok"] and (args.engine == "frames" or job["peak_mb"] <= cap))
    results = {"args": vars(args), "movie_gb": gb, "write_s": write_s, "train_s": train_s, **job, **check, "pass": ok}
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print(markdown(results, args, command, cap))
    return 0 if ok else 1


def markdown(r: dict, args, command: str, cap_mb: float) -> str:
    head = ["engine", "movie", "on disk (GB)", "cap (MB)", "peak memory (MB)", "rows", "frames present"]
    head += ["encode (s)", "CPU (s)", "s / frame", "atoms / s", "result"]
    cells = [args.engine, f"{args.frames} x {args.size}²", f"{r['movie_gb']:.2f}", f"{cap_mb:,.0f}"]
    cells += [f"{r['peak_mb']:,.0f}", f"{r['rows']:,}", f"{r['frames_present']}/{args.frames}", f"{r['seconds']:.0f}"]
    cells += [f"{r['cpu_s']:.0f}"]
    cells += [f"{r['seconds'] / args.frames:.2f}", f"{r['rows'] / r['seconds']:,.0f}", "PASS" if r["pass"] else "FAIL"]
    note = (
        f"Command: `{command}` on a {MACHINE} (load average {os.getloadavg()[0]:.1f} at the end). Rows per frame / true atoms (columns, and satellites where apart) whose patch fits: "
        f"{r['row_ratio_min']:.3f}-{r['row_ratio_max']:.3f}; movie written in {r['write_s']:.0f} s, model "
        f"trained in {r['train_s']:.0f} s."
    )
    table = "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n| " + " | ".join(cells) + " |"
    return table + "\n\n" + note


if __name__ == "__main__":
    sys.exit(main())
