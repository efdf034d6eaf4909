"""The ``unet-cells`` command: subcommands over the same core functions the docks use.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its
arguments and ``_run_<name>(args)`` does the work. Errors a user can fix are printed as
one line and give exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
from pathlib import Path

from ._version import __version__
from .core.errors import UNetCellsError

logger = logging.getLogger("napari_unet_cells")


# -- demo --------------------------------------------------------------------------------

DEMO_DOCKS = ("Annotate", "Weight Map", "Fine-tune", "Predict")  # tabs; the last in front


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="open napari with the plugin's docks and its synthetic sample data"
    )
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    try:
        import napari
    except ImportError:
        raise UNetCellsError(
            'napari is not installed: pip install "napari[pyqt6]" (or napari with another '
            "Qt binding), then run unet-cells demo again."
        ) from None
    _check_display()
    try:
        viewer = napari.Viewer(title="U-Net Cells demo")
    except ImportError as err:  # napari without a Qt binding
        raise UNetCellsError(
            f"napari cannot open a window ({err}). Install a Qt binding: "
            'pip install "napari[pyqt6]", then run unet-cells demo again.'
        ) from None
    viewer.open_sample("napari-unet-cells", "synthetic_nuclei")
    setup_demo(viewer)
    napari.run()
    return 0


def _check_display() -> None:
    """On Linux without a display, say so (Qt would abort with a misleading message
    about xcb libraries)."""
    import os

    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UNetCellsError(
            "No display: unet-cells demo opens a napari window. Run it in a desktop "
            "session (or ssh -X), or under a virtual display: xvfb-run -a unet-cells demo."
        )


def setup_demo(viewer) -> None:
    """The demo's window: the four docks as tabs (Predict in front), the image selected
    and fitted to the canvas that is left once the docks are in."""
    from qtpy.QtWidgets import QApplication

    image = viewer.layers["synthetic nuclei"]
    viewer.layers["synthetic nuclei ground truth"].visible = False  # the image first
    docks = [
        viewer.window.add_plugin_dock_widget("napari-unet-cells", name, tabify=True)[0]
        for name in DEMO_DOCKS
    ]
    docks[-1].raise_()  # Predict in front: one click of Run segments the sample
    viewer.layers.selection.active = image  # not the hidden ground truth
    QApplication.processEvents()  # the docks take their width before the view is fitted
    viewer.reset_view()


# -- synthetic ---------------------------------------------------------------------------


def _add_synthetic(sub) -> None:
    p = sub.add_parser(
        "synthetic", help="write a synthetic nuclei image and its labels as TIFF files"
    )
    p.add_argument("output", type=Path, help="image file to write (.tif); labels go beside it")
    p.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("Y", "X"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("uint16", "uint8", "float32"), default="uint16")
    p.set_defaults(run=_run_synthetic)


def _run_synthetic(args: argparse.Namespace) -> int:
    import tifffile

    from .core.synthetic import SyntheticConfig, synthetic_cells

    output = args.output
    labels_path = output.with_name(output.stem + "_labels" + (output.suffix or ".tif"))
    if not output.parent.is_dir():
        raise UNetCellsError(f"The folder {output.parent} does not exist; create it first.")
    existing = [str(p) for p in (output, labels_path) if p.exists()]
    if existing:
        raise UNetCellsError(
            f"{', '.join(existing)} already exist(s); choose another output name "
            "(files are never overwritten)."
        )
    image, labels = synthetic_cells(
        tuple(args.size), seed=args.seed, config=SyntheticConfig(dtype=args.dtype)
    )
    from .core.fileio import atomic_write

    atomic_write(output, lambda handle: tifffile.imwrite(handle, image))
    atomic_write(labels_path, lambda handle: tifffile.imwrite(handle, labels))
    print(
        f"wrote {output} ({image.shape[0]}x{image.shape[1]} {image.dtype}) and "
        f"{labels_path} ({int(labels.max())} cells)"
    )
    return 0


# -- info --------------------------------------------------------------------------------


def _add_info(sub) -> None:
    p = sub.add_parser(
        "info",
        help="what a model file contains, and which device prediction would use here",
    )
    p.add_argument(
        "model", type=Path, nargs="?", help="a model file (.npz); default: the bundled model"
    )
    p.add_argument("--json", action="store_true", help="print the file's whole header as JSON")
    p.set_defaults(run=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from .core.checkpoint import read_model_info
    from .core.registry import bundled_model_path

    path = args.model or bundled_model_path()
    if path is None:
        raise UNetCellsError(
            "No model file given and the bundled model is missing from this installation; "
            "give a model file, or reinstall napari-unet-cells."
        )
    meta = read_model_info(path)
    if args.json:
        meta.pop("tensors", None)
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    print(_model_summary(Path(path), meta, bundled=args.model is None))
    print(_device_summary())
    return 0


def _model_summary(path: Path, meta: dict, bundled: bool) -> str:
    """A few readable lines about a model file's header (``--json`` shows all of it)."""
    cfg = meta.get("model_config", {})
    params = sum(math.prod(t["shape"]) for t in meta.get("tensors", {}).values())
    norm = meta.get("normalization", {})
    prov = meta.get("provenance", {})
    lines = [
        f"model:      {path.name}{' (bundled)' if bundled else ''}, "
        f"{path.stat().st_size / 2**20:.1f} MiB, {params:,} parameters",
        f"network:    U-Net, base {cfg.get('base')}, depth {cfg.get('depth')}, "
        f"{cfg.get('padding')} convolutions, {cfg.get('in_channels')} input channel(s), "
        f"classes {', '.join(meta.get('classes', []))}",
        f"input:      percentiles {norm.get('p_low')} and {norm.get('p_high')} of each image "
        "map to 0 and 1",
    ]
    diameter = meta.get("extra", {}).get("diameter")
    lines.append(
        f"cell size:  trained around nuclei of {diameter:g} px; images are resampled to it "
        "(--diameter)"
        if diameter
        else "cell size:  not recorded (images are predicted at their own scale)"
    )
    rec = meta.get("extra", {}).get("instances")
    if rec:
        lines.append(
            f"cells:      threshold {rec.get('threshold')}, "
            f"{_seeds(rec.get('seed_threshold'))}, min size {rec.get('min_size')} px, "
            f"min confidence {rec.get('min_confidence')} (the model's recommendation)"
        )
    if prov.get("saved"):
        origin = f", fine-tuned from {prov['trained_from']}" if prov.get("trained_from") else ""
        lines.append(f"saved:      {prov['saved']}{origin}")
    if prov.get("data"):
        lines.append(f"data:       {prov['data']}")
    images = (prov.get("training") or {}).get("data")
    if isinstance(images, list) and images:  # a fine-tuned model: its training images
        cells = sum(int(item.get("cells", 0)) for item in images)
        names = ", ".join(str(item.get("name", "?")) for item in images[:3])
        more = f" and {len(images) - 3} more" if len(images) > 3 else ""
        lines.append(f"data:       {len(images)} image(s), {cells} cells ({names}{more})")
    ap50 = (prov.get("validation") or {}).get("ap50")  # None when nothing was validated
    if ap50 is not None:
        lines.append(f"validation: AP50 {ap50:.3f} on its validation images")
    lines.append("(all of the header: unet-cells info --json)")
    return "\n".join(lines)


