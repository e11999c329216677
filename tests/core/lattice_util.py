"""Synthetic atom-resolved images for the tests: Gaussian columns at known sub-pixel positions."""

from __future__ import annotations

import numpy as np


def lattice_positions(shape, spacing, *, kind="hex", angle=0.0, jitter=0.0, border=0.0, seed=0):
    """(N, 2) float (y, x) positions of a square or hexagonal lattice covering ``shape``."""
    rng = np.random.default_rng(seed)
    h, w = shape
    if kind == "square":
        a1, a2 = np.array([spacing, 0.0]), np.array([0.0, spacing])
    else:
        a1, a2 = np.array([0.0, spacing]), np.array([spacing * np.sqrt(3) / 2, spacing / 2])
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    a1, a2 = rot @ a1, rot @ a2
    n = int(2 * max(h, w) / spacing) + 4
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    offset = rng.uniform(0, spacing, 2)
    pts = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2 + offset + np.array([h / 2, w / 2])
    if jitter:
        pts = pts + rng.normal(0, jitter, pts.shape)
    ok = (pts[:, 0] >= border) & (pts[:, 0] <= h - 1 - border) & (pts[:, 1] >= border) & (pts[:, 1] <= w - 1 - border)
    pts = pts[ok]
    return pts[np.lexsort((pts[:, 1], pts[:, 0]))]


def render(shape, points, sigma, *, amplitude=1.0, background=0.1, noise=0.0, seed=0, dtype=np.float32):
    """Sum of Gaussians (peak ``amplitude``, width ``sigma``) at ``points`` plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    h, w = shape
    img = np.full(h * w, background, np.float64)
    r = int(np.ceil(4 * sigma))
    k = np.arange(-r, r + 1)
    pts = np.asarray(points, np.float64)
    amp = np.broadcast_to(np.asarray(amplitude, np.float64), (len(pts),))
    chunk = max(1, 2_000_000 // (len(k) ** 2))
    for s in range(0, len(pts), chunk):
        p = pts[s : s + chunk]
        cy = np.rint(p[:, 0]).astype(int)
        cx = np.rint(p[:, 1]).astype(int)
        ry = cy[:, None] + k
        rx = cx[:, None] + k
        gy = np.exp(-((ry - p[:, :1]) ** 2) / (2 * sigma**2)) * amp[s : s + chunk, None]
        gx = np.exp(-((rx - p[:, 1:]) ** 2) / (2 * sigma**2))
        vals = gy[:, :, None] * gx[:, None, :]
        ok = (ry[:, :, None] >= 0) & (ry[:, :, None] < h) & (rx[:, None, :] >= 0) & (rx[:, None, :] < w)
        flat = (ry[:, :, None] * w + rx[:, None, :])[ok]
        img += np.bincount(flat, weights=vals[ok], minlength=h * w)
    img = img.reshape(h, w)
    if noise:
        img = img + rng.normal(0, noise, img.shape)
    return img.astype(dtype)


def make_lattice(
    shape=(256, 256), spacing=12.0, sigma=2.0, *, kind="hex", noise=0.0, seed=0, angle=0.3, jitter=0.0, border=0.0, **kw
):
    """(image, true positions): a noisy lattice image and its column positions."""
    pts = lattice_positions(shape, spacing, kind=kind, angle=angle, jitter=jitter, border=border, seed=seed)
    return render(shape, pts, sigma, noise=noise, seed=seed + 1, **kw), pts
