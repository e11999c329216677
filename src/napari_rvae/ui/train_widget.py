"""Train rVAE: the form, the background training, live loss curve, and model files.

The form maps to the core's :class:`ModelConfig` and :class:`TrainConfig` in
one place (:meth:`TrainForm.configs`). Training runs through
:func:`napari_rvae.ui.worker.start_training` on snapshots of the layers; the
results become layers on the GUI thread via
:func:`napari_rvae.ui.result_layers.show_results`. A ``(T, Y, X)`` image with
``(t, y, x)`` points trains one model on the atoms of every frame that has
points (read a frame at a time in the worker); the form says so before the run.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Image, Points
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_rvae.core.budget import AUTO, training_budget
from napari_rvae.core.config import (
    KINDS,
    MODEL_KINDS,
    SYMMETRIES,
    SYMMETRY_AUTO,
    ModelConfig,
    TrainConfig,
)
from napari_rvae.core.device import available_devices, resolve_device
from napari_rvae.core.errors import InputError
from napari_rvae.core.frames import frame_indices
from napari_rvae.core.labels import encoding_labels, labels_for_model
from napari_rvae.core.modelfile import load_model, save_model
from napari_rvae.core.movie_checks import checks_by_frame
from napari_rvae.core.patches import edge_dropped_count
from napari_rvae.core.report import (
    analysis_report,
    find_report,
    report_path,
    write_report,
)

from .form_memory import remember
from .layer_combo import LayerCombo
from .layers import (
    LABEL_COLUMN,
    image_shape,
    pixel_size_and_unit,
    points_in_frames,
    points_in_image_pixels,
    stack_frames,
)
from .plot_theme import PlotTheme
from .result_layers import show_results
from .worker import (
    JobWidget,
    Results,
    StackSnapshot,
    TrainInputs,
    preload_in_background,
    snapshot_image,
    snapshot_points,
    snapshot_stack,
    start_apply,
    start_training,
)

log = logging.getLogger(__name__)

NO_LABELS = "(none)"
REDRAW_SECONDS = 0.3  # the loss curve is updated at most ~3 times a second
RESCALE_SECONDS = 2.0  # ... and its axes redrawn in full at most every 2 s
MARGINS_PX = (64, 36, 10, 10)  # left, bottom, right, top around its axes: tick labels and axis labels


def gui_training_threads() -> int:
    """Torch threads for training from the GUI: torch's own choice, but one core left to napari.

    With every core busy in torch, napari's event loop waited up to ~0.5 s for a
    core on a 2-core machine (benchmarks/bench_gui_stalls.py, docs/speed.md);
    the CLI keeps them all.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), cores - 1))


def _spin(lo, hi, value, step=1):
    return QSpinBox(minimum=lo, maximum=hi, value=value, singleStep=step)


# The form's "Rotations" choice -> ModelConfig fields (see ModelConfig's docstring).
ROTATION_CHOICES = {
    "any angle": {"angle_prior": 0.0, "alignment": "auto", "rotation_range": "auto"},
    "within ±90° of upright": {"angle_prior": 0.0, "alignment": "auto", "rotation_range": "limited"},
    "full circle": {"angle_prior": 0.0, "alignment": "auto", "rotation_range": "full"},
    "small (near 0°)": {"angle_prior": 2.0, "alignment": "auto"},
    "any angle, rVAE only": {"angle_prior": 0.0, "alignment": "none"},
}

# The form fields kept between sessions (ui/form_memory.py).
REMEMBERED_FIELDS = (
    "kind",
    "n_classes",
    "patch_size",
    "latent_dim",
    "hidden_dim",
    "translation",
    "symmetry",
    "rotations",
    "epochs",
    "batch_size",
    "lr",
    "device",
    "seed",
)


