"""The training report: what one training run did, as a JSON-ready dict.

:func:`training_report` is the one place that builds it: the CLI's
``report.json`` (:func:`napari_rvae.core.pipeline.run_train`) and the Train
widget's ``X.report.json`` beside a saved model ``X.pt`` both come from it.
The keys are a public contract: new ones may be added, none renamed or
dropped. Only where the data came from differs: file paths (``input``,
``points``) for the CLI, layer names (``image_layer``, ``points_layer``) for
napari.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .angle_checks import angle_warnings
from .bond_order import lattice_check_summary
from .config import ModelConfig, TrainConfig
from .errors import InputError
from .outputs import REPORT, strict_json

if TYPE_CHECKING:  # only for the annotations: importing them would load pyro
    from .analysis import Analysis
    from .train import TrainResult

REPORT_SUFFIX = ".report.json"


def training_report(
    result: TrainResult,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    command: str,
    sources: dict,
    n_points: int,
    n_patches: int,
    dropped_rows,
    seconds: dict,
    class_names: list | None = None,
    pixel_size: float | None = None,
    unit: str | None = None,
    notes=(),
    files=(),
    table=None,
    points_yx=None,
) -> dict:
    """The report of one training run.

    Parameters
    ----------
    result
        What :func:`~napari_rvae.core.train.train` returned.
    model_config, train_config
        The settings asked for; the report gives those the run used (the
        model's config, ``result.train_config``).
    command
        ``"train"`` (CLI) or ``"napari"`` (the Train widget).
    sources
        Where the data came from, e.g. ``{"input": path, "points": path}`` or
        ``{"image_layer": name, "points_layer": name}``, with ``resumed_from``
        (the model file whose training went on, or None); right after ``command``.
    n_points, n_patches, dropped_rows
        Points given, patches encoded (``budget`` says how many of them training
        saw), and the row numbers of the points dropped at the image edge.
    seconds
        ``extract``, ``encode`` and ``total`` wall times; ``train`` is taken
        from ``result``.
    files
        The files the run wrote (names relative to the report's folder).
    table, points_yx
        The run's results and, for an image, the atoms' (y, x): they give
        ``lattice_check`` and ``angle_warnings`` (:func:`checks_report`).
    """
    return {
        "command": command,
        **sources,
        "model_config": result.model.config.to_dict(),  # the run may change it (alignment failed -> "none")
        # ... and the training settings as the run resolved them (the class window's "auto").
        "train_config": (result.train_config or train_config).to_dict(),
        "device": result.device,
        "processes": result.processes,  # torchrun processes that trained it together (core/ddp.py)
        "alignment": result.alignment,
        "symmetry": result.symmetry or {"chosen": int(result.model.config.symmetry), "source": "given"},
        "class_window_px": result.class_window if result.model.config.class_model else None,
        "n_points": int(n_points),
        "n_patches": int(n_patches),
        "dropped_rows": [int(i) for i in dropped_rows],
        "epochs_run": result.epochs_run,
        "budget": None if result.budget is None else result.budget.to_dict(),  # core/budget.py; all encoded
        "stopped_early": result.stopped,
        "loss_per_epoch": list(result.history),
        "final_loss": result.history[-1] if result.history else None,
        **continuation_report(result),
        "seconds": {
            "extract": seconds.get("extract"),
            "train": result.seconds,
            "encode": seconds.get("encode"),
            "total": seconds.get("total"),
        },
        "patches_per_second": result.patches_per_second,
        "class_names": class_names,
        "pixel_size": pixel_size,
        "unit": unit,
        "notes": [*notes, *result.notes],
        "files": list(files),
        **checks_report(table, points_yx, result.model.config.symmetry, result.symmetry),
    }


def continuation_report(result: TrainResult) -> dict:
    """How the run went on from a trained model: its ``epochs_before`` (``epochs_run`` counts this
    run's), ``epochs_total``, how many of ``loss_per_epoch``'s entries are the earlier runs'
    (``history_before``: they come first) and whether Adam's state went on (``optimizer_resumed``)."""
    return {
        "epochs_before": result.epochs_before,
        "epochs_total": result.epochs_total,
        "history_before": result.history_before,
        "optimizer_resumed": result.optimizer_resumed,
    }


def encode_report(
    *, input_text, model_path, points_path, model_config, n_points, n_patches, dropped_rows, seconds, pixel_size,
    unit, level, notes, files, checks: dict,
) -> dict:  # fmt: skip
    """report.json of an ``encode`` run, one image's or a movie's (the same keys; a movie adds its own after)."""
    return {
        "command": "encode",
        "input": input_text,
        "model": str(model_path),
        "points": str(points_path) if points_path else None,
        "model_config": model_config.to_dict(),
        "n_points": int(n_points),
        "n_patches": int(n_patches),
        "dropped_rows": dropped_rows,
        "seconds": seconds,
        "pixel_size": pixel_size,
        "unit": unit,
        "level": level,
        "notes": list(notes),
        "files": list(files),
        **checks,
    }


def named_classes(config, class_names) -> list | None:
    """The class names a model file carries, where they name this model's classes (else None)."""
    return class_names if config.class_model and class_names and len(class_names) == config.n_classes else None


def checks_report(table, points_yx, symmetry: int, how: dict | None = None) -> dict:
    """report.json's ``lattice_check`` (which psi_n, compared modulo what; None without positions) and
    ``angle_warnings`` (:func:`~napari_rvae.core.angle_checks.angle_warnings`) for a results table."""
    if table is None:
        return {"lattice_check": None, "angle_warnings": []}
    lattice = None
    if points_yx is not None and "angle_psi_flag" in table:
        lattice = lattice_check_summary(points_yx, table, symmetry)
    return {"lattice_check": lattice, "angle_warnings": angle_warnings(table, symmetry, how)}


def report_path(model_path) -> Path:
    """Where the report of model file ``X.pt`` lives: ``X.report.json`` beside it."""
    path = Path(model_path)
    return path.with_name(path.stem + REPORT_SUFFIX)


def write_report(report: dict, path) -> Path:
    """Write ``report`` as JSON to ``path`` atomically (a temp file renamed into place)."""
    path = Path(path)
    text = strict_json(report)  # fails before anything is written
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_report(path) -> dict | None:
    """The report at ``path``, or None when there is none.

    Raises
    ------
    InputError
        If the file exists but is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"The report {path.name} could not be read ({type(exc).__name__}).") from None
    if not isinstance(report, dict):
        raise InputError(f"The report {path.name} is not a napari-rvae report.")
    return report


def find_report(model_path) -> dict | None:
    """The report of model file ``X.pt``, or None.

    That is ``X.report.json`` beside it, else the ``report.json`` of the CLI
    run folder that holds it (when that report lists the file).

    Raises
    ------
    InputError
        If the report is there but unreadable.
    """
    path = Path(model_path)
    report = read_report(report_path(path))
    if report is None:
        run = read_report(path.with_name(REPORT))
        if run is not None and path.name in (run.get("files") or ()):
            report = run
    return report


def analysis_report(
    analysis: Analysis,
    train_config: TrainConfig,
    *,
    command: str,
    sources: dict,
    class_names: list | None = None,
    pixel_size: float | None = None,
    unit: str | None = None,
    notes=(),
) -> dict:
    """:func:`training_report` for a run of :func:`~napari_rvae.core.analysis.analyse_iter` (the Train widget's)."""
    if analysis.training is None:
        raise ValueError("This analysis applied a model; only a training run has a training report.")
    return training_report(
        analysis.training,
        analysis.model.config,
        train_config,
        command=command,
        sources=sources,
        n_points=analysis.n_points,
        n_patches=len(analysis.kept),
        dropped_rows=analysis.dropped,
        seconds=analysis.seconds,
        class_names=class_names,
        pixel_size=pixel_size,
        unit=unit,
        notes=notes,
        table=analysis.table,
        points_yx=analysis.centers,
    )
