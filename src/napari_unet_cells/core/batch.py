"""Many images in one run: labels, per-cell tables and a summary, file by file.

Used by the Predict dock's folder run and by ``unet-cells predict --table``. Output names
(the same rules as the CLI): image ``NAME.EXT`` gives ``NAME_cells.tif`` (``.zarr`` for
zarr input) and ``NAME_cells.csv`` in the output folder, where NAME is the file name
without its extension (``.ome.tif``, ``.ome.tiff`` and ``.ome.zarr`` count as one), plus
one ``summary.csv`` for the run. Every output is checked against the others and against
existing files before any work; nothing is ever overwritten.

A file that fails (unreadable, wrong dimensions, no signal ...) gets its message in the
summary, and the run goes on with the next one. Stop ends the run between tiles; the file
being segmented is then not written, and the summary lists what was done. A stopped run
continues with ``plan_batch(..., skip_done=True)``: images whose results exist are
skipped, and the summary is rewritten with their earlier rows kept (:func:`earlier_rows`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UNetCellsError
from .progress import StopFlag, stop_requested

#: extensions of two parts, kept whole when output names are derived
DOUBLE_SUFFIXES = (".ome.tif", ".ome.tiff", ".ome.zarr")
IMAGE_SUFFIXES = (".tif", ".tiff", ".zarr")
SUMMARY_NAME = "summary.csv"
SUMMARY_COLUMNS = (
    "file",
    "labels",
    "cells",
    "mean_area_px",
    "median_area_px",
    "mean_intensity",
    "seconds",
    "error",
    "notes",
)
MAX_MEASURED_PIXELS = 1 << 28  # larger label images are counted, not measured


def split_name(path: Path) -> tuple[str, str]:
    """A file name as (name, extension), with ``.ome.tif``/``.ome.tiff``/``.ome.zarr`` as one.

    ``("a.1", ".tif")`` for ``a.1.tif``, ``("img", ".ome.zarr")`` for ``img.ome.zarr``;
    the case of the extension is kept. Only the name is looked at (no file access).

    Parameters
    ----------
    path : Path or str
        A file or folder name; its folder is ignored.

    Returns
    -------
    name : str
        The name without its extension.
    extension : str
        The extension with its dot ("" when there is none).
    """
    name = Path(path).name
    for suffix in DOUBLE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return Path(path).stem, Path(path).suffix


def labels_name(image: Path, kind: str) -> str:
    """The labels file name of an image: ``NAME_cells.tif`` or ``NAME_cells.zarr``.

    Parameters
    ----------
    image : Path
        The input image (NAME as :func:`split_name` gives it).
    kind : str
        "zarr" for a ``.zarr`` name; anything else ("tiff") gives ``.tif``.

    Returns
    -------
    str
        A bare file name (no folder).
    """
    return f"{split_name(image)[0]}_cells{'.zarr' if kind == 'zarr' else '.tif'}"


def table_path(labels: Path) -> Path:
    """The per-cell CSV beside a labels file: ``x_cells.tif`` -> ``x_cells.csv``.

    Parameters
    ----------
    labels : Path
        The labels file (TIFF or zarr).

    Returns
    -------
    Path
        In the labels' folder; whether it exists is not checked here.
    """
    return labels.with_name(f"{split_name(labels)[0]}.csv")


@dataclasses.dataclass(frozen=True)
class BatchJob:
    """One image of a run: where its labels and its table (or None) go. ``measure_only``:
    the labels exist from an earlier run (continued with tables): only the table is made."""

    image: Path
    labels: Path
    table: Path | None = None
    measure_only: bool = False


@dataclasses.dataclass(frozen=True)
class BatchProgress:
    """Progress of a run. ``file_index`` of ``n_files`` (0-based) is being segmented;
    ``tile`` is its per-tile progress (None at a file's start and end); ``row`` is set
    when the file is finished (its summary row)."""

    file_index: int
    n_files: int
    image: Path
    tile: Any = None
    row: dict[str, Any] | None = None

    @property
    def fraction(self) -> float:
        """Share of the whole run done, 0..1."""
        within = self.tile.fraction if self.tile is not None else (1.0 if self.row else 0.0)
        return (self.file_index + within) / max(self.n_files, 1)


def images_in(folder: Path) -> list[Path]:
    """The images of a folder that the plugin reads, sorted by name.

    Files ending in .tif, .tiff or .zarr (any case, .ome.* included); hidden files and
    the plugin's own ``*_cells`` outputs are left out. Subfolders are not searched.

    Parameters
    ----------
    folder : Path
        The folder to list.

    Returns
    -------
    list of Path
        At least one image.

    Raises
    ------
    UNetCellsError
        ``folder`` is not a folder, or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UNetCellsError(f"{folder} is not a folder; choose a folder of images.")
    found = [
        p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not p.name.startswith(".")
        and not split_name(p)[0].endswith("_cells")
    ]
    if not found:
        raise UNetCellsError(
            f"{folder} holds no .tif, .tiff or .zarr image; choose the folder of your images."
        )
    return found


def plan_batch(
    images: list[Path], output: Path, tables: bool = True, skip_done: bool = False
) -> list[BatchJob]:
    """One job per image with its output names, all checked before any work.

    Parameters
    ----------
    images : the input files (TIFF or zarr).
    output : an existing folder for the results.
    tables : also write a per-cell CSV per image.
    skip_done : continue a stopped run: an image whose outputs all exist is left out
        (no job), one whose labels exist but not its table (an earlier run without
        tables) is only measured (``measure_only``), and an existing ``summary.csv`` is
        allowed (the run rewrites it, keeping the earlier rows of the images left out:
        :func:`earlier_rows`).

    Raises UNetCellsError when the folder is missing, two images would write the same file
    (the message names both), or an output (or, with ``tables`` and not ``skip_done``,
    ``summary.csv``) exists already.
    """
    from .fileio import check_new_output
    from .predict_large import file_kind

    output = Path(output).expanduser()
    if not output.is_dir():
        raise UNetCellsError(f"The output folder {output} does not exist; create it first.")
    jobs = []
    for image in images:
        labels = output / labels_name(image, file_kind(image))
        jobs.append(BatchJob(Path(image), labels, table_path(labels) if tables else None))
    writers: dict[Path, list[Path]] = {}
    for job in jobs:
        for path in (job.labels, job.table):
            if path is not None:
                writers.setdefault(path.resolve(), []).append(job.image)
    for path, sources in writers.items():
        if len(sources) > 1:
            raise UNetCellsError(
                f"Several images would be written to {path}: "
                f"{' and '.join(map(str, sources))}; rename one of them or run them separately."
            )
    if skip_done:
        jobs = [
            dataclasses.replace(job, measure_only=job.labels.exists()) if job.table else job
            for job in jobs
            if not is_done(job)
        ]
    hint = (
        "choose an empty output folder (existing files are never overwritten), or skip the "
        "images already done to continue a stopped run"
    )
    summary = [output / SUMMARY_NAME] if tables and not skip_done else []  # with tables only
    outputs = [p for job in jobs for p in (job.table, None if job.measure_only else job.labels)]
    for path in [p for p in outputs if p] + summary:
        check_new_output(path, "the result", inputs=tuple(images), hint=hint)
    return jobs


def is_done(job: BatchJob) -> bool:
    """All of the job's outputs (labels, and its table if any) exist."""
    return all(path.exists() for path in (job.labels, job.table) if path is not None)


def earlier_rows(summary: Path, rerun: list[Path]) -> list[dict[str, Any]]:
    """The rows of an earlier run's ``summary`` for the files a continued run skips (all
    but ``rerun``), in the summary's order; [] when there is no summary.

    Parameters
    ----------
    summary : Path
        The earlier run's ``summary.csv``.
    rerun : list of Path
        The input files the continued run segments (their old rows are dropped).

    Returns
    -------
    list of dict
        Rows with the keys of ``SUMMARY_COLUMNS`` (numbers read back as numbers).
    """
    from .measure import read_table_csv

    if not Path(summary).is_file():
        return []
    table = read_table_csv(summary)
    drop = {str(Path(image)) for image in rerun}
    names = [name for name in SUMMARY_COLUMNS if name in table]
    rows = [{name: table[name][i] for name in names} for i in range(len(table["file"]))]
    return [row for row in rows if str(row["file"]) not in drop]


def run_batch_iter(
    jobs: list[BatchJob],
    model: Any = None,
    config: Any = None,
    instances: Any = None,
    *,
    diameter: float | str | None = "auto",
    summary: Path | None = None,
    stop: StopFlag = None,
    earlier: list[dict[str, Any]] | None = None,
) -> Generator[BatchProgress, None, list[dict[str, Any]]]:
    """Segment (and measure) each job's image, yielding :class:`BatchProgress`.

    Parameters
    ----------
    jobs : from :func:`plan_batch`.
    model, config, instances, diameter : as for ``core.predict_large.predict_file``; the
        model is loaded once.
    summary : where to write the summary CSV (also when stopped), or None.
    stop : checked between tiles and files.
    earlier : rows of the files a continued run skipped (:func:`earlier_rows`): the
        summary lists them first and replaces the earlier run's summary.

    Returns
    -------
    list of dict
        One summary row per file handled (see ``SUMMARY_COLUMNS``); a failed file has its
        message in "error" and no labels.
    """
    from .registry import resolve_model

    model = resolve_model(model)
    rows: list[dict[str, Any]] = []
    for index, job in enumerate(jobs):
        if stop_requested(stop):
            break
        yield BatchProgress(index, len(jobs), job.image)
        row = yield from _one_file(job, index, len(jobs), model, config, instances, diameter, stop)
        if row is None:  # stopped inside the file
            break
        rows.append(row)
        yield BatchProgress(index, len(jobs), job.image, row=row)
    if summary is not None:
        write_summary([*(earlier or []), *rows], summary, replace=earlier is not None)
    return rows


def _one_file(job, index, n_files, model, config, instances, diameter, stop):
    """The summary row of one job (errors caught into it), or None when stopped. A
    ``measure_only`` job's labels, from an earlier run, are measured, not predicted."""
    start = time.perf_counter()
    try:
        if job.measure_only:
            result = {"messages": ("labels from the earlier run, measured now",)}
        else:
            run = _predicted(job, index, n_files, model, config, instances, diameter, stop)
            result = yield from run
            if result is None:
                return None
        table = measure_file(job) if job.table is not None else None
        if job.measure_only:
            result["cells"] = len(table["label"]) if table is not None else ""
    except UNetCellsError as err:
        return _row(job, None, None, time.perf_counter() - start, error=str(err))
    except Exception as err:  # one bad file never ends the run: it is reported
        message = f"{type(err).__name__}: {err}"
        return _row(job, None, None, time.perf_counter() - start, error=message)
    return _row(job, result, table, time.perf_counter() - start)


def _predicted(job, index, n_files, model, config, instances, diameter, stop):
    """Predict one job's image into its labels file, yielding per-tile progress; returns
    ``predict_file``'s result, or None when stopped."""
    from .predict_large import predict_file_iter

    events = predict_file_iter(
        job.image,
        job.labels,
        model,
        config,
        instances,
        diameter=diameter,
        channel_axis=file_channel_axis(job.image),
        stop=stop,
    )
    while True:
        try:
            tile = next(events)
        except StopIteration as done:
            return done.value
        yield BatchProgress(index, n_files, job.image, tile=tile)


def file_channel_axis(path: Path) -> int | None:
    """The channel axis of a TIFF, read as ``unet-cells predict`` reads it: from its axes
    metadata (ImageJ / OME); a leading axis of <= 4 without metadata is refused, since it
    may be planes or channels. None for zarr inputs and single planes.

    Raises UNetCellsError (with what to do) for such an ambiguous file.
    """
    from .axes import file_layout
    from .image_files import file_kind

    if file_kind(path) != "tiff":
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape = tuple(tif.series[0].shape)
    except Exception:  # unreadable: the reader says so, with its own message
        return None
    try:
        return file_layout(path, shape)
    except UNetCellsError as err:
        raise UNetCellsError(
            f"{err} (In the Predict dock: open the image and choose its Channel.)"
        ) from None


def measure_file(job: BatchJob) -> dict[str, np.ndarray] | None:
    """Measure the labels a job wrote against its image and write the job's table.

    The labels and image are read whole into memory; an image whose channels cannot be
    matched to the labels (e.g. RGB segmented as one channel) is measured for shapes
    only. The table is written atomically and never over an existing file.

    Parameters
    ----------
    job : BatchJob
        Its ``labels`` (already written), ``image`` and ``table`` (a new CSV path).

    Returns
    -------
    dict of str to numpy.ndarray, or None
        The table (``core.measure.measure``, one row per cell); None, and no file, for
        label images over ``MAX_MEASURED_PIXELS`` pixels.

    Raises
    ------
    UNetCellsError
        The table exists already or its folder is missing.
    """
    from .measure import channels_last, measure, table_to_csv
    from .predict_large import open_image

    labels = open_image(job.labels)
    if np.prod(labels.shape) > MAX_MEASURED_PIXELS:
        return None
    labels = np.asarray(labels)
    image = np.asarray(open_image(job.image))
    try:
        image = channels_last(image, labels.shape)
    except UNetCellsError:  # e.g. an RGB image segmented as one channel: shapes only
        image = None
    table = measure(labels, image)
    table_to_csv(table, job.table)
    return table


def summary_row(
    image: Path,
    labels: Path | None = None,
    cells: int | None = None,
    table: dict[str, np.ndarray] | None = None,
    seconds: float = 0.0,
    *,
    notes: list[str] | tuple[str, ...] = (),
    error: str | None = None,
) -> dict[str, Any]:
    """One summary row of a run (the keys of ``SUMMARY_COLUMNS``).

    Parameters
    ----------
    image : Path
        The input file.
    labels : Path, optional
        The labels written (not used for a failed file).
    cells : int, optional
        Number of cells found.
    table : dict of str to numpy.ndarray, optional
        The per-cell table; gives mean/median area (px) and the mean of the cells' mean
        intensity (first channel). None: those columns stay "".
    seconds : float
        Wall time spent on the file, s (rounded to 0.01).
    notes : sequence of str
        Messages for the user, joined by spaces.
    error : str, optional
        A failed file's message; then only file, seconds, error and notes are filled.

    Returns
    -------
    dict of str to Any
        Every column of ``SUMMARY_COLUMNS``; "" where there is nothing to say.
    """
    from .measure import summarize

    row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS, "")
    row.update(file=str(image), seconds=round(seconds, 2), notes=" ".join(notes))
    if error is not None:
        row["error"] = error
        return row
    row.update(labels=str(labels), cells=cells)
    if table is not None:
        stats = summarize(table)
        row.update({k: v for k, v in stats.items() if k != "cells"})
    return row


def _row(job, result, table, seconds, error: str | None = None) -> dict[str, Any]:
    if error is not None:
        return summary_row(job.image, seconds=seconds, error=error)
    notes = result.get("messages", ())
    return summary_row(job.image, job.labels, result["cells"], table, seconds, notes=notes)


def write_summary(rows: list[dict[str, Any]], path: Path, replace: bool = False) -> None:
    """Write the summary rows as CSV (atomically, never over an existing file unless
    ``replace``).

    Parameters
    ----------
    rows : list of dict
        From :func:`summary_row`; a missing column is written as "".
    path : Path
        A new CSV file in an existing folder.
    replace : bool
        Replace an existing summary (a continued run rewrites its own summary).

    Raises
    ------
    UNetCellsError
        ``path`` exists already or its folder is missing.
    """
    from .fileio import atomic_write
    from .measure import table_to_csv

    columns = {
        name: np.array([row.get(name, "") for row in rows], dtype=object)
        for name in SUMMARY_COLUMNS
    }
    if not (replace and Path(path).is_file()):
        table_to_csv(columns, path)
        return
    text = table_to_csv(columns)
    atomic_write(Path(path), lambda fh: fh.write(text.encode("utf-8")))
