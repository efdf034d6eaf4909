"""``unet-cells synthetic``: a synthetic nuclei image and its exact labels as TIFFs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import new_output, write_tiff


def add_synthetic(sub) -> None:
    """Declare ``unet-cells synthetic`` on the ``sub`` parsers.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The ``unet-cells`` subparsers; ``run_synthetic`` is set as the command's ``run``.
    """
    p = sub.add_parser(
        "synthetic",
        help="write a synthetic nuclei image and its labels as TIFF files",
        description="Writes OUTPUT (the image) and OUTPUT_labels.<ext> beside it (instance "
        "labels: 0 background, 1..N one cell each). Existing files are never overwritten; "
        "the folder must exist.",
    )
    p.add_argument("output", type=Path, help="image file to write (.tif); labels go beside it")
    p.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("Y", "X"))
    p.add_argument("--seed", type=int, default=0, help="same seed, same image (default 0)")
    p.add_argument("--dtype", choices=("uint16", "uint8", "float32"), default="uint16")
    p.set_defaults(run=run_synthetic)


def run_synthetic(args: argparse.Namespace) -> int:
    """Write the synthetic image and its labels.

    Parameters
    ----------
    args : argparse.Namespace
        ``output`` (Path), ``size`` (Y, X in px), ``seed`` (int), ``dtype`` (str).

    Returns
    -------
    int
        0 once both files are written (atomically).
    """
    from ..core.synthetic import SyntheticConfig, synthetic_cells

    output = args.output
    labels_path = output.with_name(output.stem + "_labels" + (output.suffix or ".tif"))
    hint = "choose another output name (files are never overwritten)"
    new_output(output, "the image", hint=hint)
    new_output(labels_path, "the labels", hint=hint)
    image, labels = synthetic_cells(
        tuple(args.size), seed=args.seed, config=SyntheticConfig(dtype=args.dtype)
    )
    write_tiff(output, image)
    write_tiff(labels_path, labels)
    print(
        f"wrote {output} ({image.shape[0]}x{image.shape[1]} {image.dtype}) and "
        f"{labels_path} ({int(labels.max())} cells)"
    )
    return 0
