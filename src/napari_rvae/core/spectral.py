"""Partitions of a k-nearest-neighbour graph: spectral clustering and label spreading.

The graphs come from :func:`core.align.rotation_neighbours` (each patch's best
matches under any rotation, ``idx`` and ``score`` of shape (N, k)). Used for
classes (:mod:`core.graph_classes`) and, in the alignment, to find the groups
of similar patches whose angle zeros must be tied together
(:func:`core.align.link_groups`).
"""

from __future__ import annotations

import numpy as np

from .eigen import leading_eigenvectors

__all__ = ["kmeans", "spectral_clusters", "spread_labels"]


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
    n = len(idx)
    if n <= n_classes:
        return np.arange(n) % n_classes
    vecs = leading_eigenvectors(_adjacency(idx, score, n), n_classes, seed=seed)
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
