"""The run says when its angles are doubtful (issue #17, honest defaults)."""

import numpy as np
import pandas as pd

from napari_rvae.core.angle_checks import FEW_PATCHES, angle_warnings


def table(n=500, sd=0.5, flagged=0.0, order=0.9):
    rng = np.random.default_rng(0)
    flags = np.zeros(n, bool)
    flags[: int(flagged * n)] = True
    return pd.DataFrame(
        {"angle": rng.uniform(0, 60, n), "angle_sd": np.full(n, sd), "psi_order": order, "angle_psi_flag": flags}
    )


def test_a_clean_run_has_nothing_to_say():
    assert angle_warnings(table(), 6, {"chosen": 6, "source": "estimated", "alternatives": []}) == []


def test_each_doubt_is_said_once_with_its_numbers():
    found = angle_warnings(
        table(n=FEW_PATCHES - 1, sd=7.5, flagged=0.3), 6, {"chosen": 1, "source": "estimated", "alternatives": [2]}
    )
    heads = [w.split(":")[0] for w in found]
    assert heads == ["Few patches", "Uncertain angles", "Symmetry ambiguous", "Lattice check"]
    assert "7.5 deg" in found[1] and "2-fold" in found[2] and "29%" in found[3]  # 29 of 99 atoms


def test_the_period_sets_what_is_uncertain():
    assert angle_warnings(table(sd=7.5), 1) == []  # 7.5 of 360 degrees is fine
    assert [w.split(":")[0] for w in angle_warnings(table(sd=7.5), 6)] == ["Uncertain angles"]


def test_flags_count_only_where_the_lattice_is_ordered_and_models_without_angles_say_nothing():
    assert angle_warnings(table(flagged=0.5, order=0.2), 6) == []
    assert angle_warnings(pd.DataFrame({"z0": [0.0] * 5}), 1) == []
