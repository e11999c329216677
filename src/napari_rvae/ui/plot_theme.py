"""The widgets' matplotlib plots in napari's theme colours, following the viewer's theme.

:class:`PlotTheme` reads the colours of the viewer's current theme
(``napari.utils.theme.get_theme``; "system" resolves to dark or light),
styles figures with them and restyles its canvases when ``viewer.theme``
changes. A widget that clears an axes (which resets tick and label colours)
calls :meth:`PlotTheme.style` again after drawing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.text import Text
from napari.utils.theme import get_theme


@dataclass(frozen=True)
class PlotColors:
    """Matplotlib colours (hex) taken from one napari theme."""

    figure: str  # the dock's background: the plot sits in it without a frame
    axes: str  # a shade off the background, so the plotting area stands out
    text: str  # labels, ticks, spines, titles


def theme_colors(theme_name: str) -> PlotColors:
    """The plot colours of the napari theme called ``theme_name``."""
    theme = get_theme(theme_name)
    return PlotColors(
        figure=theme.background.as_hex(),
        axes=theme.foreground.as_hex(),
        text=theme.text.as_hex(),
    )


def style_figure(figure: Figure, colors: PlotColors) -> None:
    """Colour the figure, every axes in it (colour bars too) and every text."""
    figure.set_facecolor(colors.figure)
    for ax in figure.axes:
        ax.set_facecolor(colors.axes)
        ax.tick_params(colors=colors.text, which="both")
        for spine in ax.spines.values():
            spine.set_edgecolor(colors.text)
    for text in figure.findobj(Text):
        text.set_color(colors.text)


class PlotTheme:
    """The viewer's theme colours for a widget's canvases, kept up to date while the widget lives."""

    def __init__(self, viewer, owner):
        self.viewer = viewer
        self.colors = theme_colors(viewer.theme)
        self.canvases: list = []
        viewer.events.theme.connect(self._theme_changed)
        # Bound to the emitter, not to the widget: it may fire after the widget's C++ side is gone.
        owner.destroyed.connect(lambda *_, emitter=viewer.events.theme: self._disconnect(emitter))

    def add(self, canvas) -> None:
        """Style ``canvas``'s figure now and whenever the theme changes."""
        self.canvases.append(canvas)
        self.style(canvas.figure)
        canvas.draw_idle()

    def style(self, figure: Figure) -> None:
        """Colour ``figure`` in the current theme (after a widget has redrawn it)."""
        style_figure(figure, self.colors)

    def _theme_changed(self, event=None) -> None:
        self.colors = theme_colors(self.viewer.theme)
        for canvas in self.canvases:
            with contextlib.suppress(RuntimeError):  # a canvas deleted before its owner
                self.style(canvas.figure)
                canvas.draw_idle()

    def _disconnect(self, emitter) -> None:
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            emitter.disconnect(self._theme_changed)
