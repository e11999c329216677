"""A combo box of the viewer's layers of one kind, kept up to date as layers come and go."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

from .layers import unproxied


class LayerCombo(QComboBox):
    """Lists the viewer's layers of ``layer_type`` that pass ``accept`` (newest chosen when the current one goes)."""

    def __init__(self, viewer, layer_type, parent=None, *, accept=None):
        super().__init__(parent)
        self.viewer, self.layer_type = viewer, layer_type
        self.accept = accept or (lambda layer: True)
        self._followers: list[tuple[str, object]] = []
        self._followed = None  # the layer whose events the followers are connected to
        self.currentTextChanged.connect(self._rewire)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.changed):
            ev.connect(self.refresh)  # napari drops these connections itself once the combo is deleted
        # A rename changes no list event: follow each layer's own name event.
        events.inserted.connect(lambda event: event.value.events.name.connect(self.refresh))
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def refresh(self, *_):
        chosen = self._followed  # the layer itself: still chosen after a rename
        current = chosen.name if chosen is not None and chosen in self.viewer.layers else self.currentText()
        names = [lay.name for lay in self.viewer.layers if isinstance(lay, self.layer_type) and self.accept(lay)]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        self.blockSignals(False)
        if current in names:
            self.setCurrentText(current)
        elif names:  # the newest layer of that kind is the most likely choice
            self.setCurrentIndex(len(names) - 1)
        self.currentTextChanged.emit(self.currentText())

    def follow(self, event: str, callback) -> None:
        """Call ``callback`` on ``event`` (e.g. ``"data"``) of whichever layer is chosen, re-wired as the choice changes."""
        self._followers.append((event, callback))
        if self._followed is not None:
            getattr(self._followed.events, event).connect(callback)

    def _rewire(self, *_):
        layer = self.layer()
        if layer is self._followed:
            return
        for event, callback in self._followers:
            if self._followed is not None:
                getattr(self._followed.events, event).disconnect(callback)
            if layer is not None:
                getattr(layer.events, event).connect(callback)
        self._followed = layer

    def layer(self):
        """The chosen layer itself (not napari's plugin proxy), or None."""
        name = self.currentText()
        return unproxied(self.viewer.layers[name]) if name in self.viewer.layers else None
