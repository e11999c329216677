"""Graph classes with the hand-written spectral clustering / label spreading against scikit-learn's.

Run: ``PYTHONPATH=.:src python benchmarks/bench_graph_sklearn.py`` (about a minute on 2 cores).

The cases are the tests' data (tests/core/test_graph_classes.py,
test_class_window.py, test_science.py). Each runs
:func:`napari_rvae.core.graph_classes.graph_classes` once per variant; only
the partition step differs between variants (the rotation-invariant
similarity graph is the same), and its own time is reported next to the ARI
against the truth (labelled cases: on the unlabelled patches).

Variants, unlabelled cases:

* ``hand-written``: what ``core/spectral.py`` did before (normalised
  adjacency, its leading eigenvectors, unit rows, our k-means with 10
  k-means++ starts; Ng, Jordan & Weiss), kept here as the reference;
* ``sk-kmeans``: the same embedding, scikit-learn's ``KMeans`` (n_init=10);
* ``sk-spectral kmeans`` and ``sk-spectral cluster_qr``:
  ``SpectralClustering(affinity="precomputed")`` on the same weighted
  adjacency; ``cluster_qr`` is what the product uses now.

Labelled cases: ``hand-written`` label spreading (200 steps of
F = alpha S F + (1 - alpha) Y) against ``LabelSpreading`` (alpha 0.99, at most
200 steps, tol 1e-3; the product now) given our graph as a callable kernel
(its own ``kernel="knn"`` would build a Euclidean graph of the raw pixels, not
the rotation-invariant one).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

import napari_rvae.core.graph_classes as gc
from napari_rvae.core.eigen import leading_eigenvectors
from napari_rvae.core.patches import extract_patches
from napari_rvae.core.spectral import affinity, spectral_clusters, spread_labels
from napari_rvae.core.synthetic import make_lattice, make_rotated_digits

_TIMES: list[float] = []


def _normalised(idx, score):
    adj = affinity(idx, score, len(idx))
    deg = np.asarray(adj.sum(1)).ravel() + 1e-12
    d = sp.diags(1.0 / np.sqrt(deg))
    return d @ adj @ d


def _handwritten_kmeans(x, k, *, seed=0, n_init=10, iterations=100):
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(n_init):
        centres = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d2 = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
            centres.append(x[rng.choice(len(x), p=d2 / d2.sum() if d2.sum() > 0 else None)])
        c = np.asarray(centres)
        for _ in range(iterations):
            lab = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
            new = np.stack([x[lab == j].mean(0) if (lab == j).any() else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        cost = ((x - c[lab]) ** 2).sum()
        if cost < best_cost:
            best, best_cost = lab, cost
    return best


def _embedding_then(assign):
    def clusters(idx, score, n_classes, *, seed=0):
        vecs = leading_eigenvectors(_normalised(idx, score), n_classes, seed=seed)
        emb = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return assign(emb, n_classes, seed=seed)

    return clusters


def _sk_kmeans(x, k, *, seed=0):
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=10, random_state=seed).fit_predict(x)


def _sk_spectral_kmeans(idx, score, n_classes, *, seed=0):
    from sklearn.cluster import SpectralClustering

    model = SpectralClustering(n_classes, affinity="precomputed", random_state=seed, assign_labels="kmeans")
    return model.fit_predict(affinity(idx, score, len(idx)))


def _handwritten_spread(idx, score, labels, n_classes, *, alpha=0.99, iterations=200):
    s = _normalised(idx, score)
    known = labels >= 0
    y = np.zeros((len(idx), n_classes))
    y[np.flatnonzero(known), labels[known]] = 1.0
    f = y.copy()
    for _ in range(iterations):
        f = alpha * (s @ f) + (1 - alpha) * y
    out = f.argmax(1)
    out[known] = labels[known]
    return out


def _timed(fn):
    def run(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        _TIMES.append(time.perf_counter() - t0)
        return out

    return run


def _mirror_shapes(n=120, size=24, seed=0):
    from skimage.transform import rotate
    from tests.conftest import glyph

    rng = np.random.default_rng(seed)
    base = [glyph(size), glyph(size)[:, ::-1]]
    kind = rng.integers(0, 2, n)
    turns = rng.uniform(-180, 180, n)
    return np.stack([rotate(base[k], a, order=1) for k, a in zip(kind, turns)]).astype(np.float32), kind


def _lattice_species():
    rng = np.random.default_rng(101)
    grains = [(rng.uniform(30, 170), rng.uniform(30, 170), rng.uniform(-180, 180)) for _ in range(4)]
    lat = make_lattice((200, 200), spacing=12, grains=grains, second_species="random", second_fraction=0.15, seed=1)
    ps = extract_patches(lat.image, lat.points, 32)
    return ps.patches[:, 8:24, 8:24], lat.species[ps.kept]


def _ten_labels(truth, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.full(truth.shape, -1)
    for d in np.unique(truth):
        labels[rng.choice(np.flatnonzero(truth == d), 10, replace=False)] = d
    return labels


def cases():
    """(name, patches, n_classes, labels or None, truth, symmetry)."""
    shapes, kind = _mirror_shapes()
    one_each = np.full(len(kind), -1)
    one_each[[np.flatnonzero(kind == 0)[0], np.flatnonzero(kind == 1)[0]]] = [0, 1]
    out = [
        ("mirror shapes, 120", shapes, 2, None, kind, 1),
        ("mirror shapes, 1 label each", shapes, 2, one_each, kind, 1),
    ]
    for seed in (0, 1):
        x, _, d = make_rotated_digits(600, max_angle=180, seed=seed)
        out.append((f"digits +/-180, 600, seed {seed}", x, 10, None, d, 1))
    x, _, d = make_rotated_digits(600, max_angle=45, seed=0)
    out.append(("digits +/-45, 600, 10 labels/digit", x, 10, _ten_labels(d), d, 1))
    window, species = _lattice_species()
    out.append(("lattice species, 16 px window", window, 2, None, species, 1))
    return out


def main():
    import warnings

    warnings.simplefilter("ignore")  # scikit-learn's "not fully connected" and convergence notes
    unlabelled = {
        "hand-written": _embedding_then(_handwritten_kmeans),
        "sk-kmeans": _embedding_then(_sk_kmeans),
        "sk-spectral kmeans": _sk_spectral_kmeans,
        "sk-spectral cluster_qr (product)": spectral_clusters,
    }
    labelled = {"hand-written": _handwritten_spread, "sk-LabelSpreading (product)": spread_labels}
    print("| case | variant | ARI | partition s |\n|---|---|---|---|")
    for name, x, k, labels, truth, sym in cases():
        originals = gc.spectral_clusters, gc.spread_labels
        for variant, partition in (unlabelled if labels is None else labelled).items():
            gc.spectral_clusters = gc.spread_labels = _timed(partition)
            try:
                _TIMES.clear()
                found = gc.graph_classes(x, k, labels=labels, symmetry=sym)
            finally:
                gc.spectral_clusters, gc.spread_labels = originals
            scored = labels < 0 if labels is not None else slice(None)
            ari = adjusted_rand_score(truth[scored], found[scored])
            print(f"| {name} | {variant} | {ari:.3f} | {sum(_TIMES):.3f} |", flush=True)


if __name__ == "__main__":
    main()
