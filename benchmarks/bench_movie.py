"""A synthetic in-situ movie end to end: throughput chunked vs in memory, memory vs length, angles vs truth.

Full run (after the movie engine and CLI are merged)::

    python benchmarks/bench_movie.py --engine cli --frames 200 --size 1024 --memory-frames 25,50,100,200

Expected: about 60 min on an idle 2-core box (estimated from the CPU
seconds of the quick runs, 2026-11-29, when a load average of 11-18 made
every wall clock 5-10 times longer): ~3.5 min to write the movie, ~5-10 min
to train on frame 0 (7,250 patches, 20 epochs), then ~6.5 CPU-s a frame
(detection and encoding of ~7,250 atoms; 1.5 CPU-s for 1,630 atoms of a
512 x 512 frame measured): the chunked runs on 25 + 50 + 100 + 200 frames at
~3.3 s a frame on two workers (~20 min) and the in-memory run on 200 frames
(~20 min), plus ~30 s to start each cluster. ``--engine python`` runs the
same jobs through ``core.movie`` in a child Python. ``--memory-frames 25,200``
saves a third.

Quick run: ``--frames 12 --size 512 --memory-frames 6,12 --epochs 5 --speedup 16`` (the same turns
as 200 frames; ~3 min idle, 10-15 min on the loaded box). ``--engine frames``
needs no movie engine: today's 2-D path (``detect_atoms`` and ``apply_model``)
frame by frame in one process, the reference the others must match.

The movie (:func:`napari_rvae.core.synthetic.make_movie`, written by
``benchmarks/make_movie.py``): a square lattice of dumbbells (1-fold motif),
spacing 12 px, three grains turning at 0.05, -0.05 and 0.1 degrees a frame,
the first grain's boundary moving at 0.5 px a frame. One model is trained
(``--train-frames 1``: on frame 0 with today's ``train``; more: on that many
evenly spaced frames as a clip, with the movie ``train``), then every run
detects and encodes the movie with it.

Engines (``--engine``):

* ``cli``: ``napari-rvae encode movie.zarr --model M --out DIR --workers N``
  (chunked: ``--workers 2`` on a LocalCluster; in memory: ``--workers 0``).
* ``python``: ``core.movie.detect_frames`` / ``encode_frames`` in a child
  Python, with ``core.cluster.compute_client(workers=N)`` or no client.
* ``frames``: today's 2-D path frame by frame in a child Python (in memory only).

Each run is a fresh process; its peak memory is the resident set of its whole
process tree (dask workers included) sampled every 50 ms. Memory vs length:
the chunked run (``frames``: the only run) on the first 25, 50, 100 and 200
frames; flat means the peak does not grow with the frames.

Angles: each detected atom is matched to the nearest true column (within 0.35
spacing); per frame and grain, the circular mean of ``angle`` over the atoms
more than half a patch from every column of another grain; error = that mean
minus the grain's true angle minus the one global offset (the circular mean
of all those differences), wrapped into the symmetry period 360/n of the
model. Pass: the largest error over every frame and grain <= ``--max-error``
(1 degree).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from make_movie import MACHINE, bench_movie, bench_start, cli, movie_from_zarr, run_measured, write_movie
from napari_rvae.core.synthetic import write_movie_zarr

ENGINES = ("cli", "python", "frames")
CHUNKED, IN_MEMORY = "chunked", "in memory"
POINTS_COLUMNS = ["frame", "y", "x", "angle"]


# --- circular statistics with a period ------------------------------------------------------------


def wrap(a, period):
    """Into [-period / 2, period / 2)."""
    return np.mod(np.asarray(a, float) + period / 2.0, period) - period / 2.0


def circmean(a, period) -> float:
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return float("nan")
    return float(np.angle(np.exp(2j * np.pi * a / period).mean()) * period / (2 * np.pi))


# --- the runs -------------------------------------------------------------------------------------


def child_main(args) -> None:
    """One job in this process (a fresh one, started by :func:`run_child`): points.csv and timings.json."""
    from napari_rvae.core.modelfile import load_model

    model, extra = load_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    level, edge = extra.get("level", "none"), extra.get("edge", "drop")
    run = run_frames_2d if args.child == "frames" else run_movie_api
    with open(out / "points.csv", "w") as f:
        f.write(",".join(POINTS_COLUMNS) + "\n")
        timings = run(
            args, model, level, edge, lambda table: table[POINTS_COLUMNS].to_csv(f, header=False, index=False)
        )
    (out / "timings.json").write_text(json.dumps(timings))


def run_frames_2d(args, model, level, edge, emit) -> dict:
    """Today's 2-D path on each frame: level, detect_atoms, apply_model (patches, encoding, lattice check)."""
    import zarr

    from napari_rvae.core.analysis import apply_model
    from napari_rvae.core.detect import detect_atoms
    from napari_rvae.core.level import level_image

    arr = zarr.open_array(args.movie, mode="r")
    detect_s, encode_s, atoms = 0.0, 0.0, 0
    for t in range(arr.shape[0]):
        t0 = time.perf_counter()
        image = level_image(np.asarray(arr[t], dtype=np.float32), level)
        found = detect_atoms(image)
        t1 = time.perf_counter()
        res = apply_model(image, found[["y", "x"]].to_numpy(), model, edge=edge)
        encode_s += time.perf_counter() - t1
        detect_s += t1 - t0
        table = pd.DataFrame({"frame": t, "y": res.centers[:, 0], "x": res.centers[:, 1]})
        table["angle"] = res.table["angle"].to_numpy()
        emit(table)
        atoms += len(table)
    return {"detect_s": detect_s, "encode_s": encode_s, "frames": int(arr.shape[0]), "atoms": atoms}


