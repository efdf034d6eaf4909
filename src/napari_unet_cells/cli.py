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


# ---------------------------------------------------------------------------------------

_SUBCOMMANDS = (_add_demo, _add_synthetic, _add_info)


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
