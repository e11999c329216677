"""psi_n, the learning-free lattice orientation, and its check of the learned angle."""

import numpy as np
import pandas as pd
import pytest

from napari_rvae.core.bond_order import (
    DISAGREEMENT_DEG,
    angle_disagreement,
    bond_orientation,
    flag_disagreement,
    lattice_check_columns,
    lattice_check_summary,
    lattice_order,
    with_lattice_check,
)
from napari_rvae.core.errors import InputError
from napari_rvae.core.pipeline import Inputs, atom_positions, results_table
from napari_rvae.core.synthetic import make_lattice, wrap_angle

LATTICES = {"square": (4, [(1.0, 0.0), (0.0, 1.0)]), "hexagonal": (6, [(1.0, 0.0), (0.5, np.sqrt(3) / 2)])}
PSI_COLUMNS = ["psi_angle", "psi_order", "angle_psi_diff", "angle_psi_flag"]


def turned_lattice(kind, turn_deg, *, cells=9, spacing=10.0):
    """(y, x) points of a perfect lattice turned ``turn_deg`` counter-clockwise as displayed; index of the middle atom."""
    _, (a1, a2) = LATTICES[kind]
    i, j = np.mgrid[-cells : cells + 1, -cells : cells + 1].reshape(2, -1)
    x = (i * a1[0] + j * a2[0]) * spacing
    y_up = (i * a1[1] + j * a2[1]) * spacing
    t = np.deg2rad(turn_deg)
    xr, yr = x * np.cos(t) - y_up * np.sin(t), x * np.sin(t) + y_up * np.cos(t)
    points = np.column_stack([200.0 - yr, 200.0 + xr])  # rows grow downwards
    return points, int(np.flatnonzero((i == 0) & (j == 0))[0])


def interior(points, margin):
    centre = points.mean(axis=0)
    return np.abs(points - centre).max(axis=1) < margin


def circular_gap(a, b, period):
    return np.abs(wrap_angle((np.asarray(a) - np.asarray(b)) * 360.0 / period)) * period / 360.0


@pytest.mark.parametrize("kind", ["square", "hexagonal"])
@pytest.mark.parametrize("turn", [0.0, 7.5, 23.0, -7.5, -23.0, 100.0])
def test_perfect_lattice_gives_the_turn_with_order_one(kind, turn):
    n = LATTICES[kind][0]
    points, _ = turned_lattice(kind, turn)
    angle, order = bond_orientation(points, n)
    inside = interior(points, 40.0)  # every bond of these stays inside the lattice
    np.testing.assert_allclose(order[inside], 1.0, atol=1e-9)
    assert circular_gap(angle[inside], turn % (360 / n), 360 / n).max() < 1e-6
    assert ((angle[np.isfinite(angle)] >= 0) & (angle[np.isfinite(angle)] < 360 / n)).all()


def test_counter_clockwise_as_displayed_adds_the_turn():
    """A bond pointing up-right on screen (y decreasing) has a positive angle, as encode's ``angle``."""
    # One bond 10 degrees above the x axis on screen: (dy, dx) = (-sin, cos), as synthetic._direction.
    t = np.deg2rad(10.0)
    angle, order = bond_orientation([[50.0, 50.0], [50.0 - 12 * np.sin(t), 50.0 + 12 * np.cos(t)]], 4, neighbours=1)
    np.testing.assert_allclose(angle, 10.0)
    np.testing.assert_allclose(order, 1.0)
    base, mid = turned_lattice("square", 5.0)
    more, _ = turned_lattice("square", 5.0 + 12.0)
    assert bond_orientation(more, 4)[0][mid] - bond_orientation(base, 4)[0][mid] == pytest.approx(12.0)


