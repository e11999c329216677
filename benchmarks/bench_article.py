"""The rVAE article's experiment on rotated digits, plus the angle and class targets of issue #6.

Run: ``python benchmarks/bench_article.py --part angles|article|classes|budget|ceiling`` (parts can run in
parallel processes), then ``--part none --write`` to gather them into docs/science.md.

Data: :func:`napari_rvae.core.synthetic.make_rotated_digits` (scikit-learn's
8 x 8 digits upscaled into 28 x 28 patches, rotated uniformly), fixed seed.

What it measures (every model with a 2-D content latent, Bernoulli likelihood,
the CLI's other defaults; one CPU thread per run so the numbers compare across runs):

* **Angles.** One asymmetric glyph at every angle (one offset), with and
  without coarse alignment; digits at +/-45 degrees with one offset, with the
  default (aligned; the range test picks the limited range), with
  ``--rotation-range full`` and with ``--angle-prior 2`` / ``4``. Aligned rows
  also score the decoder's pose (``angle + angle_residual``).
* **The article's comparison** (+/-180 degrees, one offset per digit class: a
  digit's upright pose cannot be known when every digit appears at every
  angle, only rotations between instances of one digit): VAE, cVAE (VAE whose
  encoder and decoder see the digit), rVAE (default: coarse alignment), rVAE
  without alignment, crVAE (rVAE that sees the digit), and the angular
  synchronisation alone. Figures: latent scatter coloured by true angle and by
  digit, the latent manifold (decoded upright on a grid of z), latent angle vs
  true angle.
* **Classes** (+/-180 degrees): adjusted Rand index against the digits of
  jrVAE (no labels) and ssrVAE (10 labels per digit), each with and without
  the similarity graph's classes as targets; spectral clustering of the graph
  alone; k-means (10 clusters) on a plain VAE's latents.
* **Budget** (``--part budget``): the CLI's defaults (50 epochs, batch 100)
  on both cores, 2,000 and 10,000 digits at +/-180 and +/-45, seed 1.
* **Ceiling** (``--part ceiling``): how far the +/-180 score can go on this
  data. Each patch is turned upright with its *true* angle and a supervised
  classifier (RBF SVM, 5-fold cross-validation, each source image kept on one
  side) tells it from its upside-down copy; the within-digit correlation is
  then scored for angles that are exact except where the classifier got the
  half-turn wrong. No unsupervised angle can be expected to beat it.

Figures go to ``docs/images/article-*.png``; with ``--write`` the table replaces
the block between the ``bench_article`` markers in ``docs/science.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from napari_rvae.core import ModelConfig, TrainConfig, encode, train
from napari_rvae.core.align import coarse_angles
from napari_rvae.core.circstats import aligned_errors, circular_correlation
from napari_rvae.core.graph_classes import graph_classes
from napari_rvae.core.synthetic import make_rotated_digits, make_rotated_shapes

ROOT = Path(__file__).resolve().parents[1]
MACHINE = "2-core CPU dev box"
START, END = "<!-- bench_article:start -->", "<!-- bench_article:end -->"
PARTS = ["angles", "article", "classes", "budget", "ceiling"]


@dataclass(frozen=True)
class _CVAEConfig(ModelConfig):
    """The article's cVAE: a crVAE without pose latents (benchmark only, never saved)."""

    @property
    def pose_model(self) -> bool:
        return False


def angle_scores(pred, true, digits=None) -> dict:
    """Mean error after fitting sign + offset (per digit if given) and circular correlation."""
    err, _ = aligned_errors(pred, true, groups=digits)
    if digits is None:
        rho = abs(circular_correlation(pred, true))
    else:
        rho = float(
            np.mean([abs(circular_correlation(pred[digits == d], true[digits == d])) for d in np.unique(digits)])
        )
    return {"corr": rho, "err": float(err.mean()), "median": float(np.median(err))}


def ari(labels, pred) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(labels, pred))


def kmeans_ari(z, digits, seed=0) -> float:
    from sklearn.cluster import KMeans

    return ari(digits, KMeans(10, n_init=10, random_state=seed).fit_predict(z))


def fit(patches, cfg, epochs, labels=None, seed=0, threads=1, **train_kw):
    t = time.perf_counter()
    res = train(
        patches, cfg, TrainConfig(epochs=epochs, seed=seed, device="cpu", threads=threads, **train_kw), labels=labels
    )
    return res, time.perf_counter() - t


def per_digit(pred, true, digits) -> str:
    return " ".join(
        f"{d}:{abs(circular_correlation(pred[digits == d], true[digits == d])):.2f}" for d in np.unique(digits)
    )


def _z(table):
    return table[["z0", "z1"]].to_numpy()


