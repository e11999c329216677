"""The Train widget's live loss curve: cheap updates while training, full redraws only to rescale."""

import os

import numpy as np
import pytest

from napari_rvae.ui.train_widget import gui_training_threads

pytestmark = pytest.mark.gui


@pytest.fixture
def plot(make_napari_viewer):
    widget = make_napari_viewer().window.add_plugin_dock_widget("napari-rvae", "Train rVAE")[1]
    plot = widget.plot
    plot.reset(10)
    plot.draw()  # what Qt does when the canvas is first shown
    return plot


def full_draws(plot):
    count = []
    plot.mpl_connect("draw_event", lambda _: count.append(1))
    return count


def test_the_x_axis_spans_the_run_and_the_curve_fits_the_axes(plot):
    assert plot.ax.get_xlim() == (0, 10)
    losses = [900.0, 400.0, np.nan, 250.0, 220.0]
    for i, loss in enumerate(losses):
        plot.add(i * 0.5, loss)
    plot.redraw(full=True)
    plot.draw()
    x, y = plot.line.get_data()
    np.testing.assert_array_equal(x, [0.0, 0.5, 1.0, 1.5, 2.0])
    y0, y1 = plot.ax.get_ylim()
    assert y0 < 220.0 and y1 > 900.0
    assert plot.ax.get_xlim() == (0, 10)


def test_points_within_the_axes_are_blitted_without_a_full_draw(plot):
    plot.add(0.0, 500.0)
    plot.add(0.1, 300.0)
    plot.redraw(full=True)
    plot.draw()
    draws = full_draws(plot)
    limits = plot.ax.get_ylim()
    for i in range(20):
        plot.add(0.2 + 0.1 * i, 300.0 + 150.0 * (i % 2))  # stays inside the limits
        plot.redraw()
    assert draws == []
    assert plot.ax.get_ylim() == limits
    assert len(plot.line.get_data()[0]) == 22


def test_a_curve_that_leaves_the_axes_rescales_them(plot):
    plot.add(0.0, 500.0)
    plot.add(0.1, 400.0)
    plot.redraw(full=True)
    plot.add(0.2, 10.0)  # far below the axis
    plot._rescaled = -np.inf  # the last rescale long ago
    plot.redraw()
    assert plot.ax.get_ylim()[0] < 10.0


def test_gui_training_leaves_a_core_to_napari(make_napari_viewer):
    form = make_napari_viewer().window.add_plugin_dock_widget("napari-rvae", "Train rVAE")[1].form
    threads = form.configs()[1].threads
    cores = len(os.sched_getaffinity(0))
    assert threads == gui_training_threads()
    assert 1 <= threads <= max(cores - 1, 1)
