"""Write a synthetic in-situ movie to Zarr, and the helpers the movie benchmarks share.

Run: ``python benchmarks/make_movie.py /tmp/movie.zarr --frames 200 --size 1024``
(about 1 s a frame on a 2-core box: 3.5 min for 200 frames of 1024 x 1024);
``--distinct 4`` renders four distinct frames and repeats them under fresh
noise (a long movie in little time).

The movie is :func:`napari_rvae.core.synthetic.make_movie` (three grains
turning at 0.05, -0.05 and 0.1 degrees a frame, one boundary moving at 0.5 px a
frame, square lattice of dumbbells, one species) written by
:func:`~napari_rvae.core.synthetic.write_movie_zarr`: float32, one frame per
chunk, the recipe in the array's attributes, so :func:`movie_from_zarr` makes
the truth of any frame again without reading the images.

Shared helpers: :class:`PeakRSS` (peak resident memory of a process and all
its children, sampled in a thread), :func:`cli` (the napari-rvae command) and
:func:`run_measured` (a command run with its peak memory and wall time).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from napari_rvae.core.synthetic import LatticeOptions, SyntheticMovie, make_movie, write_movie_zarr

MACHINE = "2-core CPU dev box, torch CPU"


class PeakRSS:
    """Peak resident set size (bytes) of a process tree, children included, sampled in a thread.

    Dask's workers are child processes of the job, so the tree's sum is the
    job's memory. Sampling every ``interval`` seconds misses spikes shorter
    than that; 0.05 s is far below a frame's time.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.05):
        self.pid = os.getpid() if pid is None else pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):  # a worker that ended between the listing and the reading
                total += p.memory_info().rss
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def bench_start(script: str, argv, workdir) -> tuple[str, Path, callable]:
    """A benchmark's command line as typed, its work folder (made), and ``say``: print with seconds since now."""
    command = " ".join([f"python benchmarks/{script}", *(sys.argv[1:] if argv is None else argv)])
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def say(text):
        print(f"[{time.perf_counter() - t0:6.0f} s] {text}", flush=True)

    return command, work, say


def cli() -> list[str]:
    """The napari-rvae command: the installed script, else this Python running the package's main."""
    exe = shutil.which("napari-rvae")
    return [exe] if exe else [sys.executable, "-c", "import sys; from napari_rvae.cli import main; sys.exit(main())"]


def run_measured(cmd: list[str], *, log=None) -> dict:
    """Run ``cmd``; its wall seconds, CPU seconds and the peak memory (MB) of its process tree. Stops on failure.

    The CPU seconds (user + system of the command and every process it waited
    for, dask workers included) do not depend on what else loads the machine:
    they are what to estimate an idle machine's time from.
    """
    t0 = time.perf_counter()
    cpu0 = _children_cpu()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with PeakRSS(proc.pid) as mem:
        out, _ = proc.communicate()
    seconds = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if log is not None:
        log.write_text(out)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return {"seconds": seconds, "cpu_s": cpu, "peak_mb": mem.peak_mb}


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_movie(
    frames: int, size: int, spacing: float, *, seed: int = 0, distinct=None, speedup: float = 1.0, **options
) -> SyntheticMovie:
    """The benchmarks' movie: the default grains scaled to the frame, one species, ``options`` on top.

    ``speedup``: grains turn and the boundary moves this many times faster (a
    movie this many times shorter covers the same turns).
    """
    options.setdefault("second_species", "none")
    grains = [(y, x, a, rate * speedup) for y, x, a, rate in make_movie(1, (size, size), spacing).grains]
    return make_movie(
        frames,
        (size, size),
        spacing,
        grains,
        boundary_velocity=(0.0, 0.5 * speedup),
        distinct=distinct,
        seed=seed,
        **options,
    )


def movie_from_zarr(path) -> SyntheticMovie:
    """The movie a Zarr store written by ``write_movie_zarr`` holds, made again from its recipe (no images read)."""
    import zarr

    rec = dict(zarr.open_array(str(path), mode="r").attrs["synthetic_movie"])
    return make_movie(
        rec["n_frames"],
        tuple(rec["shape"]),
        rec["spacing"],
        rec["grains"],
        boundary_velocity=rec["boundary_velocity"],
        moving_grain=rec["moving_grain"],
        distinct=rec["distinct"],
        seed=rec["seed"],
        **{k: v for k, v in rec["options"].items() if k in LatticeOptions.__dataclass_fields__},
    )


def write_movie(path: Path, movie: SyntheticMovie, *, reuse: bool = True, say=print) -> float:
    """Write ``movie`` to ``path`` (kept when a store there already holds the same recipe); seconds taken."""
    if reuse and path.exists():
        try:
            if movie_from_zarr(path) == movie:
                say(f"{path}: reused (same recipe)")
                return 0.0
        except (KeyError, OSError, ValueError):
            pass
    t0 = time.perf_counter()

    def progress(t):
        if t % 25 == 24 or t == movie.n_frames - 1:
            say(f"  {path.name}: frame {t + 1}/{movie.n_frames} written ({time.perf_counter() - t0:.0f} s)")

    write_movie_zarr(path, movie, overwrite=True, on_frame=progress)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the Zarr store to write (replaced if it holds another movie)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", type=int, default=1024, help="frame side, pixels")
    ap.add_argument("--spacing", type=float, default=12.0, help="lattice constant, pixels")
    ap.add_argument("--distinct", type=int, default=None, help="distinct frames, repeated under fresh noise")
    ap.add_argument("--speedup", type=float, default=1.0, help="grains turn and the boundary moves this much faster")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    movie = bench_movie(
        args.frames, args.size, args.spacing, seed=args.seed, distinct=args.distinct, speedup=args.speedup
    )
    seconds = write_movie(args.out, movie)
    gb = args.frames * args.size**2 * 4 / 1e9
    print(f"{args.out}: {args.frames} frames of {args.size} x {args.size} ({gb:.2f} GB) in {seconds:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