def figure(name, rows, digits, angles, model_for):
    """One row per model: z by angle, z by digit, manifold, latent vs true angle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 4, figsize=(14, 3.4 * len(rows)))
    for r, (label, table) in enumerate(rows):
        ax = axes[r]
        z = _z(table)
        sc = ax[0].scatter(z[:, 0], z[:, 1], c=np.mod(angles, 360), cmap="twilight", s=3, vmin=0, vmax=360)
        fig.colorbar(sc, ax=ax[0], label="true angle (deg)")
        ax[0].set_title(f"{label}: z coloured by angle")
        sc = ax[1].scatter(z[:, 0], z[:, 1], c=digits, cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
        fig.colorbar(sc, ax=ax[1], label="digit", ticks=range(10))
        ax[1].set_title(f"{label}: z coloured by digit")
        model, cls = model_for[label]
        ax[2].imshow(_manifold(model, z, cls), cmap="gray")
        ax[2].set_title(f"{label}: latent manifold" + (" (digit 4)" if cls is not None else ""))
        ax[2].axis("off")
        if "angle" in table:
            err, sign = aligned_errors(table["angle"].to_numpy(), angles, groups=digits)
            ax[3].scatter(np.mod(angles, 360), table["angle"], c=digits, cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
            ax[3].set_xlabel("true angle (deg)")
            ax[3].set_ylabel("latent angle (deg)")
            ax[3].set_title(f"{label}: latent vs true angle")
        else:
            ax[3].axis("off")
            ax[3].text(0.5, 0.5, "no angle latent", ha="center", va="center")
    fig.tight_layout()
    path = ROOT / "docs" / "images" / f"article-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _manifold(model, z, cls, steps=8):
    lo, hi = np.percentile(z, [5, 95], axis=0)
    g0, g1 = np.linspace(lo[0], hi[0], steps), np.linspace(hi[1], lo[1], steps)
    grid = torch.tensor([[a, b] for b in g1 for a in g0], dtype=torch.float32)
    y = None
    if cls is not None:
        y = torch.nn.functional.one_hot(torch.full((len(grid),), cls), model.config.n_classes).float()
    img = model.decode(grid, angle_deg=0.0 if model.config.pose_model else None, y=y).numpy()
    p = img.shape[-1]
    return img.reshape(steps, steps, p, p).transpose(0, 2, 1, 3).reshape(steps * p, steps * p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="patches per data set")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--class-epochs", type=int, default=None, help="epochs for jrvae/ssrvae (default: --epochs)")
    ap.add_argument(
        "--part",
        choices=[*PARTS, "all", "none"],
        default="all",
        help="run one part (parts can run in parallel processes; --write gathers them)",
    )
    ap.add_argument("--budget-max", type=int, default=10000, help="largest set for --part budget")
    ap.add_argument("--results", default="/tmp/bench_article", help="folder for each part's rows (JSON)")
    ap.add_argument("--write", action="store_true", help="put the table of every part run so far into docs/science.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    n, ep = args.n, args.epochs
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    parts = {"all": PARTS, "none": []}.get(args.part, [args.part])
    for part in parts:
        rows: list[tuple[str, str, str, str]] = []  # what, model, number, seconds

        def row(what, model, value, sec):
            rows.append((what, model, value, f"{sec:.0f}"))
            print(f"{what:58s} {model:8s} {value:34s} {sec:6.0f} s", flush=True)

        globals()[f"_part_{part}"](n, ep, args, row)
        (results / f"{part}.json").write_text(json.dumps({"n": n, "epochs": ep, "rows": rows}))
    if args.write:
        rows, meta = [], []
        for part in PARTS:
            f = results / f"{part}.json"
            if f.exists():
                data = json.loads(f.read_text())
                rows += [tuple(r) for r in data["rows"]]
                if part == "budget":
                    meta.append("budget: the CLI's defaults (50 epochs), both cores, data seed 1")
                elif part == "ceiling":
                    meta.append("ceiling: no training, data seeds 0 and 1")
                else:
                    meta.append(f"{part}: {data['n']} patches, {data['epochs']} epochs")
        table_md = _markdown(rows, "; ".join(meta))
        print(table_md)
        _write(table_md)


def _part_angles(n, ep, args, row):

    base = dict(patch_size=28, latent_dim=2)
    # --- single shape, every angle ---------------------------------------------------------
    sp, sa = make_rotated_shapes(min(n, 1000), size=28, max_angle=180, seed=0)
    res, sec = fit(sp, ModelConfig(**base), ep)
    s = angle_scores(encode(res.model, sp)["angle"].to_numpy(), sa)
    row(
        f"one glyph, +/-180 deg, {len(sp)} patches (one offset)",
        "rvae",
        f"corr {s['corr']:.3f}, err {s['err']:.1f} deg",
        sec,
    )

    res, sec = fit(sp, ModelConfig(alignment="none", **base), ep)
    s = angle_scores(encode(res.model, sp)["angle"].to_numpy(), sa)
    row(
        f"one glyph, +/-180 deg, {len(sp)} patches (one offset), no alignment",
        "rvae",
        f"corr {s['corr']:.3f}, err {s['err']:.1f} deg",
        sec,
    )

    # --- digits +/-45: one offset ------------------------------------------------------------
    p45, a45, d45 = make_rotated_digits(n, size=28, max_angle=45, seed=0)
    for what, cfg in [
        ("default (aligned, range test: limited)", ModelConfig(**base)),
        ("--rotation-range full (aligned as for any angle)", ModelConfig(rotation_range="full", **base)),
        ("--angle-prior 2 (reference rVAE setting)", ModelConfig(angle_prior=2.0, **base)),
        ("--angle-prior 4", ModelConfig(angle_prior=4.0, **base)),
    ]:
        res, sec = fit(p45, cfg, ep)
        table = encode(res.model, p45)
        pred = table["angle"].to_numpy()
        s, w = angle_scores(pred, a45), angle_scores(pred, a45, d45)
        value = f"corr {s['corr']:.3f}, err {s['err']:.1f} deg (per-digit offsets: corr {w['corr']:.3f}, err {w['err']:.1f})"
        if "angle_residual" in table:
            pose = angle_scores(pred + table["angle_residual"].to_numpy(), a45)
            value += f"; decoder pose (angle + angle_residual): corr {pose['corr']:.3f}, err {pose['err']:.1f}"
        row(f"digits, +/-45 deg, {n} patches (one offset), {what}", "rvae", value, sec)


def _part_article(n, ep, args, row):
    base = dict(patch_size=28, latent_dim=2)
    p, a, d = make_rotated_digits(n, size=28, max_angle=180, seed=0)
    tables, models = [], {}
    for label, cfg, labels in [
        ("VAE", ModelConfig(kind="vae", **base), None),
        ("cVAE", _CVAEConfig(kind="crvae", n_classes=10, **base), d),
        ("rVAE", ModelConfig(kind="rvae", **base), None),
        ("rVAE, no alignment", ModelConfig(kind="rvae", alignment="none", **base), None),
        ("crVAE", ModelConfig(kind="crvae", n_classes=10, **base), d),
    ]:
        res, sec = fit(p, cfg, ep, labels=labels)
        table = encode(res.model, p, labels=labels)
        tables.append((label, table))
        models[label] = (res.model, 4 if labels is not None else None)
        value = f"k-means ARI {kmeans_ari(_z(table), d):.3f}"
        if "angle" in table:
            s = angle_scores(table["angle"].to_numpy(), a, d)
            e180 = aligned_errors(table["angle"].to_numpy(), a, groups=d, period=180)[0].mean()
            value = (
                f"corr {s['corr']:.3f}, err {s['err']:.1f} deg (median {s['median']:.1f}, mod 180: {e180:.1f}); "
                + value
            )
            if label == "rVAE":
                pose = angle_scores(table["angle"].to_numpy() + table["angle_residual"].to_numpy(), a, d)
                value += (
                    f"; per digit {per_digit(table['angle'].to_numpy(), a, d)}; decoder pose: corr "
                    f"{pose['corr']:.3f}, err {pose['err']:.1f}"
                )
        row(f"digits, +/-180 deg, {n} patches (per-digit offsets)", label, value, sec)
    t = time.perf_counter()
    sync = np.rad2deg(coarse_angles(p))
    sec = time.perf_counter() - t
    s = angle_scores(sync, a, d)
    row(
        f"digits, +/-180 deg, {n} patches (per-digit offsets)",
        "sync only",
        f"corr {s['corr']:.3f}, err {s['err']:.1f} deg (median {s['median']:.1f}); per digit {per_digit(sync, a, d)}",
        sec,
    )
    fig = figure("digits-180", tables, d, a, models)
    print(f"figure: {fig}")


def _part_classes(n, ep, args, row):
    base = dict(patch_size=28, latent_dim=2)
    p, a, d = make_rotated_digits(n, size=28, max_angle=180, seed=0)
    cep = args.class_epochs or ep
    ccfg = dict(n_classes=10, **base)
    rng = np.random.default_rng(0)
    few = np.full(n, -1)
    for digit in range(10):
        pick = rng.choice(np.flatnonzero(d == digit), 10, replace=False)
        few[pick] = digit
    unl = few < 0
    for graph in (True, False):
        how = "graph targets (default)" if graph else "ELBO only"
        res, sec = fit(p, ModelConfig(kind="jrvae", **ccfg), cep, graph_targets=graph)
        row(
            f"digits, +/-180 deg: classes, no labels ({cep} epochs), {how}",
            "jrvae",
            f"ARI {ari(d, encode(res.model, p)['class']):.3f}",
            sec,
        )
        res, sec = fit(p, ModelConfig(kind="ssrvae", **ccfg), cep, labels=few, graph_targets=graph)
        pred = encode(res.model, p)["class"].to_numpy()
        row(
            f"digits, +/-180 deg: classes, 10 labels per digit ({cep} epochs), {how}",
            "ssrvae",
            f"ARI {ari(d, pred):.3f} (unlabelled {ari(d[unl], pred[unl]):.3f}, {100 * (pred[unl] == d[unl]).mean():.0f} % right)",
            sec,
        )
    t = time.perf_counter()
    found = graph_classes(p, 10)
    row(
        "digits, +/-180 deg: spectral clustering of the similarity graph alone",
        "graph",
        f"ARI {ari(d, found):.3f}",
        time.perf_counter() - t,
    )
    res, sec = fit(p, ModelConfig(kind="vae", **base), ep)
    row(
        f"digits, +/-180 deg: k-means (10) on the latents ({ep} epochs)",
        "vae",
        f"ARI {kmeans_ari(_z(encode(res.model, p)), d):.3f}",
        sec,
    )


def _part_budget(n, ep, args, row):
    """The CLI's defaults (50 epochs, batch 100, everything else default) with both cores."""
    for size, max_angle, what, cfg in [
        (2000, 180, "per-digit offsets", ModelConfig(patch_size=28)),
        (2000, 45, "one offset", ModelConfig(patch_size=28)),
        (10000, 180, "per-digit offsets", ModelConfig(patch_size=28)),
        (10000, 45, "one offset", ModelConfig(patch_size=28)),
    ]:
        if size > args.budget_max:
            continue
        p, a, d = make_rotated_digits(size, size=28, max_angle=max_angle, seed=1)
        res, sec = fit(p, cfg, 50, threads=2)
        pred = encode(res.model, p)["angle"].to_numpy()
        s = angle_scores(pred, a, d if max_angle == 180 else None)
        value = f"corr {s['corr']:.3f}, err {s['err']:.1f} deg (median {s['median']:.1f})"
        if max_angle == 180:
            value += f"; per digit {per_digit(pred, a, d)}"
        row(f"CLI defaults, 2 threads: digits +/-{max_angle} deg, {size} patches ({what})", "rvae", value, sec)