@pytest.mark.parametrize("kind", ["square", "hexagonal"])
def test_polycrystal_grains_match_their_known_angles(kind):
    n = LATTICES[kind][0]
    period = 360.0 / n
    lat = make_lattice((384, 384), lattice=kind, seed=3)
    angle, order = bond_orientation(lat.points, n)
    assert np.median(order) > 0.95
    step = 2 * np.pi / period
    grain_psi = np.array(
        [np.angle(np.nanmean(np.exp(1j * step * angle[lat.grain == g]))) / step for g in range(len(lat.grains))]
    )
    truth = np.array([g[2] for g in lat.grains])
    gaps = wrap_angle((grain_psi - truth) * 360 / period) * period / 360
    offset = np.angle(np.exp(1j * step * gaps).mean()) / step
    assert np.abs(wrap_angle((gaps - offset) * 360 / period) * period / 360).max() < 0.5
    assert abs(offset) < 0.5  # and psi's zero is the synthetic grains' zero


def test_one_atom_two_atoms_and_empty():
    angle, order = bond_orientation(np.empty((0, 2)), 4)
    assert angle.shape == order.shape == (0,)
    angle, order = bond_orientation([[5.0, 5.0]], 6)
    assert np.isnan(angle).all() and (order == 0).all()
    # Two atoms: one bond of the n asked for; the missing ones count as zero.
    angle, order = bond_orientation([[10.0, 10.0], [10.0, 22.0]], 4)
    np.testing.assert_allclose(angle, 0.0, atol=1e-9)
    np.testing.assert_allclose(order, 0.25)
    angle, _ = bond_orientation(
        [[10.0, 10.0], [10.0 - 12 * np.sin(np.deg2rad(70)), 10.0 + 12 * np.cos(np.deg2rad(70))]], 6
    )
    np.testing.assert_allclose(angle, 10.0)  # 70 modulo 60


def test_duplicate_points_count_once_and_share_the_result():
    points, mid = turned_lattice("hexagonal", 12.0, cells=4)
    doubled = np.concatenate([points, points[[mid, mid]]])
    angle, order = bond_orientation(doubled, 6)
    ref_angle, ref_order = bond_orientation(points, 6)
    np.testing.assert_allclose(angle[: len(points)], ref_angle)
    np.testing.assert_allclose(order[: len(points)], ref_order)
    np.testing.assert_allclose(angle[-2:], ref_angle[mid])
    assert order[mid] == pytest.approx(1.0)
    angle, order = bond_orientation([[3.0, 4.0], [3.0, 4.0]], 4)
    assert np.isnan(angle).all() and (order == 0).all()


def test_no_neighbour_within_max_distance():
    points, _ = turned_lattice("square", 0.0, cells=3)
    lonely = np.concatenate([points, [[1000.0, 1000.0]]])
    angle, order = bond_orientation(lonely, 4)
    assert np.isnan(angle[-1]) and order[-1] == 0
    assert np.isfinite(angle[:-1]).all() and (order[:-1] > 0).all()
    angle, order = bond_orientation(points, 4, max_distance=5.0)  # shorter than the spacing
    assert np.isnan(angle).all() and (order == 0).all()


def test_non_finite_rows_and_bad_arguments():
    points, _ = turned_lattice("square", 0.0, cells=2)
    angle, order = bond_orientation(np.concatenate([[[np.nan, 3.0]], points]), 4)
    assert np.isnan(angle[0]) and order[0] == 0
    np.testing.assert_array_equal(order[1:], bond_orientation(points, 4)[1])
    bad_arguments = (
        {"n": 0},
        {"n": 2.5},
        {"n": None},
        {"n": "4"},
        {"n": 4, "neighbours": 0},
        {"n": 4, "max_distance": -1.0},
    )
    for bad in bad_arguments:
        with pytest.raises(InputError):
            bond_orientation(points, **bad)
    with pytest.raises(InputError):
        bond_orientation(np.zeros((3, 3)), 4)


