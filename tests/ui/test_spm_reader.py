"""Scanning-probe files through the npe2 reader, in a real napari viewer."""

import numpy as np
import pytest

from napari_rvae.ui.reader import get_reader
from tests.core.test_spm_readers import write_sxm


def _scan(tmp_path, name="stm.sxm"):
    topo = np.zeros((20, 30), np.float32)
    topo[1:4, 2:6] = 1e-9  # top left, as seen
    current = np.full((20, 30), 1e-10, np.float32)
    # An upward scan: the instrument wrote the bottom line first.
    channels = {"Z": ("m", topo[::-1], topo[::-1, ::-1]), "Current": ("A", current, current)}
    return write_sxm(tmp_path / name, channels, scan_dir="up", scan_range=(15e-9, 10e-9)), topo


@pytest.mark.gui
def test_open_sxm_one_layer_per_channel_and_direction(make_napari_viewer, tmp_path):
    pytest.importorskip("nanonispy2")
    path, topo = _scan(tmp_path)
    assert callable(get_reader(str(path)))
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-rvae")
    names = [layer.name for layer in viewer.layers]
    assert names == ["stm - Z (forward)", "stm - Z (backward)", "stm - Current (forward)", "stm - Current (backward)"]
    forward = viewer.layers["stm - Z (forward)"]
    np.testing.assert_allclose(forward.data, topo)
    np.testing.assert_allclose(viewer.layers["stm - Z (backward)"].data, topo)
    np.testing.assert_allclose(forward.scale, (0.5, 0.5))
    assert str(forward.units[-1]) == "nanometer" and forward.metadata["z_unit"] == "m"


@pytest.mark.gui
def test_open_truncated_sxm_opens_nothing(make_napari_viewer, tmp_path):
    pytest.importorskip("nanonispy2")
    path, _ = _scan(tmp_path, "cut.sxm")
    path.write_bytes(path.read_bytes()[:-500])
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match=r"cut\.sxm .*fewer pixels than its header announces"):
        viewer.open(str(path), plugin="napari-rvae")
    assert len(viewer.layers) == 0
