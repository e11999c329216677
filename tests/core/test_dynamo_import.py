"""Training in a process that already holds another LLVM (as napari on a Mesa OpenGL driver does).

Needs torch's CUDA build, which brings triton (``tox -e triton``; skipped with
the CPU wheel). Without :func:`napari_rvae.core.dynamo_import.import_dynamo_safely`
the child process dies with SIGSEGV inside triton's static initialisers.
"""

import ctypes.util
import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import ctypes, os, sys
    ctypes.CDLL(sys.argv[1], mode=os.RTLD_NOW | ctypes.RTLD_GLOBAL)   # what Mesa's GL driver does
    import numpy as np
    from napari_rvae.core.config import ModelConfig, TrainConfig
    from napari_rvae.core.train import train
    x = np.random.default_rng(0).random((40, 16, 16), dtype=np.float32)
    result = train(x, ModelConfig(patch_size=16, hidden_dim=16), TrainConfig(epochs=1, batch_size=20, device="cpu"))
    print("trained", len(result.history))
    """
)


def _mesa_llvm() -> str | None:
    for name in ("LLVM", "LLVM-19", "LLVM-18", "LLVM-17", "LLVM-16", "LLVM-15", "LLVM-14"):
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def test_training_survives_a_global_llvm_loaded_first():
    pytest.importorskip("triton", reason="needs torch's CUDA build, which brings triton (tox -e triton)")
    llvm = _mesa_llvm()
    if llvm is None:
        pytest.skip("no system libLLVM (Mesa's OpenGL drivers bring one)")
    run = subprocess.run(
        [sys.executable, "-c", CHILD, llvm],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stderr[-3000:]}"
    assert "trained 1" in run.stdout
