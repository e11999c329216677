"""How long to train, and on which patches: the training budget.

An rVAE does not need to see 100,000 near-identical lattice patches 50 times
each: what sets the quality is the number of optimiser steps and how well the
patches trained on cover the kinds present. :func:`training_budget` turns a
patch count into epochs and a sample size; :func:`stratified_sample` draws a
sample that keeps rare kinds of patches. Encoding always covers every patch
(:func:`napari_rvae.core.analysis.train_patches_iter`).

The rule (``epochs="auto"``), with ``S = STEP_BUDGET`` optimiser steps and
``s(n) = ceil(n / batch_size)`` steps per pass over ``n`` patches:

* small data sets, ``MAX_EPOCHS * s(n) <= S``: every patch, ``MAX_EPOCHS``
  full passes (today's default; up to 1,200 patches at batch 100);
* larger ones: every patch, as many full passes as ``S`` allows, while that
  is at least ``MIN_EPOCHS`` (the README's 1,583 patches: 40 x 16 = 640 steps);
* beyond that (``n > S * batch_size / MIN_EPOCHS``, 6,400 patches at batch
  100): a stratified sample of ``S * batch_size / MIN_EPOCHS`` patches,
  ``MIN_EPOCHS`` passes over it.

A number of epochs given explicitly keeps its meaning: that many passes over
every patch. The measurements behind the constants are in docs/speed.md
("Training budget").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# Today's default epochs: the quality every earlier measurement was made at; small data sets keep it.
MAX_EPOCHS = 50
# Optimiser steps of an automatic budget: 64,000 patch-steps train in about 2 min on the shared
# 2-core dev machine (600 patches/s measured), and the README's 1,583 patches get 40 full passes,
# twice the 20 its published figures were measured at (docs/speed.md).
STEP_BUDGET = 640
# Passes over a sample: each sampled patch is seen this often (fewer, the sample is a stream and
# the alignment/graph preparation on it grows for nothing).
MIN_EPOCHS = 10
# Strata of the stratified sample (k-means clusters of rotation-invariant descriptors).
STRATA = 32
# Patches the descriptors are computed on at once (memory: CHUNK x R x A floats).
CHUNK = 8192
# Patches the strata are fitted on (all are then assigned to one).
FIT_PATCHES = 20_000
AUTO = "auto"


@dataclass(frozen=True)
class Budget:
    """What a training run trains on and for how long.

    ``epochs`` passes over ``n_sample`` of the ``n_total`` patches, ``steps``
    optimiser steps in all, and ``reason``: one sentence for the terminal,
    report.json and the Train widget.
    """

    epochs: int
    n_sample: int
    n_total: int
    steps: int
    reason: str

    @property
    def sampled(self) -> bool:
        """Whether training sees a sample (not every patch)."""
        return self.n_sample < self.n_total

    def to_dict(self) -> dict:
        return asdict(self)


def _steps(n: int, batch: int) -> int:
    return math.ceil(n / batch) if n > 0 else 0


def training_budget(
    n_patches: int,
    batch_size: int,
    epochs=AUTO,
    *,
    step_budget: int = STEP_BUDGET,
    min_epochs: int = MIN_EPOCHS,
    max_epochs: int = MAX_EPOCHS,
) -> Budget:
    """The budget for ``n_patches`` patches (the rule is in the module docstring).

    Parameters
    ----------
    n_patches, batch_size : int
    epochs : int or "auto"
        A number: that many passes over every patch.
    step_budget, min_epochs, max_epochs : int
        The rule's constants (tests shrink them).

    Examples
    --------
    >>> training_budget(1000, 100).epochs, training_budget(1583, 100).epochs
    (50, 40)
    >>> b = training_budget(100_000, 100)
    >>> b.epochs, b.n_sample, b.steps
    (10, 6400, 640)
    """
    n, batch = int(n_patches), max(1, int(batch_size))
    batch_n = min(batch, n) if n > 0 else batch  # training clamps the batch to the data
    if epochs != AUTO:
        e = int(epochs)
        return Budget(e, n, n, e * _steps(n, batch_n), f"{e} epochs as given, over all {n:,} patches.")
    per_pass = _steps(n, batch_n)
    if max_epochs * per_pass <= step_budget:
        why = f"{n:,} patches is a small data set: {max_epochs} full passes ({max_epochs * per_pass:,} steps)."
        return Budget(max_epochs, n, n, max_epochs * per_pass, why)
    full = step_budget // per_pass
    if full >= min_epochs:
        why = f"{full} full passes over all {n:,} patches fill the budget of {step_budget:,} steps."
        return Budget(full, n, n, full * per_pass, why)
    n_sample = max(1, step_budget * batch // min_epochs)
    steps = min_epochs * _steps(n_sample, batch)
    why = (
        f"{n:,} patches are more than {step_budget:,} steps need: {min_epochs} passes over a stratified "
        f"sample of {n_sample:,} ({steps:,} steps); every patch is encoded."
    )
    return Budget(min_epochs, n_sample, n, steps, why)


def check_epochs(epochs) -> int | str:
    """``epochs`` as a setting takes it: ``"auto"`` or a whole number of at least 1.

    Raises
    ------
    ValueError
        Anything else (the caller says it in its own words).
    """
    if epochs == AUTO:
        return AUTO
    if isinstance(epochs, bool) or not float(epochs).is_integer() or int(epochs) < 1:
        raise ValueError(epochs)
    return int(epochs)


def patch_descriptors(patches, *, harmonics: int = 6, n_angles: int = 32) -> np.ndarray:
    """Cheap rotation-invariant descriptors of (N, P, P) patches, (N, R * (1 + harmonics)).

    Per ring of the patch's polar image (:func:`~.align.spectra.polar_transform`,
    R = P // 2 rings): the mean intensity (radial profile, which tells species
    apart by brightness and size) and the magnitudes of the first ``harmonics``
    angular Fourier coefficients (the motif's shape, blind to its angle).
    Computed ``CHUNK`` patches at a time, so a memory-mapped stack is read once.
    """
    import torch

    from .align.spectra import polar_transform

    n = len(patches)
    out = []
    for start in range(0, n, CHUNK):
        x = torch.as_tensor(np.asarray(patches[start : start + CHUNK], dtype=np.float32))
        polar = polar_transform(x, n_angles)
        radial = polar.mean(-1)
        shape = torch.fft.rfft(polar, dim=-1)[..., 1 : harmonics + 1].abs()
        out.append(torch.cat([radial, shape.flatten(1)], 1).numpy())
    return np.nan_to_num(np.concatenate(out)) if out else np.zeros((0, 0), np.float32)


def _reduced(feats: np.ndarray, dims: int = 8) -> np.ndarray:
    """Standardised descriptors projected on their ``dims`` leading principal axes."""
    feats = (feats - feats.mean(0)) / np.maximum(feats.std(0), 1e-12)
    # The covariance is features x features: its eigenvectors cost nothing next to a PCA of N rows.
    _, vectors = np.linalg.eigh(feats.T @ feats)
    return feats @ vectors[:, ::-1][:, :dims]


def _strata(patches, groups, seed: int) -> np.ndarray:
    """One stratum number per patch: k-means cluster of the descriptors, crossed with ``groups``."""
    from sklearn.cluster import MiniBatchKMeans

    reduced = _reduced(patch_descriptors(patches).astype(np.float64))
    k = min(STRATA, len(reduced))
    # Fitted on at most FIT_PATCHES of them (a rare kind keeps its share there), then every patch assigned.
    fit = np.random.default_rng(seed).permutation(len(reduced))[:FIT_PATCHES]
    kmeans = MiniBatchKMeans(k, random_state=seed, n_init=3, batch_size=4096).fit(reduced[fit])
    cluster = kmeans.predict(reduced)
    if groups is None:
        return cluster
    _, group = np.unique(np.asarray(groups), return_inverse=True)
    _, stratum = np.unique(cluster * (group.max() + 1) + group, return_inverse=True)
    return stratum


def allocate(sizes, n: int) -> np.ndarray:
    """Patches to draw from strata of ``sizes`` for a sample of ``n``: a floor, then shares.

    Each stratum first gets ``f = n // (2 * strata)`` patches (at least 1
    while there are no more strata than ``n``), or all of it when it is
    smaller; the rest of ``n`` is shared in proportion to what each stratum
    has left (largest remainders). Small strata are so kept whole or drawn
    above their share; at most half the sample goes to floors.

    Examples
    --------
    >>> allocate([9000, 500, 20], 1000).tolist()
    [790, 190, 20]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = min(int(n), int(sizes.sum()))
    s = len(sizes)
    f = n // (2 * s) if s else 0
    if f == 0 and 0 < s <= n:
        f = 1
    take = np.minimum(sizes, f)
    left, rest = sizes - take, n - int(take.sum())
    if rest > 0:
        share = rest * left / left.sum()
        whole = np.floor(share).astype(np.int64)
        order = np.argsort(-(share - whole), kind="stable")
        whole[order[: rest - int(whole.sum())]] += 1
        take = take + whole
    return take


