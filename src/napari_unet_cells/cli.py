"""The ``unet-cells`` command: subcommands over the same core functions the docks use.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its
arguments and ``_run_<name>(args)`` does the work. Errors a user can fix are printed as
one line and give exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ._version import __version__
from .core.errors import UNetCellsError

logger = logging.getLogger("napari_unet_cells")


# -- demo --------------------------------------------------------------------------------


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="open napari with the plugin and its synthetic sample data")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    try:
        import napari
    except ImportError:
        raise UNetCellsError(
            "napari is not installed: pip install 'napari[pyqt6]' (or another Qt binding)."
        ) from None
    viewer = napari.Viewer(title="U-Net Cells demo")
    viewer.open_sample("napari-unet-cells", "synthetic_nuclei")
    napari.run()
    return 0


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
    image, labels = synthetic_cells(
        tuple(args.size), seed=args.seed, config=SyntheticConfig(dtype=args.dtype)
    )
    tifffile.imwrite(output, image)
    tifffile.imwrite(labels_path, labels)
    print(
        f"wrote {output} ({image.shape[0]}x{image.shape[1]} {image.dtype}) and "
        f"{labels_path} ({int(labels.max())} cells)"
    )
    return 0


# -- info --------------------------------------------------------------------------------


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="show what a model file contains (config, provenance)")
    p.add_argument("model", type=Path, help="a model file (.npz) saved by this plugin")
    p.set_defaults(run=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from .core.checkpoint import read_model_info

    meta = read_model_info(args.model)
    meta.pop("tensors", None)
    print(json.dumps(meta, indent=2, sort_keys=True))
    return 0


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
    from .core.weightmap import iter_weight_map

    def read(path: Path, what: str):
        if not path.is_file():
            raise UNetCellsError(f"The {what} file {path} does not exist.")
        try:
            return tifffile.imread(path)
        except Exception as err:  # tifffile raises many types for bad files
            raise UNetCellsError(f"Cannot read {path} as a TIFF image: {err}") from None

    outputs = [args.output] + ([args.target] if args.target else [])
    for out in outputs:
        inputs = [args.labels] + ([args.ignore] if args.ignore else [])
        if any(out.resolve() == p.resolve() for p in inputs):
            raise UNetCellsError(f"{out} is an input file; write the result to a new file.")
        if not out.parent.is_dir():
            raise UNetCellsError(f"The folder {out.parent} does not exist; create it first.")
        if out.exists() and not args.overwrite:
            raise UNetCellsError(f"{out} exists; choose another name or pass --overwrite.")
    overrides = {
        "w0": args.w0,
        "sigma": args.sigma,
        "border_width": args.border_width,
        "class_balance": False if args.no_class_balance else None,
    }
    config = WeightMapConfig.preset(args.preset)
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    labels = read(args.labels, "labels")
    ignore = read(args.ignore, "ignore mask") if args.ignore else None
    gen = iter_weight_map(labels, ignore, config)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            state = stop.value
            break
        logger.info("%s", event.message)
    tifffile.imwrite(args.output, state.weights)
    if args.target:
        tifffile.imwrite(args.target, state.target)
    weights = state.weights
    print(
        f"wrote {args.output} ({'x'.join(map(str, weights.shape))} float32, weights "
        f"{float(weights.min()):.3g}..{float(weights.max()):.3g}, preset {args.preset})"
        + (f" and {args.target}" if args.target else "")
    )
    return 0


# ---------------------------------------------------------------------------------------

_SUBCOMMANDS = (_add_demo, _add_synthetic, _add_info, _add_weightmap)


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
