"""Background jobs for the widgets: detect atoms, train, apply a model, decode latents.

Contract (what the widgets rely on)
-----------------------------------
* **Snapshot.** :func:`snapshot_image` and :func:`snapshot_points` run on the
  GUI thread and copy what a job needs out of the layers: the image as a
  float32 2-D array, the points as an ``(N, 2)`` array of ``(y, x)`` in the
  image's pixel coordinates, the class codes of a features column (the
  explorer copies a window around one atom). A job sees only these copies, so
  the user may edit, move or delete the layers while it runs.
* **Yields.** A training job yields the core's
  :class:`~napari_rvae.core.train.Progress` (once per epoch and about every
  0.2 s), detection on frames a :class:`FrameProgress` after each frame;
  ``on_progress(progress)`` is called with each one on the GUI thread, and the
  job moves a bar in napari's activity dock.
* **Returns.** ``on_done(result)`` on the GUI thread with the core's result:
  for training and applying a :class:`Results` (the
  :class:`~napari_rvae.core.analysis.Analysis` and its maps, which the worker
  computes because a large scan's tessellation takes seconds), for detection
  the DataFrame, for decoding the images. Only the widget turns it into layers
  or plots: the worker never touches a layer or a widget.
* **Stop** (:meth:`Job.stop`) ends training after the current optimisation
  step; the model trained so far is encoded and handed to ``on_done`` as
  usual, with ``analysis.training.stopped`` set. Detection on frames stops
  between frames and hands over the frames done.
* **Abort** (:meth:`Job.abort`) is stop plus: the result is discarded and
  ``on_done`` is not called.
* **Newest wins.** :meth:`JobWidget.run_job` with a ``kind`` supersedes the
  older job of that kind if it still runs: it is aborted, so only the newest
  request's result reaches ``on_done`` (the explorer's decoding follows
  every slider move and selection).
* **Close** (:meth:`Job.close`) is abort plus ``worker.quit()`` and no
  callback at all afterwards: a :class:`JobWidget` closes all its jobs still
  running, superseded ones too, when it is closed, deleted or its viewer
  closes, so nothing calls into a dead widget.
* **Errors.** An :class:`~napari_rvae.core.errors.InputError` becomes a
  warning notification with its sentence; anything else an error
  notification in one line (the traceback goes to the log, never a dialog).
* ``on_end()`` runs on the GUI thread after every job that was not closed,
  whatever its outcome, so the widget can re-enable its buttons.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QApplication, QWidget

from napari_rvae.core.analysis import Analysis, analyse_iter, apply_model
from napari_rvae.core.bond_order import lattice_period
from napari_rvae.core.config import ModelConfig, TrainConfig
from napari_rvae.core.errors import InputError
from napari_rvae.core.exports import result_maps
from napari_rvae.core.frames import analyse_frames_iter, apply_model_frames, frame_spacing, largest_frame, paint_frames
from napari_rvae.core.image import as_image2d
from napari_rvae.core.labels import class_codes
from napari_rvae.core.latent import latent_manifold, reconstruct
from napari_rvae.core.maps import typical_spacing
from napari_rvae.core.models import RVAE
from napari_rvae.core.patches import extract_patches
from napari_rvae.core.preload import preload_training_imports

from .layers import full_resolution_data, image_shape, points_in_frames, points_in_image_pixels, stack_frames

log = logging.getLogger(__name__)

# Resolution of the activity-dock bar: fine enough for a smooth bar.
_BAR_STEPS = 1000


# ----------------------------------------------------------------------------
# snapshots (GUI thread)


def snapshot_image(layer) -> tuple[np.ndarray, list[str]]:
    """A float32 2-D copy of an image layer's data, plus notes on what was changed.

    RGB layers become their luminance (with a note); stacks raise
    :class:`InputError`. Multiscale layers use their full-resolution level.
    """
    if layer is None:
        raise InputError("Choose an image layer first (open an image or load a sample).")
    if stack_frames(layer):  # said before anything is read: the layer may be a large lazy movie
        raise InputError(f"The image {layer.name!r} is a stack of frames: this needs one 2-D image.")
    img, notes = as_image2d(
        np.asarray(full_resolution_data(layer)), name=f"image {layer.name!r}", rgb=bool(getattr(layer, "rgb", False))
    )
    return np.array(img, dtype=np.float32, copy=True), notes


@dataclass(frozen=True)
class StackSnapshot:
    """A ``(T, Y, X)`` image layer's data, by reference, for a job that reads one frame at a time."""

    data: object  # the layer's full-resolution data (numpy, dask, zarr): never read whole
    name: str
    rgb: bool
    n_frames: int
    frame_shape: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_frames, *self.frame_shape)

    def read(self, t: int) -> np.ndarray:
        """Frame ``t`` as a float32 2-D array (RGB as its luminance); call it in the worker."""
        img, _ = as_image2d(np.asarray(self.data[int(t)]), name=f"frame {t} of {self.name!r}", rgb=self.rgb)
        return np.asarray(img, dtype=np.float32)