def run_movie_api(args, model, level, edge, emit) -> dict:
    """The movie job's Python API: detect_frames, then encode_frames streamed, on a cluster or in this process."""
    from napari_rvae.core.cluster import compute_client
    from napari_rvae.core.movie import detect_frames, encode_frames
    from napari_rvae.core.stack import open_inputs

    scans = open_inputs([args.movie], layout="movie")
    client_cm = compute_client(workers=args.workers) if args.workers else contextlib.nullcontext(None)
    atoms = 0
    with client_cm as client:
        t0 = time.perf_counter()
        found = detect_frames(scans, {}, client=client, level=level)
        t1 = time.perf_counter()
        for res in encode_frames(scans, found, model, client=client, edge=edge, level=level):
            table = res.table.assign(frame=res.frame)
            emit(table)
            atoms += len(table)
        t2 = time.perf_counter()
    return {"detect_s": t1 - t0, "encode_s": t2 - t1, "frames": scans.n_frames, "atoms": atoms}


def run_job(engine: str, mode: str, movie: Path, model: Path, out: Path, args) -> dict:
    """One detection + encoding job in a fresh process: wall seconds, peak memory, atoms."""
    workers = args.workers if mode == CHUNKED else 0
    if engine == "cli":
        cmd = [*cli(), "encode", str(movie), "--model", str(model), "--out", str(out), "--workers", str(workers)]
        cmd += ["--quiet"]
    else:
        child = "frames" if engine == "frames" else "python"
        cmd = [sys.executable, __file__, "--child", child, "--movie", str(movie), "--model", str(model)]
        cmd += ["--out", str(out), "--workers", str(workers)]
    if out.exists():
        shutil.rmtree(out)  # a run's outputs are made afresh (the CLI refuses a folder of results)
    out.parent.mkdir(parents=True, exist_ok=True)
    res = run_measured(cmd, log=out.parent / f"{out.name}.log")
    res["frames"] = movie_from_zarr(movie).n_frames
    with open(out / "points.csv") as f:
        res["atoms"] = sum(1 for _ in f) - 1
    timings, report = out / "timings.json", out / "report.json"
    if timings.exists():  # the child's own clock: detection and encoding, without starting Python
        res.update(json.loads(timings.read_text()))
        res["job_s"] = res["detect_s"] + res["encode_s"]
    elif report.exists():
        res["job_s"] = json.loads(report.read_text()).get("seconds", {}).get("total", res["seconds"])
    return res