class TrainForm(QWidget):
    """The model and training settings; :meth:`configs` is the one form -> config mapping."""

    def __init__(self, parent=None):
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.kind = QComboBox()
        self.kind.addItems(list(MODEL_KINDS))
        self.kind.setToolTip(
            "rvae: rotation + content; vae: no rotation; crvae: known classes; "
            "jrvae: learns classes; ssrvae: learns classes from a few labels."
        )
        self.n_classes = _spin(2, 50, 2)
        self.patch_size = _spin(8, 512, 32, 2)
        self.latent_dim = _spin(1, 16, 2)
        self.hidden_dim = _spin(8, 1024, 128, 16)
        self.translation = QCheckBox("learn a shift per patch", checked=True)
        self.symmetry = QComboBox()
        self.symmetry.addItems([SYMMETRY_AUTO, *(str(s) for s in SYMMETRIES)])
        self.symmetry.setToolTip(
            "n-fold rotational symmetry of the patches: angles are measured modulo 360/n.\n"
            "auto: estimated from the patches when training starts (the status line says which)."
        )
        self.rotations = QComboBox()
        self.rotations.addItems(list(ROTATION_CHOICES))
        self.rotations.setToolTip(
            "any angle: patches are first aligned by angular synchronisation, which tests whether they stay\n"
            "within ±90° of a common upright (then angles are measured from it) or turn by any amount;\n"
            "within ±90° / full circle: skip that test; small: angles tied near 0 degrees (the reference rVAE);\n"
            "any angle, rVAE only: no alignment step."
        )
        self.epochs = _spin(0, 10000, 0)
        self.epochs.setSpecialValueText(AUTO)  # 0 shows as "auto": steps and sample from the data (core/budget.py)
        self.epochs.setToolTip("Passes over every patch, or auto: the budget below the form says what it chose.")
        self.batch_size = _spin(1, 100000, 100)
        self.lr = QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=1.0, singleStep=1e-4)
        self.lr.setValue(1e-3)  # after setDecimals: a 2-decimal box would round it to 0
        self.device = QComboBox()
        self.device.addItems(["auto", *available_devices()])  # only devices that exist here
        self.seed = _spin(0, 2**31 - 1, 0)
        for label, widget in [
            ("Model", self.kind),
            ("Classes", self.n_classes),
            ("Patch size (px)", self.patch_size),
            ("Latent dim", self.latent_dim),
            ("Hidden units", self.hidden_dim),
            ("", self.translation),
            ("Symmetry (n-fold)", self.symmetry),
            ("Rotations", self.rotations),
            ("Epochs", self.epochs),
            ("Batch size", self.batch_size),
            ("Learning rate", self.lr),
            ("Device", self.device),
            ("Seed", self.seed),
        ]:
            form.addRow(label, widget)
        self.kind.currentTextChanged.connect(self._kind_changed)
        self._kind_changed(self.kind.currentText())
        self.memory = remember(self, "train", {name: getattr(self, name) for name in REMEMBERED_FIELDS})

    def _kind_changed(self, kind):
        traits = KINDS[kind]
        self.n_classes.setEnabled(traits.class_model)
        self.translation.setEnabled(traits.pose)
        self.symmetry.setEnabled(traits.pose)
        self.rotations.setEnabled(traits.pose)

    def configs(self, n_label_classes: int = 0) -> tuple[ModelConfig, TrainConfig]:
        """Model and training settings from the form (raises InputError for bad values)."""
        kind = self.kind.currentText()
        classes = KINDS[kind].n_classes(max(self.n_classes.value(), n_label_classes))
        model = ModelConfig(
            kind=kind,
            patch_size=self.patch_size.value(),
            latent_dim=self.latent_dim.value(),
            translation=self.translation.isChecked(),
            hidden_dim=self.hidden_dim.value(),
            n_classes=classes,
            symmetry=_symmetry_choice(self.symmetry.currentText()),
            **ROTATION_CHOICES[self.rotations.currentText()],
        )
        train = TrainConfig(
            epochs=self.epochs.value() or AUTO,
            batch_size=self.batch_size.value(),
            lr=self.lr.value(),
            seed=self.seed.value(),
            device=self.device.currentText(),
            threads=gui_training_threads(),
        )
        return model, train

    def show_model(self, config: ModelConfig) -> None:
        """Fill the model fields from a loaded model, so the form says what it is."""
        self.kind.setCurrentText(config.kind)
        self.patch_size.setValue(config.patch_size)
        self.latent_dim.setValue(config.latent_dim)
        self.hidden_dim.setValue(config.hidden_dim)
        self.translation.setChecked(config.translation)
        self.symmetry.setCurrentText(str(config.symmetry))
        for text, settings in ROTATION_CHOICES.items():
            choice = ModelConfig(**settings)
            same_range = not config.coarse_alignment or config.rotation_range == choice.rotation_range
            if (
                (config.angle_prior > 0) == (choice.angle_prior > 0)
                and config.coarse_alignment == choice.coarse_alignment
                and same_range
            ):
                self.rotations.setCurrentText(text)
        if config.n_classes:
            self.n_classes.setValue(config.n_classes)


