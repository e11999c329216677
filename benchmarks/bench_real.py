"""Angles on a real image (issue #17): regions turned by known angles, and equivariance.

Run: ``python benchmarks/bench_real.py`` (both parts, every estimator, 20
epochs: 6.3 min on an idle 2-core box, 31 min while other jobs loaded it),
``--epochs 3`` for a quick run, ``--part regions`` or ``--part equivariance``
for one check; ``--write-docs`` puts the table into docs/science.md (its own
section, replaced on the next write).

Data: the HAADF-STEM image of Se-implanted MoS2 that temul-toolkit (GPL-3.0)
ships in its wheel, read from the user's install
(:func:`napari_rvae.core.real_data.real_sample_path`; never copied). Atoms are
found with :func:`napari_rvae.core.detect.detect_atoms` at its defaults (on
this image: the bright Mo columns, a nearly 6-fold pattern around each).

Sense of rotation: ``scipy.ndimage.rotate(image, a)`` with ``a > 0`` turns the
content counter-clockwise *as displayed* (y pointing down), which is the
project's convention for ``angle``, so a region turned by ``+a`` should read
``+a``. :func:`check_rotation_sense` verifies this on a bar and a dot at every
run (a bar along x turned by +30 lies at 30 degrees measured as
``atan2(-dy, dx)``; the dot at (y, x) = (50, 80) about (50, 50) lands at
(35, 76)).

What it measures (rows: the product through its CLI as a subprocess, and the
learning-free bond-orientational order psi_6 from the detected positions):

* **Regions.** The whole image is turned about its centre by each angle
  (2, 5, 12, 25, 40 degrees by default) and a disk of the turned image is
  pasted back into the original, one disk per angle (``--layout single``:
  all five disks in one image, radius 150 px, one in the centre and four on
  the diagonals, each inside the inscribed circle so that every pasted pixel
  has its source inside the original; ``--layout pairs``: two disks per
  image as in the issue, three images, three times the training). Atoms are
  detected on the composed image. Scored: atoms deeper than half a patch inside
  a disk whose source lies at least half a patch inside the original, and the
  reference area (atoms more than half a patch outside every disk). The
  measured turn of a region is the circular mean of ``angle`` (period
  360/n) inside it minus that of the reference area; error = measured - a,
  wrapped into the period (a 6-fold estimator can only know 40 degrees as
  -20).
* **Equivariance.** The image (central rows) and a copy turned by 17 degrees
  (the valid centre of the turned frame, so both halves hold real content)
  side by side in one image; atoms detected on it; each atom of the original
  half is matched to the detected atom nearest to its transformed position
  in the copy (within a quarter of the nearest-neighbour distance). Reported:
  the circular mean and the per-atom spread (standard deviation) of
  ``angle(copy) - angle(original) - 17`` wrapped into the period, and the share of
  atoms whose ``|difference - 17|`` lies within one reported ``angle_sd`` of
  the difference (``sqrt(sd_original^2 + sd_copy^2)``: the error bar of a
  difference of two estimates; about 68 % if ``angle_sd`` is calibrated).
  Only atoms at least half a patch from their half's borders (image edges
  and the seam) are scored.

The composed images, points and every run's output folder are kept under
``--workdir`` (default /tmp/bench_real), with ``results.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from napari_rvae.core.bond_order import bond_orientation
from napari_rvae.core.detect import detect_atoms
from napari_rvae.core.readers import read_image_file, write_tiff
from napari_rvae.core.real_data import real_sample_path

ROOT = Path(__file__).resolve().parents[1]
MACHINE = "2-core CPU dev box, torch CPU"
TITLE = "## Real image: regions and equivariance (issue #17)"
START, END = "<!-- bench_real:start -->", "<!-- bench_real:end -->"
PARTS = ["regions", "equivariance"]
PYROVED = ["pyroved"]  # the estimator's marker in place of CLI arguments
ANGLES = (2.0, 5.0, 12.0, 25.0, 40.0)
EQUI_ANGLE = 17.0

# (row label, CLI arguments after the common ones, symmetry); None = psi_n, no training.
# None: the product's own choice (--symmetry auto), read back from report.json.
ESTIMATORS = [
    ("`train` (defaults: `--symmetry auto`)", [], None),
    ("`train --symmetry 6`", ["--symmetry", "6"], 6),
    ("`train --symmetry 3`", ["--symmetry", "3"], 3),
    ("`train --symmetry 6 --align none` (the rVAE alone)", ["--symmetry", "6", "--align", "none"], 6),
    ("psi_6 from the detected positions (no learning)", None, 6),
]


# --- geometry ------------------------------------------------------------------------------------


def turn(image: np.ndarray, angle_deg: float, order: int) -> np.ndarray:
    """scipy.ndimage.rotate about the centre, same frame: +angle = counter-clockwise as displayed."""
    return ndimage.rotate(image, angle_deg, reshape=False, order=order, mode="constant", cval=float(image.mean()))


def turn_points(yx: np.ndarray, angle_deg: float, shape) -> np.ndarray:
    """Where content at ``yx`` lands after :func:`turn` by ``angle_deg`` (scipy turns about (shape - 1) / 2)."""
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    t = np.deg2rad(angle_deg)
    dy, dx = yx[:, 0] - cy, yx[:, 1] - cx
    # counter-clockwise as displayed: (dx, -dy) turns by +t
    x2 = np.cos(t) * dx + np.sin(t) * dy
    y2 = -np.sin(t) * dx + np.cos(t) * dy
    return np.column_stack([cy + y2, cx + x2])


def check_rotation_sense() -> None:
    """A bar along x and a dot, turned by +30 with :func:`turn`: counter-clockwise as displayed."""
    bar = np.zeros((101, 101))
    bar[50, 20:81] = 1.0
    r = ndimage.rotate(bar, 30.0, reshape=False, order=1)
    yy, xx = np.nonzero(r > 0.3)
    w = r[yy, xx]
    cov = np.cov(np.vstack([xx - 50.0, -(yy - 50.0)]), aweights=w)
    v = np.linalg.eigh(cov)[1][:, 1]
    bar_deg = np.rad2deg(np.arctan2(v[1], v[0])) % 180.0
    dot = np.zeros((101, 101))
    dot[50, 80] = 1.0
    got = np.array(np.unravel_index(ndimage.rotate(dot, 30.0, reshape=False, order=1).argmax(), dot.shape), float)
    want = turn_points(np.array([[50.0, 80.0]]), 30.0, dot.shape)[0]
    if abs(bar_deg - 30.0) > 1.0 or np.abs(got - want).max() > 1.0:
        raise SystemExit(f"rotation sense check failed: bar at {bar_deg:.1f} deg, dot at {got} (expected {want})")


# --- circular statistics with a period -------------------------------------------------------


def wrap(a, period):
    """Into [-period / 2, period / 2)."""
    return np.mod(np.asarray(a, float) + period / 2.0, period) - period / 2.0


def circmean(a, period) -> float:
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    z = np.exp(2j * np.pi * a / period).mean()
    return float(np.angle(z) * period / (2 * np.pi))


def circstd(a, period) -> float:
    """Standard deviation of the deviations from the circular mean (wrapped), in degrees."""
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    return float(np.sqrt(np.mean(wrap(a - circmean(a, period), period) ** 2)))


# --- the estimators ------------------------------------------------------------------------------


def _cli() -> list[str]:
    exe = shutil.which("napari-rvae")
    return [exe] if exe else [sys.executable, "-c", "import sys; from napari_rvae.cli import main; sys.exit(main())"]


def estimate(est, image, points: pd.DataFrame, folder: Path, args) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Angle and angle_sd for every point (NaN where the product dropped it), the seconds it took and the
    symmetry the angles are measured in (the row's, or the one the product chose with ``--symmetry auto``)."""
    label, cli_args, n = est
    pts = points[["y", "x"]].to_numpy()
    t = time.perf_counter()
    if cli_args is None:
        angle, _ = bond_orientation(pts, n)
        return angle, np.full(len(pts), np.nan), time.perf_counter() - t, n
    if cli_args == PYROVED:
        angle = pyroved_angles(image, pts, args)
        return angle, np.full(len(pts), np.nan), time.perf_counter() - t, 1
    folder.mkdir(parents=True, exist_ok=True)
    img_path, pts_path, out = folder / "image.tif", folder / "points.csv", folder / "out"
    write_tiff(img_path, image)
    points[["y", "x"]].to_csv(pts_path, index=False)
    cmd = [
        *_cli(),
        "train",
        str(img_path),
        "--points",
        str(pts_path),
        "--out",
        str(out),
        "--epochs",
        str(args.epochs),
        "--patch-size",
        str(args.patch_size),
        "--seed",
        str(args.seed),
        "--quiet",
        *cli_args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    sec = time.perf_counter() - t
    report = json.loads((out / "report.json").read_text())
    table = pd.read_csv(out / "points.csv")
    kept = np.setdiff1d(np.arange(len(points)), np.asarray(report.get("dropped_rows", []), int))
    if len(kept) != len(table) or not np.allclose(table[["y", "x"]].to_numpy(), pts[kept]):
        raise SystemExit(f"{out / 'points.csv'}: rows do not match the points given")
    angle = np.full(len(pts), np.nan)
    sd = np.full(len(pts), np.nan)
    angle[kept] = table["angle"].to_numpy()
    sd[kept] = table["angle_sd"].to_numpy()
    alignment = (report.get("alignment") or {}).get("description") or "no alignment"
    (folder / "alignment.txt").write_text(alignment + "\n")
    return angle, sd, sec, int(report["model_config"]["symmetry"])


def pyroved_angles(image, pts, args) -> np.ndarray:
    """pyroVED's rVAE (iVAE with rotation and translation, its trainer and defaults) on the same patches.

    Reference only, never a dependency: ``pip install --no-deps pyroved`` in a
    separate environment (benchmarks/README.md). Its first latent is the
    angle in radians, 1-fold; NaN for points whose patch leaves the image.
    """
    from bench_speed import import_pyroved
    from napari_rvae.core.patches import extract_patches

    pv = import_pyroved()
    if pv is None:
        raise SystemExit("the pyroVED row needs pyroVED: pip install --no-deps pyroved (benchmarks/README.md)")
    ps = extract_patches(image, pts, args.patch_size)
    x = ps.patches.astype(np.float32)
    x = (x - x.min()) / max(float(x.max() - x.min()), 1e-12)  # its Bernoulli likelihood wants [0, 1]
    xt = torch.as_tensor(x)
    model = pv.models.iVAE((args.patch_size, args.patch_size), latent_dim=2, invariances=["r", "t"], seed=args.seed)
    trainer = pv.trainers.SVItrainer(model, lr=1e-3)
    loader = pv.utils.init_dataloader(xt, batch_size=100)
    for _ in range(args.epochs):
        trainer.step(loader)
    z_mean, _ = model.encode(xt)
    angle = np.full(len(pts), np.nan)
    angle[ps.kept] = np.mod(np.degrees(z_mean[:, 0].cpu().numpy()), 360.0)
    return angle


def custom_estimator(text: str):
    """A row from ``--estimator``: ``"psi6"``, ``"pyroved"`` or the CLI's train arguments."""
    if text == "pyroved":
        return ("pyroVED's rVAE (iVAE r+t, its defaults)", PYROVED, 1)
    if text.startswith("psi"):
        n = int(text[3:] or 6)
        return (f"psi_{n} from the detected positions (no learning)", None, n)
    words = text.split()
    given = words[words.index("--symmetry") + 1] if "--symmetry" in words else "auto"
    n = None if given == "auto" else int(given)
    return (f"`train {text}`", words, n)


# --- the two checks ---------------------------------------------------------------------------------


def region_layouts(shape, layout: str, radius: float, angles):
    """Images to compose: each a list of (angle, cy, cx)."""
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    d = min(cy, cx) - radius - 30.0  # disk and its source inside the inscribed circle, 30 px to spare
    if layout == "single":
        spots = [(cy, cx)] + [
            (cy + sy * d / np.sqrt(2), cx + sx * d / np.sqrt(2)) for sy, sx in [(-1, -1), (-1, 1), (1, 1), (1, -1)]
        ]
        if len(angles) > len(spots):
            raise SystemExit(f"--layout single holds at most {len(spots)} regions")
        return [[(a, *spots[i]) for i, a in enumerate(angles)]]
    spots = [(cy - d / np.sqrt(2), cx - d / np.sqrt(2)), (cy + d / np.sqrt(2), cx + d / np.sqrt(2))]
    return [[(a, *spots[i]) for i, a in enumerate(angles[k : k + 2])] for k in range(0, len(angles), 2)]


def compose_regions(image, regions, radius, order):
    out = image.copy()
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    for a, ry, rx in regions:
        disk = (yy - ry) ** 2 + (xx - rx) ** 2 <= radius**2
        out[disk] = turn(image, a, order)[disk]
    return out


def regions_sets(points, regions, radius, shape, margin):
    """Index arrays: the reference area, and each region's scored atoms."""
    yx = points[["y", "x"]].to_numpy()
    dist = np.stack([np.hypot(yx[:, 0] - ry, yx[:, 1] - rx) for _, ry, rx in regions])
    reference = np.flatnonzero((dist > radius + margin).all(axis=0))
    sets = []
    for k, (a, _, _) in enumerate(regions):
        src = turn_points(yx, -a, shape)  # where the content came from
        inside = ((src >= margin) & (src <= np.array(shape) - 1 - margin)).all(axis=1)
        sets.append((np.flatnonzero((dist[k] < radius - margin) & inside), int((dist[k] <= radius).sum())))
    return reference, sets


def part_regions(image, args, log):
    layouts = region_layouts(image.shape, args.layout, args.radius, args.angles)
    margin = args.patch_size / 2.0
    rows = {est[0]: {"errors": {}, "turns": {}, "spread": {}, "seconds": 0.0} for est in ESTIMATORS}
    counts = {}
    own = {}
    base_pts = detect_atoms(image)[["y", "x"]].to_numpy()
    base_psi, _ = bond_orientation(base_pts, 6)
    for i, regions in enumerate(layouts):
        composed = compose_regions(image, regions, args.radius, args.order)
        points = detect_atoms(composed)[["y", "x"]].reset_index(drop=True)
        reference, sets = regions_sets(points, regions, args.radius, image.shape, margin)
        log(
            f"regions image {i}: {len(points)} atoms; reference area {len(reference)}; "
            + ", ".join(f"+{a:g}: {len(s)} of {n_in} in the disk" for (a, _, _), (s, n_in) in zip(regions, sets))
        )
        for (a, ry, rx), (s, n_in) in zip(regions, sets):
            counts[a] = (len(s), n_in)
            # the sample's own rotation of the region's source against the reference area, psi_6 on the unturned image
            ref_d = np.stack([np.hypot(base_pts[:, 0] - y, base_pts[:, 1] - x) for _, y, x in regions])
            src = turn_points(np.array([[ry, rx]]), -a, image.shape)[0]
            in_src = np.hypot(base_pts[:, 0] - src[0], base_pts[:, 1] - src[1]) < args.radius - margin
            in_ref = (ref_d > args.radius + margin).all(axis=0)
            own[a] = wrap(circmean(base_psi[in_src], 60.0) - circmean(base_psi[in_ref], 60.0), 60.0)
        for est in ESTIMATORS:
            label = est[0]
            angle, _, sec, n = estimate(est, composed, points, Path(args.workdir) / f"regions{i}-{_slug(est)}", args)
            period = 360.0 / n
            rows[label]["symmetry"] = n
            rows[label]["seconds"] += sec
            ref_mean = circmean(angle[reference], period)
            for (a, _, _), (s, _) in zip(regions, sets):
                measured = wrap(circmean(angle[s], period) - ref_mean, period)
                rows[label]["turns"][a] = float(measured)
                rows[label]["errors"][a] = float(wrap(measured - a, period))
                rows[label]["spread"][a] = circstd(angle[s], period)
            log(
                f"  {label}: "
                + ", ".join(
                    f"+{a:g} -> {rows[label]['turns'][a]:+.2f} (error {rows[label]['errors'][a]:+.2f}, "
                    f"spread {rows[label]['spread'][a]:.1f})"
                    for a, _, _ in regions
                )
                + f"  [{sec:.0f} s]"
            )
    return {
        "rows": rows,
        "counts": {str(a): c for a, c in counts.items()},
        "own_psi6": {str(a): float(v) for a, v in own.items()},
    }


def compose_equivariance(image, angle, order):
    h, w = image.shape
    t = np.deg2rad(angle)
    side = int(np.floor(min(h, w) / (np.cos(t) + np.sin(t)))) - 8  # the valid centre of the turned frame, 4 px to spare
    side -= side % 2
    r0, c0 = (h - side) // 2, (w - side) // 2
    turned = turn(image, angle, order)
    composed = np.hstack([image[r0 : r0 + side, :], turned[r0 : r0 + side, c0 : c0 + side]])
    return composed, r0, c0, side


def equivariance_pairs(image, args, a):
    """The image beside its turned copy, the atoms detected on it, and the matched (original, copy) rows."""
    composed, r0, c0, side = compose_equivariance(image, a, args.order)
    h, w = image.shape
    points = detect_atoms(composed)[["y", "x"]].reset_index(drop=True)
    yx = points[["y", "x"]].to_numpy()
    margin = args.patch_size / 2.0
    left = np.flatnonzero(yx[:, 1] < w - 0.5)
    right = np.flatnonzero(yx[:, 1] >= w - 0.5)
    nn = float(np.median(cKDTree(yx).query(yx, k=2)[0][:, 1]))
    # the original half's atoms, in the original frame -> turned frame -> the copy's half
    where = turn_points(yx[left] + [r0, 0.0], a, image.shape) - [r0, c0 - w]
    dist, j = cKDTree(yx[right]).query(where)
    ok_l = (
        (yx[left, 0] >= margin)
        & (yx[left, 0] <= side - 1 - margin)
        & (yx[left, 1] >= margin)
        & (yx[left, 1] <= w - 1 - margin)
    )
    match = right[np.minimum(j, len(right) - 1)]
    ok_r = (
        (yx[match, 0] >= margin)
        & (yx[match, 0] <= side - 1 - margin)
        & (yx[match, 1] >= w + margin)
        & (yx[match, 1] <= w + side - 1 - margin)
    )
    in_copy = (
        (where[:, 0] >= margin)
        & (where[:, 0] <= side - 1 - margin)
        & (where[:, 1] >= w + margin)
        & (where[:, 1] <= w + side - 1 - margin)
    )
    good = ok_l & ok_r & (dist < 0.25 * nn)
    orig, copy = left[good], match[good]
    summary = (
        f"equivariance image {composed.shape}: {len(left)} + {len(right)} atoms; {int((ok_l & in_copy).sum())} "
        f"original atoms whose counterpart lies inside the copy, {len(orig)} matched (nn distance {nn:.1f} px, "
        f"match median {np.median(dist[good]):.2f} px)"
    )
    return composed, points, orig, copy, summary


def part_equivariance(image, args, log):
    a = args.equi_angle
    composed, points, orig, copy, summary = equivariance_pairs(image, args, a)
    log(summary)
    rows = {}
    for est in ESTIMATORS:
        label = est[0]
        angle, sd, sec, n = estimate(est, composed, points, Path(args.workdir) / f"equivariance-{_slug(est)}", args)
        period = 360.0 / n
        diff = wrap(angle[copy] - angle[orig] - a, period)
        fine = np.isfinite(diff)
        diff = diff[fine]
        sd_pair = np.sqrt(sd[orig] ** 2 + sd[copy] ** 2)[fine]
        within = float(np.mean(np.abs(diff) <= sd_pair)) if np.isfinite(sd_pair).all() and len(diff) else None
        rows[label] = {
            "symmetry": n,
            "mean": circmean(diff, period),
            "spread": circstd(diff, period),
            "within_sd": within,
            "median_sd": float(np.median(sd_pair)) if within is not None else None,
            "atoms": int(fine.sum()),
            "seconds": sec,
        }
        r = rows[label]
        log(
            f"  {label}: mean {r['mean']:+.2f}, spread {r['spread']:.2f}, "
            + (
                f"within angle_sd {100 * within:.0f} % (median sd of the difference {r['median_sd']:.2f})"
                if within is not None
                else "no angle_sd"
            )
            + f", {r['atoms']} atoms  [{sec:.0f} s]"
        )
    return {"rows": rows, "matched": int(len(orig)), "shape": list(composed.shape)}


def _slug(est) -> str:
    return "psi" if est[1] is None else "-".join(a.strip("-") for a in est[1]) or "defaults"  # PYROVED: "pyroved"


# --- output -------------------------------------------------------------------------------------------


def markdown(res: dict, args, seconds: float, command: str) -> str:
    reg, eq = res.get("regions"), res.get("equivariance")
    angles = [float(a) for a in args.angles]
    head = ["estimator"]
    if reg:
        head += [f"regions +{a:g}°" for a in angles] + ["regions: max \\|error\\|", "regions: spread inside"]
    if eq:
        head += ["equivariance: mean error", "equivariance: per-atom spread", "equivariance: within angle_sd"]
    head += ["time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, _, n in ESTIMATORS:
        chosen = {r["rows"][label].get("symmetry") for r in (reg, eq) if r} - {None}
        cells = [label + (f" (chose {', '.join(map(str, sorted(chosen)))}-fold)" if n is None else "")]
        sec = 0.0
        if reg:
            r = reg["rows"][label]
            errs = [r["errors"][a] if a in r["errors"] else r["errors"][str(a)] for a in angles]
            cells += [f"{e:+.2f}" for e in errs] + [
                f"{max(abs(e) for e in errs):.2f}",
                f"{np.median(list(r['spread'].values())):.1f}",
            ]
            sec += r["seconds"]
        if eq:
            r = eq["rows"][label]
            cells += [
                f"{r['mean']:+.2f}",
                f"{r['spread']:.2f}",
                "n/a" if r["within_sd"] is None else f"{100 * r['within_sd']:.0f} % (sd {r['median_sd']:.2f})",
            ]
            sec += r["seconds"]
        cells.append(f"{sec:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    today = _dt.date.today().isoformat()
    notes = [
        f"Measured {today} on a {MACHINE} (torch {torch.__version__}), {seconds / 60:.1f} min in all. "
        f"Command: `{command}` ({args.epochs} epochs, patch {args.patch_size}, seed {args.seed}, "
        f"spline order {args.order})."
    ]
    if reg:
        cnt = reg["counts"]
        lay = "all five disks in one image" if args.layout == "single" else "two disks per image"
        notes.append(
            f"Regions: the image turned by each angle (degrees, counter-clockwise as displayed) pasted back in disks of "
            f"radius {args.radius:g} px ({lay}); columns: measured turn minus the true one, wrapped into the period "
            f"(60 deg for 6-fold rows, 120 for 3-fold), circular means of the atoms more than half a patch inside "
            f"each disk against the reference area; spread inside regions: the median over the disks of the "
            f"angles' standard deviation about their circular mean (the sample's own variations included). "
            f"Atoms scored per disk: "
            + ", ".join(f"+{float(a):g}: {c[0]} of {c[1]}" for a, c in cnt.items())
            + ". The sample's own rotation of each disk's source against the reference area (psi_6 on the unturned "
            "image), part of every row's error: "
            + ", ".join(f"+{float(a):g}: {v:+.2f}" for a, v in reg["own_psi6"].items())
            + " deg."
        )
    if eq:
        notes.append(
            f"Equivariance: the image beside a copy turned by {args.equi_angle:g} deg ({eq['shape'][0]} x {eq['shape'][1]} px), "
            f"{eq['matched']} atoms matched; mean and spread (std) of angle(copy) - angle(original) - {args.equi_angle:g}; "
            "within angle_sd: share of atoms with |difference| <= sqrt(sd_original^2 + sd_copy^2) (68 % if calibrated), "
            "with that bound's median."
        )
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes)


def write_docs(table_md: str, start: str = START, end: str = END, title: str = TITLE) -> None:
    """Put ``table_md`` between the ``start`` and ``end`` markers of docs/science.md (a new section if absent)."""
    path = ROOT / "docs" / "science.md"
    text = path.read_text()
    block = f"{start}\n{table_md}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _m: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n{title}\n\n{block}\n"
    path.write_text(text)
    print(f"wrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=[*PARTS, "all"], default="all")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--angles", type=float, nargs="+", default=list(ANGLES), help="turns of the regions (degrees)")
    ap.add_argument("--radius", type=float, default=150.0, help="radius of each pasted disk (px)")
    ap.add_argument("--equi-angle", type=float, default=EQUI_ANGLE, help="turn of the copy in the equivariance check")
    ap.add_argument(
        "--layout",
        choices=["single", "pairs"],
        default="single",
        help="single: every region in one image; pairs: two regions per image, as in issue #17",
    )
    ap.add_argument("--order", type=int, default=3, help="spline order of scipy.ndimage.rotate")
    ap.add_argument("--workdir", default="/tmp/bench_real", help="composed images, points, CLI outputs, results.json")
    ap.add_argument("--write-docs", action="store_true", help="put the table into docs/science.md")
    ap.add_argument(
        "--estimator",
        action="append",
        metavar="ARGS",
        help="instead of the default rows: the CLI's train arguments of one row (repeatable), e.g. "
        "'--symmetry 6 --rotation-range full'; 'psi6' for psi_6",
    )
    args = ap.parse_args(argv)
    if args.estimator:
        ESTIMATORS[:] = [custom_estimator(text) for text in args.estimator]
    command = " ".join(["python benchmarks/bench_real.py", *(sys.argv[1:] if argv is None else argv)])
    t0 = time.perf_counter()
    check_rotation_sense()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(msg, flush=True)

    path = real_sample_path()
    image = np.asarray(read_image_file(path)[0].data, dtype=np.float64)
    log(f"{path.name}: {image.shape}; {MACHINE}, torch {torch.__version__}, load {os.getloadavg()[0]:.2f}")
    res = {}
    parts = PARTS if args.part == "all" else [args.part]
    for part in parts:
        res[part] = globals()[f"part_{part}"](image, args, log)
    seconds = time.perf_counter() - t0
    table_md = markdown(res, args, seconds, command)
    (Path(args.workdir) / "results.json").write_text(
        json.dumps({"args": vars(args), "seconds": seconds, **res}, indent=1, default=str)
    )
    print()
    print(table_md)
    if args.write_docs:
        write_docs(f"{table_md}")


if __name__ == "__main__":
    sys.exit(main())
