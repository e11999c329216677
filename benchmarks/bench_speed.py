"""Training and encoding speed: napari-rvae next to pyroVED's rVAE, in one run.

Prints Markdown tables (paste them into docs/speed.md):

1. Training, side by side: the same rotated digits (28 x 28, 2,000 patches
   from ``core.synthetic.make_rotated_digits``), the same architecture
   (encoder MLP 784-128-128 tanh; coordinate decoder with a 128-unit
   coordinate/latent layer and two 128 x 128 tanh layers, i.e. pyroVED's
   defaults), batch 100, Adam lr 1e-3, rVAE with rotation and translation, the
   same number of epochs. Seconds per epoch, patches per second, the ratio to
   pyroVED, final loss (negative ELBO per patch, nats) and the circular
   correlation of the latent angle with the true angle. The runs advance in
   turn, one epoch each (ours, ours float32, pyroVED, ours, ...), so load from
   other processes hits all alike; the ratio is the median of per-epoch pairs.
2. The FLOP-rate fraction: decoder multiply-adds per patch (forward and
   backward) times patches per second, over this machine's matmul rate on
   decoder-shaped products ``(B*P*P x 128) @ (128 x 128)`` measured in the
   same run, in float32 and in bfloat16.
3. Encoding 100,000 patches of 32 x 32 (target: under 10 s on the CPU).
4. Peak memory (RSS, from ``resource.getrusage`` in a fresh subprocess) of
   training on 100,000 patches of 32 x 32 for a few steps (target: < 4 GB).

pyroVED is NOT a dependency of napari-rvae. Install it in a separate
environment that reuses this one's torch (it must not pull a CUDA torch)::

    python -m venv --system-site-packages /tmp/benchenv
    /tmp/benchenv/bin/pip install --no-deps pyroved
    /tmp/benchenv/bin/python benchmarks/bench_speed.py

pyroVED imports ``torchvision.utils.make_grid`` only for plotting; when
torchvision is absent this script puts a stand-in module in its place (the
benchmark never plots). Without pyroVED the pyroVED rows are skipped.

Options: ``--epochs N`` (default 8), ``--device cpu|cuda``, ``--skip-train``, ``--skip-encode``,
``--skip-memory``, ``--quick`` (tiny sizes, to check the script runs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import types

import numpy as np
import torch

from napari_rvae.core.align import CoarseAlignment
from napari_rvae.core.circstats import circular_correlation
from napari_rvae.core.config import ModelConfig, TrainConfig
from napari_rvae.core.decoder import SpatialDecoder, bf16_is_fast
from napari_rvae.core.encode import encode
from napari_rvae.core.models import RVAE, encoder_rotations
from napari_rvae.core.synthetic import make_rotated_digits
from napari_rvae.core.train import train_iter

SIZE, WIDTH = 28, 128
# pyroVED's decoder: coordinate/latent layer + two 128 x 128 layers -> ``layers=3`` here.
DECODER_LAYERS = 3


def import_pyroved():
    """pyroVED, or None; a stand-in for torchvision.utils (plotting only) if needed."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        tv = types.ModuleType("torchvision")
        tv.utils = types.ModuleType("torchvision.utils")
        tv.utils.make_grid = None  # plotting only; never called here
        sys.modules["torchvision"], sys.modules["torchvision.utils"] = tv, tv.utils
    try:
        import pyroved
    except ImportError:
        return None
    return pyroved


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --- training, side by side -------------------------------------------------
def our_model(cfg: ModelConfig, x: np.ndarray, seed: int) -> RVAE:
    """Our rVAE with pyroVED's decoder depth (two 128 x 128 layers after the first)."""
    torch.manual_seed(seed)
    model = RVAE(cfg)
    model.decoder = SpatialDecoder(SIZE, cfg.latent_dim, WIDTH, DECODER_LAYERS)
    model.fit_normalization(torch.as_tensor(x))
    return model


def our_epochs(x, angles, epochs, device, precision, seed=0):
    """Our training, one epoch per ``next()``; returns (final loss, |angle corr.|) at the end."""
    # encoder_rotations=1: the plain MLP encoder, the same as pyroVED's.
    cfg = ModelConfig(
        kind="rvae",
        patch_size=SIZE,
        latent_dim=2,
        hidden_dim=WIDTH,
        hidden_layers=2,
        translation=True,
        encoder_rotations=1,
        likelihood="bernoulli",
        alignment="none",
    )
    model = our_model(cfg, x, seed)
    tc = TrainConfig(epochs=epochs, batch_size=100, lr=1e-3, seed=seed, device=device, precision=precision)
    gen = train_iter(x, cfg, tc, model=model)
    while True:
        try:
            progress = next(gen)
        except StopIteration as fin:
            result = fin.value
            break
        if progress.epoch_done:
            sync(device)
            yield
    table = encode(result.model, x, device=device)
    # The sense of an unsupervised latent angle is arbitrary: report |rho| for both.
    return result.history[-1], abs(circular_correlation(table["angle"].to_numpy(), angles))