class LossPlot(FigureCanvasQTAgg):
    """A small live loss curve that costs the GUI thread little while training runs.

    A full matplotlib draw of even this small figure takes 50-150 ms on a
    busy 2-core machine, long enough to make napari stutter, so the line is
    animated: it is drawn onto the saved axes (a few ms) at most every
    REDRAW_SECONDS, and the axes are redrawn in full only when the curve
    leaves their limits, at most every RESCALE_SECONDS.
    """

    def __init__(self, theme: PlotTheme | None = None):
        self.figure = Figure(figsize=(3, 1.6))  # margins in pixels (resizeEvent): a tight layout doubled each draw
        super().__init__(self.figure)
        self.ax = self.figure.add_subplot()
        self.setMinimumHeight(120)
        self.theme = theme
        self._background = None  # the axes without the line, saved after each full draw
        self.mpl_connect("draw_event", self._drawn_in_full)
        self.reset()
        if theme is not None:
            theme.add(self)

    def resizeEvent(self, event):
        width, height = max(event.size().width(), 1), max(event.size().height(), 1)
        left, bottom, right, top = (min(px / size, 0.4) for px, size in zip(MARGINS_PX, (width, height, width, height)))
        self.figure.subplots_adjust(left=left, bottom=bottom, right=1 - right, top=1 - top)
        super().resizeEvent(event)

    def reset(self, epochs: int | None = None, history=()):
        """Clear the curve, or start it with ``history`` (a continued model's loss per epoch); with
        ``epochs`` (this run's) the x axis spans the whole run from the start."""
        self.x, self.y = [float(i) for i in range(1, len(history) + 1)], list(history)
        self._drawn, self._rescaled = 0.0, 0.0
        self.ax.clear()
        self.ax.set_xlabel("epoch", fontsize=8)
        self.ax.set_ylabel("loss / patch", fontsize=8)
        self.ax.tick_params(labelsize=7)
        (self.line,) = self.ax.plot([], [], lw=1.2, animated=True)
        self.ax.set_xlim(0, len(self.x) + (epochs or 1))
        if self.theme is not None:
            self.theme.style(self.figure)  # clearing put the default colours back
        self.redraw(full=True) if history else self.draw_idle()

    def add(self, x: float, y: float):
        self.x.append(x)
        self.y.append(y)
        if time.monotonic() - self._drawn > REDRAW_SECONDS:
            self.redraw()

    def redraw(self, full: bool = False):
        """Show the curve so far: a blit, or a full draw when it left the axes (or ``full``)."""
        now = time.monotonic()
        self.line.set_data(self.x, self.y)
        if full or (self._rescale_needed() and now - self._rescaled > RESCALE_SECONDS):
            self._rescale()
            self._rescaled = now
            self.draw_idle()  # _drawn_in_full puts the line on top
        elif self._background is None:
            self.draw_idle()
        else:
            self.restore_region(self._background)
            self.ax.draw_artist(self.line)
            self.update()  # painted from the buffer with Qt's next frame (blit would repaint now)
        self._drawn = now

    def _limits(self):
        """Axis limits that hold the curve, with room below for the loss to fall; None without data."""
        y = np.asarray(self.y, dtype=float)
        y = y[np.isfinite(y)]
        if len(y) == 0:
            return None
        lo, hi = float(y.min()), float(y.max())
        span = hi - lo if hi > lo else max(abs(hi) * 0.1, 1e-3)
        x_max = max(self.ax.get_xlim()[1], self.x[-1])
        return (0.0, x_max), (lo - 0.3 * span, hi + 0.05 * span)

    def _rescale_needed(self) -> bool:
        limits = self._limits()
        if limits is None:
            return False
        (_, x_max), _ = limits
        y = np.asarray(self.y, dtype=float)
        y = y[np.isfinite(y)]
        (y0, y1), (lo, hi) = self.ax.get_ylim(), (y.min(), y.max())
        squeezed = hi - lo < 0.3 * (y1 - y0)  # the curve uses little of the axis: zoom in
        return x_max > self.ax.get_xlim()[1] or lo < y0 or hi > y1 or squeezed

    def _rescale(self):
        limits = self._limits()
        if limits is not None:
            self.ax.set_xlim(*limits[0])
            self.ax.set_ylim(*limits[1])

    def _drawn_in_full(self, _event):
        self._background = self.copy_from_bbox(self.ax.bbox)
        self.ax.draw_artist(self.line)