def prefix_movie(src: Path, n: int, dst: Path) -> Path:
    """The first ``n`` frames of the movie at ``src`` as their own store, copied frame by frame."""
    import zarr

    full = zarr.open_array(str(src), mode="r")
    if dst.exists() and zarr.open_array(str(dst), mode="r").attrs.asdict() == _prefix_attrs(full, n):
        return dst
    arr = zarr.create_array(
        store=str(dst),
        shape=(n, *full.shape[1:]),
        chunks=(1, *full.shape[1:]),
        dtype="float32",
        compressors=None,
        dimension_names=("t", "y", "x"),
        overwrite=True,
    )
    for t in range(n):
        arr[t] = full[t]
    arr.attrs.update(_prefix_attrs(full, n))  # last: a store cut short by an interrupt is not reused
    return dst


def _prefix_attrs(full, n: int) -> dict:
    attrs = json.loads(json.dumps(full.attrs.asdict()))
    attrs["synthetic_movie"]["n_frames"] = n
    return attrs


def train_model(movie: Path, args, work: Path) -> tuple[Path, float, int]:
    """model.pt trained on ``--train-frames`` frames; its path, the seconds and the model's symmetry."""
    from napari_rvae.core.modelfile import load_model
    from napari_rvae.core.readers import write_tiff

    clip = f"-x{args.speedup:g}" if args.train_frames > 1 else ""  # frame 0 is the same at any speed
    out = work / (
        f"train-{args.size}px-{args.spacing:g}-{args.train_frames}f{clip}-{args.epochs}ep-p{args.patch_size}"
        f"-sym{args.symmetry}-seed{args.seed}"
    )
    if not (out / "model.pt").exists():
        full = movie_from_zarr(movie)
        if args.train_frames == 1:  # today's 2-D path
            src = work / "frame0.tif"
            write_tiff(src, full.frame(0).image)
        else:
            src = work / f"clip{args.train_frames}.zarr"
            picks = np.linspace(0, full.n_frames - 1, args.train_frames).round().astype(int)
            write_movie_zarr(src, _Clip(full, picks), overwrite=True)
        cmd = [*cli(), "train", str(src), "--out", str(out), "--epochs", str(args.epochs)]
        cmd += ["--patch-size", str(args.patch_size), "--symmetry", args.symmetry, "--seed", str(args.seed), "--quiet"]
        seconds = run_measured(cmd, log=work / "train.log")["seconds"]
    else:
        seconds = json.loads((out / "report.json").read_text())["seconds"].get("total", float("nan"))
    model, _ = load_model(out / "model.pt")
    return out / "model.pt", seconds, int(model.config.symmetry)


class _Clip:
    """A few frames of a movie, picked, for write_movie_zarr (it only reads n_frames, shape, options, frame())."""

    def __init__(self, movie, picks):
        self.movie, self.picks = movie, picks
        self.n_frames, self.shape, self.options = len(picks), movie.shape, movie.options
        self.spacing, self.grains, self.boundary_velocity = movie.spacing, movie.grains, movie.boundary_velocity
        self.moving_grain, self.distinct, self.seed = movie.moving_grain, movie.distinct, movie.seed

    def frame(self, t):
        return self.movie.frame(int(self.picks[t]))


# --- scoring --------------------------------------------------------------------------------------


