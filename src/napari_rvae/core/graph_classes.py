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

from .align import (
    MAX_ANCHORS,
    angular_spectra,
    best_references,
    pick_anchors,
    rotation_neighbours,
)
from .spectral import spectral_clusters, spread_labels

__all__ = ["graph_classes", "spectral_clusters", "spread_labels"]


def graph_classes(
    patches,
    n_classes: int,
    *,
    labels=None,
    symmetry: int = 1,
    k: int = 10,
    max_anchors: int = MAX_ANCHORS,
    seed: int = 0,
) -> np.ndarray:
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
    x = patches if torch.is_tensor(patches) else torch.as_tensor(np.asarray(patches, dtype=np.float32))
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
        np.add.at(
            votes,
            (np.repeat(np.arange(len(rest)), index.shape[1]), anchor_classes[index.cpu().numpy()].ravel()),
            weight.cpu().numpy().ravel(),
        )
        out[rest] = votes.argmax(1)
    if lab is not None:
        out[known] = lab[known]
    return out
