"""report.json's angle checks for a movie: one image's sentences, gathered frame by frame.

A movie's results are streamed to disk and never held whole; the checks keep
only what they need: four numbers an atom (angle, angle_sd, psi_order and the
lattice flag, 16 bytes) and psi_n's order per frame. psi_n is measured within
each frame (atoms of different frames are not neighbours), as points.csv's
``psi_*`` columns are.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from .angle_checks import angle_warnings
from .bond_order import lattice_order, lattice_summary

__all__ = ["MovieChecks", "checks_by_frame"]

_COLUMNS = ("angle", "angle_sd", "psi_order", "angle_psi_flag")


class MovieChecks:
    """Gathers a movie's frames (their results tables) into report.json's ``lattice_check`` and ``angle_warnings``.

    Parameters
    ----------
    symmetry : int
        The symmetry the model measures angles in.
    how : dict, optional
        How the symmetry was chosen (``TrainResult.symmetry``), for the "Symmetry ambiguous" sentence.

    Examples
    --------
    >>> i, j = np.mgrid[:10, :10].reshape(2, -1) * 10.0
    >>> frame = pd.DataFrame({"y": i, "x": j, "angle": 5.0, "angle_sd": 1.0, "psi_order": 1.0, "angle_psi_flag": False})
    >>> checks = MovieChecks(4)
    >>> checks.add(frame); checks.add(frame)
    >>> report = checks.report()
    >>> report["lattice_check"]["psi_n"], report["lattice_check"]["frames"], report["angle_warnings"]
    (4, 2, [])
    """

    def __init__(self, symmetry: int, how: dict | None = None):
        self.symmetry = int(symmetry)
        self.how = how
        self._parts: dict[str, list[np.ndarray]] = {c: [] for c in _COLUMNS}
        self._orders: list[tuple[int, float, int]] = []  # (psi_n, median order, atoms) per frame

    def add(self, table: pd.DataFrame, points_yx=None, psi_n: int | None = None) -> None:
        """Take one frame's results table (points.csv's columns for that frame).

        ``psi_n``: the n its ``psi_*`` columns were measured with, where the caller knows it (the
        frame's median order is then its ``psi_order``'s); else it is measured again from the
        atoms' (y, x): ``points_yx`` where given, else the table's ``y`` and ``x``.
        """
        if len(table) == 0 or "angle" not in table:
            return
        for column in _COLUMNS:
            if column in table:
                self._parts[column].append(table[column].to_numpy(dtype=np.float32))
        if "angle_psi_flag" not in table or len(table) < 2:
            return
        if psi_n is None:
            points = table[["y", "x"]].to_numpy(dtype=float) if points_yx is None else np.asarray(points_yx, float)
            psi_n, median = lattice_order(points)
        else:
            order = table["psi_order"].to_numpy(dtype=float)
            median = float(np.nanmedian(order)) if np.isfinite(order).any() else float("nan")
        self._orders.append((psi_n, median, len(table)))

    def report(self) -> dict:
        """``{"lattice_check": ..., "angle_warnings": [...]}`` over every frame taken so far."""
        columns = {c: np.concatenate(p) for c, p in self._parts.items() if p}
        if "angle" not in columns:
            return {"lattice_check": None, "angle_warnings": []}
        table = pd.DataFrame(columns)
        if "angle_psi_flag" in table:
            table["angle_psi_flag"] = table["angle_psi_flag"].astype(bool)
        return {
            "lattice_check": self._lattice_summary(table),
            "angle_warnings": angle_warnings(table, self.symmetry, self.how),
        }

    def _lattice_summary(self, table: pd.DataFrame) -> dict | None:
        """One image's ``lattice_check`` keys for the movie: its commonest psi_n, the frames' median order."""
        if not self._orders or "angle_psi_flag" not in table:
            return None
        weights = Counter()
        for n, _, atoms in self._orders:
            weights[n] += atoms
        psi_n = weights.most_common(1)[0][0]
        medians = np.array([m for _, m, _ in self._orders], dtype=float)
        median = float(np.nanmedian(medians)) if np.isfinite(medians).any() else float("nan")
        flagged = int(table["angle_psi_flag"].sum())
        return {**lattice_summary(psi_n, median, flagged, self.symmetry), "frames": len(self._orders)}


def checks_by_frame(table: pd.DataFrame, points_yx, frames, symmetry: int, how: dict | None = None) -> dict:
    """report.json's ``lattice_check`` and ``angle_warnings`` of a results table holding several frames
    (row ``i`` at ``points_yx[i]`` in frame ``frames[i]``), as :class:`MovieChecks` gathers a movie's."""
    from .frames import split_by_frame

    checks = MovieChecks(symmetry, how)
    points = np.asarray(points_yx, dtype=float).reshape(-1, 2)
    for _, rows in split_by_frame(frames):
        checks.add(table.iloc[rows], points[rows])
    return checks.report()
