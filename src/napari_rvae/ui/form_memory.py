"""The widgets' form settings, remembered between sessions in one small JSON file.

Each widget names its remembered fields (``{"epochs": spin box, ...}``) under
a section of its own; :func:`remember` restores them when the widget is made
and saves the section on every change (a few hundred bytes), so nothing
depends on napari closing its docks cleanly.

The file is ``widgets.json`` in napari-rvae's user config directory
(``platformdirs.user_config_dir("napari-rvae")``, e.g. ``~/.config/napari-rvae``
on Linux), or the file named by the environment variable
``NAPARI_RVAE_SETTINGS`` (the tests point it at a temporary file). JSON rather
than ``QSettings``: values keep their types (Qt's ini files on Linux hand back
strings), the file reads the same on every OS (``QSettings`` uses the registry
on Windows) and a user can read or delete it.

A stored value that no longer fits (a choice that is gone, a number out of
range, a wrong type, a corrupt file) is ignored: the field keeps its default.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

from qtpy.QtCore import QObject
from qtpy.QtWidgets import QAbstractSlider, QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox, QWidget

log = logging.getLogger(__name__)

ENV_VAR = "NAPARI_RVAE_SETTINGS"
FILE_NAME = "widgets.json"


def settings_file() -> Path:
    """Where the settings live: ``$NAPARI_RVAE_SETTINGS``, else the user config directory's file."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-rvae", appauthor=False)) / FILE_NAME


def read_settings(path: Path | None = None) -> dict:
    """Every section in the file; ``{}`` when it is missing, unreadable or not a JSON object."""
    path = path or settings_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:  # corrupt or unreadable: start from the defaults
        log.warning("Ignoring the widget settings in %s: %s", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def write_section(section: str, values: dict, path: Path | None = None) -> None:
    """Replace one section of the file, keeping the others; a failure is logged, never raised."""
    path = path or settings_file()
    data = read_settings(path)
    data[section] = values
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(partial, path)  # a reader never sees half a file
    except OSError as err:
        log.warning("Could not save the widget settings to %s: %s", path, err)


def field_value(widget: QWidget):
    """The value a form field shows, as a JSON type."""
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QComboBox):
        return widget.currentText()
    if isinstance(widget, QDoubleSpinBox):
        return widget.value()
    if isinstance(widget, QSpinBox | QAbstractSlider):
        return widget.value()
    raise TypeError(f"Cannot remember a {type(widget).__name__}")


def set_field(widget: QWidget, value) -> bool:
    """Show ``value`` in the field if it fits it (type, range, choices); returns whether it did."""
    if isinstance(widget, QCheckBox):
        if not isinstance(value, bool):
            return False
        widget.setChecked(value)
        return True
    if isinstance(widget, QComboBox):
        if not isinstance(value, str) or widget.findText(value) < 0:
            return False
        widget.setCurrentText(value)
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(widget, QSpinBox | QAbstractSlider) and not isinstance(value, int):
        return False
    if not (math.isfinite(value) and widget.minimum() <= value <= widget.maximum()):
        return False
    widget.setValue(value)
    return True


def _change_signal(widget: QWidget):
    if isinstance(widget, QCheckBox):
        return widget.toggled
    if isinstance(widget, QComboBox):
        return widget.currentTextChanged
    return widget.valueChanged


class FormMemory(QObject):
    """One widget's remembered fields: restored on creation, saved on every change."""

    def __init__(self, section: str, fields: Mapping[str, QWidget], parent: QWidget):
        super().__init__(parent)
        self.section = section
        self.fields = dict(fields)
        self.restore()
        for widget in self.fields.values():
            _change_signal(widget).connect(self.save)

    def values(self) -> dict:
        """The fields' current values by name."""
        return {name: field_value(widget) for name, widget in self.fields.items()}

    def restore(self) -> list[str]:
        """Show the stored values that still fit; returns the names restored."""
        stored = read_settings().get(self.section)
        if not isinstance(stored, dict):
            return []
        restored = []
        for name, widget in self.fields.items():
            if name in stored and set_field(widget, stored[name]):
                restored.append(name)
            elif name in stored:
                log.info("Ignoring the stored %s %s = %r: it no longer fits", self.section, name, stored[name])
        return restored

    def save(self, *_) -> None:
        """Write the fields' current values to the settings file."""
        write_section(self.section, self.values())


def remember(owner: QWidget, section: str, fields: Mapping[str, QWidget]) -> FormMemory:
    """Restore ``fields`` from the settings file now and save them whenever one changes."""
    return FormMemory(section, fields, owner)