def grain_series(points_csv: Path, movie, period: float, margin: float) -> pd.DataFrame:
    """Per frame and grain: scored atoms, measured (circular mean) and true angle; detection recall."""
    rows = []
    for t, g in pd.read_csv(points_csv, usecols=POINTS_COLUMNS).groupby("frame"):
        truth = movie.truth(int(t))
        g = g[np.isfinite(g["angle"])]
        d, idx = cKDTree(truth.points).query(g[["y", "x"]].to_numpy(), distance_upper_bound=0.35 * movie.spacing)
        ok = np.isfinite(d)
        idx, angle = idx[ok], g["angle"].to_numpy()[ok]
        grain, pts = truth.grain[idx], truth.points[idx]
        inner = ((truth.points >= margin) & (truth.points <= np.array(movie.shape) - 1 - margin)).all(axis=1)
        recall = len(np.intersect1d(idx, np.flatnonzero(inner))) / max(int(inner.sum()), 1)
        for k, true_angle in enumerate(movie.grain_angles(int(t))):
            others = truth.points[truth.grain != k]
            mine = grain == k
            deep = cKDTree(others).query(pts[mine])[0] > margin if len(others) else np.ones(mine.sum(), bool)
            rows.append((int(t), k, int(deep.sum()), circmean(angle[mine][deep], period), true_angle, recall))
    return pd.DataFrame(rows, columns=["frame", "grain", "atoms", "measured", "truth", "recall"])


def angle_errors(series: pd.DataFrame, period: float) -> pd.DataFrame:
    """``series`` with ``error``: measured - truth - the one global offset, wrapped into the period."""
    diff = wrap(series["measured"] - series["truth"], period)
    offset = circmean(diff, period)
    return series.assign(error=wrap(diff - offset, period), offset=offset)


# --- report ---------------------------------------------------------------------------------------


