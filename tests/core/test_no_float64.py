"""Apple's MPS has no float64: the whole pipeline must run without one float64 tensor.

There is no Mac here, so the float32 path runs on the CPU under a guard that
fails on any torch operation producing a float64 (or complex128) tensor, on
any device: stricter than MPS, which only refuses them on the GPU.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from napari_rvae.core.config import ModelConfig, TrainConfig
from napari_rvae.core.pipeline import run_encode, run_train
from napari_rvae.core.synthetic import make_lattice

WIDE = (torch.float64, torch.complex128)


class NoFloat64(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.dtype in WIDE:
                raise AssertionError(f"{func} made a {leaf.dtype} tensor")
        for leaf in tree_leaves((args, kwargs)):
            if isinstance(leaf, torch.Tensor) and leaf.dtype in WIDE:
                raise AssertionError(f"{func} was given a {leaf.dtype} tensor")
        return out


def test_the_guard_catches_float64():
    with pytest.raises(AssertionError, match="float64"), NoFloat64():
        torch.zeros(3, dtype=torch.float64) + 1


@pytest.mark.parametrize("kind, extra", [("rvae", {}), ("jrvae", {"n_classes": 2})])
def test_train_and_encode_make_no_float64_tensor(tmp_path, kind, extra):
    lat = make_lattice((128, 128), seed=0)
    path = tmp_path / "scan.npy"
    np.save(path, lat.image.astype(np.float64))  # float64 data from the user, as often
    points = tmp_path / "points.csv"
    pd.DataFrame({"y": lat.points[:, 0], "x": lat.points[:, 1]}).to_csv(points, index=False)
    cfg = ModelConfig(kind=kind, patch_size=16, hidden_dim=16, **extra)
    with NoFloat64():
        report = run_train(
            path,
            tmp_path / "run",
            points_path=points,
            model_config=cfg,
            train_config=TrainConfig(epochs=1, batch_size=32, device="cpu"),
        )
        run_encode(path, tmp_path / "run" / "model.pt", tmp_path / "enc", points_path=points)
    # The run survives failed alignment steps by design: they must not have failed here.
    assert report["alignment"].get("status") != "failed", report["alignment"]
    assert not [n for n in report["notes"] if "failed" in n], report["notes"]
    table = pd.read_csv(tmp_path / "enc" / "points.csv")
    assert np.isfinite(table["angle"]).all()
