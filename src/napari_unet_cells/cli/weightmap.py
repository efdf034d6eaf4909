"""``unet-cells weightmap``: the paper's loss weight map (eq. 2) of a label image."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..core.errors import UNetCellsError
from ..core.fileio import read_image
from ._common import logger, new_output, numbered, write_tiff


def add_weightmap(sub) -> None:
    """Declare ``unet-cells weightmap`` on the ``sub`` parsers.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The ``unet-cells`` subparsers; ``run_weightmap`` is set as the command's ``run``.
    """
    p = sub.add_parser(
        "weightmap",
        help="write the paper's loss weight map (eq. 2) of an instance label image",
        description="Weights (float32 TIFF, same shape as the labels; 3D stacks plane by "
        "plane): class balance + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) on background. A 0/1 "
        "or 0/255 mask is numbered by connected components first. Existing files are "
        "replaced only with --overwrite, an input never.",
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
    p.set_defaults(run=run_weightmap)


def run_weightmap(args: argparse.Namespace) -> int:
    """Compute and write the weight map (and the training target with ``--target``).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``weightmap`` options (see ``unet-cells weightmap --help``).

    Returns
    -------
    int
        0 once the file(s) are written (atomically).
    """
    from ..core.weightmap import iter_weight_map

    inputs = (args.labels, *([args.ignore] if args.ignore else []))
    outputs = (args.output, *([args.target] if args.target else []))
    if any(out.suffix.lower() not in (".tif", ".tiff") for out in outputs):
        raise UNetCellsError("The weight map and target are TIFF files: give names ending in .tif")
    if args.target and args.target.expanduser().resolve() == args.output.expanduser().resolve():
        raise UNetCellsError("--target and -o name the same file: give the target its own name.")
    for out in outputs:
        new_output(
            out,
            "the weight map",
            overwrite=args.overwrite,
            inputs=inputs,
            hint="choose another name or pass --overwrite to replace it",
        )
    config = _config(args)
    labels = read_image(args.labels, "labels")
    if labels.ndim == 3 and labels.shape[-1] in (3, 4) and min(labels.shape[:2]) > 8:
        raise UNetCellsError(
            f"{args.labels} looks like an RGB(A) image {labels.shape}, not labels: give the "
            "instance labels (one number per cell), e.g. the Labels layer saved from napari."
        )
    labels = numbered(labels, args.labels.name)
    ignore = read_image(args.ignore, "ignore mask") if args.ignore else None
    gen = iter_weight_map(labels, ignore, config)
    while True:
        try:
            logger.info("%s", next(gen).message)
        except StopIteration as stop:
            state = stop.value
            break
    write_tiff(args.output, state.weights)
    if args.target:
        write_tiff(args.target, state.target)
    weights = state.weights
    print(
        f"wrote {args.output} ({'x'.join(map(str, weights.shape))} float32, weights "
        f"{float(weights.min()):.3g}..{float(weights.max()):.3g}, preset {args.preset})"
        + (f" and {args.target}" if args.target else "")
    )
    return 0


def _config(args: argparse.Namespace):
    """The preset's WeightMapConfig with the options given on the command line."""
    from ..core.config import WeightMapConfig

    overrides = {
        "w0": args.w0,
        "sigma": args.sigma,
        "border_width": args.border_width,
        "class_balance": False if args.no_class_balance else None,
    }
    config = WeightMapConfig.preset(args.preset)
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
