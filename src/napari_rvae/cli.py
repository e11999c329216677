"""``napari-rvae``: the headless command line (a public contract; extend, don't rename).

    napari-rvae train INPUT --out DIR [--points POINTS.csv] [--model rvae|vae|crvae|jrvae|ssrvae] ...
    napari-rvae encode INPUT --model DIR/model.pt --out DIR2 [--points POINTS.csv]
    napari-rvae detect IMAGE --out POINTS.csv [--sigma PX] [--min-distance PX] [--threshold REL] [--dark] [--no-refine]

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

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    return value


def _symmetry(text: str):
    """``auto`` or one of 1, 2, 3, 4, 6."""
    if text.strip().lower() == "auto":
        return "auto"
    if text.strip() in ("1", "2", "3", "4", "6"):
        return int(text)
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from auto, 1, 2, 3, 4, 6)")


def _class_window(text: str):
    """``auto``, ``full`` (None) or a whole number of pixels."""
    word = text.strip().lower()
    if word in ("auto", "full"):
        return None if word == "full" else "auto"
    try:
        return int(word)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, full or a whole number of pixels") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-rvae", description="Rotationally invariant VAEs for atom-resolved images.")
    p.add_argument("--version", action="version", version=f"napari-rvae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,encode,detect,sample}")

    def common(sp):
        sp.add_argument("input", metavar="INPUT", help="2-D image (TIFF, PNG, .npy, microscopy formats) or an (N, P, P) patch stack")
        sp.add_argument("--points", metavar="POINTS.csv", help="atom positions: columns y,x in pixels (or napari's Points CSV)")
        sp.add_argument("--edge", choices=["drop", "reflect", "constant", "nearest"], default=None,
                        help="points whose patch leaves the image: drop them (default, reported) or pad")
        sp.add_argument("--quiet", action="store_true", help="no progress output")

    t = sub.add_parser("train", help="train a model and encode every patch")
    common(t)
    t.add_argument("--out", required=True, metavar="DIR", help="output folder (model.pt, points.csv, report.json)")
    t.add_argument("--model", default="rvae", choices=["rvae", "vae", "crvae", "jrvae", "ssrvae"])
    t.add_argument("--patch-size", type=_positive_int, default=32)
    t.add_argument("--latent-dim", type=_positive_int, default=2)
    t.add_argument("--translation", action=argparse.BooleanOptionalAction, default=True,
                   help="infer a sub-pixel shift per patch (default on)")
    t.add_argument("--epochs", type=_positive_int, default=50)
    t.add_argument("--batch-size", type=_positive_int, default=100)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--hidden-dim", type=_positive_int, default=128)
    t.add_argument("--hidden-layers", type=_positive_int, default=2)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch")
    t.add_argument("--labels-col", default="label", help="points column holding classes (crvae, ssrvae)")
    t.add_argument("--classes", type=_positive_int, default=0, help="number of classes (jrvae; crvae/ssrvae infer it)")
    t.add_argument("--symmetry", type=_symmetry, default="auto", metavar="{auto,1,2,3,4,6}",
                   help="n-fold rotational symmetry of the patches; angles are reported modulo 360/n. "
                        "auto (default): estimated from the patches (report.json: symmetry)")
    t.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian"])
    t.add_argument("--angle-prior", type=float, default=0.0,
                   help="0 (default): no prior on the angle; patches are aligned first (see --align, --rotation-range); "
                        ">0, e.g. 2: the reference rVAE's prior tying each angle near 0, without alignment")
    t.add_argument("--align", default="auto", choices=["auto", "sync", "none"],
                   help="coarse angles by angular synchronisation before the rVAE: auto = with --angle-prior 0")
    t.add_argument("--class-window", type=_class_window, default="auto", metavar="{auto,full,PX}",
                   help="class models: the central square (pixels) whose similarity finds the classes; auto "
                        "(default): 4/3 of the atom spacing (the column, not its neighbours); full: the whole patch")
    t.add_argument("--rotation-range", default="auto", choices=["auto", "full", "limited"],
                   help="with alignment: limited = within +/-90 deg (/ symmetry) of a common upright, angles measured "
                        "from the mean pose of similar patches; full = any size, zero arbitrary per shape; "
                        "auto (default) tests which holds for 1-fold content, full with --symmetry > 1 "
                        "(report.json: alignment)")

    e = sub.add_parser("encode", help="encode patches with a trained model")
    common(e)
    e.add_argument("--model", required=True, metavar="MODEL", help="a model.pt written by 'train'")
    e.add_argument("--out", required=True, metavar="DIR2")
    e.add_argument("--labels-col", default=None, help="class column (crvae models only)")

    d = sub.add_parser("detect", help="find atoms (bright or dark features) in an image")
    d.add_argument("input", metavar="IMAGE")
    d.add_argument("--out", required=True, metavar="POINTS.csv")
    d.add_argument("--sigma", type=float, default=None, help="feature size in px (default: estimated from the image)")
    d.add_argument("--min-distance", type=float, default=None, help="minimum distance between features in px")
    d.add_argument("--threshold", type=float, default=0.1, help="relative to the image's contrast, 0..1")
    d.add_argument("--dark", action="store_true", help="find dark features instead of bright ones")
    d.add_argument("--margin", type=float, default=0, help="ignore features this close to the border (px)")
    d.add_argument("--no-refine", action="store_true", help="skip sub-pixel refinement")
    d.add_argument("--quiet", action="store_true")

    s = sub.add_parser("sample", help="write the bundled example data (generated, no download)")
    s.add_argument("name", choices=["lattice", "digits"], help="lattice: synthetic polycrystal; digits: rotated digits stack")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")
    return p


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

            self.bar = tqdm(total=progress.epochs * progress.steps_per_epoch, unit="step", file=sys.stderr,
                            dynamic_ncols=True, leave=True, mininterval=0.5, disable=None)
        done = (progress.epoch - 1) * progress.steps_per_epoch + progress.step
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(f"epoch {progress.epoch}/{progress.epochs} loss {progress.loss:.4g}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _cmd_train(args, say) -> int:
    from .core.config import KINDS, ModelConfig, TrainConfig
    from .core.pipeline import run_train

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
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device, threads=args.threads,
        class_window=args.class_window,
    )
    bar = _ProgressBar(args.quiet)
    stop = threading.Event()
    try:
        with _first_interrupt_stops(stop, say):
            report = run_train(
                args.input, args.out, model_config=model_config, train_config=train_config, points_path=args.points,
                labels_col=args.labels_col, edge=args.edge or "drop", on_progress=bar, say=say, stop=stop,
            )
    finally:
        bar.close()
    sym = report["symmetry"]
    if sym.get("source") == "estimated":
        say(f"Symmetry: {sym['chosen']}-fold, estimated from the patches. {sym['reason']} "
            "Choose another with --symmetry.")
    loss = "no epoch finished" if report["final_loss"] is None else f"final loss {report['final_loss']:.4g}"
    how = "stopped early after" if report["stopped_early"] else "for"
    say(
        f"Trained {args.model} on {report['n_patches']} patches {how} {report['epochs_run']:.3g} epochs on "
        f"{report['device']} in {report['seconds']['train']:.1f} s ({report['patches_per_second']:.0f} patches/s); "
        f"{loss}. Results in {args.out}"
    )
    return 0


@contextlib.contextmanager
def _first_interrupt_stops(stop: threading.Event, say):
    """The first Ctrl-C sets ``stop`` (training ends after this step, results are written);
    the second raises KeyboardInterrupt as usual (the run is aborted, nothing is written)."""

    def first(signum, frame):
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

    report = run_encode(args.input, args.model, args.out, points_path=args.points, labels_col=args.labels_col,
                        edge=args.edge, say=say)
    say(f"Encoded {report['n_patches']} patches in {report['seconds']['encode']:.1f} s. Results in {args.out}")
    return 0


def _cmd_detect(args, say) -> int:
    from pathlib import Path

    from .core.detect import detect_atoms
    from .core.image import as_image2d
    from .core.points_io import write_csv_atomic
    from .core.readers import read_first_image

    data, notes = read_first_image(Path(args.input))
    image, img_notes = as_image2d(data.data, name=f"image {Path(args.input).name}")
    for note in notes + img_notes:
        say(note)
    found = detect_atoms(image, sigma=args.sigma, min_distance=args.min_distance, threshold=args.threshold,
                         dark=args.dark, margin=args.margin, refine=not args.no_refine)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(found, out)
    if len(found) == 0:
        say("No features found: try a lower --threshold, another --sigma, or --dark for dark features.")
    else:
        say(f"Found {len(found)} features; wrote {out}")
    return 0


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
            {"y": lat.points[:, 0], "x": lat.points[:, 1], "angle_true": lat.angle_deg, "grain": lat.grain, "species": lat.species}
        )
        write_csv_atomic(truth, out / "lattice_points.csv")
        say(f"Wrote {out / 'lattice.tif'} ({lat.image.shape[0]} x {lat.image.shape[1]}, {lat.pixel_size} {lat.unit}/px) "
            f"and {out / 'lattice_points.csv'} ({len(truth)} atoms with their true grain angles).")
    else:
        patches, angles, digits = make_rotated_digits(seed=args.seed)
        np.save(out / "digits.npy", patches)
        write_csv_atomic(pd.DataFrame({"index": np.arange(len(patches)), "angle_true": angles, "digit": digits}),
                         out / "digits_truth.csv")
        say(f"Wrote {out / 'digits.npy'} ({patches.shape[0]} patches of {patches.shape[1]} px) and digits_truth.csv.")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)

    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr)

    from .core.errors import InputError

    try:
        return {"train": _cmd_train, "encode": _cmd_encode, "detect": _cmd_detect, "sample": _cmd_sample}[args.command](args, say)
    except InputError as exc:
        print(f"napari-rvae: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("napari-rvae: aborted; nothing was written.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
