"""The examples in the core's docstrings run and give what they show."""

import doctest
import importlib
import pkgutil

import pytest

import napari_rvae.core as core

MODULES = sorted(m.name for m in pkgutil.walk_packages(core.__path__, "napari_rvae.core."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
