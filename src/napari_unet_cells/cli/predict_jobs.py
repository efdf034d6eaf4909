"""``unet-cells predict``, before any work: which file goes where, checked as a whole.

Output names: with several images (or ``-o`` an existing folder) each image ``NAME.EXT``
gets ``NAME_cells.tif`` (TIFF input) or ``NAME_cells.zarr`` (zarr input) in that folder,
where NAME is the file name without its extension; ``.ome.tif``, ``.ome.tiff`` and
``.ome.zarr`` count as one extension (``a.1.tif`` -> ``a.1_cells.tif``, ``img.ome.tif``
-> ``img_cells.tif``). ``--probabilities`` adds ``<labels NAME>_probabilities.<ext>``
beside each labels file. Every planned output is checked against the others and against
existing files before the model is loaded; existing files are never overwritten.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..core.batch import labels_name, split_name, table_path
from ..core.errors import UNetCellsError
from ._common import new_output

OUTPUT_HINT = "choose another output name (existing files are never overwritten)"


@dataclasses.dataclass(frozen=True)
class Job:
    """One image to segment: where its results go and how it is read.

    Attributes
    ----------
    image : the input file or zarr folder.
    output : the labels file (or zarr folder, or OME-Zarr labels group) to write.
    probabilities : where to write the cell probability, or None.
    channel_axis : the axis of a TIFF that holds channels, or None.
    layout : what the image is read as, e.g. "5 planes of 512x512, channel 1 of 2".
    table : where the per-cell CSV goes (``--table``), or None.
    """

    image: Path
    output: Path
    probabilities: Path | None
    channel_axis: int | None
    layout: str
    table: Path | None = None


def probabilities_path(labels: Path) -> Path:
    """Where ``--probabilities`` goes, beside the labels.

    ``cells.tif`` -> ``cells_probabilities.tif``, ``cells.ome.tif`` ->
    ``cells_probabilities.ome.tif`` (``core.batch.split_name`` keeps double suffixes).

    Parameters
    ----------
    labels : Path
        The labels file of the same job.

    Returns
    -------
    Path
        The probabilities file, in the labels' folder (not checked here).
    """
    name, suffix = split_name(labels)
    return labels.with_name(f"{name}_probabilities{suffix}")


def plan_jobs(args: argparse.Namespace) -> tuple[list[Job], str | None]:
    """Check every input and output of a ``predict`` run before any work is done.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``predict`` options.

    Returns
    -------
    jobs : list of Job
        One per input image, in the order given.
    ome : str or None
        "into" (labels into each OME-Zarr input), "new" (a new OME-Zarr store) or None
        (plain TIFF/zarr files).

    Raises
    ------
    UNetCellsError
        An unreadable or ambiguous input, two jobs writing the same path, an existing
        output, a missing or unwritable folder.
    """
    from ..core.predict_large import file_kind, open_image

    ome = ome_mode(args)
    folder = _output_folder(args, ome)
    jobs = []
    for image in args.images:
        axis, layout = _layout(image, open_image(image), args)  # readable, not empty
        if ome is not None:
            out, probs = _ome_target(image, args, ome), None
        else:
            out = folder / labels_name(image, file_kind(image)) if folder else args.output
            probs = probabilities_path(out) if args.probabilities else None
        jobs.append(Job(image, out, probs, axis, layout, _table(args, out, folder)))
    check_collisions(jobs)
    if ome is None:
        for job in jobs:
            for path in (job.output, job.probabilities):
                if path is not None:
                    file_kind(path)  # a format we write
                    new_output(path, "the result", inputs=tuple(args.images), hint=OUTPUT_HINT)
    for path in [job.table for job in jobs if job.table] + [summary_path(args)]:
        if path is not None:
            new_output(path, "the table", inputs=tuple(args.images), hint=OUTPUT_HINT)
    return jobs, ome


def _table(args: argparse.Namespace, labels: Path, folder: Path | None) -> Path | None:
    """Where ``--table`` puts one image's per-cell CSV: the given name for one image,
    else beside its labels (``NAME_cells.csv``)."""
    if not getattr(args, "table", None):
        return None
    if folder is None and args.table != "auto":
        if Path(args.table).suffix.lower() != ".csv":
            raise UNetCellsError(f"--table names a CSV file: end {args.table} with .csv.")
        return Path(args.table)
    return table_path(labels)


def summary_path(args: argparse.Namespace) -> Path | None:
    """The summary CSV of a ``--table`` run over several images, else None.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``predict`` options (``table``, ``images``, ``output``).

    Returns
    -------
    Path or None
        ``summary.csv`` (or the name given to ``--table``) in the output folder; None
        without ``--table`` or for a single image.

    Raises
    ------
    UNetCellsError
        The ``--table`` name does not end with ``.csv``.
    """
    if not getattr(args, "table", None) or len(args.images) < 2:
        return None
    from ..core.batch import SUMMARY_NAME

    name = SUMMARY_NAME if args.table == "auto" else Path(args.table).name
    if not name.lower().endswith(".csv"):
        raise UNetCellsError(f"--table names a CSV file: end {args.table} with .csv.")
    return args.output / name


def check_collisions(jobs: list[Job]) -> None:
    """Refuse two jobs that would write the same path, naming the inputs.

    Parameters
    ----------
    jobs : list of Job
        The planned jobs (labels and probabilities paths are both compared).

    Raises
    ------
    UNetCellsError
        Saying which inputs collide on which path, and what to do.
    """
    writers: dict[Path, list[Path]] = {}
    for job in jobs:
        for path in (job.output, job.probabilities):
            if path is not None:
                writers.setdefault(path.expanduser().resolve(), []).append(job.image)
    for path, images in writers.items():
        if len(images) > 1:
            raise UNetCellsError(
                f"Several images would be written to {path}: {' and '.join(map(str, images))}. "
                "Predict them into different output folders (-o), or one at a time with its "
                "own -o, or rename one of them."
            )


def _output_folder(args: argparse.Namespace, ome: str | None) -> Path | None:
    """The folder that gets one ``NAME_cells`` file per image, or None when ``-o`` names
    the output itself (one image, or OME-Zarr)."""
    if ome is not None:
        return None
    # an existing .zarr output is a finished result (a folder on disk), not a destination
    is_zarr = args.output.suffix.lower() == ".zarr"
    if not (len(args.images) > 1 or (args.output.is_dir() and not is_zarr)):
        return None
    if is_zarr:
        raise UNetCellsError(
            f"With several images, -o must be a folder for the results, not a .zarr store "
            f"({args.output}); give a plain folder."
        )
    if not args.output.is_dir():
        raise UNetCellsError(
            f"With several images, -o must be an existing folder; {args.output} is not: "
            "create the folder first (one <name>_cells file per image goes there)."
        )
    return args.output


def _layout(path: Path, image, args: argparse.Namespace) -> tuple[int | None, str]:
    """(channel axis, what the image is read as) for one input; ambiguous shapes and
    channel options on chunked (zarr) inputs are refused with the choices."""
    from ..core.axes import file_layout
    from ..core.predict import describe_layout, guess_channel_axis

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


def ome_mode(args: argparse.Namespace) -> str | None:
    """How predict writes OME-Zarr, with inconsistent options refused.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``predict`` options (``output``, ``ome_labels``, ``overwrite``,
        ``images``, ``probabilities``).

    Returns
    -------
    str or None
        "into" each input's labels group (--ome-labels), a "new" store
        (-o NAME.ome.zarr), or None (plain TIFF/zarr files).

    Raises
    ------
    UNetCellsError
        --ome-labels with -o, neither of them, --overwrite outside --ome-labels, a new
        store for several images, or --probabilities with OME-Zarr; the message says
        what to do.
    """
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
    from ..core.interop.omezarr import check_new_store, labels_target

    if mode == "into":
        return labels_target(image, args.labels_name, args.overwrite)
    return check_new_store(args.output)
