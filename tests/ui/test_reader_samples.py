import numpy as np
import pytest

from napari_rvae.core.errors import InputError
from napari_rvae.core.readers import write_tiff
from napari_rvae.ui.reader import get_reader
from napari_rvae.ui.samples import LATTICE_POINTS_NAME, digits_sample, lattice_sample

# --- plain (no viewer) --------------------------------------------------------------------


def test_get_reader_declines_other_files(tmp_path):
    assert get_reader(str(tmp_path / "x.npy")) is None
    assert get_reader(str(tmp_path / "x.csv")) is None
    assert get_reader(str(tmp_path)) is None
    assert get_reader([]) is None


def test_get_reader_layer_tuples(tmp_path):
    p = write_tiff(tmp_path / "cal.tif", np.random.default_rng(0).random((16, 20)), pixel_size=0.3, unit="Å")
    reader = get_reader(str(p))
    assert callable(reader)
    ((data, kwargs, kind),) = reader(str(p))
    assert kind == "image" and data.shape == (16, 20)
    assert kwargs["name"] == "cal" and kwargs["scale"] == pytest.approx((0.3, 0.3))
    assert kwargs["metadata"]["unit"] == "Å" and kwargs["units"] == ("Å", "Å")


def test_reader_corrupted_file_plain_message(tmp_path):
    p = tmp_path / "broken.tif"
    p.write_bytes(b"not a tiff at all" * 10)
    reader = get_reader(str(p))
    with pytest.raises(InputError, match=r"Could not read .*broken\.tif"):
        reader(str(p))


def test_samples_data():
    (img, ikw, ik), (pts, pkw, pk) = lattice_sample()
    assert ik == "image" and pk == "points" and img.shape == (512, 512)
    assert pkw["name"] == LATTICE_POINTS_NAME and len(pts) == len(pkw["features"]["angle_true"])
    assert set(pkw["features"]) == {"angle_true", "grain", "species"}
    ((stack, dkw, dk),) = digits_sample()
    assert dk == "image" and stack.shape == (2000, 28, 28) and len(dkw["metadata"]["angle_true"]) == 2000


# --- in a napari viewer --------------------------------------------------------------------


@pytest.mark.gui
def test_open_calibrated_tiff_in_viewer(make_napari_viewer, tmp_path):
    p = write_tiff(tmp_path / "scan.tif", np.random.default_rng(0).random((32, 40)), pixel_size=0.05, unit="nm")
    viewer = make_napari_viewer()
    layers = viewer.open(str(p), plugin="napari-rvae")
    assert len(layers) == 1
    layer = viewer.layers["scan"]
    np.testing.assert_allclose(layer.scale, (0.05, 0.05))
    assert layer.metadata["unit"] == "nm"
    assert str(layer.units[-1]) == "nanometer"


@pytest.mark.gui
def test_open_corrupted_file_in_viewer(make_napari_viewer, tmp_path):
    p = tmp_path / "broken.tif"
    p.write_bytes(b"not a tiff at all" * 10)
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match=r"Could not read .*broken\.tif"):
        viewer.open(str(p), plugin="napari-rvae")
    assert len(viewer.layers) == 0


@pytest.mark.gui
def test_open_lattice_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-rvae", "lattice")
    names = [layer.name for layer in viewer.layers]
    assert "synthetic lattice" in names and LATTICE_POINTS_NAME in names
    pts = viewer.layers[LATTICE_POINTS_NAME]
    assert {"angle_true", "grain", "species"} <= set(pts.features.columns)
    np.testing.assert_allclose(viewer.layers["synthetic lattice"].scale, pts.scale)


@pytest.mark.gui
def test_open_digits_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-rvae", "digits")
    assert viewer.layers["rotated digits"].data.shape == (2000, 28, 28)


@pytest.mark.gui
def test_real_sample_opens_calibrated_or_explains(make_napari_viewer):
    """With temul-toolkit and the formats extra: a real calibrated STEM image; without: a plain message."""
    from napari_rvae.core.errors import InputError
    from napari_rvae.core.real_data import real_sample_path

    viewer = make_napari_viewer()
    try:
        real_sample_path()
        pytest.importorskip("rsciio")
    except InputError as err:
        assert "pip install --no-deps temul-toolkit" in str(err)
        return
    viewer.open_sample("napari-rvae", "real")
    layer = viewer.layers[-1]
    assert layer.data.shape == (1024, 1024)
    assert layer.scale[-1] == pytest.approx(0.0127, rel=0.01)
    assert "temul-toolkit" in layer.metadata["credit"]