@dataclass(frozen=True)
class Snapshot:
    """Copies of the chosen inputs (what a job works on), and where they came from."""

    image: np.ndarray | StackSnapshot  # a stack by reference: the job reads a frame at a time
    points: np.ndarray  # (N, 2) y, x; (N, 3) t, y, x on a stack
    labels: np.ndarray | None
    class_names: list | None
    layers: tuple  # (image layer, points layer): the results' geometry, even if deleted meanwhile
    labels_column: str | None
    notes: list[str]
    # Recorded when copied: the user may rename the layers while the job runs.
    sources: dict
    pixel_size: float | None
    unit: str | None


class TrainWidget(JobWidget):
    """Choose image + points, train in the background, stop/abort, save/load/apply models."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        preload_in_background()  # so the first run does not import them while napari waits
        self.model = None  # the trained or loaded model
        self.model_extra: dict = {}
        self.report: dict | None = None  # the model's training report (written beside it on save), if known
        self.model_file: str | None = None  # the file the model was loaded from or saved to, if any
        self._device = "cpu"  # the device the running training uses, for the status line
        layout = QVBoxLayout(self)
        inputs = QFormLayout()
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.points_combo = LayerCombo(napari_viewer, Points)
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("Points feature column with the classes (crvae, ssrvae).")
        inputs.addRow("Image", self.image_combo)
        inputs.addRow("Points", self.points_combo)
        inputs.addRow("Labels column", self.labels_combo)
        layout.addLayout(inputs)
        self.plan = QLabel("")  # what a run will do with a stack: said before it starts
        self.plan.setWordWrap(True)
        layout.addWidget(self.plan)
        self.form = TrainForm()
        layout.addWidget(self.form)
        self.budget_label = QLabel(wordWrap=True)
        layout.addWidget(self.budget_label)

        row = QHBoxLayout()
        self.train_button, self.stop_button, self.abort_button = (QPushButton(t) for t in ("Train", "Stop", "Abort"))
        self.stop_button.setToolTip("End training now and keep the model trained so far.")
        self.abort_button.setToolTip("End training now and discard it.")
        self.continue_button = QPushButton("Continue")
        self.continue_button.setToolTip(
            "Train the current model (trained or loaded) further on the chosen image and points for the form's "
            "epochs: its own settings, optimizer state and loss curve go on."
        )
        for button, slot in (
            (self.train_button, self.train),
            (self.continue_button, self.continue_training),
            (self.stop_button, self.stop),
            (self.abort_button, self.abort),
        ):
            button.clicked.connect(slot)
            row.addWidget(button)
        layout.addLayout(row)
        self.bar = QProgressBar(maximum=1000, textVisible=False)
        layout.addWidget(self.bar)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.plot = LossPlot(PlotTheme(napari_viewer, self))
        layout.addWidget(self.plot)

        box = QGroupBox("Results")
        rrow = QHBoxLayout(box)
        self.save_button, self.load_button, self.apply_button = (
            QPushButton(t) for t in ("Save model…", "Load model…", "Apply")
        )
        self.apply_button.setToolTip("Encode the chosen image and points with the current model.")
        for button, slot in (
            (self.save_button, self.save_model),
            (self.load_button, self.load_model),
            (self.apply_button, self.apply),
        ):
            button.clicked.connect(slot)
            rrow.addWidget(button)
        layout.addWidget(box)
        layout.addStretch()

        self._follow_inputs()

    def _follow_inputs(self) -> None:
        """Keep the buttons, the labels column, the movie plan and the budget line in step with the inputs."""
        self.image_combo.currentTextChanged.connect(self.update_buttons)
        for changed in (self.update_plan, self._show_budget):
            self.image_combo.currentTextChanged.connect(changed)
            self.points_combo.currentTextChanged.connect(changed)
            self.points_combo.follow("data", changed)
        self.points_combo.currentTextChanged.connect(self._refresh_labels)
        self.points_combo.follow("features", self._refresh_labels)
        self.form.epochs.valueChanged.connect(self._show_budget)
        self.form.batch_size.valueChanged.connect(self._show_budget)
        self.form.patch_size.valueChanged.connect(self._show_budget)
        self._refresh_labels()
        self.update_plan()
        self._show_budget()

    # ------------------------------------------------------------------ state

    def _refresh_labels(self, *_):
        layer, current = self.points_combo.layer(), self.labels_combo.currentText()
        columns = [] if layer is None else [str(c) for c in layer.features.columns]
        self.labels_combo.clear()
        self.labels_combo.addItems([NO_LABELS, *columns])
        if current in columns:
            self.labels_combo.setCurrentText(current)
        elif LABEL_COLUMN in columns:
            self.labels_combo.setCurrentText(LABEL_COLUMN)
        self.update_buttons()

    def _budget(self, n_points: int):
        """The budget a run on ``n_points`` atoms trains under with the form's epochs and batch size."""
        return training_budget(n_points, self.form.batch_size.value(), self.form.epochs.value() or AUTO)

    def _show_budget(self, *_):
        """Say before Train is pressed what the run will train on: the patches, once the points too
        near the image's edge for the patch size are left out (as the run leaves them out)."""
        points, image = self.points_combo.layer(), self.image_combo.layer()
        if points is None:
            self.budget_label.setText("")
            return
        n = len(points.data)
        if image is not None and n:
            pts = points_in_image_pixels(points, image)
            n -= edge_dropped_count(image_shape(image), pts, self.form.patch_size.value())
        self.budget_label.setText(f"Budget: {self._budget(n).reason}")

    def update_buttons(self, *_):
        """Enable exactly the actions that can run now."""
        training = self.busy and self.job.desc.startswith("Training")
        inputs = self.image_combo.layer() is not None and self.points_combo.layer() is not None
        self.train_button.setEnabled(inputs and not self.busy)
        self.continue_button.setEnabled(inputs and self.model is not None and not self.busy)
        self.stop_button.setEnabled(training and not self.job.stopping)
        self.abort_button.setEnabled(training)
        self.save_button.setEnabled(self.model is not None and not self.busy)
        self.load_button.setEnabled(not self.busy)
        self.apply_button.setEnabled(inputs and self.model is not None and not self.busy)

    def update_plan(self, *_):
        """Say what a run will do with a stack: its frames and atoms (empty for a 2-D image)."""
        image, points = self.image_combo.layer(), self.points_combo.layer()
        try:
            n_frames = 0 if image is None else stack_frames(image)
            if not n_frames:
                self.plan.setText("")
                return
            height, width = image_shape(image)
            text = f"Movie: {n_frames:,} frames of {height:,} x {width:,} px"
            if points is not None and len(points.data):
                tyx = points_in_frames(points, image)
                on = np.unique(np.rint(tyx[:, 0]))
                text += (
                    f", {len(tyx):,} atoms on {len(on):,} of them: one model learns from all their atoms; "
                    "the maps, atoms and arrows come out as stacks that follow the frame slider."
                )
            self.plan.setText(text + ("" if points is not None and len(points.data) else "."))
        except InputError as err:
            self.plan.setText(str(err))

    def _labels_column(self) -> str | None:
        column = self.labels_combo.currentText()
        return None if column in ("", NO_LABELS) else column

    def _snapshot(self, patch_size: int, kind: str, labels_needed: bool) -> Snapshot:
        """Copies of the chosen image and points, and of the labels when ``labels_needed``."""
        image_layer, points_layer = self.image_combo.layer(), self.points_combo.layer()
        if image_layer is None:
            raise InputError("Choose an image layer first (open an image or load a sample).")
        shape = image_shape(image_layer)
        if patch_size > min(shape):
            raise InputError(
                f"The patch size {patch_size} px is larger than the image ({shape[0]} x {shape[1]} px): "
                "choose a smaller patch size."
            )
        column = self._labels_column() if labels_needed else None
        if labels_needed and column is None:
            raise InputError(
                f"Model {kind} learns from classes: choose a labels column "
                "(assign classes to points in the Pick atoms widget)."
            )
        n_frames = stack_frames(image_layer)
        if n_frames:  # by reference: the job reads one frame at a time
            image, notes = snapshot_stack(image_layer), []
        else:
            image, notes = snapshot_image(image_layer)
        points, labels, names = snapshot_points(points_layer, image_layer, column, stack=bool(n_frames))
        if n_frames:
            frame_indices(points, n_frames)  # points beyond the stack: said now, not from the worker
        for note in notes:
            show_info(note)
        sources = {"image_layer": image_layer.name, "points_layer": points_layer.name, "labels_column": column}
        if n_frames:
            sources["frames"] = n_frames
        return Snapshot(
            image,
            points,
            labels,
            names,
            (image_layer, points_layer),
            column,
            list(notes),
            sources,
            *pixel_size_and_unit(image_layer),
        )

    # ---------------------------------------------------------------- training

    def train(self):
        """Start training on snapshots of the chosen layers."""
        if self.busy:
            return
        try:
            kind = self.form.kind.currentText()
            snap = self._snapshot(self.form.patch_size.value(), kind, KINDS[kind].needs_labels)
            model_config, train_config = self.form.configs(len(snap.class_names or []))
            device = resolve_device(train_config.device)
        except InputError as err:
            show_warning(str(err))
            return
        inputs = TrainInputs(snap.image, snap.points, model_config, train_config, snap.labels, snap.class_names)
        self._start_training(inputs, snap, f"{snap.layers[0].name} {kind}", f"Training {kind} on {device}…")

    def continue_training(self):
        """Train the current model further on snapshots of the chosen layers, for the form's epochs."""
        if self.model is None or self.busy:
            return
        cfg = self.model.config
        model_names = self.model_extra.get("class_names")
        try:
            snap = self._snapshot(cfg.patch_size, cfg.kind, cfg.needs_labels)
            labels = labels_for_model(snap.labels, snap.class_names, model_names)
            _, train_config = self.form.configs()
            device = resolve_device(train_config.device)
        except InputError as err:
            show_warning(f"The model cannot go on training here: {err}")
            return
        names = model_names or snap.class_names
        # The job trains a copy: the model stays as it is if the run is aborted.
        model = copy.deepcopy(self.model)
        inputs = TrainInputs(snap.image, snap.points, cfg, train_config, labels, names, model=model)
        state = model.training_state
        done = len(state.history) if state else 0
        self._start_training(
            inputs,
            snap,
            f"{snap.layers[0].name} {cfg.kind} continued",
            f"Continuing the {cfg.kind} model ({done} epochs so far) on {device}…",
            history=state.history if state else (),
            resumed_from=self.model_file,
        )

    def _start_training(self, inputs: TrainInputs, snap: Snapshot, run: str, status: str, history=(), **report):
        """Run the training job: the loss curve (continuing ``history``), the bar, the status line."""
        self.plot.reset(self._budget(len(snap.points)).epochs, history)
        self.bar.setValue(0)
        self._device = str(resolve_device(inputs.train_config.device))
        self.status.setText(status)
        self.run_job(
            start_training(
                inputs,
                on_progress=self._progress,
                on_end=self.update_buttons,
                on_done=lambda results: self._trained(results, run, snap, inputs, **report),
            )
        )
        self.update_buttons()

    def stop(self):
        if self.busy:
            self.job.stop()
            self.status.setText("Stopping after this step; the model trained so far is kept…")
        self.update_buttons()

    def abort(self):
        if self.busy:
            self.job.abort()
            self.status.setText("Training aborted; nothing was kept.")
        self.update_buttons()

    def _progress(self, p):
        self.bar.setValue(int(round(1000 * p.fraction)))
        self.plot.add(p.epochs_before + p.epoch - 1 + p.step / max(p.steps_per_epoch, 1), p.loss)
        eta = p.eta_seconds
        left = f", {_duration(eta)} left" if np.isfinite(eta) else ""
        if not self.job.stopping:
            self.status.setText(f"Epoch {p.epoch}/{p.epochs} on {self._device}, loss {p.loss:.4g}{left}")

    def _trained(self, results: Results, run_name, snap: Snapshot, inputs: TrainInputs, resumed_from=None):
        analysis = results.analysis
        t = analysis.training
        self.plot.redraw(full=True)  # the last points may have come in faster than the redraw limits
        self.model, self.model_file = analysis.model, None
        # The column trained on, not the one chosen now: the user may have changed it meanwhile.
        names = inputs.class_names  # a continued model's own
        self.model_extra = {"class_names": names, "labels_col": snap.labels_column}
        self.report = _report(analysis, inputs, snap, names, resumed_from)
        for warning in self.report["angle_warnings"]:
            show_warning(warning)
        how = "stopped early" if t.stopped else "done"
        if t.epochs_before:
            how += f" ({t.epochs_total:.3g} epochs in all)"
        summary = t.alignment
        self.status.setText(
            f"Training {how}: {t.epochs_run:.3g} epochs on {t.device} in {t.seconds:.1f} s, "
            f"{len(analysis.kept):,} patches{_on_frames(analysis)} ({len(analysis.dropped):,} dropped at the edge)."
            + (f" {summary['description']}" if summary else "")
            + _symmetry_status(t.symmetry)
        )
        self._show(results, run_name, snap.layers, names)

    # ----------------------------------------------------------------- results

    def _show(self, results: Results, run_name, layers, class_names=None):
        analysis = results.analysis
        if class_names and "class" in analysis.table and "class_name" not in analysis.table:
            _add_class_names(analysis.table, class_names)
        image_layer, points_layer = layers  # possibly deleted meanwhile: their geometry still holds
        try:
            show_results(
                self.viewer,
                analysis,
                image_layer=image_layer,
                points_layer=points_layer,
                run_name=run_name,
                symmetry=analysis.model.config.symmetry,
                maps=results.maps,
                radius=results.radius,
                psi_period=results.psi_period,
            )
        except InputError as err:
            show_warning(str(err))
        except Exception as exc:  # a bug, but the user still gets a sentence and keeps the model
            log.error("Showing the results failed", exc_info=exc)
            show_error(f"Showing the results failed: {type(exc).__name__}: {exc}")

    def save_model(self, path=None):
        """Write the current model to ``X.pt`` and its training report to ``X.report.json`` beside it.

        Asks where when no path is given. Returns the model's path, or None.
        """
        if self.model is None:
            show_warning("There is no model yet: train one or load one first.")
            return None
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "Save model", "model.pt", "napari-rvae model (*.pt)")
            if not path:
                return None
        report_file = report_path(path)
        try:
            saved = save_model(self.model, path, extra=self.model_extra)
            if self.report is not None:
                write_report({**self.report, "files": [saved.name, report_file.name]}, report_file)
            else:  # an older report there would describe another model
                report_file.unlink(missing_ok=True)
        except OSError as exc:
            show_warning(f"The model could not be saved to {path}: {exc.strerror or exc}.")
            return None
        self.model_file = str(saved)
        show_info(f"Model saved to {saved}" + (f", its training report to {report_file.name}." if self.report else "."))
        return saved

    def load_model(self, path=None):
        """Read a model file; its settings fill the form. Returns the model or None."""
        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "Load model", "", "napari-rvae model (*.pt);;All files (*)")
            if not path:
                return None
        try:
            model, extra = load_model(path)
        except InputError as err:
            show_warning(str(err))
            return None
        try:
            report = find_report(path)
        except InputError as err:  # the model itself is fine: use it, without a report
            show_warning(f"{err} The model is loaded without it.")
            report = None
        self.model, self.model_extra, self.report, self.model_file = model, extra, report, str(path)
        self.form.show_model(model.config)
        self.status.setText(f"Loaded a {model.config.kind} model ({model.config.patch_size} px patches).")
        self.update_buttons()
        return model

    def apply(self):
        """Encode the chosen image and points with the current model, in the background."""
        if self.model is None or self.busy:
            return
        cfg = self.model.config
        try:
            # Patches are cut at the model's own size, whatever the form says now.
            snap = self._snapshot(cfg.patch_size, cfg.kind, cfg.class_input)
            model_names = self.model_extra.get("class_names")
            # The layer's classes numbered as the model knows them, checked here too (as the core
            # checks them), so a misfit is said before any work starts.
            labels = labels_for_model(snap.labels, snap.class_names, model_names)
            labels = encoding_labels(labels, cfg, len(snap.points))
        except InputError as err:
            show_warning(f"The model does not fit: {err}")
            return
        names = model_names or snap.class_names
        run = f"{snap.layers[0].name} {cfg.kind} applied"
        self.status.setText(f"Applying the model ({cfg.patch_size} px patches)…")
        self.run_job(
            start_apply(
                snap.image,
                snap.points,
                self.model,
                labels=labels,
                on_end=self.update_buttons,
                on_done=lambda results: self._applied(results, run, snap.layers, names),
            )
        )
        self.update_buttons()

    def _applied(self, results: Results, run_name, layers, names):
        kept, dropped = len(results.analysis.kept), len(results.analysis.dropped)
        on = _on_frames(results.analysis)
        self.status.setText(f"Applied to {kept:,} points{on} ({dropped:,} dropped at the edge).")
        self._show(results, run_name, layers, names)