def snapshot_stack(layer) -> StackSnapshot:
    """A :class:`StackSnapshot` of a ``(T, Y, X)`` image layer; reads no pixels (GUI thread)."""
    if layer is None:
        raise InputError("Choose an image layer first (open an image or load a sample).")
    n_frames = stack_frames(layer)
    if not n_frames:
        raise InputError(f"The image {layer.name!r} is one 2-D image, not a stack of frames.")
    rgb = bool(getattr(layer, "rgb", False))
    return StackSnapshot(full_resolution_data(layer), layer.name, rgb, n_frames, image_shape(layer))


def snapshot_points(points_layer, image_layer, labels_column: str | None = None, *, stack: bool = False):
    """Copy the points (image pixels) and, if asked, the class codes of a features column.

    Returns
    -------
    points_yx : ndarray, shape (N, 2), or (N, 3) ``(t, y, x)`` with ``stack``
    labels : ndarray of int or None
        Codes ``0..C-1`` of the column's values in sorted order, ``-1`` where
        empty.
    class_names : list or None
        The column's distinct values, in code order.
    """
    if points_layer is None:
        raise InputError("Choose a points layer first: detect atoms or add points by hand.")
    pts = (points_in_frames if stack else points_in_image_pixels)(points_layer, image_layer)
    if len(pts) == 0:
        raise InputError(f"The points layer {points_layer.name!r} is empty: detect atoms or add points first.")
    if not labels_column:
        return pts, None, None
    features = points_layer.features
    if labels_column not in features.columns:
        raise InputError(
            f"The points layer {points_layer.name!r} has no {labels_column!r} column: "
            "assign classes in the Pick atoms widget first."
        )
    labels, names = class_codes(features[labels_column].copy())
    return pts, labels, names


@dataclass(frozen=True)
class TrainInputs:
    """Everything a training job needs, copied off the layers."""

    image: np.ndarray | StackSnapshot
    points_yx: np.ndarray  # (N, 2) y, x; (N, 3) t, y, x on a stack
    model_config: ModelConfig
    train_config: TrainConfig
    labels: np.ndarray | None = None
    class_names: list | None = None
    edge: str = "drop"
    # A trained model whose training goes on (its own config holds); the job trains it in place,
    # so the widget hands over a copy.
    model: RVAE | None = None


@dataclass(frozen=True)
class Results:
    """What a training or applying job hands back: the analysis and its maps over the image."""

    analysis: Analysis
    maps: dict[str, np.ndarray]
    radius: float  # the maps' radius: the typical atom spacing, in image pixels
    psi_period: float | None = None  # the lattice check's period (360 / 4 or 360 / 6); None without it


# ----------------------------------------------------------------------------
# the work itself (worker thread): core calls only


def job_results(analysis: Analysis, image_shape) -> Results:
    """The analysis with the maps :func:`~napari_rvae.ui.result_layers.show_results` draws by default.

    A stack's analysis (its table has ``frame``) gets ``(T, Y, X)`` maps, painted frame by frame;
    ``image_shape`` is then the stack's shape.
    """
    table, centers = analysis.table, analysis.centers
    period = 360.0 / int(analysis.model.config.symmetry)
    if "frame" in table:
        frames = table["frame"].to_numpy()
        radius = frame_spacing(centers, frames)
        psi_period = lattice_period(centers[largest_frame(frames)]) if "psi_angle" in table else None
        paint = paint_frames
    else:
        radius = typical_spacing(centers)
        psi_period = lattice_period(centers) if "psi_angle" in table else None
        paint = result_maps
    maps = paint(image_shape, centers, table, period=period, radius=radius, psi_period=psi_period)
    return Results(analysis, maps, radius, psi_period)


def _train(inputs: TrainInputs, stop: threading.Event):
    image, options = inputs.image, dict(labels=inputs.labels, edge=inputs.edge, stop=stop, model=inputs.model)
    configs = (inputs.model_config, inputs.train_config)
    if isinstance(image, StackSnapshot):
        frames_iter = analyse_frames_iter(image.read, inputs.points_yx, *configs, n_frames=image.n_frames, **options)
        analysis = yield from frames_iter
    else:
        analysis = yield from analyse_iter(image, inputs.points_yx, *configs, **options)
    return job_results(analysis, image.shape)


def _apply(image, points_yx, model, labels, edge):
    if isinstance(image, StackSnapshot):
        analysis = apply_model_frames(image.read, points_yx, model, n_frames=image.n_frames, labels=labels, edge=edge)
    else:
        analysis = apply_model(image, points_yx, model, labels=labels, edge=edge)
    return job_results(analysis, image.shape)


