"""The widgets' plots take napari's theme colours and follow the viewer's theme (a real viewer)."""

import pytest
from matplotlib.colors import to_rgba
from napari.utils.theme import get_theme

pytestmark = pytest.mark.gui


def background(theme_name):
    return to_rgba(get_theme(theme_name).background.as_hex())


def text(theme_name):
    return to_rgba(get_theme(theme_name).text.as_hex())


def test_plots_follow_the_viewer_theme(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.theme = "dark"
    train = viewer.window.add_plugin_dock_widget("napari-rvae", "Train rVAE")[1]
    explorer = viewer.window.add_plugin_dock_widget("napari-rvae", "Latent explorer")[1]
    figures = [train.plot.figure, explorer.figure, explorer.manifold_panel.figure, explorer.recon_panel.figure]
    assert background("dark") != background("light")
    for name in ("light", "dark", "light"):
        viewer.theme = name
        for figure in figures:
            assert to_rgba(figure.get_facecolor()) == background(name)
        assert to_rgba(train.plot.ax.xaxis.label.get_color()) == text(name)
        assert to_rgba(explorer.ax.texts[0].get_color()) == text(name)  # "No results yet"


def test_redrawn_plots_keep_the_theme(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.theme = "light"
    train = viewer.window.add_plugin_dock_widget("napari-rvae", "Train rVAE")[1]
    train.plot.reset()  # a new training clears the axes
    train.plot.add(0.5, 10.0)
    assert to_rgba(train.plot.figure.get_facecolor()) == background("light")
    assert to_rgba(train.plot.ax.yaxis.label.get_color()) == text("light")
    assert to_rgba(train.plot.ax.get_facecolor()) == to_rgba(get_theme("light").foreground.as_hex())
