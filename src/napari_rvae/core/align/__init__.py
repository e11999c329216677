"""Coarse rotational alignment of a patch stack by angular synchronisation.

An rVAE's latent angle has an arbitrary zero per *shape*: when every shape
appears at every angle, the decoder may draw one digit upright in one region
of the latent space and upside down in another, and training never resolves
it (within-digit 180 degree flips). Cryo-EM solves the same problem for
particle images with angular synchronisation (Singer, 2011): estimate the
rotation between each patch and its most similar neighbours, then find the
one angle per patch that agrees best with all those pairwise rotations. The
result is consistent across the whole stack, which is exactly what the rVAE
lacks. The stage (:class:`CoarseAlignment`) turns each patch back by its
coarse angle before the rVAE sees it; the rVAE learns the content and what
rotation is left.

Steps (torch on the training device; the eigenvector with scipy on the CPU),
one module each:

1. :mod:`.spectra`: polar resampling about the patch centre (rings weighted
   by sqrt(r), so dot products approximate the area integral) and the FFT
   along the angle. With n-fold symmetry only the angular frequencies that
   are multiples of n are kept, so rotations are compared modulo 360/n
   degrees.
2. :mod:`.search`: for every pair, the cross-correlation over all rotations
   at once; its peak gives the relative rotation and a similarity. Each
   patch keeps its ``k`` most similar neighbours.
3. :mod:`.sync`: the Hermitian matrix of the neighbours' relative rotations'
   phases has the patches' phases as its leading eigenvector, refined by the
   generalised power method. Over the full circle, groups of patches with few
   links between them (the two species of a crystal) are then given one zero
   by their best matches across groups (:func:`link_groups`).
4. :mod:`.rotation_range`: when the data stay within +/-90 degrees of a
   common upright (digits written upright and tilted, one crystal with small
   misorientations), the search is redone within that window (no flips) and
   each patch's angle is measured from the mean pose of the patches similar
   to it. Tested for 1-fold content only: with n-fold symmetry the window
   would be +/-90/n degrees, which real misorientations exceed, so ``auto``
   is the full circle modulo 360/n there (docs/science.md#limited_range_loss).
5. :mod:`.reference` and :mod:`.matching`: at most ``MAX_ANCHORS`` patches are
   synchronised with each other, and ``REFERENCE_SIZE`` of them (the
   *reference*) are kept; every patch then takes its angle from its
   best-matching reference patches, and so does any new patch once the
   reference is stored in a model file.
6. :mod:`.stage`: the stage of the data path that fits the reference a model
   stores and turns patches by their coarse angle.
"""

from __future__ import annotations

from ..rotation import disk, rotate_patches
from .matching import best_references, reference_angles
from .reference import (
    MAX_ANCHORS,
    REFERENCE_SIZE,
    Reference,
    build_reference,
    coarse_angles,
    pick_anchors,
)
from .rotation_range import (
    BEYOND_MAJORITY,
    LIMITED_NEIGHBOURS,
    LIMITED_RANGE_BEYOND,
    LIMITED_RANGE_CONCENTRATION,
    LIMITED_RANGE_LOSS,
    beyond_window_share,
    centre_on_mean_pose,
    limited_range_angles,
    limited_window,
    window_loss,
)
from .search import rotation_neighbours
from .spectra import angular_spectra, polar_transform
from .stage import CoarseAlignment, CoarsePose, aligned_posterior
from .sync import LINK_GROUPS, LINK_MATCHES, link_groups, synchronize

__all__ = [
    "BEYOND_MAJORITY",
    "LIMITED_NEIGHBOURS",
    "LIMITED_RANGE_BEYOND",
    "LIMITED_RANGE_CONCENTRATION",
    "LIMITED_RANGE_LOSS",
    "LINK_GROUPS",
    "LINK_MATCHES",
    "MAX_ANCHORS",
    "REFERENCE_SIZE",
    "CoarseAlignment",
    "CoarsePose",
    "Reference",
    "aligned_posterior",
    "angular_spectra",
    "best_references",
    "beyond_window_share",
    "build_reference",
    "centre_on_mean_pose",
    "coarse_angles",
    "disk",
    "limited_range_angles",
    "limited_window",
    "link_groups",
    "pick_anchors",
    "polar_transform",
    "reference_angles",
    "rotate_patches",
    "rotation_neighbours",
    "synchronize",
    "window_loss",
]
