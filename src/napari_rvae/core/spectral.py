"""Partitions of a k-nearest-neighbour graph: spectral clustering and label spreading.

The graphs come from :func:`core.align.rotation_neighbours` (each patch's best
matches under any rotation, ``idx`` and ``score`` of shape (N, k)). Used for
classes (:mod:`core.graph_classes`) and, in the alignment, to find the groups
of similar patches whose angle zeros must be tied together
(:func:`core.align.link_groups`).

Both partitions are scikit-learn's, given our graph as a precomputed affinity:
on the tests' data they match the hand-written ones they replaced (ARI within
0.01, docs/science.md#graph-partitions-scikit-learn). Only the graph is ours:
the rotation-invariant matches, not scikit-learn's Euclidean neighbours.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["affinity", "spectral_clusters", "spread_labels"]

# Edge weight = match score ** POWER: the closest matches dominate (the hand-written partitions' value, kept).
POWER = 4.0


def affinity(idx, score, n: int, power: float = POWER):
    """The symmetric sparse (N, N) affinity of a k-nearest-neighbour graph: ``score ** power`` per edge.

    Examples
    --------
    >>> affinity(np.array([[1], [0], [0]]), np.array([[0.5], [1.0], [0.5]]), 3, power=1).toarray()
    array([[0. , 1. , 0.5],
           [1. , 0. , 0. ],
           [0.5, 0. , 0. ]])
    """
    import scipy.sparse as sp

    rows = np.repeat(np.arange(n), idx.shape[1])
    w = np.clip(np.asarray(score, dtype=np.float64).ravel(), 0.0, None) ** power
    adj = sp.coo_matrix((w, (rows, np.asarray(idx).ravel())), shape=(n, n)).tocsr()
    return adj.maximum(adj.T)


def spectral_clusters(idx, score, n_classes: int, *, seed: int = 0) -> np.ndarray:
    """``n_classes`` clusters of a k-nearest-neighbour graph (``idx``, ``score``: (N, k)).

    scikit-learn's spectral clustering of the affinity, labels assigned by
    ``cluster_qr`` (no random restarts: as good as k-means there, and faster).
    """
    from sklearn.cluster import SpectralClustering

    n = len(idx)
    if n <= n_classes:
        return np.arange(n) % n_classes
    model = SpectralClustering(n_classes, affinity="precomputed", assign_labels="cluster_qr", random_state=seed)
    with warnings.catch_warnings():
        # A graph of separate groups is what classes look like, not a failure.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        return model.fit_predict(affinity(idx, score, n)).astype(np.int64)


def spread_labels(idx, score, labels, n_classes: int, *, alpha: float = 0.99, iterations: int = 200) -> np.ndarray:
    """Every node's class from a few labelled ones (``labels``: -1 = unknown) by label spreading.

    scikit-learn's ``LabelSpreading`` (Zhou et al., 2004) on our graph (a callable
    kernel that returns it), for at most ``iterations`` steps; known labels are kept.
    ``n_classes`` is the number the caller expects: classes no label names are never given.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.semi_supervised import LabelSpreading

    labels = np.asarray(labels).astype(np.int64)
    known = labels >= 0
    if not known.any():
        return np.zeros(len(labels), dtype=np.int64)
    graph = affinity(idx, score, len(idx)).tocoo()  # LabelSpreading reads the Laplacian's .row/.col
    model = LabelSpreading(kernel=lambda a, b: graph, alpha=alpha, max_iter=iterations, tol=1e-3)
    with warnings.catch_warnings():
        # A fixed number of steps, as the hand-written loop had: stopping short is expected.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(np.arange(len(labels))[:, None], labels)
    out = model.transduction_.astype(np.int64)
    out[known] = labels[known]
    return out