def pyroved_epochs(pv, x, angles, epochs, device, seed=0):
    """pyroVED's training (its SVItrainer and data loader), one epoch per ``next()``."""
    xt = torch.as_tensor(x)
    model = pv.models.iVAE((SIZE, SIZE), latent_dim=2, invariances=["r", "t"], seed=seed, device=device)
    trainer = pv.trainers.SVItrainer(model, device=device, lr=1e-3)
    loader = pv.utils.init_dataloader(xt, batch_size=100)
    for _ in range(epochs):
        trainer.step(loader)
        sync(device)
        yield
    z_mean, _ = model.encode(xt)
    # pyroVED's first latent is the angle in radians.
    rho = abs(circular_correlation(np.degrees(z_mean[:, 0].cpu().numpy()), angles))
    return trainer.loss_history["training_loss"][-1], rho


def interleaved(contenders: dict) -> dict:
    """Run the contenders' epochs in turn (A1 B1 C1 A2 B2 ...): each epoch of each one sees
    about the same load from the rest of the machine. Wall and CPU seconds per epoch."""
    out = {name: {"wall": [], "cpu": []} for name in contenders}
    live = dict(contenders)
    while live:
        for name in list(live):
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                next(live[name])
            except StopIteration as fin:
                out[name]["loss"], out[name]["rho"] = fin.value
                del live[name]
                continue
            out[name]["wall"].append(time.perf_counter() - w0)
            out[name]["cpu"].append(time.process_time() - c0)
    return out


# --- FLOPs ------------------------------------------------------------------
def decoder_macs_per_patch(p: int = SIZE, h: int = WIDTH, layers: int = DECODER_LAYERS) -> dict:
    """Multiply-adds of the decoder per patch, forward and backward.

    Per pixel: first layer 2*h (coordinates; the latent part is per patch),
    (layers-1) hidden h*h, output h. Backward costs twice the forward for
    every layer whose input needs a gradient (input and weight gradients),
    once for the first (its input, the grid, needs none).
    """
    n = p * p
    first, hidden, out = 2 * h, (layers - 1) * h * h, h
    fwd = n * (first + hidden + out)
    bwd = n * (first + 2 * hidden + 2 * out)
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd}


def matmul_gflops(dtype: torch.dtype, device: str, rows: int = 100 * SIZE * SIZE, repeats: int = 10) -> float:
    """This machine's rate on decoder-shaped products (rows x 128) @ (128 x 128)."""
    a = torch.randn(rows, WIDTH, device=device).to(dtype)
    b = torch.randn(WIDTH, WIDTH, device=device).to(dtype)
    for _ in range(3):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * rows * WIDTH * WIDTH / best / 1e9


# --- encoding and memory ------------------------------------------------------
def bench_encode(n: int, device: str) -> dict:
    rng = np.random.default_rng(0)
    x = rng.random((n, 32, 32), dtype=np.float32)
    cfg = ModelConfig(kind="rvae", patch_size=32)  # the product's defaults (coarse alignment, plain encoder)
    model = RVAE(cfg).to(device)
    model.fit_normalization(torch.as_tensor(x[:1000], device=device))
    # A full reference (2,000 patches), as training on 2,000 or more patches leaves.
    CoarseAlignment(model).fit(model.normalize(torch.as_tensor(x[:2000], device=device)))
    model.eval()
    encode(model, x[:1000], device=device)  # warm-up
    t0 = time.perf_counter()
    table = encode(model, x, device=device)
    seconds = time.perf_counter() - t0
    assert len(table) == n
    return {"n": n, "seconds": seconds, "encoder_rotations": encoder_rotations(cfg)}


_MEMORY_CHILD = r"""
import json, resource, sys, numpy as np
from napari_rvae.core.config import ModelConfig, TrainConfig
from napari_rvae.core.train import train_iter
n, steps, device = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
x = np.random.default_rng(0).random((n, 32, 32), dtype=np.float32)
done = [0]
def stop_after():  # checked before every step
    done[0] += 1
    return done[0] > steps
gen = train_iter(x, ModelConfig(kind="rvae", patch_size=32), TrainConfig(epochs=1, device=device), stop=stop_after)
try:
    while True:
        next(gen)
except StopIteration:
    pass
kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(n=n, steps=steps, peak_gb=kb * 1024 / 1e9, data_gb=x.nbytes / 1e9)))
"""


