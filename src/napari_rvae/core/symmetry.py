"""The rotational symmetry of a patch stack, estimated from the data (``--symmetry auto``).

The wrong symmetry gives a confident, wrong angle map: too low, and content that
looks the same under a turn of 360/n degrees gets angles scattered over those
turns; too high, and the angle only uses the part of the content that has the
higher symmetry (on a real MoS2 scan, 6-fold instead of 3-fold: per-atom
equivariance spread 2.0 instead of 0.17 degrees).

Test: turning a patch by 360/n degrees should cost (almost) no similarity when
its content is n-fold. Each patch of a random half of the stack is compared,
under every rotation, with every patch of the other half; for its best
match (correlation ``c`` at rotation ``phi``) the cost of symmetry n is
``c - c(phi + 360/n)`` (the mean over the n - 1 turns, each within one
angular step), in units of ``1 - c``: how far the patch is from its best match
anyway, which is noise and real variation. Only the angular content counts
(every ring's mean is removed), so the round profile of a bright column does
not make all patches alike.

Rule: the cheapest symmetry is plausible when its median cost is at most
``MAX_COST``; otherwise the content is 1-fold. Plausible too are those
costing at most ``PLAUSIBLE_RATIO`` times the cheapest; the highest
plausible n whose divisors (2 and 3 for 6, 2 for 4) are plausible as well
is chosen. Median costs measured (patch px, ``MAX_COST`` 5):

============================================  ====  ====  ====  ====  ======
data                                            2     3     4     6    chosen
============================================  ====  ====  ====  ====  ======
MoS2 HAADF (temul-toolkit), Mo columns, 32    4.23  0.34  2.78  2.72     3
hexagonal lattice, round columns, 24          3.25  2.89  30.8  2.49     6
square lattice, round columns, 24             3.30  43.6  2.84  36.1     4
square lattice of dumbbells (README), 32      6.95  48.5  15.9  40.4     1
rotated digits                                8.77  20.6  19.0  17.7     1
============================================  ====  ====  ====  ====  ======
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .align import polar_transform

CANDIDATES = (2, 3, 4, 6)
# The cheapest symmetry must cost at most this many times a patch's distance to its
# best match. Measured: true symmetries 0.3-3.3 (table above), 1-fold content 6.5-10.
MAX_COST = 5.0
# ... and every symmetry costing at most this many times the cheapest is plausible
# (a 6-fold lattice is 2- and 3-fold too: 2.5 / 2.9 / 3.3; MoS2's 6 against its 3: 8x).
PLAUSIBLE_RATIO = 2.0
# A 1-fold choice is called close to the cheapest n when that costs at most this times
# MAX_COST (the README's dumbbells: 6.5-6.9, digits 7.2-7.9: clear 1-fold).
NEAR_FACTOR = 1.25
SAMPLE = 300  # patches per half: the comparison costs SAMPLE^2 rotational correlations
N_ANGLES = 72  # 5-degree steps: every 360/n of the candidates is a whole number of steps


@dataclass
class SymmetryEstimate:
    """What :func:`estimate_symmetry` found, and why."""

    symmetry: int
    costs: dict[int, float] = field(default_factory=dict)  # median cost of each candidate n (see the module)
    plausible: list[int] = field(default_factory=list)
    patches: int = 0  # patches compared
    reason: str = ""

    @property
    def alternatives(self) -> list[int]:
        """Plausible symmetries the chosen one does not contain (6-fold contains 2- and 3-fold)."""
        return [n for n in self.plausible if self.symmetry % n != 0]

    def summary(self) -> dict:
        """For report.json: the choice, the evidence and the rule's thresholds."""
        return {
            "chosen": self.symmetry,
            "source": "estimated",
            "plausible": list(self.plausible),
            "alternatives": self.alternatives,
            "costs": {str(n): (round(c, 3) if math.isfinite(c) else None) for n, c in self.costs.items()},
            "max_cost": MAX_COST,
            "plausible_ratio": PLAUSIBLE_RATIO,
            "patches_compared": self.patches,
            "reason": self.reason,
        }


