"""``unet-cells export``: a model file as a bioimage.io model package (.zip)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.fileio import read_image


def add_export(sub) -> None:
    """Declare ``unet-cells export`` on the ``sub`` parsers.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The ``unet-cells`` subparsers; ``run_export`` is set as the command's ``run``.
    """
    p = sub.add_parser(
        "export",
        help="write a model as a bioimage.io package (.zip) for Fiji, ilastik, QuPath, ...",
        description=(
            "Export a model file as a bioimage.io model package: the network as torch "
            "source + weights (and TorchScript), its normalisation, tile-size rule, a test "
            "image and its expected output, a cover and the model card. The package is "
            "tested with bioimageio.core before it is written; an existing package is "
            "replaced only with --overwrite. Needs the interop extra: "
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
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export, test and write the package.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``export`` options (see ``unet-cells export --help``).

    Returns
    -------
    int
        0 once the tested package is written.
    """
    from ..core.interop.bioimageio import export_bioimageio, read_bioimageio_weights
    from ..core.registry import bundled_model_path

    model = args.model or bundled_model_path()
    test_image = None
    if args.test_image is not None:
        test_image = read_image(args.test_image, "--test-image")
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