def bench_memory(n: int, steps: int, device: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(n), str(steps), device], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- main ---------------------------------------------------------------------
def machine_line() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{datetime.date.today().isoformat()}, {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, bf16 native: {bf16_is_fast('cpu')}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--max-angle", type=float, default=60.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-encode", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check that the script runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.epochs = 200, 2
    n_enc, n_mem = (2000, 2000) if args.quick else (100_000, 100_000)

    print(f"Machine: {machine_line()}; device {args.device}\n")
    if not args.skip_train:
        x, angles, _ = make_rotated_digits(args.n, size=SIZE, max_angle=args.max_angle, seed=0)
        pv = import_pyroved()
        runs = {"napari-rvae (auto: bfloat16 decoder)": [], "napari-rvae (float32)": [], "pyroVED iVAE r+t": []}
        ref_name = "pyroVED iVAE r+t"
        # Warm-up (one-time costs: oneDNN kernels, Pyro's first trace), untimed.
        warm = {
            "a": our_epochs(x[:200], angles[:200], 1, args.device, "auto"),
            "b": our_epochs(x[:200], angles[:200], 1, args.device, "float32"),
        }
        if pv is not None:
            warm["c"] = pyroved_epochs(pv, x[:200], angles[:200], 1, args.device)
        interleaved(warm)
        contenders = {
            "napari-rvae (auto: bfloat16 decoder)": our_epochs(x, angles, args.epochs, args.device, "auto"),
            "napari-rvae (float32)": our_epochs(x, angles, args.epochs, args.device, "float32"),
        }
        if pv is not None:
            contenders[ref_name] = pyroved_epochs(pv, x, angles, args.epochs, args.device)
        runs = interleaved(contenders)
        print(
            f"Training: {args.n} rotated digits {SIZE}x{SIZE} (+/-{args.max_angle:g} deg), batch 100, "
            f"{args.epochs} epochs, epochs interleaved between the runs; median seconds per epoch; "
            f"x pyroVED = median over epochs of the paired ratio (same epoch number)\n"
        )
        print("| run | s / epoch | CPU s / epoch | patches / s | x pyroVED | final loss | angle corr. |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        rates = {}
        ref = runs.get(ref_name)
        for name, r in runs.items():
            sec = float(np.median(r["wall"]))
            rates[name] = args.n / sec
            ratio = f"{np.median(np.array(ref['wall']) / np.array(r['wall'])):.2f}" if ref else "-"
            print(
                f"| {name} | {sec:.2f} | {np.median(r['cpu']):.2f} | {rates[name]:.0f} | {ratio} | "
                f"{r['loss']:.1f} | {r['rho']:.3f} |"
            )
        if not ref:
            print(f"| {ref_name} | not installed | | | | | |")
        macs = decoder_macs_per_patch()
        g32, g16 = matmul_gflops(torch.float32, args.device), matmul_gflops(torch.bfloat16, args.device)
        print(
            f"\nDecoder multiply-adds per patch: {macs['forward'] / 1e6:.1f} M forward + "
            f"{macs['backward'] / 1e6:.1f} M backward = {macs['total'] / 1e6:.1f} M "
            f"({2 * macs['total'] / 1e9:.3f} GFLOP)"
        )
        print(
            f"Matmul rate on ({100 * SIZE * SIZE} x {WIDTH}) @ ({WIDTH} x {WIDTH}): "
            f"float32 {g32:.0f} GFLOP/s, bfloat16 {g16:.0f} GFLOP/s\n"
        )
        print("| run | decoder GFLOP/s | of float32 peak | of bfloat16 peak |")
        print("|---|---:|---:|---:|")
        for name, rate in rates.items():
            g = rate * 2 * macs["total"] / 1e9
            print(f"| {name} | {g:.0f} | {g / g32:.0%} | {g / g16:.0%} |")
        print()
    if not args.skip_encode:
        r = bench_encode(n_enc, args.device)
        print(
            f"Encoding {r['n']} patches 32x32 (default model, {r['encoder_rotations']} encoder rotations): "
            f"{r['seconds']:.2f} s ({r['n'] / r['seconds']:.0f} patches/s)"
        )
    if not args.skip_memory:
        r = bench_memory(n_mem, 3, args.device)
        print(
            f"Peak RSS training on {r['n']} patches 32x32 ({r['steps']} steps, data {r['data_gb']:.2f} GB): "
            f"{r['peak_gb']:.2f} GB"
        )


if __name__ == "__main__":
    main()