def _seeds(seed_threshold) -> str:
    return "no seeds" if seed_threshold is None else f"seeds at {seed_threshold}"


def _device_summary() -> str:
    """Which device ``device="auto"`` picks here, and why a GPU may be missing."""
    import torch

    from .core.device import available_devices, resolve_device

    device = resolve_device("auto")
    line = f"device:     auto -> {device} (PyTorch {torch.__version__}; "
    line += f"available: {', '.join(available_devices())})"
    if device.type == "cpu" and torch.version.cuda is None:
        line += (
            "\n            this PyTorch is a CPU-only build: for an NVIDIA GPU install the "
            "CUDA build from pytorch.org"
        )
    return line


# -- weightmap ---------------------------------------------------------------------------


def _add_weightmap(sub) -> None:
    p = sub.add_parser(
        "weightmap",
        help="write the paper's loss weight map (eq. 2) of an instance label image",
        description="Weights (float32 TIFF, same shape as the labels; 3D stacks plane by "
        "plane): class balance + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) on background.",
    )
    p.add_argument("labels", type=Path, help="instance labels (.tif): 0 background, k > 0 cell")
    p.add_argument("-o", "--output", type=Path, required=True, help="weight map to write (.tif)")
    p.add_argument("--preset", choices=("paper", "fiji"), default="paper")
    p.add_argument("--w0", type=float, help="border weight (paper 10, fiji 50)")
    p.add_argument("--sigma", type=float, help="border width in pixels (paper 5, fiji 6)")
    p.add_argument("--border-width", type=int, help="pixels carved on each side (default 1)")
    p.add_argument(
        "--no-class-balance", action="store_true", help="w_c = 1 instead of class balancing"
    )
    p.add_argument("--ignore", type=Path, help="mask (.tif) of pixels to ignore (weight 0)")
    p.add_argument("--target", type=Path, help="also write the training target (.tif, uint8)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(run=_run_weightmap)


def _run_weightmap(args: argparse.Namespace) -> int:
    import dataclasses

    import tifffile

    from .core.config import WeightMapConfig
    from .core.fileio import check_writable
    from .core.weightmap import iter_weight_map

    def read(path: Path, what: str):
        if not path.is_file():
            raise UNetCellsError(f"The {what} file {path} does not exist; check the path.")
        try:
            return tifffile.imread(path)
        except Exception as err:  # tifffile raises many types for bad files
            raise UNetCellsError(
                f"Cannot read {path} as a TIFF image ({err}); is the file complete? Save it "
                "again as TIFF."
            ) from None

    outputs = [args.output] + ([args.target] if args.target else [])
    for out in outputs:
        inputs = [args.labels] + ([args.ignore] if args.ignore else [])
        if any(out.resolve() == p.resolve() for p in inputs):
            raise UNetCellsError(f"{out} is an input file; write the result to a new file.")
        if not out.parent.is_dir():
            raise UNetCellsError(f"The folder {out.parent} does not exist; create it first.")
        if out.exists() and not args.overwrite:
            raise UNetCellsError(
                f"{out} already exists; choose another name or pass --overwrite to replace it."
            )
        check_writable(out, "the weight map")
    overrides = {
        "w0": args.w0,
        "sigma": args.sigma,
        "border_width": args.border_width,
        "class_balance": False if args.no_class_balance else None,
    }
    config = WeightMapConfig.preset(args.preset)
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    labels = _numbered(read(args.labels, "labels"), args.labels.name)
    ignore = read(args.ignore, "ignore mask") if args.ignore else None
    gen = iter_weight_map(labels, ignore, config)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            state = stop.value
            break
        logger.info("%s", event.message)
    from .core.fileio import atomic_write

    with _write_errors(args.output):
        atomic_write(args.output, lambda handle: tifffile.imwrite(handle, state.weights))
    if args.target:
        with _write_errors(args.target):
            atomic_write(args.target, lambda handle: tifffile.imwrite(handle, state.target))
    weights = state.weights
    print(
        f"wrote {args.output} ({'x'.join(map(str, weights.shape))} float32, weights "
        f"{float(weights.min()):.3g}..{float(weights.max()):.3g}, preset {args.preset})"
        + (f" and {args.target}" if args.target else "")
    )
    return 0


# -- finetune ----------------------------------------------------------------------------


def _add_finetune(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a U-Net on annotated images and save the model file",
        description="Trains with the paper's recipe (weighted cross-entropy, elastic "
        "deformation) on image/label TIFF pairs; a strip of each image is held out for "
        "validation unless --val-image is given. Ctrl-C stops and keeps the best model.",
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
    p.set_defaults(run=_run_finetune)


def _read_tiffs(paths: list[Path] | None, what: str) -> list:
    import tifffile

    out = []
    for path in paths or []:
        if not path.is_file():
            raise UNetCellsError(f"The {what} file {path} does not exist; check the path.")
        try:
            out.append(tifffile.imread(path))
        except Exception as err:  # tifffile raises many types for bad files
            raise UNetCellsError(
                f"Cannot read {path} as a TIFF image ({err}); is the file complete? Save it "
                "again as TIFF."
            ) from None
    return out


def _numbered(labels, name: str):
    """Labels as read, or a 0/1 or 0/255 mask numbered by connected components, saying so."""
    from .core.labels import mask_to_instances

    labels, notice = mask_to_instances(labels, name)
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    return labels


def _run_finetune(args: argparse.Namespace) -> int:
    import dataclasses
    import signal
    import threading

    from .core.config import TrainConfig, WeightMapConfig
    from .core.data import as_samples
    from .core.train import run, train_iter

    out = args.output
    if out.exists():
        raise UNetCellsError(
            f"{out} already exists; choose another file name (models are never replaced)."
        )
    if not out.parent.is_dir():
        raise UNetCellsError(f"The folder {out.parent} does not exist; create it first.")
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
    labels = _read_tiffs(args.labels, "labels")
    samples = as_samples(
        _read_tiffs(args.image, "image"),
        [_numbered(a, p.name) for a, p in zip(labels, args.labels, strict=True)],
        _read_tiffs(args.ignore, "ignore mask") or None,
        names=[p.name for p in args.image],
    )
    val = None
    if args.val_image:
        val = as_samples(
            _read_tiffs(args.val_image, "validation image"),
            _read_tiffs(args.val_labels, "validation labels"),
            names=[p.name for p in args.val_image],
        )
    model = "scratch" if args.scratch else args.model
    stop = threading.Event()

    def on_sigint(signum, frame):  # first Ctrl-C: stop and keep the best model
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step (Ctrl-C again to abort) ...", file=sys.stderr)

    bar = _ProgressBar()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        gen = train_iter(
            samples, model, config, val_samples=val, device=args.device, stop=stop, save_to=out
        )
        result = run(gen, bar.update)
    except Exception as err:
        from .core.predict import is_out_of_memory

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
    _saved_or_rescued(result, out)
    print(
        f"training: {result.steps} steps in {result.elapsed_s:.0f} s, ended by "
        f"{result.stopped_by.replace('_', ' ')}"
    )
    m = result.best_metrics
    if m:
        print(
            f"validation (best, step {result.best_step}): AP50 {m['ap50']:.3f}, foreground "
            f"IoU {m['fg_iou']:.3f}, loss {m['loss']:.4f}, {int(m['n_true'])} cells"
        )
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
    print(f"wrote {out}")
    return 0


def _saved_or_rescued(result, out: Path) -> None:
    """Nothing trained: an error. Saving failed at the end: save to a temporary folder
    instead and say where (a trained model is never lost), then an error."""
    import tempfile
    import time

    from .core.checkpoint import save_model

    if not result.trained:
        raise UNetCellsError(
            f"No training step was made ({result.stopped_by.replace('_', ' ')} before the "
            "first step); nothing was written: give more --minutes or --steps."
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


# -- predict -----------------------------------------------------------------------------


def _probability_or_none(text: str) -> float | None:
    """A probability, or None for 'none' and 0 (as the dock's slider: 0 = no seeds)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text) or None
    except ValueError:
        raise argparse.ArgumentTypeError(f"a probability (0..1) or 'none', got {text!r}") from None


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="segment cells: images (TIFF, zarr/OME-Zarr) in, instance label images out",
        description=(
            "Seamless overlap-tile U-Net prediction. TIFF images are processed in memory "
            "(stacks plane by plane); zarr images chunk by chunk with dask (bounded memory), "
            "optionally on a dask.distributed cluster."
        ),
    )
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help=".tif/.tiff or .zarr")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="OUT",
        help="labels file (.tif/.tiff/.zarr) for one image, or an existing folder "
        "(<name>_cells.<ext> per image); a new .ome.zarr: OME-Zarr with the image and its "
        "labels",
    )
    p.add_argument("--model", type=Path, default=None, help="model file (.npz); default: bundled")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--tile", default="auto", help="network input tile size in px, or auto")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per network call")
    p.add_argument(
        "--threshold", type=float, default=None, help="cell probability (0..1); default: model's"
    )
    p.add_argument(
        "--min-size", type=int, default=None, help="smallest cell kept, px; default: model's"
    )
    p.add_argument(
        "--seed-threshold",
        type=_probability_or_none,
        default=False,
        metavar="P|none",
        help="cells grow from seeds above this probability (separates touching cells); "
        "'none' or 0: plain threshold; default: model's",
    )
    p.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="drop objects whose mean probability is below this (0..1); default: model's",
    )
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (4x slower)")
    p.add_argument(
        "--diameter",
        default="auto",
        metavar="auto|PX|none",
        help="typical cell diameter in px; auto (default): estimated from each image, which is "
        "resampled so its cells appear at the model's size; none: never resample",
    )
    p.add_argument(
        "--channel",
        type=int,
        default=None,
        metavar="N",
        help="segment channel N (from 0) of a multi-channel image; the channel axis comes "
        "from the file's metadata (ImageJ/OME-TIFF), else the first axis",
    )
    p.add_argument(
        "--planes",
        action="store_true",
        help="the leading axes of a TIFF without axes metadata are planes (Z or T), not channels",
    )
    p.add_argument(
        "--probabilities",
        action="store_true",
        help="also write the cell probability (float32) as <labels>_probabilities.<ext>",
    )
    p.add_argument("--chunk", type=int, default=None, help="zarr: chunk size in px (dask)")
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="zarr: run on an existing dask.distributed scheduler, e.g. tcp://host:8786",
    )
    p.add_argument(
        "--ome-labels",
        action="store_true",
        help="OME-Zarr inputs: write the labels into each input's labels/<name> group "
        "(NGFF metadata; the image arrays are not touched) instead of -o",
    )
    p.add_argument("--labels-name", default="cells", help="OME-Zarr labels name (default cells)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an OME-Zarr labels group of that name"
    )
    p.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    import contextlib
    import dataclasses

    from .core.config import PredictConfig
    from .core.instances import instance_defaults
    from .core.predict_large import check_output, file_kind, open_image, predict_file
    from .core.registry import resolve_model
    from .core.scale import parse_diameter

    if args.tile == "auto":
        tile = None
    else:
        try:
            tile = int(args.tile)
        except ValueError:
            raise UNetCellsError(
                f"--tile must be a number of pixels or 'auto', got {args.tile!r}."
            ) from None
    config = PredictConfig(device=args.device, tile=tile, batch_size=args.batch_size, tta=args.tta)
    diameter = parse_diameter(args.diameter)
    # check everything before writing anything
    jobs = []
    ome = _ome_mode(args)  # None, or OME-Zarr labels "into" the inputs / a "new" store
    # an existing .zarr output is a finished result (a folder on disk), not a destination
    is_zarr = ome is None and args.output.suffix.lower() == ".zarr"
    output_is_folder = ome is None and args.output.is_dir() and not is_zarr
    as_folder = ome is None and (len(args.images) > 1 or output_is_folder)
    if as_folder and is_zarr:
        raise UNetCellsError(
            f"With several images, -o must be a folder for the results, not a .zarr store "
            f"({args.output}); give a plain folder."
        )
    if as_folder and not args.output.is_dir():
        raise UNetCellsError(
            f"With several images, -o must be an existing folder; {args.output} is not: "
            "create the folder first (one <name>_cells file per image goes there)."
        )
    layouts = {}
    for image in args.images:
        layouts[image] = _layout(image, open_image(image), args)  # readable, not empty
        if ome is not None:
            jobs.append((image, _ome_target(image, args, ome), None))
            continue
        if as_folder:
            suffix = ".zarr" if file_kind(image) == "zarr" else ".tif"
            out = args.output / f"{image.name.split('.')[0]}_cells{suffix}"
        else:
            out = args.output
        probs = out.with_name(out.name.split(".")[0] + "_probabilities" + out.suffix)
        check_output(out)
        if args.probabilities:
            check_output(probs)
        jobs.append((image, out, probs if args.probabilities else None))
    if ome is None:
        _check_outputs([p for _, out, probs in jobs for p in (out, probs) if p is not None])
    model = resolve_model(args.model)
    chosen = {
        "threshold": args.threshold,
        "min_size": args.min_size,
        "min_confidence": args.min_confidence,
    }
    chosen = {k: v for k, v in chosen.items() if v is not None}
    if args.seed_threshold is not False:  # False: not given; None: no seeds
        chosen["seed_threshold"] = args.seed_threshold
    instances = dataclasses.replace(instance_defaults(model), **chosen)
    client = contextlib.nullcontext()
    if args.scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise UNetCellsError(
                "--scheduler needs dask.distributed: pip install distributed, or leave out "
                "--scheduler to run on this computer."
            ) from None
        try:
            client = Client(args.scheduler, timeout="10s")
        except OSError as err:
            raise UNetCellsError(
                f"Cannot reach the dask scheduler at {args.scheduler} ({err}): check the "
                "address and that the scheduler is running, or leave out --scheduler."
            ) from None
    with client:
        for image, out, probs in jobs:
            channel_axis, description = layouts[image]
            print(f"{image}: {description}")
            with _write_errors(out):
                summary = (predict_file if ome is None else _ome_writer(args, ome))(
                    image,
                    out,
                    model,
                    config,
                    instances,
                    probabilities=probs,
                    chunk=args.chunk,
                    diameter=diameter,
                    **(
                        {"channel_axis": channel_axis, "channel": args.channel}
                        if ome is None
                        else {}
                    ),
                )
            for message in summary.get("messages", ()):
                print(f"{image}: {message}")
            print(f"{image} -> {out}: {summary['cells']} cells")
    return 0


def _layout(path: Path, image, args: argparse.Namespace) -> tuple[int | None, str]:
    """(channel axis, what the image is read as) for one input; ambiguous shapes and
    channel options on chunked (zarr) inputs are refused with the choices."""
    from .core.axes import file_layout
    from .core.predict import describe_layout, guess_channel_axis

    if hasattr(image, "compute"):  # zarr: chunk by chunk, 2-D greyscale
        if args.channel is not None:
            raise UNetCellsError(
                f"--channel works on TIFF inputs; {path} is zarr: write the channel you want "
                "as its own zarr array and give that."
            )
        return None, describe_layout(image.shape, None, None)
    axis = file_layout(path, image.shape, args.channel, args.planes)
    axis = guess_channel_axis(image.shape, 1, None, axis, args.channel)
    if axis is not None and args.channel is not None and args.channel >= image.shape[axis]:
        raise UNetCellsError(
            f"--channel {args.channel} does not exist: {path.name} has {image.shape[axis]} "
            f"channels; choose 0 to {image.shape[axis] - 1}."
        )
    return axis, describe_layout(image.shape, axis, args.channel)


def _check_outputs(paths: list[Path]) -> None:
    """Before any work: no two jobs write the same file, and every folder is writable."""
    from collections import Counter

    from .core.fileio import check_writable

    twice = [str(p) for p, n in Counter(p.resolve() for p in paths).items() if n > 1]
    if twice:
        raise UNetCellsError(
            f"Several images would be written to {twice[0]} (inputs with the same name in "
            "different folders?); predict them into different -o folders, or rename them."
        )
    for path in paths:
        check_writable(path, "the result")


@contextlib.contextmanager
def _write_errors(path: Path):
    """An OS error while writing ``path`` (permissions, a full disk) as one clear line."""
    try:
        yield
    except OSError as err:
        raise UNetCellsError(
            f"Cannot write {path} ({err.strerror or err}); nothing was left half-written: free "
            "some space or choose a folder you can write to, then run again."
        ) from None


def _ome_mode(args: argparse.Namespace) -> str | None:
    """How predict writes OME-Zarr: "into" each input's labels group (--ome-labels), a
    "new" store (-o NAME.ome.zarr), or None (plain files)."""
    new = args.output is not None and args.output.name.lower().endswith(".ome.zarr")
    if args.ome_labels and args.output is not None:
        raise UNetCellsError(
            "--ome-labels writes into each OME-Zarr input's labels/ group: leave out -o (or "
            "drop --ome-labels and give -o cells.ome.zarr for a new store)."
        )
    if not args.ome_labels and args.output is None:
        raise UNetCellsError(
            "Give -o OUT (a labels file, a folder, or a new .ome.zarr), or --ome-labels to "
            "write into the OME-Zarr inputs."
        )
    if not (args.ome_labels or new):
        if args.overwrite:
            raise UNetCellsError(
                "--overwrite only replaces an OME-Zarr labels group (with --ome-labels); other "
                "outputs are never overwritten: choose a new output name."
            )
        return None
    if new and len(args.images) > 1:
        raise UNetCellsError(
            f"-o {args.output} takes one image; for several OME-Zarr images use --ome-labels, "
            "or give a folder as -o."
        )
    if args.probabilities:
        raise UNetCellsError(
            "--probabilities is not written to OME-Zarr; leave it out, or write TIFF/zarr."
        )
    return "into" if args.ome_labels else "new"


def _ome_target(image: Path, args: argparse.Namespace, mode: str) -> Path:
    from .core.interop.omezarr import check_new_store, labels_target

    if mode == "into":
        return labels_target(image, args.labels_name, args.overwrite)
    return check_new_store(args.output)


def _ome_writer(args: argparse.Namespace, mode: str):
    """A function with predict_file's signature that writes OME-Zarr labels."""
    from .core.interop.omezarr import predict_to_ome_zarr

    def write(image, out, model, config, instances, probabilities=None, **kwargs):
        output = out if mode == "new" else None
        return predict_to_ome_zarr(
            image,
            output,
            model,
            config,
            instances,
            name=args.labels_name,
            overwrite=args.overwrite,
            **kwargs,
        )

    return write


# -- export ------------------------------------------------------------------------------


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a model as a bioimage.io package (.zip) for Fiji, ilastik, QuPath, ...",
        description=(
            "Export a model file as a bioimage.io model package: the network as torch "
            "source + weights (and TorchScript), its normalisation, tile-size rule, a test "
            "image and its expected output, a cover and the model card. The package is "
            "tested with bioimageio.core before it is written. Needs the interop extra: "
            "pip install 'napari-unet-cells[interop]'."
        ),
    )
    p.add_argument(
        "model", type=Path, nargs="?", help="model file (.npz); default: the bundled model"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="package to write (.zip)")
    p.add_argument("--name", help="the package's name (default from the file name)")
    p.add_argument("--author", action="append", help="author's name (repeat for several)")
    p.add_argument("--description", help="one or two sentences about the model")
    p.add_argument("--license", default="CC-BY-4.0", help="SPDX licence id (default CC-BY-4.0)")
    p.add_argument(
        "--test-image", type=Path, help="image (.tif) for the package's test; default synthetic"
    )
    p.add_argument("--no-torchscript", action="store_true", help="only pytorch_state_dict")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from .core.interop.bioimageio import export_bioimageio, read_bioimageio_weights
    from .core.registry import bundled_model_path

    model = args.model or bundled_model_path()
    test_image = None
    if args.test_image is not None:
        (test_image,) = _read_tiffs([args.test_image], "--test-image")
    path = export_bioimageio(
        model,
        args.output,
        name=args.name,
        description=args.description,
        authors=args.author,
        license=args.license,
        test_image=test_image,
        torchscript=not args.no_torchscript,
        overwrite=args.overwrite,
    )
    formats = ", ".join(read_bioimageio_weights(path))
    print(f"{model} -> {path}: bioimage.io model package, test passed ({formats})")
    return 0


# ---------------------------------------------------------------------------------------

_SUBCOMMANDS = (
    _add_demo,
    _add_synthetic,
    _add_info,
    _add_weightmap,
    _add_finetune,
    _add_predict,
    _add_export,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unet-cells",
        description="The 2015 U-Net for cell segmentation (napari-unet-cells).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args)
    except UNetCellsError as err:
        print(f"unet-cells {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unet-cells {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