def _angular_spectra(patches: torch.Tensor) -> torch.Tensor:
    """Unit-norm angular spectra of the patches' polar images, every ring's mean removed."""
    polar = polar_transform(patches, N_ANGLES)
    polar = polar - polar.mean(-1, keepdim=True)
    polar = polar / polar.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    return torch.fft.rfft(polar, dim=-1)


def symmetry_costs(patches, *, sample: int = SAMPLE, seed: int = 0) -> tuple[dict[int, float], int]:
    """Median cost of each candidate symmetry (module docstring) and the number of patches compared."""
    x = torch.as_tensor(np.asarray(patches, dtype=np.float32))
    x = x.reshape(x.shape[0], x.shape[-2], x.shape[-1])
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(x.shape[0], generator=gen)[: 2 * sample]
    half = len(pick) // 2
    if half < 2:
        return {n: math.nan for n in CANDIDATES}, len(pick)
    spec = _angular_spectra(x[pick])
    a, b = spec[:half], spec[half:]
    corr = torch.fft.irfft(torch.einsum("irf,jrf->ijf", a.conj(), b), n=N_ANGLES, dim=-1)  # (A, B, angles)
    best, where = corr.flatten(1).max(1)
    partner, phi = where // N_ANGLES, where % N_ANGLES
    curve = corr[torch.arange(half), partner]  # each patch's correlation with its best match, every rotation
    spread = (1.0 - best).clamp_min(1e-6)
    costs = {}
    for n in CANDIDATES:
        turned = []
        for m in range(1, n):
            at = phi + m * N_ANGLES // n
            near = torch.stack([curve.gather(1, ((at + d) % N_ANGLES)[:, None])[:, 0] for d in (-1, 0, 1)], 1)
            turned.append(near.max(1).values)
        cost = (best - torch.stack(turned, 1).mean(1)) / spread
        costs[n] = float(cost.median())
    return costs, len(pick)


def estimate_symmetry(patches, *, seed: int = 0) -> SymmetryEstimate:
    """The n-fold rotational symmetry (1, 2, 3, 4 or 6) of a stack of patches.

    Parameters
    ----------
    patches : array_like, shape (N, P, P)
    seed : int
        Picks the patches compared (at most ``2 * SAMPLE``).

    Returns
    -------
    SymmetryEstimate

    Examples
    --------
    >>> from napari_rvae.core.patches import extract_patches
    >>> from napari_rvae.core.synthetic import make_lattice
    >>> lat = make_lattice((192, 192), grains=((96, 96, 10.0),), lattice="square", satellite_amplitude=0.0,
    ...                    second_species="none", seed=0)
    >>> estimate_symmetry(extract_patches(lat.image, lat.points, 24).patches).symmetry
    4
    """
    costs, compared = symmetry_costs(patches, seed=seed)
    finite = {n: c for n, c in costs.items() if math.isfinite(c)}
    if not finite:
        return SymmetryEstimate(1, costs, [1], compared, f"Too few patches ({compared}) to compare: 1-fold assumed.")
    cheapest = min(finite, key=finite.get)
    described = ", ".join(f"{n}-fold {finite[n]:.2f}" for n in sorted(finite))
    if finite[cheapest] > MAX_COST:
        near = finite[cheapest] <= NEAR_FACTOR * MAX_COST
        reason = (
            f"Turning a patch by 360/n costs more than {MAX_COST:g} times its distance to its best match "
            f"for every n ({described}): the content is 1-fold"
            + (f"; {cheapest}-fold is close (below {NEAR_FACTOR * MAX_COST:g})." if near else ".")
        )
        return SymmetryEstimate(1, costs, [1, cheapest] if near else [1], compared, reason)
    accepted = {n for n, c in finite.items() if c <= min(MAX_COST, PLAUSIBLE_RATIO * finite[cheapest])}
    plausible = sorted(n for n in accepted if all(d in accepted for d in CANDIDATES if d < n and n % d == 0))
    chosen = max(plausible) if plausible else cheapest
    found = SymmetryEstimate(chosen, costs, plausible, compared)
    others = found.alternatives
    found.reason = (
        f"Turning a patch by 360/{chosen} degrees costs {finite[chosen]:.2f} times its distance to its "
        f"best match ({described}; 1-fold above {MAX_COST:g})"
        + (f"; also plausible: {', '.join(f'{n}-fold' for n in others)}." if others else ".")
    )
    return found
