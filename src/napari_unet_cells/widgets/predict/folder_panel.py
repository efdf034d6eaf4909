"""The Predict dock's "Whole folder" section: every image of a folder to a labels file,
a per-cell table and a line of ``summary.csv`` (:mod:`napari_unet_cells.core.batch`).

Folded by default. Run folder reads the dock's settings and plans the run on the GUI
thread (a missing folder or an existing output is refused before anything is written),
then runs ``core.batch.run_batch_iter`` in a napari thread worker with plain values only.
No layer is added: a folder may hold hundreds of images; the results are files.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, FileEdit, Label, ProgressBar, PushButton
from napari.utils.notifications import show_error, show_info, show_warning

from ...core.errors import UNetCellsError
from .._tips import tip
from .._workers import detach, dock_worker, error_text

STEPS = 1000  # progress bar resolution
SHOWN_FAILURES = 3  # failures listed in the final message


def run_folder(
    jobs: list[Any], settings: dict[str, Any], summary: Path | None, stop: Any, earlier=None
):
    """The worker's work: ``core.batch.run_batch_iter`` on plain values. ``settings``:
    model, config, instances and diameter as ``run_batch_iter`` takes them; ``earlier``:
    the summary rows of the files a continued run skips."""
    from ...core import batch

    run = batch.run_batch_iter(jobs, **settings, summary=summary, stop=stop, earlier=earlier)
    return (yield from run)


def folder_message(
    rows: list[dict[str, Any]], n_files: int, summary: Path | None, output: Path, stopped: bool
) -> str:
    """The message after a run: counts, where the results are, the first failures."""
    failed = [row for row in rows if row.get("error")]
    done = len(rows) - len(failed)
    cells = sum(int(row["cells"]) for row in rows if not row.get("error"))
    files = f"{n_files} file{'s' if n_files != 1 else ''}"
    head = f"Stopped after {len(rows)} of {files}" if stopped else files
    text = f"{head}: {done} segmented ({cells} cells), {len(failed)} failed."
    text += f" Summary: {summary}" if summary is not None else f" Labels: {output}"
    if failed:
        listed = [f"{Path(row['file']).name}: {row['error']}" for row in failed]
        more = len(listed) - SHOWN_FAILURES
        text += "\nFailed: " + "; ".join(listed[:SHOWN_FAILURES])
        text += f" (and {more} more, see the summary)" if more > 0 else ""
    return text


#: one prediction at a time per dock: Run and Run folder each wait for the other
RUN_WAITS = "The folder run is going on: wait for it to end, or press Stop folder, then Run."
FOLDER_WAITS = "A prediction is running in this dock: wait for it, or press Stop, then Run folder."


class FolderPanel:
    """Whole folder: Input folder, Output folder, Tables, Run folder / Stop folder, a
    progress bar over files and tiles, and a status line.

    ``settings()`` returns the dock's model, ``PredictConfig``, ``InstanceConfig`` and
    diameter as plain values (it raises UNetCellsError for an invalid setting). ``worker``
    is the running thread worker, or None; ``rows`` the summary rows of the last run and
    ``message`` its final message. One prediction at a time per dock: ``dock_running()``
    is True while the dock's own Run predicts, and Run folder waits (``refuses_run`` for
    the other way round); ``finished()`` is called when a folder run has ended.
    """

    def __init__(
        self,
        settings: Callable[[], dict[str, Any]],
        dock_running: Callable[[], bool] = lambda: False,
        finished: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.dock_running = dock_running
        self.finished = finished
        self.worker = None
        self.rows: list[dict[str, Any]] = []
        self.message = ""
        self._stop = threading.Event()
        self._run: dict[str, Any] = {}  # n_files, summary, output of the running run
        self.toggle = PushButton(text="▸ Whole folder")
        self.input_folder = FileEdit(label="Input folder", mode="d", nullable=True)
        self.output_folder = FileEdit(label="Output folder", mode="d", nullable=True)
        self.tables = CheckBox(text="Tables (cell CSVs + summary.csv)", value=True)
        self.skip_done = CheckBox(text="Skip images already done (continue a run)", value=False)
        self.run_button = PushButton(text="Run folder")
        self.stop_button = PushButton(text="Stop folder", enabled=False)
        self.progress = ProgressBar(label="Folder", min=0, max=STEPS, value=0)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        for picker in (self.input_folder, self.output_folder):
            picker.choose_btn.text = "Choose…"  # the default "Choose directory" is wide
        self.toggle.changed.connect(lambda _value=None: self.unfold(not self.unfolded))
        self.run_button.changed.connect(lambda _value=None: self.run())
        self.stop_button.changed.connect(lambda _value=None: self.stop())
        for widget, text in _tips(self):
            tip(widget, text)
        self.unfold(False)

    @property
    def widgets(self) -> list[Any]:
        """The controls, in the order the dock shows them (all but the toggle folded)."""
        return [self.toggle, *self._section]

    @property
    def _section(self) -> list[Any]:
        return [
            self.input_folder,
            self.output_folder,
            self.tables,
            self.skip_done,
            self.run_button,
            self.stop_button,
            self.progress,
            self.status,
        ]

    @property
    def unfolded(self) -> bool:
        """True while the folder controls are shown."""
        return self.toggle.text.startswith("▾")

    def unfold(self, show: bool = True) -> None:
        """Show (or fold away) the folder controls."""
        self.toggle.text = ("▾" if show else "▸") + " Whole folder"
        for widget in self._section:
            widget.visible = show

    # -- running -------------------------------------------------------------------------

    def plan(self) -> list[Any]:
        """The run's jobs (``core.batch.plan_batch``): every output checked, nothing written.

        Raises UNetCellsError for a missing folder, no images, colliding or existing outputs.
        """
        from ...core.batch import images_in, plan_batch

        source, output = self.input_folder.value, self.output_folder.value
        if source is None:
            raise UNetCellsError("Choose the folder of your images in 'Input folder'.")
        if output is None:
            raise UNetCellsError("Choose an empty folder for the results in 'Output folder'.")
        images = images_in(Path(source))
        return plan_batch(images, Path(output), self.tables.value, self.skip_done.value)

    def run(self) -> None:
        """Plan, then segment the folder in a thread worker (Run folder); a refusal is an
        error notification and the status, and nothing is written."""
        from ...core.batch import SUMMARY_NAME, earlier_rows

        if self.worker is not None:
            return
        if self.dock_running():
            show_error(FOLDER_WAITS)
            self.status.value = FOLDER_WAITS
            return
        try:
            settings = self.settings()
            jobs = self.plan()
        except UNetCellsError as err:
            show_error(str(err))
            self.status.value = str(err)
            return
        output = Path(self.output_folder.value).expanduser()
        summary = output / SUMMARY_NAME if self.tables.value else None
        earlier = None
        if self.skip_done.value:
            rerun = [job.image for job in jobs]
            earlier = earlier_rows(summary, rerun) if summary is not None else []
            if not jobs:
                self.status.value = f"Nothing to do: every image has its results in {output}."
                show_info(self.status.value)
                return
        self._run = {"n_files": len(jobs), "summary": summary, "output": output}
        self.rows, self.message = [], ""
        self._stop.clear()
        self._running(True)
        self.status.value = f"Loading the model for {len(jobs)} files…"
        stop = self._stop
        worker = dock_worker(run_folder, jobs, settings, summary, stop, earlier)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()

    def refuses_run(self, status: Any) -> bool:
        """True (with an error notification and ``status`` set) while a folder run is going
        on: the dock's Run waits for it."""
        busy = self.worker is not None
        if busy:
            show_error(RUN_WAITS)
            status.value = RUN_WAITS
        return busy

    def stop(self) -> None:
        """End the run after the current tile (Stop folder); the summary lists the files
        done, the file being segmented is not written."""
        self._stop.set()
        if self.worker is not None:
            self.status.value = "Stopping…"

    def close(self) -> None:
        """The dock closes: stop the run and detach its worker."""
        self._stop.set()
        detach(self.worker)

    def _running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.stop_button.enabled = running
        if running:
            self.progress.value = 0

    def _on_progress(self, event: Any) -> None:
        self.progress.value = round(STEPS * event.fraction)
        if event.row is not None:
            self.rows.append(event.row)
        failed = sum(1 for row in self.rows if row.get("error"))
        so_far = f", {failed} failed so far" if failed else ""
        if not self._stop.is_set():
            name = Path(event.image).name
            self.status.value = f"file {event.file_index + 1} of {event.n_files}: {name}{so_far}"

    def _on_done(self, rows: list[dict[str, Any]]) -> None:
        self.rows = list(rows)
        stopped = self._stop.is_set()
        self.message = folder_message(rows, stopped=stopped, **self._run)
        self.status.value = self.message
        if any(row.get("error") for row in rows):
            show_warning(self.message)
        else:
            show_info(self.message)

    def _on_error(self, err: Exception) -> None:
        message = error_text(err, "Folder run")
        self.message = message
        show_error(message)
        self.status.value = message

    def _on_finished(self) -> None:
        self.worker = None
        with contextlib.suppress(RuntimeError):  # the widgets were deleted meanwhile
            self._running(False)
        self.finished()


def _tips(p: FolderPanel) -> list[tuple[Any, str]]:
    return [
        (
            p.toggle,
            "Segment every image of a folder with the settings above: labels files, cell "
            "tables and a summary, written to an output folder (no layers are added).",
        ),
        (
            p.input_folder,
            "The folder of images (.tif, .tiff, .zarr); earlier results (*_cells) are skipped.",
        ),
        (
            p.output_folder,
            "An existing folder for the results: NAME_cells.tif per image NAME.tif. Existing "
            "files are never overwritten: a run that would is refused before it starts.",
        ),
        (
            p.tables,
            "Also measure each image's cells: NAME_cells.csv per image and summary.csv, one "
            "row per image (cell count, sizes, failures).",
        ),
        (
            p.skip_done,
            "Continue a stopped run into the same output folder: images whose results exist "
            "are skipped, and summary.csv keeps their rows and adds the new ones.",
        ),
        (
            p.run_button,
            "Segment the folder with the model, device, tile, post-processing and cell "
            "diameter chosen above. A file that fails is reported and the run goes on.",
        ),
        (
            p.stop_button,
            "Stop after the current tile: the file being segmented is not written; the "
            "summary lists the files done.",
        ),
    ]
