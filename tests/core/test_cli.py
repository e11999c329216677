"""The command line as scripts use it: real files in, real files out, clear errors."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_rvae.cli import main

FAST = ["--epochs", "2", "--hidden-dim", "32", "--batch-size", "50", "--quiet", "--patch-size", "16"]


def gaussian_lattice(shape=(96, 96), spacing=12.0, sigma=1.8, seed=0):
    """A small square lattice of Gaussian atoms with a weaker neighbour (so patches have an orientation)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    img = np.zeros(shape, np.float32)
    pts = []
    for y in np.arange(spacing / 2, shape[0], spacing):
        for x in np.arange(spacing / 2, shape[1], spacing):
            pts.append((y, x))
            img += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
            img += 0.4 * np.exp(-((yy - y) ** 2 + (xx - x - 3.5) ** 2) / (2 * sigma**2))
    img += rng.normal(0, 0.03, shape).astype(np.float32)
    return img, np.array(pts)


@pytest.fixture
def image_and_points(tmp_path):
    img, pts = gaussian_lattice()
    tifffile.imwrite(tmp_path / "scan.tif", img)
    pd.DataFrame({"y": pts[:, 0], "x": pts[:, 1], "label": np.arange(len(pts)) % 2, "note": "a"}).to_csv(
        tmp_path / "points.csv", index=False
    )
    return tmp_path / "scan.tif", tmp_path / "points.csv", len(pts)


def run_cli(*args):
    return main([str(a) for a in args])


def test_train_on_image_with_points_writes_the_contract(image_and_points, tmp_path):
    image, points, n = image_and_points
    out = tmp_path / "run"
    assert run_cli("train", image, "--points", points, "--out", out, "--edge", "reflect", *FAST) == 0
    table = pd.read_csv(out / "points.csv")
    assert list(table.columns[:7]) == ["y", "x", "angle", "dx", "dy", "z0", "z1"]
    assert {"label", "note"} <= set(table.columns)
    assert len(table) == n
    report = json.loads((out / "report.json").read_text())
    for key in ("model_config", "device", "n_patches", "epochs_run", "loss_per_epoch", "seconds", "patches_per_second"):
        assert key in report
    assert set(report["seconds"]) >= {"extract", "train", "encode", "total"}
    assert report["n_patches"] == n and report["epochs_run"] == 2 and report["device"] == "cpu"
    assert (out / "model.pt").is_file()

    # encode with the saved model: same rows, same columns
    out2 = tmp_path / "enc"
    assert (
        run_cli(
            "encode",
            image,
            "--model",
            out / "model.pt",
            "--points",
            points,
            "--out",
            out2,
            "--edge",
            "reflect",
            "--quiet",
        )
        == 0
    )
    enc = pd.read_csv(out2 / "points.csv")
    np.testing.assert_allclose(enc["angle"], table["angle"], atol=1e-3)