def _detect(image, options: dict, level: str) -> tuple[np.ndarray, pd.DataFrame]:
    from napari_rvae.core.detect import detect_atoms
    from napari_rvae.core.level import level_image

    levelled = level_image(image, level)
    return levelled, detect_atoms(levelled, **options)


@dataclass(frozen=True)
class FrameProgress:
    """Detection on frames: ``done`` of ``total`` frames, ``atoms`` found so far."""

    done: int
    total: int
    atoms: int

    @property
    def fraction(self) -> float:
        return self.done / max(self.total, 1)


def _detect_frames(stack: StackSnapshot, frames, options: dict, level: str, stop: threading.Event):
    """Detect frame by frame, reading one plane at a time; stops between frames when ``stop`` is set.

    Returns ``(table, frames done)``: the table has ``frame`` before ``y, x``.
    """
    from napari_rvae.core.detect import detect_atoms
    from napari_rvae.core.level import level_image

    tables, done = [], []
    for t in frames:
        if stop.is_set():
            break
        table = detect_atoms(level_image(stack.read(t), level), **options)
        table.insert(0, "frame", int(t))
        tables.append(table)
        done.append(int(t))
        yield FrameProgress(len(done), len(frames), sum(len(tab) for tab in tables))
    columns = ["frame", "y", "x", "strength"]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
    return table, done


def _reconstruct(window, center_yx, model, labels):
    patches = extract_patches(window, [center_yx], model.config.patch_size, edge="reflect").patches
    return patches[0], reconstruct(model, patches, labels=labels)[0]


# ----------------------------------------------------------------------------
# the job (GUI thread side)


class Job:
    """One core call running in a napari thread worker; see the module docstring."""

    def __init__(
        self,
        func: Callable,
        *args,
        desc: str,
        stop: threading.Event | None = None,
        determinate: bool = False,
        bar: bool = True,
        on_progress: Callable | None = None,
        on_done: Callable | None = None,
        on_end: Callable | None = None,
    ):
        self.desc = desc
        self._stop = stop or threading.Event()
        self._discard = False
        self._closed = False
        self.running = True
        self.on_progress, self.on_done, self.on_end = on_progress, on_done, on_end
        # Our own bar (not create_worker's), so it can follow the training fraction. Jobs that
        # follow the user's every move (decoding in the explorer) go without: they would only flicker.
        self._bar = progress(total=_BAR_STEPS if determinate else 0, desc=desc) if bar else None
        self._worker = create_worker(func, *args, _ignore_errors=True, _start_thread=False)
        if hasattr(self._worker, "yielded"):
            self._worker.yielded.connect(self._yielded)
        self._worker.returned.connect(self._returned)
        self._worker.errored.connect(self._errored)
        self._worker.finished.connect(self._finished)
        self._worker.start()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """End training after the current step; the partial result is still delivered."""
        self._stop.set()

    def abort(self) -> None:
        """End training and discard the result."""
        self._discard = True
        self._stop.set()

    def close(self) -> None:
        """Abort, ask the worker to quit, and call nothing back any more."""
        self._closed = True
        self.abort()
        if self.running:
            self._worker.quit()
        self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _yielded(self, report) -> None:
        if self._closed:
            return
        if self._bar is not None and hasattr(report, "fraction"):
            target = int(round(min(max(report.fraction, 0.0), 1.0) * _BAR_STEPS))
            if target > self._bar.n:
                self._bar.update(target - self._bar.n)
        if self.on_progress is not None:
            self.on_progress(report)

    def _returned(self, result) -> None:
        if self._closed or self._discard:
            return
        if self.on_done is not None:
            self.on_done(result)

    def _errored(self, exc: BaseException) -> None:
        if self._closed:
            return
        if isinstance(exc, InputError):
            show_warning(str(exc))
        else:
            log.error("%s failed", self.desc, exc_info=exc)
            show_error(f"{self.desc} failed: {type(exc).__name__}: {exc}")

    def _finished(self) -> None:
        self.running = False
        self._close_bar()
        if not self._closed and self.on_end is not None:
            self.on_end()


def preload_in_background() -> None:
    """Start the heavy imports of training (:mod:`napari_rvae.core.preload`) in a daemon thread.

    Not a :class:`Job`: there is nothing to show, stop or wait for, and a failure only means the
    first training imports them itself (logged).
    """

    def preload():
        try:
            preload_training_imports()
        except Exception as exc:  # the first training imports them itself
            log.debug("Preloading the training imports failed", exc_info=exc)

    threading.Thread(target=preload, name="napari-rvae preload", daemon=True).start()


def start_training(inputs: TrainInputs, **callbacks) -> Job:
    """Train in the background; ``on_done`` gets the :class:`Results`."""
    stop = threading.Event()
    return Job(_train, inputs, stop, desc="Training rVAE", stop=stop, determinate=True, **callbacks)


