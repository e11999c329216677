"""The bundled real STM sample in the viewer, and levelling in the Pick widget (the user's layer unchanged)."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_rvae.core.synthetic import make_lattice
from napari_rvae.ui.layers import META
from napari_rvae.ui.samples import STM_SAMPLE_NAME

pytestmark = pytest.mark.gui

WAIT_MS = 30_000


def test_open_stm_sample_needs_no_extra_install(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-rvae", "stm")
    layer = viewer.layers[STM_SAMPLE_NAME]
    assert layer.data.shape == (512, 512) and layer.data.dtype == np.float32
    assert "SPIEPy" in layer.metadata["credit"] and "BSD-2-Clause" in layer.metadata["credit"]
    assert layer.metadata["z_unit"] == "nm"


def test_pick_levels_a_copy_and_finds_the_untilted_atoms(make_napari_viewer, qtbot):
    lattice = make_lattice((128, 128), seed=0)
    y, x = np.mgrid[:128, :128]
    tilted = (lattice.image + 0.03 * y - 0.02 * x).astype(np.float32)
    viewer = make_napari_viewer()
    flat = viewer.add_image(lattice.image.copy(), name="flat")
    scan = viewer.add_image(tilted.copy(), name="scan", scale=(0.5, 0.5))
    widget = viewer.window.add_plugin_dock_widget("napari-rvae", "Pick atoms")[1]

    widget.image_combo.setCurrentText("flat")
    widget.detect_button.click()
    qtbot.waitUntil(lambda: "flat atoms" in viewer.layers and not widget.busy, timeout=WAIT_MS)
    widget.image_combo.setCurrentText("scan")
    widget.level.setCurrentText("plane")
    widget.detect_button.click()
    qtbot.waitUntil(lambda: "scan atoms" in viewer.layers and not widget.busy, timeout=WAIT_MS)

    reference, found = viewer.layers["flat atoms"].data, viewer.layers["scan atoms"].data
    assert len(found) == len(reference) > 50
    assert cKDTree(reference).query(found)[0].max() < 0.25
    np.testing.assert_array_equal(scan.data, tilted)  # the user's layer is not levelled in place
    np.testing.assert_array_equal(flat.data, lattice.image)
    levelled = viewer.layers["scan levelled (plane)"]
    assert levelled.metadata[META]["role"] == "levelled" and tuple(levelled.scale) == (0.5, 0.5)
    assert np.ptp(levelled.data) < np.ptp(tilted)

    # Detecting again updates the levelled copy made here instead of stacking new ones.
    n_layers = len(viewer.layers)
    viewer.layers.remove("scan atoms")
    widget.detect_button.click()
    qtbot.waitUntil(lambda: "scan atoms" in viewer.layers and not widget.busy, timeout=WAIT_MS)
    assert len(viewer.layers) == n_layers
