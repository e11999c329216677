"""napari must find the plugin the way users install it (editable here; tox checks the wheel)."""

from pathlib import Path

import npe2

import napari_rvae

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_is_found_and_valid():
    pm = npe2.PluginManager()
    pm.discover()
    manifest = pm.get_manifest("napari-rvae")
    ids = {c.id for c in manifest.contributions.commands}
    assert {"napari-rvae.train_widget", "napari-rvae.pick_widget", "napari-rvae.explorer_widget"} <= ids
    assert {w.display_name for w in manifest.contributions.widgets} >= {"Pick atoms", "Train rVAE", "Latent explorer"}


def test_package_manifest_is_the_top_level_one():
    packaged = Path(napari_rvae.__file__).parent / "napari.yaml"
    top = ROOT / "napari.yaml"
    assert packaged.is_file()
    if top.is_file():  # running from the source tree (editable); a wheel ships a copy
        assert packaged.read_text() == top.read_text()


def test_every_command_imports():
    pm = npe2.PluginManager()
    pm.discover()
    manifest = pm.get_manifest("napari-rvae")
    manifest.validate_imports()
