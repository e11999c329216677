"""``napari-rvae``: the headless command line (a public contract; extend, don't rename).

    napari-rvae train INPUT... --out DIR [--points POINTS.csv] [--model rvae|vae|crvae|jrvae|ssrvae] ...
    napari-rvae train INPUT... --resume MODEL.pt --out DIR [--epochs N] ...
    napari-rvae encode INPUT... --model DIR/model.pt --out DIR2 [--points POINTS.csv]
    napari-rvae detect IMAGE... --out POINTS.csv [--sigma PX] [--min-distance PX] [--threshold REL] [--dark] [--no-refine]
        [--level none|plane|lines]

INPUT is one or more files, folders or globs: one 2-D image, a patch stack, a
movie, or several scans sharing one model ([--layout auto|image|movie|patches]
[--plane Z] [--scheduler ADDRESS] [--workers N] [--memory-limit SIZE] [--tile PX]
[--parquet]).
    napari-rvae sample lattice|digits|stm --out DIR

User mistakes print one line (``napari-rvae: error: ...``) and exit with status 2;
no traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from . import __version__
from ._console import ABORTED, EXIT_INTERRUPTED
from .core.config import (
    ALIGNMENTS,
    LIKELIHOODS,
    MODEL_KINDS,
    ROTATION_RANGES,
    SYMMETRIES,
    SYMMETRY_AUTO,
    ModelConfig,
    TrainConfig,
)
from .core.level import LEVELS
from .core.patches import EDGE_MODES

EXIT_USER_ERROR = 2
# The options that build a model: a resumed model keeps its own, so --resume refuses them.
_MODEL_OPTIONS = {
    "model": "--model",
    "patch_size": "--patch-size",
    "latent_dim": "--latent-dim",
    "translation": "--translation",
    "hidden_dim": "--hidden-dim",
    "hidden_layers": "--hidden-layers",
    "classes": "--classes",
    "likelihood": "--likelihood",
    "class_window": "--class-window",
    "symmetry": "--symmetry",
    "angle_prior": "--angle-prior",
    "align": "--align",
    "rotation_range": "--rotation-range",
}


def _whole_number(text: str) -> int:
    """A whole number; the range is checked where the setting is used (it says why)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number (1 or more)")
    return value


def _epochs(text: str) -> int | str:
    """``auto`` or a positive whole number."""
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto or a positive whole number") from None


def _count(text: str) -> int:
    """A whole number of at least 0 (0: none, or found from the data)."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative: use 0 or more")
    return value


_SYMMETRY_WORDS = (SYMMETRY_AUTO, *(str(n) for n in SYMMETRIES))
_SYMMETRY_METAVAR = "{" + ",".join(_SYMMETRY_WORDS) + "}"


def _symmetry(text: str):
    """``auto`` or one of the supported n-fold symmetries (``config.SYMMETRIES``)."""
    if text.strip().lower() == SYMMETRY_AUTO:
        return SYMMETRY_AUTO
    if text.strip() in _SYMMETRY_WORDS:
        return int(text)
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(_SYMMETRY_WORDS)})")


def _class_window(text: str):
    """``auto``, ``full`` (None) or a whole number of pixels."""
    word = text.strip().lower()
    if word in ("auto", "full"):
        return None if word == "full" else "auto"
    try:
        return int(word)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, full or a whole number of pixels") from None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, an off flag)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-rvae`` parser: one subparser per job, options in groups, defaults shown in ``--help``."""
    p = argparse.ArgumentParser(
        prog="napari-rvae",
        description="Rotationally invariant VAEs for atom-resolved images.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"napari-rvae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,encode,detect,sample}")
    _add_train_parser(sub)
    _add_encode_parser(sub)
    _add_detect_parser(sub)
    _add_sample_parser(sub)
    return p


