"""``unet-cells measure``: a label image (and optionally its image) in, a per-cell CSV out."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import UNetCellsError
from ._common import new_output, write_errors

DESCRIPTION = """\
One row per cell of LABELS (a TIFF or zarr label image: 0 background, 1..N one cell
each): label, plane (stacks), centroid, area, perimeter, equivalent diameter, ellipse
axes, eccentricity, solidity, whether it touches the image edge, how many cells it
touches, and with --image the mean/max/min/integrated intensity (per channel). Areas and
lengths are in pixels, and also in physical units when --pixel-size is given or the
labels (or image) TIFF records a pixel size. The columns are described in
docs/measure.md. The output CSV must not exist (files are never overwritten).
"""


def add_measure(sub) -> None:
    """Declare ``unet-cells measure`` on the ``sub`` parsers.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The ``unet-cells`` subparsers; ``run_measure`` is set as the command's ``run``.
    """
    p = sub.add_parser(
        "measure",
        help="per-cell measurements of a label image as a CSV table",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("labels", type=Path, help="label image (.tif/.tiff or .zarr)")
    p.add_argument("--image", type=Path, default=None, help="the image under the labels (TIFF)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the table to write (.csv)")
    p.add_argument(
        "--pixel-size",
        type=float,
        nargs="+",
        default=None,
        metavar="SIZE",
        help="pixel size: one value (square pixels) or two (Y X), in --unit",
    )
    p.add_argument("--unit", default=None, help="unit of --pixel-size for column names (um)")
    p.set_defaults(run=run_measure)


def run_measure(args: argparse.Namespace) -> int:
    """Measure every cell of ``args.labels`` and write the table.

    Parameters
    ----------
    args : argparse.Namespace
        ``labels``, ``image`` (or None), ``output`` (.csv), ``pixel_size`` (None or 1-2
        floats), ``unit`` (str or None).

    Returns
    -------
    int
        0 once the table is written.
    """
    import numpy as np

    from ..core.fileio import read_image
    from ..core.measure import channels_last, measure, table_to_csv
    from ..core.predict_large import open_image

    if args.output.suffix.lower() != ".csv":
        raise UNetCellsError("The table is a CSV file: give -o a name ending in .csv.")
    new_output(args.output, "the table", inputs=tuple(p for p in (args.labels, args.image) if p))
    labels = np.asarray(open_image(args.labels))
    image = None
    if args.image is not None:
        image = channels_last(read_image(args.image, "image"), labels.shape)
    scale, unit = _pixel_size(args)
    table = measure(labels, image, scale=scale, unit=unit)
    with write_errors(args.output):
        table_to_csv(table, args.output)
    size = f", pixel size {scale[0]:g} x {scale[1]:g} {unit}" if scale else ""
    print(f"wrote {args.output}: {len(table['label'])} cells, {len(table)} columns{size}")
    return 0


def _pixel_size(args: argparse.Namespace) -> tuple[tuple[float, float] | None, str]:
    """(sy, sx) and unit: --pixel-size, else what the labels or image TIFF records."""
    from ..core.measure import tiff_pixel_size

    if args.pixel_size is not None:
        if len(args.pixel_size) > 2 or min(args.pixel_size) <= 0:
            raise UNetCellsError("--pixel-size takes one or two positive numbers (Y X).")
        sy, sx = (args.pixel_size * 2)[:2]
        return (sy, sx), args.unit or "um"
    for path in (args.labels, args.image):
        if path is not None and path.suffix.lower() in (".tif", ".tiff"):
            found = tiff_pixel_size(path)
            if found is not None:
                return found[:2], args.unit or found[2]
    return None, args.unit or "um"
