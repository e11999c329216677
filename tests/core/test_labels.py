"""Class labels: a points column's names become the codes a trained model knows, one mapper for all."""

import numpy as np
import pandas as pd
import pytest

from napari_rvae.core.errors import InputError
from napari_rvae.core.labels import class_codes, codes_for_names, labels_for_model


def test_names_are_coded_in_the_models_order_and_empty_ones_stay_unknown():
    np.testing.assert_array_equal(codes_for_names(["dark", "bright", "", "dark"], ["bright", "dark"]), [1, 0, -1, 1])


def test_a_class_the_model_never_saw_is_refused_by_name():
    with pytest.raises(InputError, match="'grey' is not among the classes the model was trained on"):
        codes_for_names(["dark", "grey"], ["bright", "dark"])


def test_a_layers_own_numbering_is_renumbered_to_the_models():
    codes, names = class_codes(pd.Series(["b", "c", "b"]))
    assert names == ["b", "c"]
    np.testing.assert_array_equal(labels_for_model(codes, names, ["a", "b", "c"]), [1, 2, 1])