def _report(analysis, inputs: TrainInputs, snap: Snapshot, names, resumed_from) -> dict:
    """The run's training report; on a stack its checks gather every frame's (frames are not neighbours), as the CLI's."""
    frames = analysis.table["frame"].to_numpy() if "frame" in analysis.table else None
    report = analysis_report(
        analysis if frames is None else dataclasses.replace(analysis, centers=None),
        inputs.train_config,
        command="napari",
        sources={**snap.sources, "resumed_from": resumed_from},
        class_names=names,
        pixel_size=snap.pixel_size,
        unit=snap.unit,
        notes=snap.notes,
    )
    if frames is not None:
        how = analysis.training.symmetry if analysis.training is not None else None
        report.update(checks_by_frame(analysis.table, analysis.centers, frames, analysis.model.config.symmetry, how))
    return report


def _on_frames(analysis) -> str:
    """' on 5 frames' for a stack's analysis, '' for a 2-D image's."""
    return f" on {analysis.table['frame'].nunique():,} frames" if "frame" in analysis.table else ""


def _symmetry_choice(text: str):
    return text if text == SYMMETRY_AUTO else int(text)


def _symmetry_status(symmetry: dict) -> str:
    """' Symmetry: 3-fold (estimated; also plausible: 6).' for the status line; '' when it was given."""
    if symmetry.get("source") != "estimated":
        return ""
    others = symmetry.get("alternatives", [])
    also = f"; also plausible: {', '.join(map(str, others))}" if others else ""
    return f" Symmetry: {symmetry['chosen']}-fold (estimated from the patches{also})."


def _add_class_names(table, class_names) -> None:
    """Insert a ``class_name`` column (the labels column's values) after ``class_prob``."""
    names = [class_names[int(i)] if 0 <= int(i) < len(class_names) else "" for i in table["class"]]
    at = table.columns.get_loc("class_prob") + 1 if "class_prob" in table else len(table.columns)
    table.insert(at, "class_name", names)


def _duration(seconds: float) -> str:
    """'42 s' or '3 min 05 s': how long, for the status line."""
    seconds = int(round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"
