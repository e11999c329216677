"""Pick atoms: detect them into a new Points layer, preview patches, assign classes.

The widget is thin: it snapshots the image on the GUI thread, runs
:func:`napari_rvae.core.detect.detect_atoms` in a thread worker
(:mod:`napari_rvae.ui.worker`) and turns the result into a *new* Points layer.
The user edits that layer with napari's own point tools. The only edit the
plugin ever makes to a user's layer is the explicit "Assign class" button,
which writes a ``label`` column into the chosen points layer's features.

On a ``(T, Y, X)`` stack it detects on the frame in view or on every frame
(frame by frame in the worker, with a bar; Stop ends it between frames) into
a points layer at ``(t, y, x)`` with a ``frame`` feature.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from napari.layers import Image, Points
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from napari_rvae.core.errors import InputError
from napari_rvae.core.level import LEVELS
from napari_rvae.core.patches import edge_dropped_count, extract_patches

from .form_memory import remember
from .layer_combo import LayerCombo
from .layers import (
    LABEL_COLUMN,
    META,
    current_frame,
    image_geometry,
    image_shape,
    points_in_frames,
    points_in_image_pixels,
    stack_frames,
    stack_geometry,
)
from .worker import JobWidget, snapshot_image, snapshot_stack, start_detection, start_frame_detection

GALLERY_SIZE = 8  # patches shown in the preview
THUMB_PX = 56  # on-screen size of one preview patch
IN_VIEW, EVERY_FRAME = "frame in view", "every frame"
DETECT_ON = (IN_VIEW, EVERY_FRAME)


def to_thumbnail(patch: np.ndarray, px: int = THUMB_PX) -> QPixmap:
    """A grey-scale pixmap of one patch, stretched to its own min..max."""
    lo, hi = float(patch.min()), float(patch.max())
    grey = np.zeros(patch.shape, np.uint8) if hi <= lo else ((patch - lo) / (hi - lo) * 255).astype(np.uint8)
    grey = np.ascontiguousarray(grey)
    qimg = QImage(grey.data, grey.shape[1], grey.shape[0], grey.strides[0], QImage.Format.Format_Grayscale8)
    return QPixmap.fromImage(qimg.copy()).scaled(px, px, Qt.AspectRatioMode.KeepAspectRatio)


class PickWidget(JobWidget):
    """Detect atoms into a Points layer, check the patch size, assign classes."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        layout = QVBoxLayout(self)
        layout.addLayout(self._detection_form(napari_viewer))
        self.detect_button = QPushButton("Detect")
        self.detect_button.setToolTip("Find atoms into a new Points layer; your layers are not changed.")
        self.detect_button.clicked.connect(self.detect)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop detecting after the current frame; the frames done are kept.")
        self.stop_button.clicked.connect(self.stop)
        row = QHBoxLayout()
        row.addWidget(self.detect_button)
        row.addWidget(self.stop_button)
        layout.addLayout(row)
        layout.addWidget(self._patches_box(napari_viewer))
        layout.addWidget(self._classes_box())
        layout.addStretch()

        # Editing points fires many data events: refresh the preview at most every 0.25 s.
        self._debounce = QTimer(self, singleShot=True, interval=250)
        self._debounce.timeout.connect(self.update_preview)
        self.image_combo.currentTextChanged.connect(self._inputs_changed)
        self.points_combo.currentTextChanged.connect(self._inputs_changed)
        self.points_combo.follow("data", self._schedule_preview)
        # A stack's gallery shows the frame in view: moving the slider changes it.
        napari_viewer.dims.events.current_step.connect(self._schedule_preview)
        self.patch_size.valueChanged.connect(self._inputs_changed)
        self.memory = remember(
            self,
            "pick",
            {
                "level": self.level,
                "sigma": self.sigma,
                "min_distance": self.min_distance,
                "threshold": self.threshold,
                "dark": self.dark,
                "refine": self.refine,
                "patch_size": self.patch_size,
            },
        )
        self._inputs_changed()

    def _detection_form(self, napari_viewer) -> QFormLayout:
        """The image, the levelling and the detector's settings."""
        form = QFormLayout()
        self.image_combo = LayerCombo(napari_viewer, Image)
        form.addRow("Image", self.image_combo)
        self.sigma = QDoubleSpinBox(minimum=0.0, maximum=100.0, singleStep=0.5, value=0.0, decimals=1)
        self.sigma.setSpecialValueText("auto")
        self.sigma.setToolTip("Gaussian width of the atomic columns in px; auto estimates it from the lattice.")
        self.min_distance = QSpinBox(minimum=0, maximum=500, value=0)
        self.min_distance.setSpecialValueText("auto")
        self.threshold = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, value=0.1, decimals=2)
        self.threshold.setToolTip("Keep columns at least this fraction as strong as the strongest ones.")
        self.dark = QCheckBox("dark atoms on a bright background")
        self.refine = QCheckBox("sub-pixel refinement", checked=True)
        self.level = QComboBox()
        self.level.addItems(LEVELS)
        self.level.setToolTip(
            "Level the image before detection (STM/AFM topographs are tilted): plane = least-squares plane "
            "removed; lines = plane, then each scan line's median. The levelled copy is added as a new layer "
            "(train on it to cut patches from the same image); your layer is not changed."
        )
        self.detect_on = QComboBox()
        self.detect_on.addItems(list(DETECT_ON))
        self.detect_on.setToolTip(
            "For a stack of frames (T, Y, X): detect on the frame the viewer shows, or on every frame "
            "(frame by frame, with a progress bar; Stop keeps the frames done). The points get (t, y, x)."
        )
        form.addRow("Detect on", self.detect_on)
        form.addRow("Level", self.level)
        form.addRow("Sigma (px)", self.sigma)
        form.addRow("Min distance (px)", self.min_distance)
        form.addRow("Threshold", self.threshold)
        form.addRow(self.dark)
        form.addRow(self.refine)
        return form

    def _patches_box(self, napari_viewer) -> QGroupBox:
        """The points layer, the patch size and a gallery of the first patches."""
        box = QGroupBox("Points and patches")
        bform = QFormLayout(box)
        self.points_combo = LayerCombo(napari_viewer, Points)
        bform.addRow("Points", self.points_combo)
        self.patch_size = QSpinBox(minimum=8, maximum=512, value=32, singleStep=2)
        bform.addRow("Patch size (px)", self.patch_size)
        self.count_label = QLabel("no points")
        self.count_label.setWordWrap(True)
        bform.addRow(self.count_label)
        self.gallery = QGridLayout()
        self.thumbs = [QLabel() for _ in range(GALLERY_SIZE)]
        for i, thumb in enumerate(self.thumbs):
            thumb.setFixedSize(THUMB_PX, THUMB_PX)
            self.gallery.addWidget(thumb, i // 4, i % 4)
        bform.addRow(self.gallery)
        return box

    def _classes_box(self) -> QGroupBox:
        """Class numbers written into the points' features, for the models that learn from labels."""
        cbox = QGroupBox("Classes (for crvae / ssrvae)")
        crow = QHBoxLayout(cbox)
        self.class_value = QSpinBox(minimum=0, maximum=99, value=0)
        self.assign_button = QPushButton("Assign to selected points")
        self.assign_button.setToolTip(
            f"Writes class numbers into a {LABEL_COLUMN!r} column of this points layer's features "
            "(the one change the plugin makes to your layer, on request)."
        )
        self.assign_button.clicked.connect(self.assign_class)
        crow.addWidget(QLabel("Class"))
        crow.addWidget(self.class_value)
        crow.addWidget(self.assign_button)
        return cbox

    # ------------------------------------------------------------------ state

    def _inputs_changed(self, *_):
        points, image = self.points_combo.layer(), self.image_combo.layer()
        self.detect_button.setEnabled(image is not None and not self.busy)
        self.stop_button.setEnabled(
            self.busy and not self.job.stopping and self.job.desc.startswith("Detecting atoms on")
        )
        self.detect_on.setEnabled(image is not None and _frames(image) > 0)
        self.assign_button.setEnabled(points is not None)
        self.update_preview()

    def _schedule_preview(self, *_):
        self._debounce.start()

    def update_preview(self):
        """Recount the points, the ones the edge would drop, and redraw the gallery."""
        image, points = self.image_combo.layer(), self.points_combo.layer()
        for thumb in self.thumbs:
            thumb.clear()
        if points is None or len(points.data) == 0:
            self.count_label.setText("No points: detect atoms, or add points with napari's point tool.")
            return
        n = len(points.data)
        if image is None:
            self.count_label.setText(f"{n:,} points (choose an image to check the patch size)")
            return
        p = self.patch_size.value()
        pts = points_in_image_pixels(points, image)
        shape = image_shape(image)
        dropped = edge_dropped_count(shape, pts, p)
        text = f"{n:,} points; {dropped:,} within {p // 2} px of the edge would be dropped"
        if p > min(shape):
            text = f"{n:,} points; patch size {p} px is larger than the image ({shape[0]} x {shape[1]})"
        self.count_label.setText(text)
        self._draw_gallery(image, pts, p)

    def _draw_gallery(self, image, pts, p):
        try:
            img, pts = self._preview_plane(image, pts)
            inside = np.flatnonzero(
                (pts[:, 0] >= -0.5)
                & (pts[:, 0] <= img.shape[0] - 0.5)
                & (pts[:, 1] >= -0.5)
                & (pts[:, 1] <= img.shape[1] - 0.5)
            )
            sample = inside[np.linspace(0, len(inside) - 1, min(GALLERY_SIZE, len(inside))).astype(int)]
            patches = extract_patches(img, pts[sample], p, edge="constant").patches if len(sample) else []
        except InputError:
            return  # the count label already says what is wrong; detect/train will say it louder
        for thumb, patch in zip(self.thumbs, patches):
            thumb.setPixmap(to_thumbnail(patch))

    def _preview_plane(self, image, pts):
        """The image (a stack: the frame in view, one plane read) and the points on it, for the gallery."""
        if not _frames(image):
            return snapshot_image(image)[0], pts
        t = current_frame(self.viewer, image)
        points = self.points_combo.layer()
        img = snapshot_stack(image).read(t)
        if np.ndim(points.data) == 2 and np.shape(points.data)[1] >= 3:  # else 2-D points: shown on every frame
            tyx = points_in_frames(points, image)
            pts = tyx[np.rint(tyx[:, 0]) == t, 1:]
        return img, pts

    # ---------------------------------------------------------------- actions

    def detection_options(self) -> dict:
        """The detector's keyword arguments from the form (``None`` = estimate it)."""
        return dict(
            sigma=self.sigma.value() or None,
            min_distance=self.min_distance.value() or None,
            threshold=self.threshold.value(),
            dark=self.dark.isChecked(),
            refine=self.refine.isChecked(),
        )

    def stop(self):
        """Stop detecting on frames after the current one; the frames done become the points layer."""
        if self.busy:
            self.job.stop()
        self._inputs_changed()

    def detect(self):
        """Run the detector on the chosen image in the background (a stack: on the frames the form says)."""
        layer = self.image_combo.layer()
        if self.busy:
            return
        try:
            if _frames(layer):
                self._detect_frames(layer)
                return
            img, notes = snapshot_image(layer)
        except InputError as err:
            show_warning(str(err))
            return
        for note in notes:
            show_info(note)
        # Geometry snapshot: the new layers land on the image even if it is moved or deleted meanwhile.
        geometry = image_geometry(layer)
        name, level = layer.name, self.level.currentText()
        colormap = getattr(layer.colormap, "name", "gray")
        self.detect_button.setEnabled(False)

        def done(result):
            levelled, table = result
            if level != "none":
                self._show_levelled(levelled, f"{name} levelled ({level})", geometry, colormap)
            self._add_points(table, f"{name} atoms", geometry)

        self.run_job(start_detection(img, self.detection_options(), level, on_done=done, on_end=self._inputs_changed))

    def _detect_frames(self, layer):
        """Detect on the frame in view or on every frame of a stack; the points are (t, y, x) with a ``frame``."""
        stack = snapshot_stack(layer)
        every = self.detect_on.currentText() == EVERY_FRAME
        frames = range(stack.n_frames) if every else [current_frame(self.viewer, layer)]
        geometry, name, level = stack_geometry(layer), layer.name, self.level.currentText()
        self.detect_button.setEnabled(False)

        def done(result):
            table, done_frames = result
            if level != "none":  # a levelled movie would be a whole copy in memory
                show_info(
                    f"Each frame was levelled ({level}) for detection only; no levelled copy of the stack is added."
                )
            if every and len(done_frames) < stack.n_frames:
                show_info(f"Detection stopped after {len(done_frames)} of {stack.n_frames} frames.")
            self._add_points(table, f"{name} atoms", geometry)

        job = start_frame_detection(
            stack, frames, self.detection_options(), level, on_done=done, on_end=self._inputs_changed
        )
        self.run_job(job)
        self._inputs_changed()

    def _show_levelled(self, levelled: np.ndarray, name: str, geometry: dict, colormap: str):
        """The levelled copy detection saw, as a layer of its own: the Train widget can cut patches from it.

        A layer of that name made here earlier is updated; a layer of the user's is never touched.
        """
        if name in self.viewer.layers and (self.viewer.layers[name].metadata.get(META) or {}).get("role") == "levelled":
            self.viewer.layers[name].data = levelled
            return
        self.viewer.add_image(levelled, name=name, colormap=colormap, metadata={META: {"role": "levelled"}}, **geometry)

    def _add_points(self, table: pd.DataFrame, name: str, geometry: dict):
        if len(table) == 0:
            show_warning("No atoms found: lower the threshold, set sigma, or tick 'dark atoms' for an ABF image.")
            return
        yx = table[["y", "x"]].to_numpy()
        if "frame" in table:  # a stack's: (t, y, x), sized by the spacing within a frame
            first = table["frame"].to_numpy() == table["frame"].iloc[0]
            size, data = _marker_size(yx[first]), table[["frame", "y", "x"]].to_numpy(dtype=float)
        else:
            size, data = _marker_size(yx), yx
        layer = self.viewer.add_points(
            data,
            name=name,
            features=table.drop(columns=["y", "x"]).reset_index(drop=True),
            size=size,
            face_color="transparent",
            border_color="yellow",
            border_width=0.15,
            **geometry,
        )
        self.points_combo.refresh()
        self.points_combo.setCurrentText(layer.name)
        frames = f" on {table['frame'].nunique():,} frames" if "frame" in table else ""
        show_info(f"Found {len(table):,} atoms{frames} in {name!r}.")

    def assign_class(self):
        """Write the chosen class into the ``label`` feature of the selected points."""
        layer = self.points_combo.layer()
        if layer is None:
            show_warning("Choose a points layer first.")
            return
        selected = sorted(layer.selected_data)
        if not selected:
            show_warning("Select some points first (napari's select tool, or shift-drag a box).")
            return
        features = layer.features.copy()
        if LABEL_COLUMN not in features.columns:
            features[LABEL_COLUMN] = np.nan  # NaN = no class yet
        column = features[LABEL_COLUMN].astype(float)
        column.iloc[selected] = float(self.class_value.value())
        features[LABEL_COLUMN] = column
        layer.features = features
        show_info(f"Class {self.class_value.value()} assigned to {len(selected)} points of {layer.name!r}.")


def _frames(image_layer) -> int:
    """The image's frames (0 for a 2-D image, no image, or one whose axes this plugin does not take)."""
    if image_layer is None:
        return 0
    try:
        return stack_frames(image_layer)
    except InputError:
        return 0


def _marker_size(yx: np.ndarray) -> float:
    """Half the median nearest-neighbour distance: markers that touch nothing."""
    if len(yx) < 2:
        return 5.0
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(yx).query(yx, k=2)
    return float(max(1.0, 0.5 * np.median(dist[:, 1])))
