"""``unet-cells predict``: images (TIFF, zarr, OME-Zarr) in, instance label images out.

``predict_jobs.plan_jobs`` checks every input and output first; then the model is
loaded once and each image is segmented with ``core.predict_large.predict_file`` (or
written as OME-Zarr with ``core.interop.omezarr.predict_to_ome_zarr``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from pathlib import Path

from ..core.errors import UNetCellsError
from ._common import write_errors
from .predict_jobs import Job, plan_jobs, summary_path

DESCRIPTION = """\
Seamless overlap-tile U-Net prediction. TIFF images are processed in memory (stacks
plane by plane); zarr images chunk by chunk with dask (bounded memory), optionally on a
dask.distributed cluster. Labels are int32: 0 background, 1..N one cell each, on the
input's pixel grid.

Output names: with one image, -o is the labels file (.tif/.tiff/.zarr) or a new
.ome.zarr. With several images, -o is an existing folder and each image NAME.EXT gets
NAME_cells.tif (TIFF input) or NAME_cells.zarr (zarr input), NAME being the file name
without its extension (.ome.tif and .ome.zarr count as one): a.1.tif -> a.1_cells.tif.
--probabilities adds <labels name>_probabilities.<ext> beside each.

Everything is checked before any work: readable inputs, new output names that no two
images share, existing and writable folders. Existing files are never overwritten (only
an OME-Zarr labels group, with --ome-labels --overwrite).

Cell size: --diameter auto (the default) estimates the typical nucleus diameter of each
image and resamples it so that its nuclei appear at the size the model was trained on
(when the model records one); the labels come back on the input's grid.
"""


def _probability_or_none(text: str) -> float | None:
    """A probability, or None for 'none' and 0 (as the dock's slider: 0 = no seeds)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text) or None
    except ValueError:
        raise argparse.ArgumentTypeError(f"a probability (0..1) or 'none', got {text!r}") from None


def add_predict(sub) -> None:
    """Declare ``unet-cells predict`` on the ``sub`` parsers.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The ``unet-cells`` subparsers; ``run_predict`` is set as the command's ``run``.
    """
    p = sub.add_parser(
        "predict",
        help="segment cells: images (TIFF, zarr/OME-Zarr) in, instance label images out",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    _add_network_options(p)
    _add_instance_options(p)
    _add_input_options(p)
    _add_output_options(p)
    p.set_defaults(run=run_predict)


def _add_network_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model file (.npz) or package (.zip) from unet-cells export; default: bundled",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--tile", default="auto", help="network input tile size in px, or auto")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per network call")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (4x slower)")


def _add_instance_options(p: argparse.ArgumentParser) -> None:
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


