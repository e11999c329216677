import pytest

from napari_rvae.ui.form_memory import ENV_VAR


@pytest.fixture(autouse=True)
def settings_file(tmp_path_factory, monkeypatch):
    """Each test's widgets remember their settings in a file of its own, never the developer's.

    Outside the test's own ``tmp_path``, which tests list.
    """
    path = tmp_path_factory.mktemp("napari-rvae-settings") / "widgets.json"
    monkeypatch.setenv(ENV_VAR, str(path))
    return path
