"""Responsiveness while training: event-loop stalls of a real napari viewer during a Train widget run.

Opens a napari viewer, loads the synthetic lattice sample, starts a training
from the Train rVAE widget (10 epochs by default, the form's other defaults)
and records the event loop's stalls with a 10 ms ``QTimer``: a stall is the
gap between two timer callbacks minus the 10 ms interval. Stalls are counted
separately for opening the widget (until its background imports, core/preload.py,
are done, as they are by the time a user has filled in the form), the training
phase (from the click until the results arrive) and the results phase (drawing the result layers, plus a second after it for
napari to paint them). A stall counts in the phase in which it ends.

Run under a virtual display::

    xvfb-run -a python benchmarks/bench_gui_stalls.py [--epochs 10] [--label TEXT] [--docs docs/speed.md]

Prints a Markdown table; with ``--docs`` it also adds its rows to the table in
that file (between the ``bench_gui_stalls`` markers). ``--diagnose`` samples
the GUI thread's Python stack during stalls and prints where the time went.
This is a benchmark, not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

TICK_S = 0.010
SETTLE_S = 1.0  # after the results are drawn: napari paints the new layers on later events
MARK_BEGIN, MARK_END = "<!-- bench_gui_stalls rows: begin -->", "<!-- bench_gui_stalls rows: end -->"


@dataclass
class StallRecorder:
    """Timer callback times; stalls and the phase boundaries derived from them."""

    ticks: list[float] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)

    def tick(self) -> None:
        self.ticks.append(time.perf_counter())

    def mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter()

    def stalls(self, start: float, end: float) -> list[float]:
        """Stalls (seconds) of the gaps that end within ``(start, end]``."""
        out = []
        for before, after in zip(self.ticks, self.ticks[1:]):
            if start < after <= end:
                out.append(max(after - before - TICK_S, 0.0))
        return out


class StackSampler(threading.Thread):
    """While the GUI thread has not ticked for 50 ms, sample its Python stack (diagnosis only)."""

    def __init__(self, recorder: StallRecorder):
        super().__init__(daemon=True)
        self.recorder, self.main_id = recorder, threading.main_thread().ident
        self.samples: collections.Counter = collections.Counter()
        self.running = True

    def run(self) -> None:
        while self.running:
            time.sleep(0.005)
            ticks = self.recorder.ticks
            if ticks and time.perf_counter() - ticks[-1] > 0.05:
                frame = sys._current_frames().get(self.main_id)
                if frame is not None:
                    stack = traceback.extract_stack(frame)[-6:]
                    key = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))
                    self.samples[key] += 1


def machine() -> str:
    """CPU model and the cores this process may use."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def run_training(epochs: int, recorder: StallRecorder, timeout_s: float, all_threads: bool):
    """Open the viewer, train from the widget, record ticks until the results have settled."""
    import napari
    import torch
    from qtpy.QtCore import Qt, QTimer

    if all_threads:  # what the widget did before it left a core to napari
        from napari_rvae.ui import train_widget

        train_widget.gui_training_threads = torch.get_num_threads

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-rvae", "lattice")
    app = napari.qt.get_qapp()
    for _ in range(20):  # let the window and the layers paint before the clock starts
        app.processEvents()
        time.sleep(0.02)
    timer = QTimer(timerType=Qt.TimerType.PreciseTimer, interval=int(TICK_S * 1000))
    timer.timeout.connect(recorder.tick)
    timer.start()
    recorder.tick()
    recorder.mark("open_start")
    _, widget = viewer.window.add_plugin_dock_widget("napari-rvae", "Train rVAE")
    widget.form.epochs.setValue(epochs)
    widget.form.device.setCurrentText("cpu")
    # As a user fills in the form: the widget's background imports (core/preload.py) finish first.
    while any(t.name == "napari-rvae preload" for t in threading.enumerate()):
        app.processEvents()
        time.sleep(0.001)
    recorder.mark("open_end")

    trained = widget._trained

    def timed_trained(*args, **kwargs):
        recorder.mark("results_start")
        try:
            return trained(*args, **kwargs)
        finally:
            recorder.mark("results_end")

    widget._trained = timed_trained  # the widget's on_done looks it up when the results arrive
    recorder.mark("train_start")
    widget.train_button.click()
    recorder.mark("click_end")
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        app.processEvents()
        end = recorder.marks.get("results_end")
        if end is not None and time.perf_counter() > end + SETTLE_S:
            break
        time.sleep(0.001)
    timer.stop()
    status = widget.status.text()
    viewer.close()
    if "results_end" not in recorder.marks:
        raise SystemExit(f"No results within {timeout_s:.0f} s; the widget says: {status}")
    return status