def _add_patch_input(group) -> None:
    """The image (or patch stack) and its atom positions: what train and encode both read."""
    group.add_argument(
        "input",
        metavar="INPUT",
        nargs="+",
        help="one or more files, folders or globs: a 2-D image (TIFF, PNG, .npy, microscopy formats), an "
        "(N, P, P) patch stack, a movie (T, Y, X: TIFF, .npy, Zarr, HDF5, series) or several scans",
    )
    group.add_argument(
        "--points",
        metavar="POINTS.csv",
        help="atom positions: columns y,x in pixels (or napari's Points CSV); for a movie a frame column "
        "(0 = first), for several inputs a file column",
    )
    group.add_argument(
        "--edge",
        choices=EDGE_MODES,
        default=None,
        help="points whose patch leaves the image: drop them (default, reported) or pad",
    )
    _add_level(group, "train: none; encode: the model's")


def _tile(text: str) -> int:
    """A tile side in pixels (at least 64, so a tile holds its halo)."""
    value = _whole_number(text)
    if value < 64:
        raise argparse.ArgumentTypeError(f"{text!r} is too small: tiles are at least 64 px")
    return value


def _add_engine_options(group) -> None:
    """How several frames are read and where they run (a single 2-D image ignores these)."""
    from .core.pipeline import DEFAULT_TILE
    from .core.stack import LAYOUTS

    group.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="auto",
        help="how a 3-D input is read: movie = frames (T, Y, X), patches = an (N, P, P) patch stack; auto "
        "decides from the shape and says why",
    )
    group.add_argument("--plane", type=_count, default=None, metavar="Z", help="the plane of a (T, Z, Y, X) input")
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="a running dask scheduler (tcp://host:8786, e.g. from dask-jobqueue) instead of a local cluster",
    )
    group.add_argument(
        "--workers",
        type=_count,
        default=None,
        help="local worker processes for movies and several inputs (default: one per core; 0: no cluster)",
    )
    group.add_argument("--memory-limit", default=None, metavar="SIZE", help="per local worker, e.g. 2GB")
    group.add_argument(
        "--tile", type=_tile, default=DEFAULT_TILE, metavar="PX", help="frames larger than this are detected in tiles"
    )
    group.add_argument("--parquet", action="store_true", help="write points.parquet too (always for very large tables)")


def _engine(args):
    """The pipeline's Engine from the parsed options."""
    from .core.pipeline import Engine

    return Engine(
        layout=args.layout,
        plane=args.plane,
        scheduler=args.scheduler,
        workers=args.workers,
        memory_limit=args.memory_limit,
        tile=args.tile,
        parquet=True if args.parquet else None,
    )


def _add_level(group, default_text: str) -> None:
    """``--level``: how a topograph is levelled before detection and patches (never written back)."""
    group.add_argument(
        "--level",
        choices=LEVELS,
        default=None,
        help="level the image first: plane = least-squares plane removed; lines = plane, then each "
        f"scan line's median (default {default_text})",
    )


def _add_quiet(group) -> None:
    """``--quiet``, which every subcommand takes."""
    group.add_argument("--quiet", action="store_true", help="no progress output")