def test_disagreement_removes_one_offset_across_the_period():
    rng = np.random.default_rng(0)
    psi = rng.uniform(0, 90, 200)
    learned = np.mod(psi + 61.0 + rng.normal(0, 1.0, 200), 90.0)  # zero 61 deg away, wrapping past 90
    diff = angle_disagreement(learned, psi, 4)
    assert np.abs(diff).max() < 5 and abs(diff.mean()) < 0.3
    assert ((diff > -45) & (diff <= 45)).all()


def test_disagreement_weights_by_order_and_ignores_low_order():
    psi = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    learned = psi + 25.0
    learned[4] += 25.0  # an outlier the fit must not follow: low order
    diff = angle_disagreement(learned, psi, 6, order=[1, 1, 1, 1, 0.2])
    np.testing.assert_allclose(diff, [0, 0, 0, 0, 25.0], atol=1e-9)
    assert np.isnan(angle_disagreement(learned, psi, 6, order=np.full(5, 0.1))).all()
    with_nan = angle_disagreement(np.array([10.0, np.nan, 30.0]), np.array([0.0, 0.0, np.nan]), 4)
    assert with_nan[0] == pytest.approx(0.0) and np.isnan(with_nan[1:]).all()
    with pytest.raises(InputError):
        angle_disagreement([1.0, 2.0], [1.0], 4)


def test_flag_needs_order_and_a_large_difference():
    diff = np.array([0.0, DISAGREEMENT_DEG - 1, DISAGREEMENT_DEG + 1, -(DISAGREEMENT_DEG + 1), 20.0, np.nan])
    order = np.array([1.0, 1.0, 1.0, 1.0, 0.3, 1.0])
    assert flag_disagreement(diff, order).tolist() == [False, False, True, True, False, False]
    assert flag_disagreement(diff).tolist() == [False, False, True, True, True, False]


def fake_inputs(with_calibration=True, image_input=True):
    points, _ = turned_lattice("square", 20.0, cells=3)
    if image_input:
        table = pd.DataFrame({"y": points[:, 0], "x": points[:, 1], "note": "a", "psi_order": 9.0})
    else:
        table = pd.DataFrame({"index": np.arange(len(points)), "note": "a"})
    encoded = pd.DataFrame({"angle": np.full(len(points), 50.0), "dx": 0.0, "dy": 0.0, "z0": 0.0})
    inputs = Inputs(
        np.zeros((len(points), 8, 8), np.float32),
        table,
        image=np.zeros((400, 400)) if image_input else None,
        pixel_size=0.5 if with_calibration else None,
        unit="nm" if with_calibration else None,
    )
    return inputs, encoded


def checked_table(inputs, encoded, symmetry):
    """points.csv as the pipeline writes it: the analysis adds the check where positions are known."""
    points = atom_positions(inputs)
    if points is not None:
        encoded = with_lattice_check(encoded, points, symmetry)
    return results_table(inputs, encoded)


def test_results_table_puts_the_check_after_the_encoder_columns():
    inputs, encoded = fake_inputs()
    table = checked_table(inputs, encoded, 4)
    assert list(table.columns) == ["y", "x", "angle", "dx", "dy", "z0", *PSI_COLUMNS, "y_nm", "x_nm", "note"]
    np.testing.assert_allclose(table["psi_angle"], 20.0, atol=1e-9)
    assert table["psi_order"].max() <= 1.0  # computed, not the input's stale column
    assert not table["angle_psi_flag"].any()


@pytest.mark.parametrize("symmetry", [1, 4, 6])
def test_results_table_adds_nothing_without_an_image(symmetry):
    inputs, encoded = fake_inputs(image_input=False)
    table = checked_table(inputs, encoded, symmetry)
    assert list(table.columns) == ["index", "angle", "dx", "dy", "z0", "note"]