def start_apply(image, points_yx, model, *, labels=None, edge="drop", **callbacks) -> Job:
    """Encode the points with a trained model in the background; ``on_done`` gets the :class:`Results`."""
    return Job(_apply, image, points_yx, model, labels, edge, desc="Applying model", **callbacks)


def start_detection(image, options: dict, level: str = "none", **callbacks) -> Job:
    """Level ``image`` (:mod:`napari_rvae.core.level`) and run the atom detector in the background.

    ``on_done`` gets ``(levelled image, DataFrame of the atoms)``.
    """
    return Job(_detect, image, dict(options), level, desc="Detecting atoms", **callbacks)


def start_frame_detection(stack: StackSnapshot, frames, options: dict, level: str = "none", **callbacks) -> Job:
    """Detect atoms on ``frames`` of a stack in the background, frame by frame, with a bar; :meth:`Job.stop`
    ends it between frames.

    ``on_done`` gets ``(DataFrame with frame, y, x, ..., frames done)``.
    """
    stop = threading.Event()
    frames = [int(t) for t in frames]
    desc = f"Detecting atoms on {len(frames)} frames" if len(frames) > 1 else f"Detecting atoms on frame {frames[0]}"
    return Job(
        _detect_frames, stack, frames, dict(options), level, stop, desc=desc, stop=stop, determinate=True, **callbacks
    )


def start_manifold(model, d: int, *, dims, z_range, angle_deg: float, class_index: int, **callbacks) -> Job:
    """Decode the ``d x d`` latent manifold in the background; ``on_done`` gets the mosaic."""
    decode = partial(
        latent_manifold, model, d, dims=dims, z_range=z_range, angle_deg=angle_deg, class_index=class_index
    )
    return Job(decode, desc="Decoding the manifold", bar=False, **callbacks)


def start_reconstruction(window, center_yx, model, *, labels=None, **callbacks) -> Job:
    """Cut the patch at ``center_yx`` out of ``window`` and decode it in the background.

    ``on_done`` gets ``(patch, reconstruction)``.
    """
    return Job(_reconstruct, window, center_yx, model, labels, desc="Reconstructing the atom", bar=False, **callbacks)


class JobWidget(QWidget):
    """A dock widget that runs :class:`Job` s and closes them when it goes away.

    Two ways to run a job. ``run_job(job)`` for actions the user starts one at
    a time (detect, train, apply): the widget checks :attr:`busy` before it
    starts one. ``run_job(job, kind=...)`` for requests that follow the user's
    input (decoding in the explorer): the newest request of a kind wins, an
    older one still running is superseded (aborted: its result is dropped).

    Every job not yet finished, superseded ones included, is closed (aborted,
    no callbacks) when the widget is closed or deleted, taken out of its dock
    (napari's close button does that), when its window is hidden or closed
    (the viewer closing) and when the application quits. Hiding only the dock
    (a tab switch) keeps them running.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.job: Job | None = None  # the newest job
        self._jobs: list[Job] = []  # every job that may still be running
        self._newest: dict[str, Job] = {}  # by kind, for the newest-request-wins jobs

    @property
    def busy(self) -> bool:
        return self.job is not None and self.job.running

    def run_job(self, job: Job, *, kind: str | None = None) -> Job:
        """Keep ``job`` to close it with the widget; with ``kind``, supersede that kind's older job."""
        if kind is not None:
            older = self._newest.get(kind)
            if older is not None and older.running:
                older.abort()
            self._newest[kind] = job
        self._forget_finished()
        self._jobs.append(job)
        self.job = job
        # Bound to the job, not to self: these may fire after the widget's C++ side is gone.
        self.destroyed.connect(job.close)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(job.close)
        return job

    def _forget_finished(self) -> None:
        for job in self._jobs:
            if not job.running:
                self._unbind(job)
        self._jobs = [job for job in self._jobs if job.running]

    def _unbind(self, job: Job) -> None:
        for signal in (self.destroyed, getattr(QApplication.instance(), "aboutToQuit", None)):
            with contextlib.suppress(TypeError, RuntimeError, AttributeError):
                signal.disconnect(job.close)

    def close_jobs(self) -> None:
        """Close every job still running: none calls back any more."""
        for job in getattr(self, "_jobs", ()):  # Qt may send events before __init__ has set it
            if job.running:
                job.close()

    def closeEvent(self, event):
        self.close_jobs()
        super().closeEvent(event)

    def event(self, event):
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.close_jobs()  # napari's dock close button re-parents the widget to nothing
        return super().event(event)

    def hideEvent(self, event):
        window = self.window()
        if window is self or not window.isVisible():
            self.close_jobs()
        super().hideEvent(event)