def _part_ceiling(n, ep, args, row):
    """Within-digit correlation at +/-180 if every angle were exact but for supervised half-turn errors."""
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.svm import SVC

    from napari_rvae.core.align import rotate_patches

    for size, seed in [(n, 0), (n, 1), (5 * n, 1)]:
        t = time.perf_counter()
        p, a, d, source = make_rotated_digits(size, size=28, max_angle=180, seed=seed, return_source=True)
        upright = rotate_patches(torch.as_tensor(p), torch.as_tensor(np.deg2rad(a), dtype=torch.float32)).numpy()
        wrong = np.zeros(size, dtype=bool)
        for digit in range(10):
            m = np.flatnonzero(d == digit)
            both = np.concatenate([upright[m], upright[m][:, ::-1, ::-1]]).reshape(2 * len(m), -1)
            is_upright = np.r_[np.ones(len(m)), np.zeros(len(m))]
            said = cross_val_predict(SVC(C=10), both, is_upright, cv=GroupKFold(5), groups=np.r_[source[m], source[m]])
            wrong[m] = said[: len(m)] != 1
        best = a + 180.0 * wrong
        s = angle_scores(best, a, d)
        row(
            f"digits, +/-180 deg, {size} patches (per-digit offsets), data seed {seed}: supervised ceiling",
            "SVM",
            f"corr {s['corr']:.3f}, err {s['err']:.1f} deg; half-turns wrong {100 * wrong.mean():.1f} %; "
            f"per digit {per_digit(best, a, d)}",
            time.perf_counter() - t,
        )


def _markdown(rows, meta) -> str:
    today = _dt.date.today().isoformat()
    lines = [
        f"Measured {today} on a {MACHINE} (torch {torch.__version__}, 1 thread per run, one run or two side by side, "
        f"except the budget rows); {meta}; batch 100, lr 1e-3, 2-D content latent, data seed 0 unless said. "
        "Command: `python benchmarks/bench_article.py --part angles|article|classes|budget|ceiling`, then `--part none --write`.",
        "",
        "| experiment | model | result | training (s) |",
        "| --- | --- | --- | ---: |",
    ]
    lines += [f"| {w} | {m} | {v} | {s} |" for w, m, v, s in rows]
    return "\n".join(lines)


def _write(table_md: str) -> None:
    path = ROOT / "docs" / "science.md"
    text = path.read_text() if path.exists() else f"# Science\n\n{START}\n{END}\n"
    block = f"{START}\n{table_md}\n{END}"
    text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _m: block, text, flags=re.S)
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