@pytest.mark.parametrize("symmetry, period", [(1, 90.0), (2, 90.0), (3, 30.0), (4, 90.0), (6, 30.0)])
def test_any_symmetry_is_checked_against_the_lattice_modulo_the_common_period(symmetry, period):
    """A square lattice turned by 20 deg: psi_4 whatever the motif's symmetry; compared modulo 360 / lcm(n, 4)."""
    inputs, encoded = fake_inputs()
    encoded["angle"] = 20.0 + 7.0 + period * np.arange(len(encoded))  # one offset, then whole periods
    table = checked_table(inputs, encoded, symmetry)
    assert list(table.columns) == ["y", "x", "angle", "dx", "dy", "z0", *PSI_COLUMNS, "y_nm", "x_nm", "note"]
    np.testing.assert_allclose(table["psi_angle"], 20.0, atol=1e-9)
    np.testing.assert_allclose(table["angle_psi_diff"], 0.0, atol=1e-6)
    summary = lattice_check_summary(table[["y", "x"]].to_numpy(), table, symmetry)
    assert summary["psi_n"] == 4 and summary["compared_modulo_deg"] == period and summary["flagged"] == 0


def test_a_three_fold_motif_on_a_hexagonal_lattice_is_checked_with_psi_6():
    """MoS2's case: 3-fold patterns around the Mo columns, a 6-fold Mo lattice."""
    points, mid = turned_lattice("hexagonal", 12.0, cells=4)
    angle = np.full(len(points), 12.0 + 60.0 + 5.0)  # 3-fold angle: 12 + 60 is the same lattice, 5 the offset
    angle[mid] += 25.0
    columns = lattice_check_columns(points, angle, 3)
    ordered = columns["psi_order"] > 0.9
    np.testing.assert_allclose(columns["psi_angle"][ordered], 12.0, atol=1e-6)
    assert np.flatnonzero(columns["angle_psi_flag"]).tolist() == [mid]
    assert lattice_order(points)[0] == 6


def test_lattice_check_columns_without_a_learned_angle():
    points, _ = turned_lattice("hexagonal", 0.0, cells=2)
    columns = lattice_check_columns(points, np.full(len(points), np.nan), 6)
    assert np.isnan(columns["angle_psi_diff"]).all() and not columns["angle_psi_flag"].any()
    assert np.isfinite(columns["psi_angle"]).all()


def test_cli_train_and_encode_write_the_lattice_check(tmp_path):
    from napari_rvae.cli import main
    from napari_rvae.core import load_model, result_columns
    from napari_rvae.core.readers import write_tiff

    lat = make_lattice((128, 128), lattice="square", seed=0)
    write_tiff(tmp_path / "scan.tif", lat.image, pixel_size=0.25, unit="Å")
    pd.DataFrame({"y": lat.points[:, 0], "x": lat.points[:, 1], "label": lat.species}).to_csv(
        tmp_path / "points.csv", index=False
    )
    args = [str(tmp_path / "scan.tif"), "--points", str(tmp_path / "points.csv"), "--quiet"]
    assert (
        main(
            [
                "train",
                *args,
                "--out",
                str(tmp_path / "run"),
                "--epochs",
                "1",
                "--hidden-dim",
                "16",
                "--patch-size",
                "16",
                "--symmetry",
                "4",
                "--batch-size",
                "64",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert main(["encode", *args, "--model", str(tmp_path / "run" / "model.pt"), "--out", str(tmp_path / "enc")]) == 0
    for folder in ("run", "enc"):
        table = pd.read_csv(tmp_path / folder / "points.csv")
        encoder = result_columns(load_model(tmp_path / "run" / "model.pt")[0])
        assert list(table.columns) == ["y", "x", *encoder, *PSI_COLUMNS, "y_nm", "x_nm", "label"]
        ordered = table["psi_order"] > 0
        assert ordered.mean() > 0.9
        assert np.isfinite(table.loc[ordered, ["psi_angle", "angle_psi_diff"]].to_numpy()).all()
        assert ((table["psi_order"] >= 0) & (table["psi_order"] <= 1)).all()
        assert ((table.loc[ordered, "psi_angle"] >= 0) & (table.loc[ordered, "psi_angle"] < 90)).all()
        assert table["angle_psi_flag"].dtype == bool