def test_symmetry_is_estimated_by_default_and_reported(image_and_points, tmp_path, capsys):
    image, points, _ = image_and_points
    out = tmp_path / "run"
    assert run_cli("train", image, "--points", points, "--out", out, *FAST) == 0
    report = json.loads((out / "report.json").read_text())
    sym = report["symmetry"]
    assert sym["source"] == "estimated" and sym["chosen"] == report["model_config"]["symmetry"]
    assert set(sym) >= {"plausible", "costs", "reason"}
    given = tmp_path / "given"
    assert run_cli("train", image, "--points", points, "--out", given, "--symmetry", "4", *FAST) == 0
    assert json.loads((given / "report.json").read_text())["symmetry"] == {"chosen": 4, "source": "given"}
    with pytest.raises(SystemExit):
        run_cli("train", image, "--points", points, "--out", tmp_path / "bad", "--symmetry", "5", *FAST)
    assert "choose from auto, 1, 2, 3, 4, 6" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "align, rotation_range, has_reference", [("auto", "auto", True), ("auto", "full", True), ("none", "auto", False)]
)
def test_align_option_reaches_the_model(image_and_points, tmp_path, align, rotation_range, has_reference):
    from napari_rvae.core.modelfile import load_model

    image, points, _ = image_and_points
    out = tmp_path / "run"
    assert (
        run_cli(
            "train",
            image,
            "--points",
            points,
            "--out",
            out,
            "--align",
            align,
            "--rotation-range",
            rotation_range,
            *FAST,
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["model_config"]["alignment"] == align
    assert report["model_config"]["rotation_range"] == rotation_range
    model, _ = load_model(out / "model.pt")
    assert (model.ref_theta.numel() > 0) == has_reference
    table = pd.read_csv(out / "points.csv")
    assert ("angle_residual" in table) == has_reference
    if not has_reference:
        assert report["alignment"] is None
        return
    # The report says which range the angles were measured in, and why.
    summary = report["alignment"]
    assert summary["rotation_range"] in ("full", "limited") and summary["description"]
    if rotation_range == "full":
        assert summary["rotation_range"] == "full" and summary["range_test_loss"] is None
    else:
        assert 0.0 <= summary["range_test_loss"] <= 1.0
        passed = (
            summary["range_test_loss"] <= summary["range_test_threshold"]
            and summary["range_test_beyond"] <= summary["range_test_max_beyond"]
            and summary["range_test_concentration"] >= summary["range_test_min_concentration"]
        )
        assert (summary["rotation_range"] == "limited") == passed


def test_rotation_range_is_checked(image_and_points, tmp_path, capsys):
    image, points, _ = image_and_points
    with pytest.raises(SystemExit):
        run_cli("train", image, "--points", points, "--out", tmp_path / "r", "--rotation-range", "some", *FAST)
    assert "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_edge_points_are_dropped_and_reported(image_and_points, tmp_path):
    image, points, n = image_and_points
    out = tmp_path / "run"
    assert run_cli("train", image, "--points", points, "--out", out, *FAST) == 0
    report = json.loads((out / "report.json").read_text())
    table = pd.read_csv(out / "points.csv")
    assert len(table) + len(report["dropped_rows"]) == n
    assert len(report["dropped_rows"]) > 0
    assert any("dropped" in note for note in report["notes"])


def test_patch_stack_input(tmp_path):
    from tests.conftest import rotated_glyphs

    stack, _ = rotated_glyphs(40)
    np.save(tmp_path / "stack.npy", stack)
    out = tmp_path / "run"
    assert run_cli("train", tmp_path / "stack.npy", "--out", out, *FAST) == 0
    table = pd.read_csv(out / "points.csv")
    assert list(table["index"]) == list(range(40))


def test_crvae_trains_on_labels_column(image_and_points, tmp_path):
    image, points, n = image_and_points
    out = tmp_path / "run"
    assert (
        run_cli("train", image, "--points", points, "--out", out, "--model", "crvae", "--edge", "reflect", *FAST) == 0
    )
    table = pd.read_csv(out / "points.csv")
    assert (table["class"] == table["label"]).all()


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["train", "{d}/missing.tif", "--out", "{d}/o"], "not found"),
        ("nan", ["train", "{d}/stack.npy", "--out", "{d}/o"], "NaN"),
        ("rgbstack", ["train", "{d}/vol.npy", "--points", "{d}/p.csv", "--out", "{d}/o"], "2-D image is needed"),
        ("constant", ["train", "{d}/flat.npy", "--points", "{d}/p.csv", "--out", "{d}/o"], "constant"),
        ("emptycsv", ["train", "{d}/img.npy", "--points", "{d}/empty.csv", "--out", "{d}/o"], "empty"),
        ("badcsv", ["train", "{d}/img.npy", "--points", "{d}/bad.csv", "--out", "{d}/o"], "columns 'y' and 'x'"),
        ("outside", ["train", "{d}/img.npy", "--points", "{d}/out.csv", "--out", "{d}/o"], "outside"),
        ("img", ["train", "{d}/img.npy", "--points", "{d}/p.csv", "--out", "{d}/o", "--patch-size", "4"], "too small"),
        ("img", ["train", "{d}/img.npy", "--points", "{d}/p.csv", "--out", "{d}/o", "--patch-size", "200"], "patch"),
        ("img", ["train", "{d}/img.npy", "--points", "{d}/p.csv", "--out", "{d}/o", "--latent-dim", "0"], "at least 1"),
        (
            "img",
            ["train", "{d}/img.npy", "--points", "{d}/p.csv", "--out", "{d}/o", "--device", "warp9"],
            "Unknown device",
        ),
        (
            "img",
            ["encode", "{d}/img.npy", "--points", "{d}/p.csv", "--model", "{d}/p.csv", "--out", "{d}/o"],
            "model file",
        ),
    ],
)
def test_user_mistakes_give_one_clear_line_and_no_output(tmp_path, capsys, setup, args, message):
    d = tmp_path
    img, pts = gaussian_lattice((64, 64))
    pd.DataFrame({"y": pts[:, 0], "x": pts[:, 1]}).to_csv(d / "p.csv", index=False)
    if setup == "nan":
        stack = np.random.rand(5, 16, 16).astype(np.float32)
        stack[0, 0, 0] = np.nan
        np.save(d / "stack.npy", stack)
    elif setup == "rgbstack":
        np.save(d / "vol.npy", np.random.rand(5, 64, 64).astype(np.float32))
    elif setup == "constant":
        np.save(d / "flat.npy", np.ones((64, 64), np.float32))
    elif setup in ("emptycsv", "badcsv", "outside", "img"):
        np.save(d / "img.npy", img)
        (d / "empty.csv").write_text("")
        (d / "bad.csv").write_text("a,b\n1,2\n")
        pd.DataFrame({"y": [10, 500], "x": [10, 10]}).to_csv(d / "out.csv", index=False)
    code = run_cli(*[a.format(d=d) for a in [*args, "--quiet"]])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("napari-rvae: error:") and message in err, err
    assert "Traceback" not in err
    assert not (d / "o").exists()
    assert not any(p.name.startswith(".o.partial") for p in d.iterdir())


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "napari_rvae.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout
