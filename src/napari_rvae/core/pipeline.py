"""The main jobs end to end (inputs -> patches -> model -> table -> files).

This is what the CLI runs; Python users can call it too. A job reads its
files (:func:`load_inputs`), runs the iterator the widgets run too
(:mod:`.analysis`) and writes the files. Each job writes into
an :class:`~napari_rvae.core.outputs.OutputDir`, so a failed run leaves no
half-written folder behind.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import ddp
from .analysis import encode_patches, train_patches_iter
from .config import ModelConfig, TrainConfig
from .errors import InputError
from .exports import write_map_exports
from .image import as_image2d
from .labels import class_codes, codes_for_names, labels_for_model
from .level import level_image
from .modelfile import load_model, save_model
from .outputs import REPORT, OutputDir
from .points_io import calibrated_columns, calibrated_unit, read_points_csv  # noqa: F401 (calibrated_unit: public here too)
from .readers import read_first_image
from .report import (  # the one builder of report.json (also the widget's)
    checks_report,
    encode_report,
    named_classes,
    training_report,
)
from .train import drive

MODEL_FILE = "model.pt"
POINTS_FILE = "points.csv"
# Frames with a longer side (px) are detected tile by tile: a 2048 px frame's detection
# temporaries (a few float32 copies) stay near 100 MB per worker.
DEFAULT_TILE = 2048

Say = Callable[[str], None]


@dataclass
class Inputs:
    """Patches ready for a model, with the per-patch table they came from."""

    patches: np.ndarray  # (N, P, P) float32
    table: pd.DataFrame  # one row per patch: y,x (image input) or index (patch input), then carried columns
    image: np.ndarray | None = None
    pixel_size: float | None = None
    unit: str | None = None
    dropped: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_points: int = 0
    level: str = "none"  # how the image was levelled before detection and patches (core/level.py)


@dataclass(frozen=True)
class Engine:
    """How a job reads several frames and where it runs them (the CLI's --layout ... --parquet).

    ``workers``: LocalCluster processes (None: one per core; 0: no cluster,
    every frame in this process). ``scheduler``: the address of a running
    dask scheduler instead. ``tile``: frames with a longer side are detected
    tile by tile. ``parquet``: points.parquet too (None: for large tables).
    """

    layout: str = "auto"
    plane: int | None = None
    scheduler: str | None = None
    workers: int | None = None
    memory_limit: str | None = None
    tile: int | None = DEFAULT_TILE
    parquet: bool | None = None


def load_inputs(
    input_path,
    *,
    points_path=None,
    patch_size: int | None = None,
    edge: str = "drop",
    normalize: str = "none",
    detect_options: dict | None = None,
    level: str = "none",
) -> Inputs:
    """Read INPUT (a 2-D image or an (N, P, P) patch stack) and make patches.

    A 2-D image without ``points_path`` gets automatic atom detection.
    ``level`` (:data:`~.level.LEVELS`) levels the image first: detection and
    patches both see the levelled image; a patch stack is used as it is.
    """
    from .detect import detect_atoms
    from .patches import extract_patches

    path = Path(input_path)
    if not path.exists():
        raise InputError(f"Input file not found: {path}")
    data, notes = read_first_image(path)
    arr = np.asarray(data.data)
    scale = tuple(data.scale or ())
    pixel_size = float(scale[-1]) if scale and data.unit else None
    if arr.ndim == 3 and points_path is None and arr.shape[-1] not in (3, 4):
        if arr.shape[1] != arr.shape[2]:
            raise InputError(f"A patch stack must be (N, P, P) with square patches; {path.name} has shape {arr.shape}.")
        if patch_size is not None and arr.shape[1] != patch_size:
            notes.append(f"The stack's patches are {arr.shape[1]} px; --patch-size {patch_size} is ignored.")
        if level != "none":
            notes.append(f"Levelling ({level}) is for a scan; the patch stack {path.name} is used as it is.")
        patches = arr.astype(np.float32)
        if not np.isfinite(patches).all():
            raise InputError(f"The patch stack {path.name} contains NaN or infinite values.")
        table = pd.DataFrame({"index": np.arange(len(patches))})
        return Inputs(patches, table, notes=notes, n_points=len(patches))

    image, img_notes = as_image2d(arr, name=f"image {path.name}")
    notes += img_notes
    image = level_image(image, level)
    patch_size = int(patch_size or 32)
    if points_path is not None:
        # extract_patches refuses points outside the image, with an example.
        points = read_points_csv(points_path)
    else:
        found = detect_atoms(image, **(detect_options or {}))
        if len(found) == 0:
            raise InputError(
                f"No atoms were found in {path.name} with the default detector settings. "
                "Run 'napari-rvae detect' with --sigma/--threshold, or give --points."
            )
        notes.append(f"Detected {len(found)} atoms automatically (give --points to use your own).")
        points = found.reset_index(drop=True)
    ps = extract_patches(image, points[["y", "x"]].to_numpy(), patch_size, edge=edge, normalize=normalize)
    if len(ps.dropped):
        notes.append(
            f"{len(ps.dropped)} of {len(points)} points lie within {patch_size // 2} px of the edge and were dropped "
            "(their row numbers are in report.json); use --edge reflect to keep them."
        )
    if len(ps.kept) == 0:
        raise InputError(
            f"Every point is too close to the edge for {patch_size} px patches; use --edge reflect or a smaller --patch-size."
        )
    table = points.iloc[ps.kept].reset_index(drop=True)
    return Inputs(
        ps.patches,
        table,
        image=image,
        pixel_size=pixel_size,
        unit=data.unit if pixel_size else None,
        dropped=[int(i) for i in ps.dropped],
        notes=notes,
        n_points=len(points),
        level=level,
    )


def atom_positions(inputs: Inputs) -> np.ndarray | None:
    """The (N, 2) atom positions (y, x) of an image input; None for a stack of patches."""
    if not {"y", "x"} <= set(inputs.table.columns):
        return None
    return inputs.table[["y", "x"]].to_numpy(dtype=float)


def results_table(inputs: Inputs, encoded: pd.DataFrame, *, class_names: list | None = None) -> pd.DataFrame:
    """The points.csv layout: coordinates, results, then carried input columns.

    ``encoded`` is an :class:`~.analysis.Analysis` table: for an image the
    encoder's columns are followed by the bond-order check ``psi_angle``,
    ``psi_order``, ``angle_psi_diff`` and ``angle_psi_flag`` (:mod:`.bond_order`).
    """
    coord_cols = [c for c in ("y", "x", "index") if c in inputs.table.columns][:2]
    coords = inputs.table[coord_cols].reset_index(drop=True)
    extra = []
    if inputs.pixel_size and {"y", "x"} <= set(coord_cols):
        extra = [calibrated_columns(coords[["y", "x"]], inputs.pixel_size, inputs.unit)]
    made = set(encoded.columns).union(*(e.columns for e in extra))  # a re-encoded points.csv brings its own
    carried = inputs.table.drop(columns=coord_cols).reset_index(drop=True)
    carried = carried.drop(columns=[c for c in carried.columns if c in made], errors="ignore")
    out = pd.concat([coords, encoded.reset_index(drop=True), *extra, carried], axis=1)
    if class_names is not None and "class" in out:
        out.insert(out.columns.get_loc("class_prob") + 1, "class_name", [class_names[i] for i in out["class"]])
    return out


def _training_labels(inputs: Inputs, model_config: ModelConfig, labels_col: str, model_names=None):
    """The class codes of the labels column (for the kinds that train on labels), their names, and the
    config with at least as many classes as there are names. ``model_names``: the classes of a model
    whose training goes on (the codes are theirs, the config stays)."""
    if not model_config.needs_labels:
        return model_config, None, None
    if labels_col not in inputs.table.columns:
        raise InputError(
            f"Model {model_config.kind} trains on classes, but the points have no {labels_col!r} column "
            "(name it with --labels-col)."
        )
    labels, class_names = class_codes(inputs.table[labels_col])
    if model_names:
        return model_config, labels_for_model(labels, class_names, model_names), list(model_names)
    if model_config.n_classes < len(class_names):
        model_config = replace(model_config, n_classes=max(len(class_names), 2))
    return model_config, labels, class_names


def _encoding_labels(inputs: Inputs, model_config: ModelConfig, extra: dict, labels_col: str | None):
    """The class codes a saved class-input model reads (names as stored in its file), else None."""
    if not model_config.class_input:
        return None
    col = labels_col or extra.get("labels_col") or "label"
    if col not in inputs.table.columns:
        raise InputError(f"This {model_config.kind} model needs each point's class: the points have no {col!r} column.")
    return codes_for_names(inputs.table[col], extra.get("class_names"))


def _say_all(say: Say, lines) -> None:
    for line in lines:
        say(line)


def _write_results(out: OutputDir, inputs: Inputs, table: pd.DataFrame, model) -> list[str]:
    """points.csv and the maps; the names of the files written."""
    table.to_csv(out.path(POINTS_FILE), index=False)
    return [POINTS_FILE, *write_map_exports(out, inputs, table, model)]


def _patch_size_fit(inputs: Inputs, model_config: ModelConfig, resume) -> ModelConfig:
    """The config for the input's patches (a stack's own size), or an InputError when a resumed model's differs."""
    size = int(inputs.patches.shape[1])
    if size == model_config.patch_size:
        return model_config
    if resume is not None:
        raise InputError(
            f"The model {Path(resume).name} was trained on {model_config.patch_size} px patches; "
            f"the input's patches are {size} px."
        )
    return replace(model_config, patch_size=size)


def _sample_report(result, n: int) -> dict:
    """report.json's ``training_sample`` of one image: the budget's sample (when the run had a budget) or every patch."""
    budget = getattr(result, "budget", None)
    if budget is None or budget.n_sample >= budget.n_total:
        return {"n_sample": int(n), "n_total": int(n), "rule": "every patch"}
    return {"n_sample": int(budget.n_sample), "n_total": int(budget.n_total), "rule": budget.reason}


def _input_text(input_path):
    """report.json's ``input``: the path as given, or the list of them when several were."""
    items = input_items(input_path)
    return items[0] if len(items) == 1 else items


def _train_sources(input_path, points_path, resume) -> dict:
    """report.json's ``input``, ``points`` and ``resumed_from`` (the model file whose training went on)."""
    optional = {"points": points_path, "resumed_from": resume}
    return {"input": _input_text(input_path), **{k: str(v) if v else None for k, v in optional.items()}}


def _train_image(
    input_path,
    out_dir,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    points_path=None,
    labels_col: str = "label",
    edge: str | None = None,
    detect_options: dict | None = None,
    level: str = "none",
    on_progress=None,
    say: Say = lambda s: None,
    stop=None,
    resume=None,
    more: dict | None = None,
) -> dict:
    """Train on INPUT and write model.pt, points.csv and report.json into ``out_dir``.

    ``stop`` (a ``threading.Event``): training ends after the current step and
    the model trained so far is encoded and written, with ``stopped_early``.
    ``resume``: a model file whose training goes on (its settings replace
    ``model_config``; its loss history and optimizer state carry on, see
    :mod:`.resume`). ``edge``: "drop" by default, or the resumed model's.
    ``level``: see :func:`load_inputs`; the model file keeps it for ``encode``.
    """
    t_start = time.perf_counter()
    model, extra = load_model(resume) if resume is not None else (None, {})
    model_config = model.config if model is not None else model_config
    edge = edge or extra.get("edge", "drop")
    with OutputDir(out_dir) as out:  # complete on success, nothing left on any error or interrupt
        inputs = load_inputs(
            input_path,
            points_path=points_path,
            patch_size=model_config.patch_size,
            edge=edge,
            detect_options=detect_options,
            level=level,
        )
        _say_all(say, inputs.notes)
        model_config = _patch_size_fit(inputs, model_config, resume)
        model_config, labels, class_names = _training_labels(inputs, model_config, labels_col, extra.get("class_names"))
        if len(inputs.patches) < train_config.batch_size:
            say(f"Only {len(inputs.patches)} patches: training with batches of {len(inputs.patches)}.")
        t_extract = time.perf_counter() - t_start
        steps = train_patches_iter(
            inputs.patches, atom_positions(inputs), model_config, train_config, labels=labels, stop=stop, model=model
        )
        analysis = drive(steps, on_progress)
        result = analysis.training
        if result.alignment:
            say(result.alignment["description"])
        _say_all(say, result.notes)
        table = results_table(inputs, analysis.table, class_names=class_names)
        extra = {"class_names": class_names, "labels_col": labels_col, "edge": edge, "level": level}
        save_model(result.model, out.path(MODEL_FILE), extra=extra)
        files = _write_results(out, inputs, table, result.model)
        seconds = {"extract": t_extract, "encode": analysis.seconds["encode"], "total": time.perf_counter() - t_start}
        report = training_report(
            result,
            model_config,
            train_config,
            command="train",
            sources=_train_sources(input_path, points_path, resume),
            n_points=inputs.n_points,
            n_patches=len(inputs.patches),
            dropped_rows=inputs.dropped,
            seconds=seconds,
            class_names=class_names,
            pixel_size=inputs.pixel_size,
            unit=inputs.unit,
            notes=inputs.notes,
            files=[MODEL_FILE, *files, REPORT],
            table=table,
            points_yx=atom_positions(inputs),
        )
        report.update(level=inputs.level, **(more or {}), training_sample=_sample_report(result, len(inputs.patches)))
        _say_all(say, report["angle_warnings"])
        out.write_json(REPORT, report)
    return report


def _encode_image(
    input_path,
    model_path,
    out_dir,
    *,
    points_path=None,
    labels_col: str | None = None,
    edge: str | None = None,
    detect_options: dict | None = None,
    level: str | None = None,
    say: Say = lambda s: None,
    more: dict | None = None,
) -> dict:
    """Encode INPUT with a saved model; writes points.csv and report.json.

    ``edge`` and ``level`` default to the ones the model was trained with.
    """
    t_start = time.perf_counter()
    model, extra = load_model(model_path)
    cfg = model.config
    with OutputDir(out_dir) as out:  # complete on success, nothing left on any error or interrupt
        inputs = load_inputs(
            input_path,
            points_path=points_path,
            patch_size=cfg.patch_size,
            edge=edge or extra.get("edge", "drop"),
            detect_options=detect_options,
            level=level or extra.get("level", "none"),
        )
        _say_all(say, inputs.notes)
        if inputs.patches.shape[1] != cfg.patch_size:
            raise InputError(
                f"The model was trained on {cfg.patch_size} px patches; the input's patches are {inputs.patches.shape[1]} px."
            )
        labels = _encoding_labels(inputs, cfg, extra, labels_col)
        n_notes = len(inputs.notes)
        analysis = encode_patches(model, inputs.patches, atom_positions(inputs), labels=labels, notes=inputs.notes)
        _say_all(say, inputs.notes[n_notes:])
        names = named_classes(cfg, extra.get("class_names"))
        table = results_table(inputs, analysis.table, class_names=names)
        files = _write_results(out, inputs, table, model)
        report = encode_report(
            input_text=str(input_path), model_path=model_path, points_path=points_path, model_config=cfg,
            n_points=inputs.n_points, n_patches=len(inputs.patches), dropped_rows=inputs.dropped,
            seconds={"encode": analysis.seconds["encode"], "total": time.perf_counter() - t_start},
            pixel_size=inputs.pixel_size, unit=inputs.unit, level=inputs.level, notes=inputs.notes,
            files=[*files, REPORT], checks=checks_report(table, atom_positions(inputs), cfg.symmetry),
        )  # fmt: skip
        report.update(more or {})
        _say_all(say, report["angle_warnings"])
        out.write_json(REPORT, report)
    return report


# ---------------------------------------------------------------- one door for one image, a movie or many files


def input_items(input_path) -> list[str]:
    """INPUT as a list of items (files, folders, globs): one path or several."""
    if isinstance(input_path, (str, os.PathLike)):
        return [os.fspath(input_path)]
    return [os.fspath(p) for p in input_path]


def open_scans(input_path, points_path=None, engine: Engine | None = None):
    """The :class:`~.stack.ScanSet` of INPUT, its layout chosen (points with frames make a 3-D file a movie)."""
    from .points_io import has_frame_column
    from .stack import open_inputs

    engine = engine or Engine()
    for item in input_items(input_path):
        # Today's words for a missing file (scripts read them); globs and "file.h5::/dataset" are the reader's.
        if not any(c in item for c in "*?[") and "::" not in item and not Path(item).exists():
            raise InputError(f"Input file not found: {Path(item)}")
    frame_points = points_path is not None and has_frame_column(points_path)
    return open_inputs(input_items(input_path), layout=engine.layout, plane=engine.plane, has_frame_points=frame_points)


def is_single_image(scans) -> bool:
    """One 2-D image or one patch stack: today's path, file for file the same."""
    if len(scans.sources) != 1:
        return False
    return scans.layout.kind == "patches" or (scans.layout.kind == "image" and scans.sources[0].n_frames == 1)


def layout_statement(scans) -> str:
    """The terminal's line on how the input was read."""
    return f"Layout: {scans.layout.kind}. {scans.layout.reason}"


def scans_report(scans) -> dict:
    """report.json's ``inputs``, ``layout`` and ``frames``."""
    inputs = [
        {
            "path": src.path,
            "name": src.name,
            "shape": [int(n) for n in src.data.shape],
            "frames": int(src.n_frames),
            "pixel_size": src.pixel_size,
            "unit": src.unit,
            "frame_interval_s": src.frame_interval_s,
        }
        for src in scans.sources
    ]
    layout = {"kind": scans.layout.kind, "reason": scans.layout.reason}
    return {"inputs": inputs, "layout": layout, "frames": int(scans.n_frames)}


def _image_report(scans) -> dict:
    """What a single image's report.json adds: its input and layout, and that no cluster ran."""
    from .cluster import cluster_summary

    return {**scans_report(scans), "cluster": cluster_summary(None, None)}


@contextlib.contextmanager
def engine_client(engine: Engine):
    """The job's dask client (None with ``workers=0``: every frame in this process)."""
    from .cluster import compute_client

    if engine.workers == 0 and engine.scheduler is None:
        yield None
        return
    with compute_client(engine.scheduler, workers=engine.workers, memory_limit=engine.memory_limit) as client:
        yield client


def run_train(
    input_path,
    out_dir,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    points_path=None,
    labels_col: str = "label",
    edge: str | None = None,
    detect_options: dict | None = None,
    level: str = "none",
    on_progress=None,
    say: Say = lambda s: None,
    stop=None,
    resume=None,
    engine: Engine | None = None,
    on_frame=None,
) -> dict:
    """Train on INPUT (one image, a patch stack, a movie or several files) and write the results into ``out_dir``.

    One 2-D image or patch stack goes today's way (model.pt, points.csv, maps,
    report.json). A movie or several files are detected, sampled for training
    and encoded frame by frame (:mod:`.movie`) on the cluster ``engine`` names;
    points.csv then has ``frame`` (and ``file``) columns, the maps are stacks.
    ``stop``, ``resume``, ``edge``, ``level``: as for one image. ``on_frame(done, total)``:
    after each frame of a movie's detection and encoding.
    """
    group = ddp.current()
    if group is not None and not group.is_main:  # torchrun: rank 0 reads, writes and reports
        ddp.train_beside_main(group, model=load_model(resume)[0] if resume is not None else None, stop=stop)
        return {}
    engine = engine or Engine()
    scans = open_scans(input_path, points_path, engine)
    say(layout_statement(scans))
    options = {
        "model_config": model_config,
        "train_config": train_config,
        "points_path": points_path,
        "labels_col": labels_col,
        "edge": edge,
        "detect_options": detect_options,
        "level": level,
        "on_progress": on_progress,
        "say": say,
        "stop": stop,
        "resume": resume,
    }
    if not is_single_image(scans):
        from .movie_job import train_movie

        return train_movie(
            scans,
            out_dir,
            engine=engine,
            sources=_train_sources(input_path, points_path, resume),
            on_frame=on_frame,
            **options,
        )
    item = input_items(input_path)[0]
    return _train_image(item, out_dir, more=_image_report(scans), **options)


def run_encode(
    input_path,
    model_path,
    out_dir,
    *,
    points_path=None,
    labels_col: str | None = None,
    edge: str | None = None,
    detect_options: dict | None = None,
    level: str | None = None,
    say: Say = lambda s: None,
    engine: Engine | None = None,
    on_frame=None,
) -> dict:
    """Encode INPUT (one image, a patch stack, a movie or several files) with a saved model.

    ``edge`` and ``level`` default to the ones the model was trained with;
    a movie or several files are encoded frame by frame as in :func:`run_train`.
    """
    engine = engine or Engine()
    scans = open_scans(input_path, points_path, engine)
    say(layout_statement(scans))
    options = {
        "points_path": points_path,
        "labels_col": labels_col,
        "edge": edge,
        "detect_options": detect_options,
        "level": level,
        "say": say,
    }
    if not is_single_image(scans):
        from .movie_job import encode_movie

        return encode_movie(
            scans, model_path, out_dir, engine=engine, input_path=input_path, on_frame=on_frame, **options
        )
    return _encode_image(input_items(input_path)[0], model_path, out_dir, more=_image_report(scans), **options)