def _add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--diameter",
        default="auto",
        metavar="auto|PX|none",
        help="typical cell diameter in px; auto (default): estimated from each image, which is "
        "resampled so its cells appear at the model's size; none (or 0): never resample",
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


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--probabilities",
        action="store_true",
        help="also write the cell probability (float32) as <labels>_probabilities.<ext>",
    )
    p.add_argument(
        "--table",
        nargs="?",
        const="auto",
        default=None,
        metavar="CSV",
        help="also measure every cell (area, shape, intensity, neighbours; see unet-cells "
        "measure): one image: the CSV to write (default: beside the labels, "
        "<labels name>.csv); several images: one <name>_cells.csv per image and a summary "
        "(summary.csv, or the name given) in the output folder",
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


def run_predict(args: argparse.Namespace) -> int:
    """Check all jobs, load the model once, segment each image and write its labels.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``predict`` options (see ``unet-cells predict --help``).

    Returns
    -------
    int
        0 once every image is written; nothing is written when a check fails.
    """
    from ..core.config import PredictConfig
    from ..core.registry import resolve_model
    from ..core.scale import parse_diameter

    config = PredictConfig(
        device=args.device, tile=_tile(args.tile), batch_size=args.batch_size, tta=args.tta
    )
    diameter = parse_diameter(args.diameter)
    if args.table and (args.ome_labels or ome_output(args)):
        raise UNetCellsError(
            "--table measures TIFF or zarr labels; for OME-Zarr run unet-cells measure on "
            "the labels afterwards, or leave out --table."
        )
    jobs, ome = plan_jobs(args)  # check everything before writing anything
    model = resolve_model(args.model)
    instances = _instance_config(args, model)
    rows = []
    with _dask_client(args.scheduler):
        for job in jobs:
            start = time.perf_counter()
            summary = _predict_one(job, args, ome, model, config, instances, diameter)
            if job.table is not None:
                rows.append(_measure_one(job, summary, time.perf_counter() - start))
    if summary_path(args) is not None:
        from ..core.batch import write_summary

        with write_errors(summary_path(args)):
            write_summary(rows, summary_path(args))
        print(f"summary of {len(rows)} images -> {summary_path(args)}")
    return 0


def ome_output(args: argparse.Namespace) -> bool:
    """Whether -o names a new OME-Zarr store (a name ending in ``.ome.zarr``).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``predict`` options.

    Returns
    -------
    bool
        True for ``-o NAME.ome.zarr`` (case-insensitive), False otherwise or without -o.
    """
    return args.output is not None and args.output.name.lower().endswith(".ome.zarr")


def _measure_one(job: Job, summary: dict, seconds: float) -> dict:
    """Measure the labels just written, write the job's table; its summary row."""
    from ..core.batch import BatchJob, measure_file, summary_row

    with write_errors(job.table):
        table = measure_file(BatchJob(job.image, job.output, job.table))
    where = f"-> {job.table}" if table is not None else "(too large to measure in memory)"
    print(f"{job.image}: cell table {where}")
    notes = summary.get("messages", ())
    return summary_row(job.image, job.output, summary["cells"], table, seconds, notes=notes)


def _tile(text: str) -> int | None:
    """``--tile``: None for auto, else a number of px."""
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise UNetCellsError(
            f"--tile must be a number of pixels or 'auto', got {text!r}."
        ) from None


def _instance_config(args: argparse.Namespace, model):
    """The model's recommended post-processing with the options given."""
    from ..core.instances import instance_defaults

    chosen = {
        "threshold": args.threshold,
        "min_size": args.min_size,
        "min_confidence": args.min_confidence,
    }
    chosen = {k: v for k, v in chosen.items() if v is not None}
    if args.seed_threshold is not False:  # False: not given; None: no seeds
        chosen["seed_threshold"] = args.seed_threshold
    return dataclasses.replace(instance_defaults(model), **chosen)


def _dask_client(address: str | None):
    """A dask.distributed client for ``--scheduler`` (a context manager), or a no-op."""
    if not address:
        return contextlib.nullcontext()
    try:
        from distributed import Client
    except ImportError:
        raise UNetCellsError(
            "--scheduler needs dask.distributed: pip install distributed, or leave out "
            "--scheduler to run on this computer."
        ) from None
    try:
        return Client(address, timeout="10s")
    except OSError as err:
        raise UNetCellsError(
            f"Cannot reach the dask scheduler at {address} ({err}): check the "
            "address and that the scheduler is running, or leave out --scheduler."
        ) from None


def _predict_one(job: Job, args, ome, model, config, instances, diameter) -> dict:
    """Segment one image, write its result and print what was done; its summary dict."""
    from ..core.predict_large import predict_file

    print(f"{job.image}: {job.layout}")
    common = {"probabilities": job.probabilities, "chunk": args.chunk, "diameter": diameter}
    with write_errors(job.output):
        if ome is None:
            summary = predict_file(
                job.image,
                job.output,
                model,
                config,
                instances,
                channel_axis=job.channel_axis,
                channel=args.channel,
                **common,
            )
        else:
            summary = _predict_ome(job, args, ome, model, config, instances, diameter)
    for message in summary.get("messages", ()):
        print(f"{job.image}: {message}")
    print(f"{job.image} -> {job.output}: {summary['cells']} cells")
    return summary


def _predict_ome(job: Job, args, ome, model, config, instances, diameter) -> dict:
    """``predict_to_ome_zarr`` into the input's labels group or a new store."""
    from ..core.interop.omezarr import predict_to_ome_zarr

    return predict_to_ome_zarr(
        job.image,
        job.output if ome == "new" else None,
        model,
        config,
        instances,
        name=args.labels_name,
        overwrite=args.overwrite,
        chunk=args.chunk,
        diameter=diameter,
    )
