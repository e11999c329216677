"""Classes from the rotation-invariant similarity graph: spectral clustering and label spreading.

The coarse alignment (:mod:`core.align`) links every patch to the patches it
matches best under *any* rotation. On rotated digits 93-96 % of those links join
two instances of the same digit, so the graph already holds the classes that
an rVAE's 2-D content latent blurs together (k-means on its latents: ARI about
0.15). This module reads them off the graph:

* no labels: spectral clustering (the leading eigenvectors of the normalised
  adjacency, then k-means on the unit-normalised rows; Ng, Jordan & Weiss);
* a few labels: label spreading (Zhou et al., 2004) from the labelled patches
  along the graph.

:mod:`core.train` uses the result as targets for the class head of ``jrvae``
and ``ssrvae`` (pseudo-labels), which then predicts a class for any patch.
"""

from __future__ import annotations

import numpy as np
import torch

from .align import MAX_ANCHORS, angular_spectra, best_references, pick_anchors, rotation_neighbours

__all__ = ["graph_classes", "kmeans", "spectral_clusters", "spread_labels"]


def _adjacency(idx, score, n: int, power: float = 4.0):
    import scipy.sparse as sp

    rows = np.repeat(np.arange(n), idx.shape[1])
    w = np.clip(np.asarray(score, dtype=np.float64).ravel(), 0.0, None) ** power
    adj = sp.coo_matrix((w, (rows, np.asarray(idx).ravel())), shape=(n, n)).tocsr()
    adj = adj.maximum(adj.T)
    deg = np.asarray(adj.sum(1)).ravel() + 1e-12
    d = sp.diags(1.0 / np.sqrt(deg))
    return d @ adj @ d


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 10, iterations: int = 100) -> np.ndarray:
    """Labels of plain k-means with k-means++ starts; the best of ``n_init`` runs.

    Examples
    --------
    >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> lab = kmeans(x, 2)
    >>> bool(lab[0] == lab[1] and lab[2] == lab[3] and lab[0] != lab[2])
    True
    """
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(n_init):
        centres = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d2 = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
            p = d2 / d2.sum() if d2.sum() > 0 else None
            centres.append(x[rng.choice(len(x), p=p)])
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


def spectral_clusters(idx, score, n_classes: int, *, seed: int = 0) -> np.ndarray:
    """``n_classes`` clusters of a k-nearest-neighbour graph (``idx``, ``score``: (N, k))."""
    from scipy.sparse.linalg import eigsh

    n = len(idx)
    if n <= n_classes:
        return np.arange(n) % n_classes
    s = _adjacency(idx, score, n)
    _, vecs = eigsh(s, k=n_classes, which="LA", v0=np.ones(n))
    emb = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return kmeans(emb, n_classes, seed=seed)


def spread_labels(idx, score, labels, n_classes: int, *, alpha: float = 0.99, iterations: int = 200) -> np.ndarray:
    """Every node's class from a few labelled ones (``labels``: -1 = unknown) by label spreading."""
    labels = np.asarray(labels)
    n = len(idx)
    s = _adjacency(idx, score, n)
    y = np.zeros((n, n_classes))
    known = labels >= 0
    y[np.flatnonzero(known), labels[known]] = 1.0
    f = y.copy()
    for _ in range(iterations):
        f = alpha * (s @ f) + (1 - alpha) * y
    out = f.argmax(1)
    out[known] = labels[known]
    return out


def graph_classes(patches, n_classes: int, *, labels=None, symmetry: int = 1, k: int = 10,
                  max_anchors: int = MAX_ANCHORS, seed: int = 0) -> np.ndarray:
    """One class (0..n_classes-1) per patch from the rotation-invariant similarity graph.

    Parameters
    ----------
    patches : Tensor or array_like, shape (N, P, P)
    n_classes : int
    labels : array_like of int, optional
        Known classes, ``-1`` where unknown: spread along the graph, and kept.
        Without any, the classes come from spectral clustering (their numbering
        is arbitrary).
    max_anchors : int
        The graph is built on at most this many patches (all labelled ones
        among them); every other patch takes the weighted vote of its best
        matches there.
    """
    x = patches if torch.is_tensor(patches) else torch.as_tensor(np.asarray(patches))
    x = x.float().reshape(x.shape[0], x.shape[-1], x.shape[-1])
    n = x.shape[0]
    lab = None if labels is None else np.asarray(labels).astype(np.int64)
    known = np.flatnonzero(lab >= 0) if lab is not None else np.zeros(0, dtype=np.int64)
    spec = angular_spectra(x, symmetry)
    anchors = pick_anchors(n, max_anchors, seed=seed, include=known)
    spec_a = spec[anchors.to(spec.device)]
    if len(anchors) < 2:
        return np.zeros(n, dtype=np.int64) if lab is None else np.where(lab >= 0, lab, 0)
    idx, _, score = rotation_neighbours(spec_a, k, 64)
    idx, score = idx.cpu().numpy(), score.cpu().numpy()
    if len(known):
        anchor_classes = spread_labels(idx, score, lab[anchors.numpy()], n_classes)
    else:
        anchor_classes = spectral_clusters(idx, score, n_classes, seed=seed)
    out = np.empty(n, dtype=np.int64)
    out[anchors.numpy()] = anchor_classes
    rest = np.setdiff1d(np.arange(n), anchors.numpy())
    if len(rest):
        index, weight, _ = best_references(spec[torch.as_tensor(rest).to(spec.device)], spec_a, k=k)
        votes = np.zeros((len(rest), n_classes))
        np.add.at(votes, (np.repeat(np.arange(len(rest)), index.shape[1]), anchor_classes[index.cpu().numpy()].ravel()),
                  weight.cpu().numpy().ravel())
        out[rest] = votes.argmax(1)
    if lab is not None:
        out[known] = lab[known]
    return out
