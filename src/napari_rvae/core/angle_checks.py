"""Say so when the data cannot fix the angle well, instead of painting a confident map.

:func:`angle_warnings` reads a finished run's table and how its symmetry was
set, and returns sentences for the terminal, report.json (``notes`` and
``angle_warnings``) and the Train widget. Each check names its threshold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Fewer patches than this rarely synchronise into one consistent reference.
FEW_PATCHES = 100
# A median angle_sd (calibrated, core/angle_sd.py) above this share
# of the period: the map's colours are mostly noise. Measured medians on the MoS2 scan:
# 0.2 (3-fold, period 120) to 1.8 degrees (6-fold, period 60).
UNCERTAIN_SHARE = 0.1
# Atoms flagged by the lattice check (core/bond_order.py) above this share, among
# those where the lattice is ordered: the angle and psi_n disagree broadly.
FLAGGED_SHARE = 0.1


def angle_warnings(table: pd.DataFrame, symmetry: int, how: dict | None = None) -> list[str]:
    """Sentences on what makes this run's angles doubtful; empty when nothing does.

    Parameters
    ----------
    table : DataFrame
        The run's results (points.csv's columns: ``angle``, ``angle_sd``,
        optionally ``psi_order`` and ``angle_psi_flag``).
    symmetry : int
        The symmetry the angles were measured in.
    how : dict, optional
        ``TrainResult.symmetry``: ``{"source": "estimated", "alternatives": [...], ...}``.

    Examples
    --------
    >>> t = pd.DataFrame({"angle": [10.0] * 50, "angle_sd": [9.0] * 50})
    >>> [w.split(":")[0] for w in angle_warnings(t, 6)]
    ['Few patches', 'Uncertain angles']
    """
    if "angle" not in table:
        return []
    out = []
    period = 360.0 / int(symmetry)
    n = int(np.isfinite(table["angle"].to_numpy(dtype=float)).sum())
    if n < FEW_PATCHES:
        out.append(
            f"Few patches: {n} angles (fewer than {FEW_PATCHES}); alignment and training may not have "
            "settled, so compare runs with another seed before trusting the map."
        )
    if "angle_sd" in table:
        sd = table["angle_sd"].to_numpy(dtype=float)
        sd = sd[np.isfinite(sd)]
        median = float(np.median(sd)) if sd.size else float("nan")
        if np.isfinite(median) and median > UNCERTAIN_SHARE * period:
            out.append(
                f"Uncertain angles: the median angle_sd is {median:.1f} deg, more than "
                f"{UNCERTAIN_SHARE:.0%} of the {period:g}-degree period; the patches may be too noisy, too "
                "small or too symmetric to fix the angle."
            )
    if how and how.get("source") == "estimated" and how.get("alternatives"):
        others = ", ".join(f"{k}-fold" for k in how["alternatives"])
        out.append(
            f"Symmetry ambiguous: {how['chosen']}-fold was chosen and {others} is close (report.json: "
            "symmetry); if you know the motif, choose it with --symmetry or the Symmetry box."
        )
    if "angle_psi_flag" in table and "psi_order" in table:
        ordered = table["psi_order"].to_numpy(dtype=float) >= 0.5
        if ordered.sum() >= 10:
            share = float(table["angle_psi_flag"].to_numpy(dtype=bool)[ordered].mean())
            if share > FLAGGED_SHARE:
                out.append(
                    f"Lattice check: the angle and psi_n disagree by more than 15 deg on {share:.0%} of the "
                    "atoms in ordered lattice (angle_psi_flag); check the symmetry and the atom positions."
                )
    return out
