"""``unet-cells finetune``: fine-tune a U-Net on annotated TIFFs and save the model file."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..core.errors import UNetCellsError
from ._common import new_output, numbered, read_tiffs


def add_finetune(sub) -> None:
    """Declare ``unet-cells finetune`` on the ``sub`` parsers.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The ``unet-cells`` subparsers; ``run_finetune`` is set as the command's ``run``.
    """
    p = sub.add_parser(
        "finetune",
        help="fine-tune a U-Net on annotated images and save the model file",
        description="Trains with the paper's recipe (weighted cross-entropy, elastic "
        "deformation) on image/label TIFF pairs; a strip of each image is held out for "
        "validation unless --val-image is given. A 0/1 or 0/255 mask is numbered by "
        "connected components. Ctrl-C stops and keeps the model so far. The output must be "
        "a new file in an existing folder (models are never replaced).",
    )
    p.add_argument("--image", type=Path, action="append", required=True, help="image (.tif)")
    p.add_argument(
        "--labels", type=Path, action="append", required=True, help="instance labels (.tif)"
    )
    p.add_argument(
        "--ignore", type=Path, action="append", help="mask of unannotated pixels, one per image"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="model file to write (.npz)")
    p.add_argument(
        "--model", help="model file to start from (default: the bundled model, else scratch)"
    )
    p.add_argument("--scratch", action="store_true", help="start from a new random network")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="optimiser steps (default 500)")
    budget.add_argument("--minutes", type=float, help="wall-time budget in minutes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=int, help="tiles per step (default 4)")
    p.add_argument("--tile", type=int, help="network input tile size in px (default auto)")
    p.add_argument("--lr", type=float, help="peak learning rate (default by optimiser)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), help="default adam; sgd = paper")
    p.add_argument("--preset", choices=("paper", "fiji"), help="weight map preset")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--val-image", type=Path, action="append", help="validation image (.tif)")
    p.add_argument("--val-labels", type=Path, action="append", help="validation labels (.tif)")
    p.set_defaults(run=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    """Check the options, read the data, train with a progress bar and report.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``finetune`` options (see ``unet-cells finetune --help``).

    Returns
    -------
    int
        0 once the model file is written.
    """
    _check_args(args)
    config = _train_config(args)
    samples, val = _read_samples(args)
    result = _train(args, samples, val, config)
    _saved_or_rescued(result, args.output)
    _report(result)
    print(f"wrote {args.output}")
    return 0


def _check_args(args: argparse.Namespace) -> None:
    """Refuse inconsistent options and an unusable output before reading anything."""
    new_output(
        args.output,
        "the model",
        inputs=(*args.image, *args.labels),
        hint="choose another file name (models are never replaced)",
    )
    if args.ignore and len(args.ignore) != len(args.image):
        raise UNetCellsError(
            f"Got {len(args.ignore)} --ignore mask(s) for {len(args.image)} --image file(s): "
            "give one per image, in the same order, or none."
        )
    if bool(args.val_image) != bool(args.val_labels):
        raise UNetCellsError(
            "Give --val-image and --val-labels together (one labels file per validation "
            "image), or neither."
        )
    if args.scratch and args.model:
        raise UNetCellsError("Use either --model or --scratch, not both.")


def _train_config(args: argparse.Namespace):
    """TrainConfig defaults with the options given on the command line."""
    from ..core.config import TrainConfig, WeightMapConfig

    overrides = {
        "batch_size": args.batch_size,
        "tile": args.tile,
        "learning_rate": args.lr,
        "optimizer": args.optimizer,
        "seed": args.seed,
    }
    config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    if args.steps is not None or args.minutes is not None:
        config = dataclasses.replace(config, steps=args.steps, minutes=args.minutes)
    if args.preset:
        config = dataclasses.replace(config, weight_map=WeightMapConfig.preset(args.preset))
    return config


def _read_samples(args: argparse.Namespace):
    """(training samples, validation samples or None) from the TIFF files."""
    from ..core.data import as_samples

    labels = read_tiffs(args.labels, "labels")
    samples = as_samples(
        read_tiffs(args.image, "image"),
        [numbered(a, p.name) for a, p in zip(labels, args.labels, strict=True)],
        read_tiffs(args.ignore, "ignore mask") or None,
        names=[p.name for p in args.image],
    )
    if not args.val_image:
        return samples, None
    val = as_samples(
        read_tiffs(args.val_image, "validation image"),
        read_tiffs(args.val_labels, "validation labels"),
        names=[p.name for p in args.val_image],
    )
    return samples, val


def _train(args: argparse.Namespace, samples, val, config):
    """Run training with a progress bar; the first Ctrl-C stops after the current step
    (the model so far is kept), a second one aborts. Out of memory becomes one line."""
    import signal
    import threading

    from ..core.train import run, train_iter

    stop = threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step (Ctrl-C again to abort) ...", file=sys.stderr)

    model = "scratch" if args.scratch else args.model
    bar = _ProgressBar()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        gen = train_iter(
            samples,
            model,
            config,
            val_samples=val,
            device=args.device,
            stop=stop,
            save_to=args.output,
        )
        return run(gen, bar.update)
    except Exception as err:
        from ..core.predict import is_out_of_memory

        if not is_out_of_memory(err):
            raise
        first_line = (str(err).splitlines() or ["out of memory"])[0]
        raise UNetCellsError(
            f"Training ran out of memory ({first_line}); nothing was saved. "
            "Lower --batch-size or --tile, or use --device cpu, then train again."
        ) from None
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()


def _report(result) -> None:
    """Steps, why training ended, the best validation figures and chosen settings."""
    print(f"training: {result.steps} steps in {result.elapsed_s:.0f} s, ended: {result.ended}")
    m = result.best_metrics
    if m:
        print(
            f"validation (kept model, step {result.best_step}): AP50 {m['ap50']:.3f}, foreground "
            f"IoU {m['fg_iou']:.3f}, loss {m['loss']:.4f}, {int(m['n_true'])} cells"
        )
        start = result.start_metrics
        if start is not None:
            print(f"validation of the start model (step 0): AP50 {start['ap50']:.3f}")
    else:
        print("validation: none (no held-out region; give --val-image for one)")
    tuning = result.model.provenance.get("instance_tuning")
    if tuning:  # the AP50 above is the one with these settings
        c = tuning["chosen"]
        print(
            f"post-processing chosen on the validation data (and used above): threshold "
            f"{c['threshold']}, seeds {c['seed_threshold'] or 'none'}, min size "
            f"{c['min_size']} px, min confidence {c['min_confidence']}"
        )
    elif m:
        print(
            f"post-processing: the start model's, kept ({int(m['n_true'])} validation cells "
            "are too few to choose other settings on)"
        )


def _saved_or_rescued(result, out: Path) -> None:
    """Nothing trained: an error. Saving failed at the end: save to a temporary folder
    instead and say where (a trained model is never lost), then an error."""
    import tempfile
    import time

    from ..core.checkpoint import save_model

    if not result.trained:
        raise UNetCellsError(
            f"No training step was made ({result.ended} before the first step); nothing "
            "was written: give more --minutes or --steps."
        )
    if result.save_error is None:
        return
    rescue = Path(tempfile.gettempdir()) / f"{out.stem}-{time.strftime('%Y%m%d-%H%M%S')}.npz"
    try:
        save_model(result.model, rescue)
    except OSError as err:
        raise UNetCellsError(
            f"Could not save the trained model ({result.save_error}; {rescue}: "
            f"{err.strerror}); free some disk space and train again."
        ) from None
    raise UNetCellsError(
        f"Could not write {out} ({result.save_error}); the trained model was saved to "
        f"{rescue} instead: move it where you want it."
    )


class _ProgressBar:
    """One self-updating line on stderr: steps, loss, validation AP50, time left."""

    def __init__(self, width: int = 24):
        self.width = width
        self.last = 0.0
        self.ap = None
        self.shown = False

    def update(self, event) -> None:
        import time

        if event.kind == "start":
            print(event.message, file=sys.stderr)
            return
        if event.kind == "validation" and event.metrics:
            self.ap = event.metrics["ap50"]
        now = time.monotonic()
        if event.kind == "step" and now - self.last < 0.2 and event.progress < 1:
            return
        self.last = now
        done = int(self.width * event.progress)
        total = f"/{event.total_steps}" if event.total_steps else ""
        parts = [f"[{'#' * done}{'.' * (self.width - done)}] step {event.step}{total}"]
        if event.loss is not None:
            parts.append(f"loss {event.loss:.4f}")
        if self.ap is not None:
            parts.append(f"val AP50 {self.ap:.3f}")
        if event.eta_s is not None:
            parts.append(f"{int(event.eta_s) // 60}m{int(event.eta_s) % 60:02d}s left")
        sys.stderr.write("\r" + "  ".join(parts) + "   ")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