def phase_rows(recorder: StallRecorder) -> list[dict]:
    m = recorder.marks
    phases = {
        "opening the widget": (m["open_start"], m["open_end"]),
        # The click's own handler (snapshots, napari's activity-dock bar, the plot's reset), whose
        # stall ends with the first tick after it, then the run itself.
        "click": (m["train_start"], _first_tick_after(recorder, m["click_end"])),
        "training": (_first_tick_after(recorder, m["click_end"]), m["results_start"]),
        "results": (m["results_start"], m["results_end"] + SETTLE_S),
    }
    rows = []
    for name, (start, end) in phases.items():
        stalls = recorder.stalls(start, end)
        rows.append(
            {
                "phase": name,
                "seconds": end - start,
                "longest_ms": 1000 * max(stalls, default=0.0),
                "over_50": sum(s > 0.050 for s in stalls),
                "over_100": sum(s > 0.100 for s in stalls),
            }
        )
    return rows


def _first_tick_after(recorder: StallRecorder, t: float) -> float:
    return next((tick for tick in recorder.ticks if tick > t), t)


def table_rows(rows, label: str, load: str, epochs: int) -> list[str]:
    today = datetime.date.today().isoformat()
    return [
        f"| {today} | {label} | {epochs} | {load} | {r['phase']} | {r['seconds']:.1f} | "
        f"{r['longest_ms']:.0f} | {r['over_50']} | {r['over_100']} |"
        for r in rows
    ]


HEADER = [
    "| date | run | epochs | load avg (1 min, before / after) | phase | s | longest stall (ms) | stalls > 50 ms | stalls > 100 ms |",
    "|---|---|---:|---|---|---:|---:|---:|---:|",
]


def add_to_docs(path: Path, lines: list[str]) -> None:
    """Append rows inside the markers of ``path`` (the markers and header are added if missing)."""
    text = path.read_text() if path.exists() else ""
    if MARK_BEGIN not in text:
        text = text.rstrip() + "\n\n" + "\n".join([MARK_BEGIN, *HEADER, MARK_END]) + "\n"
    head, rest = text.split(MARK_END, 1)
    path.write_text(head.rstrip("\n") + "\n" + "\n".join(lines) + "\n" + MARK_END + rest)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--label", default="napari-rvae", help="what this run is (the code's state), for the table")
    ap.add_argument("--docs", type=Path, help="add the rows to this Markdown file's bench_gui_stalls table")
    ap.add_argument("--diagnose", action="store_true", help="sample the GUI thread's stack during stalls")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--all-threads", action="store_true", help="train with all of torch's threads, as the CLI does")
    args = ap.parse_args(argv)

    # The widgets' defaults, not whatever this machine's user last chose (ui/form_memory.py).
    os.environ["NAPARI_RVAE_SETTINGS"] = str(Path(tempfile.mkdtemp()) / "widgets.json")
    load_before = os.getloadavg()[0]
    recorder = StallRecorder()
    sampler = StackSampler(recorder) if args.diagnose else None
    if sampler is not None:
        sampler.start()
    status = run_training(args.epochs, recorder, args.timeout, args.all_threads)
    if sampler is not None:
        sampler.running = False
    load = f"{load_before:.2f} / {os.getloadavg()[0]:.2f}"
    rows = phase_rows(recorder)
    lines = table_rows(rows, args.label, load, args.epochs)
    import torch

    print(f"Machine: {machine()}; Python {platform.python_version()}; torch {torch.__version__}")
    print(f"The widget's status at the end: {status}")
    print("\n".join([*HEADER, *lines]))
    if args.docs:
        add_to_docs(args.docs, lines)
    start = recorder.marks["train_start"]
    worst = sorted(zip(recorder.ticks, recorder.ticks[1:]), key=lambda gap: gap[0] - gap[1])[:5]
    print(
        "Longest stalls (ms at s after the click):",
        ", ".join(f"{1000 * (b - a - TICK_S):.0f} at {a - start:.1f}" for a, b in worst),
    )
    if sampler is not None:
        print("\nGUI thread stacks during stalls (samples every 5 ms):")
        for key, n in sampler.samples.most_common(15):
            print(f"{n:5d}  {key}")


if __name__ == "__main__":
    main()
