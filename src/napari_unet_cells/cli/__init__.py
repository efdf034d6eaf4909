"""The ``unet-cells`` command: subcommands over the same core functions the docks use.

One module per subcommand (``demo``, ``synthetic``, ``info``, ``weightmap``,
``finetune``, ``predict``, ``measure``, ``export``), each with ``add_<name>(subparsers)`` declaring
its arguments and ``run_<name>(args)`` doing the work; ``predict_jobs`` plans and checks
a predict run, ``_common`` holds what several share. Assumptions every subcommand
keeps: inputs are never modified, existing outputs are never overwritten unless an
``--overwrite`` option says so, and everything a user can get wrong is checked before
long work starts. Errors a user can fix are printed as one line and give exit code 2;
Ctrl-C gives 130.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .._version import __version__
from ..core.errors import UNetCellsError
from .demo import DEMO_DOCKS, add_demo, setup_demo
from .export import add_export
from .finetune import add_finetune
from .info import add_info
from .measure import add_measure
from .predict import add_predict
from .synthetic import add_synthetic
from .weightmap import add_weightmap

SUBCOMMANDS = (
    add_demo,
    add_synthetic,
    add_info,
    add_weightmap,
    add_finetune,
    add_predict,
    add_measure,
    add_export,
)

EPILOG = (
    "Inputs are never modified and existing outputs are never overwritten (unless a "
    "command's --overwrite says so); every input and output is checked before long work "
    "starts. Errors you can fix are one line with exit code 2. Details: unet-cells "
    "COMMAND --help."
)


def build_parser() -> argparse.ArgumentParser:
    """The ``unet-cells`` argument parser with all subcommands.

    Returns
    -------
    argparse.ArgumentParser
        Parsing sets ``command`` (the subcommand's name) and ``run`` (its function).
    """
    parser = argparse.ArgumentParser(
        prog="unet-cells",
        description="The 2015 U-Net for cell segmentation (napari-unet-cells).",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``unet-cells`` with ``argv`` (default: the process's arguments).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name.

    Returns
    -------
    int
        The exit code: 0 done, 2 an error the user can fix (printed as one line on
        stderr), 130 interrupted.
    """
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


__all__ = ["DEMO_DOCKS", "build_parser", "main", "setup_demo"]
