"""Latent explorer: the latent scatter linked to the viewer, the manifold, reconstructions, exports.

Selection links both ways: a rectangle or lasso in the scatter sets the
results layer's ``selected_data``, and any change of ``selected_data`` (from
the viewer or from here) redraws the highlight in the scatter. Decoding (the
manifold and a selected atom's reconstruction) runs as a background job
(:mod:`napari_rvae.ui.worker`) on copies taken here; the newest request of
each kind wins, so only its result is drawn.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.path import Path as MplPath
from matplotlib.widgets import LassoSelector, RectangleSelector
from napari.layers import Points
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
)

from napari_rvae.core.errors import InputError
from napari_rvae.core.exports import draw_scatter, latent_columns, latent_figure
from napari_rvae.core.maps import MAP_MODES

from .form_memory import remember
from .layer_combo import LayerCombo
from .layers import META, full_resolution_data, is_results_points, results_meta
from .plot_theme import PlotTheme
from .result_layers import (
    export_maps_tiff,
    export_table_csv,
    recolor_points,
    run_layers,
    show_results,
)
from .worker import JobWidget, start_manifold, start_reconstruction

SELECT_TOOLS = ("rectangle", "lasso")
DECODE_DELAY_MS = 150  # slider drags start one decode after the user pauses, not one per step
EXTRA_AXES = ("angle", "dx", "dy", "class_prob")  # plottable besides z0, z1, ...
NO_SELECTION = "Draw in the scatter to select atoms; select atoms in the viewer to see them here."


class ImagePanel(FigureCanvasQTAgg):
    """A small canvas showing one or more grey images side by side with titles."""

    def __init__(self, n: int, theme: PlotTheme, height: float = 2.2):
        self.figure = Figure(figsize=(3.2, height), layout="constrained")
        super().__init__(self.figure)
        self.theme = theme
        self.axes = self.figure.subplots(1, n, squeeze=False)[0]
        for ax in self.axes:
            ax.set_axis_off()
        self.images: list = [None] * n
        self.setMinimumHeight(int(height * 70))
        theme.add(self)

    def show(self, images, titles, extent=None):
        for i, (ax, img, title) in enumerate(zip(self.axes, images, titles)):
            ax.clear()
            ax.set_axis_off()
            self.images[i] = img
            if img is not None:
                ax.imshow(img, cmap="gray", extent=extent)
            ax.set_title(title, fontsize=8)
        self.theme.style(self.figure)  # clearing put the default colours back
        self.draw_idle()


class ExplorerWidget(JobWidget):
    """Scatter of two latent columns linked to a results layer, manifold, reconstructions, exports."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self._layer = None  # the results points layer the scatter shows
        self._xy = np.zeros((0, 2))
        self._selector = None
        self.manifold_image = None  # the last decoded manifold (what the panel shows)
        self.reconstruction = None  # (index, patch, reconstruction) of the last reconstructed atom

        self.plot_theme = PlotTheme(napari_viewer, self)
        layout = QVBoxLayout(self)
        layout.addLayout(self._choices_form())
        layout.addWidget(self._scatter_canvas())
        self.selection_label = QLabel(NO_SELECTION)
        self.selection_label.setWordWrap(True)
        layout.addWidget(self.selection_label)
        layout.addWidget(self._manifold_box())
        layout.addWidget(self._reconstruction_box())
        layout.addLayout(self._export_row())
        layout.addStretch()
        self._connect_controls()
        self.memory = remember(self, "explorer", {"select_with": self.tool_combo, "grid": self.grid_spin})
        self._layer_changed()
        if self._layer is None:
            self._reload()  # without results too: an empty plot and disabled buttons

    def _choices_form(self) -> QFormLayout:
        """The results layer, the scatter's axes and colours, the selection tool, the angle map's mode."""
        form = QFormLayout()
        self.layer_combo = LayerCombo(self.viewer, Points, accept=is_results_points)
        self.x_combo, self.y_combo, self.color_combo, self.tool_combo, self.map_combo = (QComboBox() for _ in range(5))
        self.color_combo.addItems(["angle", "class"])
        self.tool_combo.addItems(list(SELECT_TOOLS))
        self.map_combo.addItems(list(MAP_MODES))
        self.map_combo.setToolTip(
            "nearest: each pixel takes its nearest atom's angle; smooth: a circular mean of the atoms around it."
        )
        for label, w in (
            ("Results", self.layer_combo),
            ("X axis", self.x_combo),
            ("Y axis", self.y_combo),
            ("Colour by", self.color_combo),
            ("Select with", self.tool_combo),
            ("Angle map", self.map_combo),
        ):
            form.addRow(label, w)
        return form

    def _scatter_canvas(self) -> FigureCanvasQTAgg:
        self.figure = Figure(figsize=(3.2, 3.0), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.ax = self.figure.add_subplot()
        self.plot_theme.add(self.canvas)
        return self.canvas

    def _manifold_box(self) -> QGroupBox:
        """The manifold's grid, angle and class, its picture and the button that makes it a layer."""
        box = QGroupBox("Latent manifold")
        form = QFormLayout(box)
        self.grid_spin = QSpinBox(minimum=2, maximum=40, value=8)
        self.grid_spin.setToolTip("Decoded images per side (d x d).")
        self.angle_slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=359, value=0)
        self.angle_label = QLabel("0°")
        angle_row = QHBoxLayout()
        angle_row.addWidget(self.angle_slider)
        angle_row.addWidget(self.angle_label)
        self.class_spin = QSpinBox(minimum=0, maximum=0, value=0)
        self.manifold_panel = ImagePanel(1, self.plot_theme, height=2.6)
        self.manifold_layer_button = QPushButton("Show in viewer")
        self.manifold_layer_button.setToolTip("Add the manifold as an image layer.")
        form.addRow("Grid (d)", self.grid_spin)
        form.addRow("Angle", angle_row)
        form.addRow("Class", self.class_spin)
        form.addRow(self.manifold_panel)
        form.addRow(self.manifold_layer_button)
        return box

    def _reconstruction_box(self) -> QGroupBox:
        box = QGroupBox("Selected atom: patch and reconstruction")
        layout = QVBoxLayout(box)
        self.recon_panel = ImagePanel(2, self.plot_theme, height=1.8)
        layout.addWidget(self.recon_panel)
        return box

    def _export_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.csv_button, self.tiff_button, self.png_button = (
            QPushButton(t) for t in ("Table CSV…", "Maps TIFF…", "Figure PNG…")
        )
        for b, slot in (
            (self.csv_button, self.export_csv),
            (self.tiff_button, self.export_maps),
            (self.png_button, self.export_figure),
        ):
            b.clicked.connect(lambda _=False, s=slot: s())
            row.addWidget(b)
        return row

    def _connect_controls(self) -> None:
        self._decode_timer = QTimer(self, singleShot=True, interval=DECODE_DELAY_MS)
        self._decode_timer.timeout.connect(self.update_manifold)
        self.layer_combo.currentTextChanged.connect(self._layer_changed)
        for combo in (self.x_combo, self.y_combo, self.color_combo):
            combo.currentTextChanged.connect(self._axes_changed)
        self.tool_combo.currentTextChanged.connect(self._make_selector)
        self.map_combo.currentTextChanged.connect(lambda mode: self.redraw_maps(mode))
        self.angle_slider.valueChanged.connect(self._angle_changed)
        self.grid_spin.valueChanged.connect(lambda *_: self._decode_timer.start())
        self.class_spin.valueChanged.connect(lambda *_: self._decode_timer.start())
        self.manifold_layer_button.clicked.connect(lambda *_: self.manifold_to_layer())

    def close_jobs(self) -> None:
        timer = getattr(self, "_decode_timer", None)  # Qt may send events before __init__ has set it
        if timer is not None:
            timer.stop()  # a pending decode would start a job after the widget went away
        super().close_jobs()

    # ----------------------------------------------------------------- state

    @property
    def layer(self):
        """The results points layer being explored, or None."""
        return self._layer

    @property
    def info(self) -> dict:
        return (results_meta(self._layer) if self._layer is not None else None) or {}

    @property
    def period(self) -> float:
        return float(self.info.get("period", 360.0))

    def _layer_changed(self, *_):
        layer = self.layer_combo.layer()
        if layer is self._layer:
            return
        if self._layer is not None:
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                self._layer.selected_data.events.items_changed.disconnect(self._viewer_selection_changed)
        self._layer = layer
        self.reconstruction = None
        if layer is not None:
            layer.selected_data.events.items_changed.connect(self._viewer_selection_changed)
        self._reload()

    def _reload(self):
        """Fill the axes, class and angle controls from the current layer; redraw everything."""
        layer = self._layer
        if layer is not None:
            cols = [str(c) for c in layer.features.columns]
            z = latent_columns(layer.features)
            axes = z + [c for c in EXTRA_AXES if c in cols]
            model = self.info.get("model")
            n_classes = int(getattr(getattr(model, "config", None), "n_classes", 0) or 0)
            self.class_spin.setMaximum(max(n_classes - 1, 0))
            self.class_spin.setEnabled(n_classes > 1)
            color = self.info.get("color_by", "angle")
        else:
            axes, color = [], "angle"
        for combo, pick in ((self.x_combo, 0), (self.y_combo, 1)):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(axes)
            if axes:
                combo.setCurrentIndex(min(pick, len(axes) - 1))
            combo.blockSignals(False)
        for combo, value in ((self.color_combo, color), (self.map_combo, self._map_mode())):
            combo.blockSignals(True)
            combo.setCurrentText(value)
            combo.blockSignals(False)
        self.angle_slider.setMaximum(max(int(round(self.period)) - 1, 0))
        for b in (self.csv_button, self.tiff_button, self.png_button, self.manifold_layer_button):
            b.setEnabled(layer is not None)
        self.draw_scatter()
        self.update_manifold()

    def _map_mode(self) -> str:
        """The mode of this run's angle map in the viewer (``nearest`` when there is none)."""
        run = self.info.get("run")
        if run is None:
            return "nearest"
        for lay in run_layers(self.viewer, run):
            info = results_meta(lay)
            if info["role"] == "angle_map":
                return info.get("map_mode", "nearest")
        return "nearest"

    def redraw_maps(self, mode: str):
        """Rebuild this run's layers with the angle map in ``mode`` (the source layers must still be there)."""
        info = self.info
        if not info or mode == self._map_mode():
            return []
        layers = self.viewer.layers
        image = layers[info["image_layer"]] if info.get("image_layer") in layers else None
        if image is None:
            show_warning(
                f"The image {info.get('image_layer')!r} is no longer in the viewer: the maps cannot be redrawn."
            )
            return []
        points = layers[info["source_points"]] if info.get("source_points") in layers else None
        return show_results(
            self.viewer,
            info["analysis"],
            image_layer=image,
            points_layer=points,
            run_name=info["run"],
            symmetry=info.get("symmetry", 1),
            color_by=self.color_combo.currentText(),
            map_mode=mode,
        )

    def _axes_changed(self, *_):
        if self._layer is not None and self.sender() is self.color_combo:
            recolor_points(self._layer, self.color_combo.currentText())
        self.draw_scatter()

    def _angle_changed(self, value):
        self.angle_label.setText(f"{value}°")
        self._decode_timer.start()

    # --------------------------------------------------------------- scatter

    def draw_scatter(self):
        """Redraw the scatter of the chosen columns, then the selection highlight."""
        self.ax.clear()
        layer = self._layer
        xcol, ycol = self.x_combo.currentText(), self.y_combo.currentText()
        if layer is None or not xcol or not ycol:
            self._xy = np.zeros((0, 2))
            self.ax.text(
                0.5,
                0.5,
                "No results yet: train or apply a model.",
                ha="center",
                va="center",
                transform=self.ax.transAxes,
                fontsize=8,
            )
            self._highlight = None
        else:
            feats = layer.features
            self._xy = feats[[xcol, ycol]].to_numpy(dtype=float)
            draw_scatter(self.ax, feats, xcol, ycol, color_by=self.color_combo.currentText(), period=self.period)
            ring = self.plot_theme.colors.text  # the theme's text colour stands out on its background
            self._highlight = self.ax.scatter([], [], s=28, facecolors="none", edgecolors=ring, linewidths=1.0)
        self.ax.tick_params(labelsize=7)
        self.plot_theme.style(self.figure)
        self._make_selector()
        self._viewer_selection_changed()

    def _make_selector(self, *_):
        if self._selector is not None:
            self._selector.set_active(False)
            self._selector.disconnect_events()
        if self.tool_combo.currentText() == "lasso":
            self._selector = LassoSelector(self.ax, onselect=self.select_polygon, useblit=False)
        else:
            self._selector = RectangleSelector(
                self.ax,
                self._rectangle_selected,
                useblit=False,
                interactive=False,
                minspanx=0,
                minspany=0,
                spancoords="data",
            )

    def _rectangle_selected(self, press, release):
        self.select_rectangle((press.xdata, release.xdata), (press.ydata, release.ydata))

    def select_rectangle(self, xrange, yrange) -> np.ndarray:
        """Select the atoms whose scatter position lies in the box; returns their indices."""
        (x0, x1), (y0, y1) = sorted(xrange), sorted(yrange)
        xy = self._xy
        inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
        return self._select(np.flatnonzero(inside))

    def select_polygon(self, vertices) -> np.ndarray:
        """Select the atoms inside a lasso polygon (scatter coordinates); returns their indices."""
        if len(vertices) < 3:
            return self._select(np.zeros(0, dtype=int))
        inside = MplPath(np.asarray(vertices, dtype=float)).contains_points(self._xy)
        return self._select(np.flatnonzero(inside))

    def _select(self, idx: np.ndarray) -> np.ndarray:
        if self._layer is not None:
            self._layer.selected_data = {int(i) for i in idx}  # -> _viewer_selection_changed
        return idx

    def selected(self) -> np.ndarray:
        """Indices selected in the results layer, sorted."""
        if self._layer is None:
            return np.zeros(0, dtype=int)
        return np.array(sorted(self._layer.selected_data), dtype=int)

    def highlighted(self) -> np.ndarray:
        """The scatter positions currently highlighted (what the user sees ringed)."""
        if getattr(self, "_highlight", None) is None:
            return np.zeros((0, 2))
        return np.asarray(self._highlight.get_offsets(), dtype=float).reshape(-1, 2)

    def _viewer_selection_changed(self, *_):
        try:
            idx = self.selected()
            idx = idx[idx < len(self._xy)]
            if getattr(self, "_highlight", None) is not None:
                self._highlight.set_offsets(self._xy[idx] if len(idx) else np.zeros((0, 2)))
            n = len(idx)
            self.selection_label.setText(f"{n:,} atom{'s' if n != 1 else ''} selected." if n else NO_SELECTION)
            self.canvas.draw_idle()
        except RuntimeError:  # the widget was deleted while the layer still knew it
            return
        if len(idx):
            self.update_reconstruction(int(idx[0]))

    # ------------------------------------------------------------ decoding

    def update_manifold(self):
        """Decode the d x d manifold at the chosen angle (in the background) and show it."""
        model = self.info.get("model")
        if model is None:
            self.manifold_panel.show([None], ["(no model)"])
            return
        feats = self._layer.features
        z = latent_columns(feats)
        dims, rng = (0, 1), None
        xcol, ycol = self.x_combo.currentText(), self.y_combo.currentText()
        if xcol in z and ycol in z and xcol != ycol:
            dims = (int(xcol[1:]), int(ycol[1:]))
        if len(z) >= 2:
            cols = [f"z{dims[0]}", f"z{dims[1]}"]
            lo, hi = feats[cols].quantile(0.02).to_numpy(), feats[cols].quantile(0.98).to_numpy()
            hi = np.maximum(hi, lo + 1e-3)
            rng = ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))
        d, angle, cls = self.grid_spin.value(), float(self.angle_slider.value()), self.class_spin.value()
        extent = None if rng is None else (rng[0][0], rng[0][1], rng[1][0], rng[1][1])

        def show(mosaic, angle=angle, d=d, extent=extent):
            self.manifold_image = mosaic
            self.manifold_panel.show([mosaic], [f"{d} x {d} at {angle:g}°"], extent=extent)

        self.run_job(
            start_manifold(model, d, dims=dims, z_range=rng, angle_deg=angle, class_index=cls, on_done=show),
            kind="manifold",
        )

    def update_reconstruction(self, index: int):
        """Show atom ``index``'s patch beside the model's reconstruction of it."""
        info = self.info
        model, analysis = info.get("model"), info.get("analysis")
        name = info.get("image_layer")
        if model is None or analysis is None or name not in self.viewer.layers:
            self.recon_panel.show([None, None], ["(the source image is gone)", ""])
            return
        p = model.config.patch_size
        data = full_resolution_data(self.viewer.layers[name])
        cy, cx = (float(v) for v in analysis.centers[index])
        # Copy only a window around the atom (snapshot on the GUI thread, decoding in the worker).
        h, w = np.shape(data)[-2:]
        y0, x0 = max(int(cy) - p - 2, 0), max(int(cx) - p - 2, 0)
        y1, x1 = min(int(cy) + p + 3, h), min(int(cx) + p + 3, w)
        # A movie's atom is cut from its own frame (the features' ``frame``), never through every frame.
        frame = (int(self._layer.features["frame"].iloc[index]),) if "frame" in self._layer.features else ()
        window = np.array(data[(*frame, Ellipsis, slice(y0, y1), slice(x0, x1))], dtype=np.float32, copy=True)
        label = None
        if model.config.class_input and "class" in self._layer.features:
            label = [int(self._layer.features["class"].iloc[index])]

        def show(result, index=index):
            patch, recon = result
            self.reconstruction = (index, patch, recon)
            self.recon_panel.show([patch, recon], [f"atom {index}", "reconstruction"])

        self.run_job(
            start_reconstruction(window, [cy - y0, cx - x0], model, labels=label, on_done=show), kind="reconstruction"
        )

    def manifold_to_layer(self):
        """Add (or replace) the manifold as an image layer; returns it."""
        if self.manifold_image is None or self._layer is None:
            show_warning("There is no manifold to show yet.")
            return None
        run = self.info.get("run", self._layer.name)
        name = f"{run} latent manifold"
        meta = {META: {**self.info, "role": "manifold"}}
        for lay in run_layers(self.viewer, run):
            if results_meta(lay)["role"] == "manifold":
                self.viewer.layers.remove(lay)
        return self.viewer.add_image(self.manifold_image.copy(), name=name, colormap="gray", metadata=meta)

    # --------------------------------------------------------------- exports

    def _ask(self, title, default, filt, folder=False):
        if folder:
            return QFileDialog.getExistingDirectory(self, title, "")
        path, _ = QFileDialog.getSaveFileName(self, title, default, filt)
        return path

    def _export_file(self, path, what: str, suffix: str, write) -> Path | None:
        """``write(path)`` one file, asking where when no path is given; says where it went or why not."""
        if self._layer is None:
            return None
        path = path or self._ask(
            f"Export {what.lower()}", f"{self._layer.name}{suffix}", f"{suffix[1:].upper()} (*{suffix})"
        )
        if not path:
            return None
        try:
            out = write(path)
        except OSError as err:
            show_error(f"Cannot write {path}: {err.strerror or err}.")
            return None
        show_info(f"{what} saved to {out}.")
        return out

    def export_csv(self, path=None):
        """The results table (the layer's features) to CSV; returns the path or None."""
        return self._export_file(path, "Table", ".csv", lambda p: export_table_csv(self._layer, p))

    def export_maps(self, folder=None):
        """This run's maps to TIFF files in ``folder`` (with the pixel size); returns the paths."""
        if self._layer is None:
            return []
        folder = folder or self._ask("Export maps to folder", "", "", folder=True)
        if not folder:
            return []
        try:
            paths = export_maps_tiff(self.viewer, self.info.get("run"), folder)
        except InputError as err:
            show_warning(str(err))
            return []
        show_info(f"Maps saved: {', '.join(p.name for p in paths)}.")
        return paths

    def export_figure(self, path=None):
        """A PNG of the scatter and the manifold as chosen here; returns the path or None."""
        return self._export_file(path, "Figure", ".png", self._write_figure)

    def _write_figure(self, path) -> Path:
        feats = self._layer.features
        z = latent_columns(feats)
        xcol, ycol = self.x_combo.currentText(), self.y_combo.currentText()
        dims = (int(xcol[1:]), int(ycol[1:])) if xcol in z and ycol in z else (0, min(1, len(z) - 1))
        fig = latent_figure(
            feats,
            self.info.get("model"),
            dims=dims,
            d=self.grid_spin.value(),
            angle_deg=float(self.angle_slider.value()),
            color_by=self.color_combo.currentText(),
            period=self.period,
            class_index=self.class_spin.value(),
        )
        fig.savefig(path)
        return Path(path)