def markdown(runs: list, series: pd.DataFrame, info: dict, args, command: str) -> str:
    head = ["engine", "mode", "frames", "atoms", "wall (s)", "job (s)", "CPU (s)", "job s / frame", "atoms / s"]
    head += ["peak memory (MB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        job = r.get("job_s", r["seconds"])
        cells = [args.engine, r["mode"], r["frames"], f"{r['atoms']:,}", f"{r['seconds']:.0f}", f"{job:.0f}"]
        cells += [f"{r['cpu_s']:.0f}", f"{job / r['frames']:.2f}", f"{r['atoms'] / job:,.0f}", f"{r['peak_mb']:,.0f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    per = series.groupby("grain").agg(
        max_error=("error", lambda e: float(np.abs(e).max())), turn=("truth", lambda a: float(np.ptp(a)))
    )
    lines += ["", "| grain | true turn over the movie (°) | largest error (°) |", "|---|---|---|"]
    lines += [f"| {k} | {r.turn:.1f} | {r.max_error:.2f} |" for k, r in per.iterrows()]
    worst = float(np.abs(series["error"]).max())
    verdict = "PASS" if worst <= args.max_error else "FAIL"
    first = [r for r in runs if r["mode"] == runs[0]["mode"]]
    growth = first[-1]["peak_mb"] - first[0]["peak_mb"]
    note = (
        f"Measured {_dt.date.today().isoformat()} on a {MACHINE} (load average {os.getloadavg()[0]:.1f} at the end). Command: `{command}`. Movie: {info['frames']} frames "
        f"of {args.size} x {args.size}, spacing {args.spacing:g} px; model trained on {args.train_frames} frame(s), "
        f"{args.epochs} epochs, patch {args.patch_size}, {info['symmetry']}-fold ({info['train_s']:.0f} s). "
        f"Angles: largest per-frame, per-grain error {worst:.2f}° after the global offset "
        f"{float(series['offset'].iloc[0]):.1f}° (period {360 / info['symmetry']:g}°): {verdict} (<= {args.max_error:g}°); "
        f"detection recall {series['recall'].min():.3f} (worst frame). Memory vs length ({first[0]['mode']}): "
        f"{growth:+,.0f} MB from {first[0]['frames']} to {first[-1]['frames']} frames. Wall: the whole process (start, imports, "
        "model); job: detection and encoding by the job's own clock; CPU: user + system of the process tree "
        "(dask workers included), what an idle machine's time can be estimated from."
    )
    return "\n".join(lines) + "\n\n" + note


def run_all(args, work: Path, say) -> tuple[list, dict, Path]:
    """Write the movie and its shorter cuts, train, run every job; the runs and where the scored points are."""
    movie_path = work / f"movie-{args.frames}x{args.size}.zarr"
    movie = bench_movie(args.frames, args.size, args.spacing, seed=args.seed, speedup=args.speedup)
    info = {"frames": args.frames, "write_s": write_movie(movie_path, movie, say=say)}
    model, info["train_s"], info["symmetry"] = train_model(movie_path, args, work)
    say(f"model: {model} ({info['symmetry']}-fold, {info['train_s']:.0f} s)")
    modes = [IN_MEMORY] if args.engine == "frames" else [CHUNKED, IN_MEMORY]
    lengths = sorted({*(n for n in args.memory_frames if n < args.frames), args.frames})
    jobs = [(modes[0], n) for n in lengths] + [(m, args.frames) for m in modes[1:]]
    runs = []
    for mode, n in jobs:
        src = movie_path if n == args.frames else prefix_movie(movie_path, n, work / f"movie-{n}x{args.size}.zarr")
        out = work / "runs" / f"{args.engine}-{mode.replace(' ', '-')}-{n}"
        res = run_job(args.engine, mode, src, model, out, args)
        res.update(mode=mode, out=str(out))
        runs.append(res)
        say(
            f"{args.engine} {mode}, {n} frames: {res['atoms']:,} atoms in {res['seconds']:.0f} s "
            f"(job {res.get('job_s', res['seconds']):.0f} s, CPU {res['cpu_s']:.0f} s) "
            f"({res['seconds'] / n:.2f} s/frame, {res['atoms'] / res['seconds']:,.0f} atoms/s), "
            f"peak {res['peak_mb']:,.0f} MB"
        )
    scored = work / "runs" / f"{args.engine}-{modes[0].replace(' ', '-')}-{args.frames}" / "points.csv"
    return runs, info, scored


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=ENGINES, default="cli")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", type=int, default=1024, help="frame side, pixels")
    ap.add_argument("--spacing", type=float, default=12.0)
    ap.add_argument("--memory-frames", default="25,50,100,200", help="movie lengths of the memory runs")
    ap.add_argument("--workers", type=int, default=2, help="dask workers of the chunked runs")
    ap.add_argument(
        "--speedup", type=float, default=1.0, help="grains turn and the boundary moves this much faster (short runs)"
    )
    ap.add_argument("--train-frames", type=int, default=1, help="1: frame 0, today's train; more: a clip")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patch-size", type=int, default=24)
    ap.add_argument("--symmetry", default="auto")
    ap.add_argument("--max-error", type=float, default=1.0, help="degrees: the pass mark of the angle errors")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/bench_movie", help="movies, model, run outputs, results.json")
    ap.add_argument("--child", choices=("frames", "python"), help=argparse.SUPPRESS)
    ap.add_argument("--movie", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args)
    args.memory_frames = [int(n) for n in args.memory_frames.split(",") if n]
    command, work, say = bench_start("bench_movie.py", argv, args.workdir)
    t0 = time.perf_counter()

    runs, info, scored = run_all(args, work, say)
    movie = movie_from_zarr(work / f"movie-{args.frames}x{args.size}.zarr")
    series = angle_errors(
        grain_series(scored, movie, 360.0 / info["symmetry"], args.patch_size / 2), 360.0 / info["symmetry"]
    )
    series.to_csv(work / "grain_angles.csv", index=False)
    table_md = markdown(runs, series, info, args, command)
    worst = float(np.abs(series["error"]).max())
    results = {
        "args": vars(args),
        "info": info,
        "runs": runs,
        "max_angle_error": worst,
        "seconds": time.perf_counter() - t0,
    }
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print(table_md)
    return 0 if worst <= args.max_error else 1


if __name__ == "__main__":
    sys.exit(main())