def _subcommand(sub, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose help shows its defaults."""
    return sub.add_parser(name, help=summary, formatter_class=_HelpFormatter, description=description)


def _add_train_parser(sub) -> None:
    """``train``: options grouped as input, model, rotation, training, output."""
    model, training = ModelConfig(), TrainConfig()
    t = _subcommand(
        sub,
        "train",
        "train a model and encode every patch",
        "Train a model on the patches around the atoms and encode every patch.",
    )
    inputs = t.add_argument_group("input")
    _add_patch_input(inputs)
    inputs.add_argument("--labels-col", default="label", help="points column holding classes (crvae, ssrvae)")
    inputs.add_argument(
        "--resume",
        metavar="MODEL.pt",
        default=None,
        help="continue training this model (a model.pt written by 'train') on INPUT for --epochs more epochs: "
        "its own settings, optimizer state and loss history carry on (leave the model options out)",
    )

    _add_model_options(t.add_argument_group("model"), model, training)
    _add_rotation_options(t.add_argument_group("rotation"), model)
    _add_training_options(t.add_argument_group("training"), training)
    _add_engine_options(t.add_argument_group("movies and several inputs"))
    out = t.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="DIR", help="output folder (model.pt, points.csv, report.json)")
    _add_quiet(out)


def _add_model_options(group, model: ModelConfig, training: TrainConfig) -> None:
    """The network and, for class models, how the classes are found."""
    group.add_argument("--model", default=model.kind, choices=MODEL_KINDS, help="model kind")
    group.add_argument("--patch-size", type=_positive_int, default=model.patch_size, help="patch side in pixels")
    group.add_argument("--latent-dim", type=_whole_number, default=model.latent_dim, help="content latents")
    group.add_argument(
        "--translation",
        action=argparse.BooleanOptionalAction,
        default=model.translation,
        help="infer a sub-pixel shift per patch",
    )
    group.add_argument("--hidden-dim", type=_positive_int, default=model.hidden_dim, help="width of the hidden layers")
    group.add_argument("--hidden-layers", type=_positive_int, default=model.hidden_layers, help="hidden layers")
    group.add_argument(
        "--classes", type=_count, default=model.n_classes, help="number of classes (jrvae; crvae/ssrvae infer it)"
    )
    group.add_argument("--likelihood", default=model.likelihood, choices=LIKELIHOODS, help="pixel likelihood")
    group.add_argument(
        "--class-window",
        type=_class_window,
        default=training.class_window,
        metavar="{auto,full,PX}",
        help="class models: the central square (pixels) whose similarity finds the classes; auto: "
        "4/3 of the atom spacing (the column, not its neighbours); full: the whole patch",
    )


def _add_rotation_options(group, model: ModelConfig) -> None:
    """Symmetry, angle prior and coarse alignment."""
    group.add_argument(
        "--symmetry",
        type=_symmetry,
        default=SYMMETRY_AUTO,
        metavar=_SYMMETRY_METAVAR,
        help="n-fold rotational symmetry of the patches; angles are reported modulo 360/n. "
        "auto: estimated from the patches (report.json: symmetry)",
    )
    group.add_argument(
        "--angle-prior",
        type=float,
        default=model.angle_prior,
        help="0: no prior on the angle; patches are aligned first (see --align, --rotation-range); "
        ">0, e.g. 2: the reference rVAE's prior tying each angle near 0, without alignment",
    )
    group.add_argument(
        "--align",
        default=model.alignment,
        choices=ALIGNMENTS,
        help="coarse angles by angular synchronisation before the rVAE: auto = with --angle-prior 0",
    )
    group.add_argument(
        "--rotation-range",
        default=model.rotation_range,
        choices=ROTATION_RANGES,
        help="with alignment: limited = within +/-90 deg (/ symmetry) of a common upright, angles "
        "measured from the mean pose of similar patches; full = any size, zero arbitrary per "
        "shape; auto tests which holds for 1-fold content, full with --symmetry > 1 "
        "(report.json: alignment)",
    )


def _add_training_options(group, training: TrainConfig) -> None:
    """Optimiser, length, device and seed."""
    group.add_argument(
        "--epochs",
        type=_epochs,
        default="auto",
        help="passes over every patch, or auto: steps and a stratified sample from the data (report.json: budget)",
    )
    group.add_argument("--batch-size", type=_positive_int, default=training.batch_size, help="patches per step")
    group.add_argument("--lr", type=float, default=training.lr, help="learning rate")
    group.add_argument("--device", default=training.device, help="auto, cpu, cuda, cuda:N or mps")
    group.add_argument("--seed", type=int, default=training.seed, help="random seed (same seed, same results)")
    group.add_argument(
        "--threads",
        type=_positive_int,
        default=training.threads,
        help="CPU threads for torch (default: torch's choice)",
    )


def _add_encode_parser(sub) -> None:
    """``encode``: the input and the model file, the output folder."""
    e = _subcommand(
        sub,
        "encode",
        "encode patches with a trained model",
        "Encode the patches around the atoms with a model written by 'train'.",
    )
    inputs = e.add_argument_group("input")
    _add_patch_input(inputs)
    inputs.add_argument("--labels-col", default=None, help="class column (crvae models only)")
    inputs.add_argument("--model", required=True, metavar="MODEL", help="a model.pt written by 'train'")
    _add_engine_options(e.add_argument_group("movies and several inputs"))
    out = e.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="DIR2", help="output folder (points.csv, report.json)")
    _add_quiet(out)


def _detect_default(name: str):
    """A default of :func:`core.detect.detect_atoms`, so the command and the function agree."""
    import inspect

    from .core.detect import detect_atoms

    return inspect.signature(detect_atoms).parameters[name].default


def _add_detect_parser(sub) -> None:
    """``detect``: the image, detection settings (defaults those of ``detect_atoms``), the output file."""
    d = _subcommand(
        sub,
        "detect",
        "find atoms (bright or dark features) in an image",
        "Find atom columns: local maxima of a difference-of-Gaussians filter.",
    )
    d.add_argument(
        "input",
        metavar="IMAGE",
        nargs="+",
        help="2-D image (TIFF, PNG, .npy, microscopy formats), a movie or several files (the points get frame "
        "and file columns)",
    )
    find = d.add_argument_group("detection")
    find.add_argument(
        "--sigma", type=float, default=None, help="feature size in px (default: estimated from the image)"
    )
    find.add_argument(
        "--min-distance",
        type=float,
        default=None,
        help="minimum distance between features in px (default: about 1.5 sigma, at least 2)",
    )
    find.add_argument(
        "--threshold", type=float, default=_detect_default("threshold"), help="relative to the image's contrast, 0..1"
    )
    find.add_argument("--dark", action="store_true", help="find dark features instead of bright ones")
    find.add_argument(
        "--margin", type=float, default=_detect_default("margin"), help="ignore features this close to the border (px)"
    )
    find.add_argument("--no-refine", action="store_true", help="skip sub-pixel refinement")
    _add_level(find, "none")
    _add_engine_options(d.add_argument_group("movies and several inputs"))
    out = d.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="POINTS.csv", help="the positions found: columns y, x, strength")
    _add_quiet(out)


def _add_sample_parser(sub) -> None:
    """``sample``: which example data set, where, with which seed."""
    s = _subcommand(
        sub,
        "sample",
        "write the bundled example data (generated or shipped, no download)",
        "Write example data with known answers.",
    )
    s.add_argument(
        "name",
        choices=["lattice", "digits", "stm", "movie"],
        help="lattice: synthetic polycrystal; digits: rotated digits stack; stm: the bundled real STM image "
        "(SPIEPy demo, BSD-2-Clause; its licence notice is written beside it); movie: a synthetic in-situ "
        "movie whose grains turn and whose boundary moves (a (T, Y, X) TIFF and its true atoms per frame)",
    )
    s.add_argument("--out", required=True, metavar="DIR", help="output folder")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    _add_quiet(s)


class _ProgressBar:
    """A terminal progress bar with loss and time left (tqdm on stderr)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def __call__(self, progress) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=progress.epochs * progress.steps_per_epoch,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
                mininterval=0.5,
                disable=None,
            )
        done = (progress.epoch - 1) * progress.steps_per_epoch + progress.step
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(f"epoch {progress.epoch}/{progress.epochs} loss {progress.loss:.4g}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _FrameBar:
    """A terminal bar over a movie's frames (detection, then encoding: a new bar when a pass starts)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or total < 2:
            return
        if self.bar is None or done == 1:
            from tqdm import tqdm

            self.close()
            self.bar = tqdm(
                total=total, unit="frame", file=sys.stderr, dynamic_ncols=True, mininterval=0.5, disable=None
            )
        self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _refuse_model_options(args) -> None:
    """With --resume, an InputError naming the model options given (those not at their defaults)."""
    from .core.errors import InputError

    defaults = build_parser().parse_args(["train", "INPUT", "--out", "DIR"])
    given = [flag for dest, flag in _MODEL_OPTIONS.items() if getattr(args, dest) != getattr(defaults, dest)]
    if given:
        raise InputError(
            f"--resume continues {args.resume} with the settings it was built with: leave out {', '.join(given)}."
        )


def _cmd_train(args, say) -> int:
    """``train``; under torchrun with several processes, rank 0 alone reports and writes (core/ddp.py)."""
    from .core import ddp

    group = ddp.init_from_env()
    try:
        if group is not None and not group.is_main:
            say, args.quiet = (lambda s: None), True
        code = _train_and_report(args, say)
        return 0 if group is not None and not group.is_main else code
    finally:
        ddp.shutdown()


def _train_and_report(args, say) -> int:
    from .core.config import KINDS, ModelConfig, TrainConfig
    from .core.pipeline import run_train

    if args.resume:
        _refuse_model_options(args)

    # crvae/ssrvae take their class count from the labels column; --classes is a floor.
    n_classes = KINDS[args.model].n_classes(args.classes)
    model_config = ModelConfig(
        kind=args.model,
        patch_size=args.patch_size,
        latent_dim=args.latent_dim,
        translation=args.translation,
        hidden_dim=args.hidden_dim,
        hidden_layers=args.hidden_layers,
        n_classes=n_classes,
        symmetry=args.symmetry,
        likelihood=args.likelihood,
        angle_prior=args.angle_prior,
        alignment=args.align,
        rotation_range=args.rotation_range,
    )
    train_config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        class_window=args.class_window,
    )
    bar, frames = _ProgressBar(args.quiet), _FrameBar(args.quiet)
    watch = _TrainingWatch(bar, frames)
    stop = threading.Event()
    try:
        with _first_interrupt_stops(stop, say, lambda: watch.training):
            report = run_train(
                args.input,
                args.out,
                model_config=model_config,
                train_config=train_config,
                points_path=args.points,
                labels_col=args.labels_col,
                edge=args.edge or "drop",
                level=args.level or "none",
                on_progress=watch.on_progress,
                say=say,
                stop=stop,
                resume=args.resume,
                engine=_engine(args),
                on_frame=watch.on_frame,
            )
    finally:
        bar.close()
        frames.close()
    if not report:  # a torchrun process other than rank 0: it trained, rank 0 writes
        return 0
    sym = report["symmetry"]
    if sym.get("source") == "estimated":
        say(
            f"Symmetry: {sym['chosen']}-fold, estimated from the patches. {sym['reason']} "
            "Choose another with --symmetry."
        )
    loss = "no epoch finished" if report["final_loss"] is None else f"final loss {report['final_loss']:.4g}"
    how = "stopped early after" if report["stopped_early"] else "for"
    if report["resumed_from"]:
        how = f"(continued from {report['resumed_from']}, {report['epochs_total']:.3g} epochs in all) {how}"
    say(
        f"Trained {report['model_config']['kind']} on {report['n_patches']} patches {how} {report['epochs_run']:.3g} epochs on "
        f"{report['device']} in {report['seconds']['train']:.1f} s ({report['patches_per_second']:.0f} patches/s); "
        f"{loss}. Results in {args.out}"
    )
    return 0


class _TrainingWatch:
    """Which part of a train run is going, from its callbacks: training runs from the first
    training step until the movie's encoding pass reports its first frame."""

    def __init__(self, on_progress, on_frame):
        self._on_progress, self._on_frame = on_progress, on_frame
        self.started = self.ended = False

    @property
    def training(self) -> bool:
        return self.started and not self.ended

    def on_progress(self, progress) -> None:
        self.started = True
        self._on_progress(progress)

    def on_frame(self, done: int, total: int) -> None:
        self.ended = self.ended or self.started
        self._on_frame(done, total)


@contextlib.contextmanager
def _first_interrupt_stops(stop: threading.Event, say, training=lambda: True):
    """While ``training()``, the first Ctrl-C sets ``stop`` (training ends after this step, results
    are written) and the second raises KeyboardInterrupt as usual (the run is aborted, nothing is
    written). Before training (reading, detecting, cutting) and after it (encoding a movie) there
    are no results to keep: the first Ctrl-C aborts."""

    def first(signum, frame):
        if not training():
            raise KeyboardInterrupt
        stop.set()
        say("\nStopping after this step; the results so far will be written. Press Ctrl-C again to abort.")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = signal.signal(signal.SIGINT, first)
    except ValueError:  # not the main thread (main() called from a thread): Ctrl-C keeps its meaning
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _cmd_encode(args, say) -> int:
    from .core.pipeline import run_encode

    frames = _FrameBar(args.quiet)
    try:
        report = run_encode(
            args.input,
            args.model,
            args.out,
            points_path=args.points,
            labels_col=args.labels_col,
            edge=args.edge,
            level=args.level,
            say=say,
            engine=_engine(args),
            on_frame=frames,
        )
    finally:
        frames.close()
    say(f"Encoded {report['n_patches']} patches in {report['seconds']['encode']:.1f} s. Results in {args.out}")
    return 0


def _detect_options(args) -> dict:
    """``detect_atoms``'s keyword arguments from the detect options."""
    return {
        "sigma": args.sigma,
        "min_distance": args.min_distance,
        "threshold": args.threshold,
        "dark": args.dark,
        "margin": args.margin,
        "refine": not args.no_refine,
    }


def _cmd_detect(args, say) -> int:
    from pathlib import Path

    from .core.pipeline import is_single_image, layout_statement, open_scans

    engine = _engine(args)
    scans = open_scans(args.input, None, engine)
    if is_single_image(scans):
        found = _detect_image(Path(args.input[0]), args, say)
    else:
        say(layout_statement(scans))
        found = _detect_movie(scans, args, engine, say)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from .core.points_io import write_csv_atomic

    write_csv_atomic(found, out)
    if len(found) == 0:
        say("No features found: try a lower --threshold, another --sigma, or --dark for dark features.")
    else:
        say(f"Found {len(found)} features; wrote {out}")
    return 0


def _detect_image(path, args, say):
    """One 2-D image's features: y, x, the calibrated columns, strength (today's table)."""
    import pandas as pd

    from .core.detect import detect_atoms
    from .core.image import as_image2d
    from .core.level import level_image
    from .core.points_io import calibrated_columns
    from .core.readers import read_first_image

    data, notes = read_first_image(path)
    image, img_notes = as_image2d(data.data, name=f"image {path.name}")
    for note in notes + img_notes:
        say(note)
    found = detect_atoms(level_image(image, args.level or "none"), **_detect_options(args))
    pixel_size = float(data.scale[-1]) if data.scale and data.unit else None
    found = found.reset_index(drop=True)
    calibrated = calibrated_columns(found[["y", "x"]], pixel_size, data.unit) if pixel_size else None
    return pd.concat([found[["y", "x"]], calibrated, found.drop(columns=["y", "x"])], axis=1)


def _detect_movie(scans, args, engine, say):
    """Every frame's features: file (several inputs), frame, then the columns of one image's table."""
    import pandas as pd

    from .core.movie import detect_frames
    from .core.pipeline import engine_client
    from .core.points_io import calibrated_columns

    for note in scans.notes:
        say(note)
    with engine_client(engine) as client:
        atoms = detect_frames(scans, _detect_options(args), client=client, tile=engine.tile, level=args.level or "none")
    parts = []
    for s, src in enumerate(scans.sources):
        found = atoms[atoms["source"] == s].reset_index(drop=True)
        cal = calibrated_columns(found[["y", "x"]], src.pixel_size, src.unit) if src.pixel_size else None
        table = pd.concat([found[["frame", "y", "x"]], cal, found[["strength"]]], axis=1)
        if len(scans.sources) > 1:
            table.insert(0, "file", src.name)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def _cmd_sample(args, say) -> int:
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from .core.points_io import write_csv_atomic
    from .core.readers import write_tiff
    from .core.synthetic import make_lattice, make_rotated_digits

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.name == "lattice":
        lat = make_lattice(seed=args.seed)
        write_tiff(out / "lattice.tif", lat.image, pixel_size=lat.pixel_size, unit=lat.unit)
        truth = pd.DataFrame(
            {
                "y": lat.points[:, 0],
                "x": lat.points[:, 1],
                "angle_true": lat.angle_deg,
                "grain": lat.grain,
                "species": lat.species,
            }
        )
        write_csv_atomic(truth, out / "lattice_points.csv")
        say(
            f"Wrote {out / 'lattice.tif'} ({lat.image.shape[0]} x {lat.image.shape[1]}, {lat.pixel_size} {lat.unit}/px) "
            f"and {out / 'lattice_points.csv'} ({len(truth)} atoms with their true grain angles)."
        )
    elif args.name == "stm":
        _write_stm_sample(out, say)
    elif args.name == "movie":
        _write_movie_sample(out, args.seed, say)
    else:
        patches, angles, digits = make_rotated_digits(seed=args.seed)
        np.save(out / "digits.npy", patches)
        write_csv_atomic(
            pd.DataFrame({"index": np.arange(len(patches)), "angle_true": angles, "digit": digits}),
            out / "digits_truth.csv",
        )
        say(f"Wrote {out / 'digits.npy'} ({patches.shape[0]} patches of {patches.shape[1]} px) and digits_truth.csv.")
    return 0


# The movie sample: small enough to train on in about a minute, turns large enough to see.
_MOVIE_FRAMES, _MOVIE_SHAPE = 8, (256, 256)
_MOVIE_GRAINS = ((64.0, 64.0, 0.0, 2.0), (200.0, 90.0, 30.0, -1.5), (120.0, 200.0, -55.0, 1.0))


def _write_movie_sample(out, seed: int, say) -> None:
    """A synthetic movie as a calibrated (T, Y, X) TIFF and its true atoms (frame, y, x, angle, grain)."""
    import numpy as np
    import pandas as pd

    from .core.points_io import write_csv_atomic
    from .core.readers import write_tiff
    from .core.synthetic import make_movie

    movie = make_movie(_MOVIE_FRAMES, _MOVIE_SHAPE, grains=_MOVIE_GRAINS, boundary_velocity=(0.0, 2.0), seed=seed)
    frames = [movie.frame(t) for t in range(_MOVIE_FRAMES)]
    first = frames[0]
    write_tiff(out / "movie.tif", np.stack([f.image for f in frames]), pixel_size=first.pixel_size, unit=first.unit)
    truth = pd.concat(
        pd.DataFrame(
            {"frame": t, "y": f.points[:, 0], "x": f.points[:, 1], "angle_true": f.angle_deg, "grain": f.grain}
        )
        for t, f in enumerate(frames)
    )
    write_csv_atomic(truth, out / "movie_points.csv")
    say(
        f"Wrote {out / 'movie.tif'} ({_MOVIE_FRAMES} frames of {_MOVIE_SHAPE[0]} x {_MOVIE_SHAPE[1]}: three grains "
        f"turning at +2, -1.5 and +1 deg a frame, one boundary moving) and {out / 'movie_points.csv'} "
        f"({len(truth)} atoms with their frame and true angle)."
    )


def _write_stm_sample(out, say) -> None:
    """The bundled STM image as a TIFF (heights in nm, pixels uncalibrated) and its licence notice."""
    import shutil

    from .core.readers import write_tiff
    from .core.stm_sample import STM_NOTICE_FILE, STM_Z_UNIT, stm_notice_path, stm_sample_image

    image = stm_sample_image()
    write_tiff(out / "stm.tif", image)
    shutil.copyfile(stm_notice_path(), out / STM_NOTICE_FILE)
    say(
        f"Wrote {out / 'stm.tif'} ({image.shape[0]} x {image.shape[1]} px, heights in {STM_Z_UNIT}; the file has no "
        f"lateral calibration) and its licence notice {out / STM_NOTICE_FILE} (SPIEPy, BSD-2-Clause)."
    )


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)

    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr)

    from .core.errors import InputError

    try:
        return {"train": _cmd_train, "encode": _cmd_encode, "detect": _cmd_detect, "sample": _cmd_sample}[args.command](
            args, say
        )
    except InputError as exc:
        print(f"napari-rvae: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(ABORTED, file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
