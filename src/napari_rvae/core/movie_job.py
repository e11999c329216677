"""The CLI's jobs on a movie or several files: detect, sample, train here, encode frame by frame.

:func:`~.pipeline.run_train` and :func:`~.pipeline.run_encode` send one 2-D
image or patch stack down the in-memory path and everything else here: the
atoms of every frame (:func:`~.movie.detect_frames` or a points file with
``frame``/``file`` columns), a training sample cut on the cluster
(:func:`~.movie.sample_patches`, the budget of :mod:`.budget`), one model
trained in this process through :func:`~.analysis.train_patches_iter`, then
every frame encoded on the cluster (:func:`~.movie.encode_frames`) and
streamed into the output folder (:class:`~.movie_outputs.MovieWriter`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .analysis import train_patches_iter
from .errors import InputError
from .modelfile import load_model, save_model
from .outputs import REPORT, OutputDir
from .pipeline import (
    MODEL_FILE,
    Engine,
    Inputs,
    Say,
    _encoding_labels,
    _input_text,
    _say_all,
    _training_labels,
    engine_client,
    scans_report,
)
from .points_io import read_points_csv
from .report import encode_report, named_classes, training_report
from .train import drive


def atoms_from_points(scans, points: pd.DataFrame) -> pd.DataFrame:
    """A points table as atoms: ``source, frame, y, x`` and the carried columns, in the points' row order.

    The ``file`` column names each point's input (needed with several inputs),
    ``frame`` its frame (needed when an input has several).
    """
    from .movie import check_frames

    names = {}
    for i, src in enumerate(scans.sources):
        for key in (src.name, src.path, Path(src.path).name):
            names.setdefault(str(key), i)
    if "file" in points:
        unknown = sorted({str(v) for v in points["file"]} - set(names))
        if unknown:
            given = ", ".join(src.name for src in scans.sources)
            raise InputError(f"The points name the file {unknown[0]!r}, which is not among the inputs ({given}).")
        source = np.array([names[str(v)] for v in points["file"]], dtype=np.int64)
    elif len(scans.sources) > 1:
        raise InputError("With several inputs the points need a 'file' column naming each point's input.")
    else:
        source = np.zeros(len(points), dtype=np.int64)
    if "frame" in points:
        frame = points["frame"].to_numpy(dtype=np.int64)
    elif all(src.n_frames == 1 for src in scans.sources):
        frame = np.zeros(len(points), dtype=np.int64)
    else:
        raise InputError("The input is a movie: the points need a 'frame' column (0 = the first frame).")
    atoms = pd.concat(
        [pd.DataFrame({"source": source, "frame": frame}), points.drop(columns=["file", "frame"], errors="ignore")],
        axis=1,
    )
    check_frames(scans, atoms)
    return atoms


def movie_atoms(
    scans, points_path, detect_options, level: str, client, engine: Engine, say: Say, on_frame=None
) -> pd.DataFrame:
    """The atoms of every frame: from the points file, else detected frame by frame."""
    from .movie import detect_frames

    if points_path is not None:
        return atoms_from_points(scans, read_points_csv(points_path))
    atoms = detect_frames(scans, detect_options or {}, client=client, tile=engine.tile, level=level, on_frame=on_frame)
    if len(atoms) == 0:
        raise InputError(
            "No atoms were found in any frame with the default detector settings. "
            "Run 'napari-rvae detect' with --sigma/--threshold, or give --points."
        )
    say(f"Detected {len(atoms)} atoms automatically in {scans.n_frames} frames (give --points to use your own).")
    return atoms


def write_movie_results(
    out: OutputDir, scans, atoms, model, client, *, engine: Engine, how: dict | None = None, **encode_options
) -> dict:
    """Encode every frame and stream the results into ``out`` (:class:`~.movie_outputs.MovieWriter`).

    Returns ``files``, ``n_patches``, ``dropped_rows`` (atom rows dropped at a frame's edge) and
    ``checks``: report.json's ``lattice_check`` and ``angle_warnings`` over every frame
    (``how``: how the symmetry was chosen, when this run chose it).
    """
    from .movie import encode_frames, frame_groups
    from .movie_checks import MovieChecks
    from .movie_outputs import MovieWriter

    checks = MovieChecks(model.config.symmetry, how)
    groups = frame_groups(atoms)
    n_patches, dropped = 0, []
    with MovieWriter(
        out,
        scans.sources,
        several_files=len(scans.sources) > 1,
        period=360.0 / model.config.symmetry,
        n_classes=model.config.n_classes if model.config.class_model else 0,
        parquet=engine.parquet,
    ) as writer:  # on an error its files are closed unfinished, and the OutputDir drops them
        for result in encode_frames(scans, atoms, model, client=client, **encode_options):
            writer.add(result)
            checks.add(result.table, psi_n=result.psi_n)
            n_patches += len(result.table)
            rows = groups.get((result.source, result.frame))
            if rows is not None and len(result.dropped):
                dropped.extend(int(r) for r in rows[result.dropped])
        files = writer.close()
    if n_patches == 0:
        raise InputError(
            "Every point is too close to the edge for the model's patches; use --edge reflect or a smaller --patch-size."
        )
    return {"files": list(files), "n_patches": n_patches, "dropped_rows": sorted(dropped), "checks": checks.report()}


def _latent_png(out: OutputDir, table: pd.DataFrame, model) -> list[str]:
    """latent.png of a table (the training sample's for a movie), as today's exports draw it."""
    from .exports import LATENT_FIGURE_FILE, latent_columns, latent_figure

    if not latent_columns(table):
        return []
    latent_figure(table, model).savefig(out.path(LATENT_FIGURE_FILE))
    return [LATENT_FIGURE_FILE]


def _first_frame_points(atoms: pd.DataFrame) -> np.ndarray:
    """The atoms of the first frame that has any: the atom spacing (class window) is a frame's."""
    from .movie import frame_groups

    groups = frame_groups(atoms)
    rows = groups[min(groups)]
    return atoms[["y", "x"]].to_numpy(dtype=float)[rows]


def _movie_training(scans, atoms, model_config, train_config, *, client, edge, level, labels, model, stop, on_progress):
    """Draw the training sample (:func:`~.movie.sample_patches`) and train on it.

    Returns the :class:`~.analysis.Analysis` of the sample, the training
    settings used and report.json's ``training_sample``.
    """
    from .budget import training_budget
    from .movie import cuttable, sample_patches
    from .train import resolve_class_window

    size = model_config.patch_size
    n_total = int(cuttable(scans, atoms, size, edge).sum())
    if n_total == 0:
        raise InputError(
            f"Every point is too close to the edge for {size} px patches; use --edge reflect or a smaller --patch-size."
        )
    budget = training_budget(n_total, train_config.batch_size, train_config.epochs)
    patches, rows, rule = sample_patches(
        scans, atoms, budget.n_sample, size, client=client, edge=edge, level=level, seed=train_config.seed
    )
    # The spacing the class window follows is one frame's: atoms of several frames overlap.
    train_config = resolve_class_window(
        replace(train_config, epochs=budget.epochs), model_config, _first_frame_points(atoms)
    )
    sample_labels = None if labels is None else np.asarray(labels)[rows]
    steps = train_patches_iter(patches, None, model_config, train_config, labels=sample_labels, stop=stop, model=model)
    analysis = drive(steps, on_progress)
    analysis.training.budget = budget  # report.json's budget: the movie's, not the sample's own
    sample = {"n_sample": int(len(rows)), "n_total": n_total, "rule": rule, "budget": budget.reason}
    return analysis, train_config, sample


def train_movie(
    scans, out_dir, *, engine: Engine, sources: dict, model_config, train_config, points_path, labels_col, edge,
    detect_options, level, on_progress, say, stop, resume, on_frame=None,
) -> dict:  # fmt: skip
    """:func:`run_train` for a movie or several files: detect, sample, train here, encode on the cluster."""
    from .cluster import cluster_summary

    t_start = time.perf_counter()
    model, extra = load_model(resume) if resume is not None else (None, {})
    model_config = model.config if model is not None else model_config
    edge = edge or extra.get("edge", "drop")
    _say_all(say, scans.notes)
    with OutputDir(out_dir) as out, engine_client(engine) as client:
        atoms = movie_atoms(scans, points_path, detect_options, level, client, engine, say, on_frame)
        empty = Inputs(np.empty((0, model_config.patch_size, model_config.patch_size), np.float32), atoms)
        model_config, labels, class_names = _training_labels(empty, model_config, labels_col, extra.get("class_names"))
        analysis, train_config, sample = _movie_training(
            scans, atoms, model_config, train_config, client=client, edge=edge, level=level, labels=labels,
            model=model, stop=stop, on_progress=on_progress,
        )  # fmt: skip
        if sample["n_sample"] < sample["n_total"]:
            say(f"Training on {sample['n_sample']} of {sample['n_total']} patches ({sample['budget']}).")
        result = analysis.training
        if result.alignment:
            say(result.alignment["description"])
        _say_all(say, result.notes)
        t_train_end = time.perf_counter()
        save_model(
            result.model,
            out.path(MODEL_FILE),
            extra={"class_names": class_names, "labels_col": labels_col, "edge": edge, "level": level},
        )
        written = write_movie_results(
            out, scans, atoms, result.model, client, engine=engine, edge=edge, level=level, labels=labels,
            class_names=class_names, on_frame=on_frame, how=result.symmetry,
        )  # fmt: skip
        files = [MODEL_FILE, *written["files"], *_latent_png(out, analysis.table, result.model), REPORT]
        t_end = time.perf_counter()
        seconds = {"extract": None, "encode": t_end - t_train_end, "total": t_end - t_start}
        first = scans.sources[0]
        report = training_report(
            result, model_config, train_config, command="train", sources=sources, n_points=len(atoms),
            n_patches=written["n_patches"], dropped_rows=written["dropped_rows"], seconds=seconds,
            class_names=class_names, pixel_size=first.pixel_size, unit=first.unit, notes=scans.notes, files=files,
        )  # fmt: skip
        report.update(level=level, **scans_report(scans), cluster=cluster_summary(client, engine.scheduler))
        report["training_sample"] = sample
        report.update(written["checks"])  # the whole movie's, not the training sample's
        _say_all(say, report["angle_warnings"])
        out.write_json(REPORT, report)
    return report


def encode_movie(
    scans, model_path, out_dir, *, engine: Engine, input_path, points_path, labels_col, edge, detect_options, level, say,
    on_frame=None,
) -> dict:  # fmt: skip
    """:func:`run_encode` for a movie or several files: atoms and encoding frame by frame on the cluster."""
    from .cluster import cluster_summary

    t_start = time.perf_counter()
    model, extra = load_model(model_path)
    cfg = model.config
    edge, level = edge or extra.get("edge", "drop"), level or extra.get("level", "none")
    _say_all(say, scans.notes)
    with OutputDir(out_dir) as out, engine_client(engine) as client:
        atoms = movie_atoms(scans, points_path, detect_options, level, client, engine, say, on_frame)
        empty = Inputs(np.empty((0, cfg.patch_size, cfg.patch_size), np.float32), atoms)
        labels = _encoding_labels(empty, cfg, extra, labels_col)
        names = named_classes(cfg, extra.get("class_names"))
        t_encode = time.perf_counter()
        written = write_movie_results(
            out, scans, atoms, model, client, engine=engine, edge=edge, level=level, labels=labels, class_names=names,
            on_frame=on_frame,
        )  # fmt: skip
        t_end = time.perf_counter()
        first = scans.sources[0]
        report = encode_report(
            input_text=_input_text(input_path), model_path=model_path, points_path=points_path, model_config=cfg,
            n_points=len(atoms), n_patches=written["n_patches"], dropped_rows=written["dropped_rows"],
            seconds={"encode": t_end - t_encode, "total": t_end - t_start}, pixel_size=first.pixel_size,
            unit=first.unit, level=level, notes=scans.notes, files=[*written["files"], REPORT],
            checks=written["checks"],
        )  # fmt: skip
        report.update(**scans_report(scans), cluster=cluster_summary(client, engine.scheduler))
        _say_all(say, report["angle_warnings"])
        out.write_json(REPORT, report)
    return report