def stratified_sample(patches, n: int, *, groups=None, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of ``n`` of the (N, P, P) ``patches`` that keep rare kinds of patches.

    Each patch gets rotation-invariant descriptors (:func:`patch_descriptors`),
    standardised and reduced by PCA to 8 dimensions; MiniBatchKMeans (seeded, fitted
    on ``FIT_PATCHES`` of them)
    splits them into ``STRATA`` strata (crossed with ``groups``, e.g. the frame
    of a movie or a patch's class label, when given). Each stratum then gets
    its share of the sample with a floor (:func:`allocate`): a small grain or a
    minority species that forms its own strata is kept whole or drawn above
    its share. Within a stratum the patches are drawn uniformly at random.
    The same patches, ``n``, ``groups`` and ``seed`` give the same indices.

    Parameters
    ----------
    patches : array_like, shape (N, P, P)
    n : int
        The sample size; ``n >= N`` gives every index.
    groups : array_like, shape (N,), optional
        Labels that must each stay represented (frames, files, classes).
    seed : int
    """
    total = len(patches)
    if int(n) >= total:
        return np.arange(total)
    if int(n) < 1:
        raise ValueError(f"A sample needs at least one patch (got {n}).")
    stratum = _strata(patches, groups, seed)
    sizes = np.bincount(stratum)
    take = allocate(sizes, int(n))
    rng = np.random.default_rng(seed)
    members = np.split(np.argsort(stratum, kind="stable"), np.cumsum(sizes)[:-1])
    picked = [rng.choice(m, t, replace=False) for m, t in zip(members, take, strict=True) if t > 0]
    return np.sort(np.concatenate(picked))
