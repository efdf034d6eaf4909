"""What to do with the new model: "Run in Predict", "Save as...", "Export...".

The buttons are enabled once a training run produced a model (``set_available``);
``save_copy`` and ``start_export`` do the saving and the (background) export;
``finish_without_dock`` ends a run whose dock was closed.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QHBoxLayout, QPushButton, QWidget

from ...core.errors import UNetCellsError
from ...core.fileio import check_writable
from ...core.model_files import validation_ap50
from .._tips import tip
from .._workers import dock_worker, error_text, release

logger = logging.getLogger(__name__)

_TIPS = {
    "run_button": "Ask the Predict dock to run the new model on the selected image layer (or "
    "the first training image); a closed Predict dock runs it as you open it.",
    "save_as_button": "Save the new model to another file, e.g. when its 'Save to' folder "
    "could not be written (the model stays available in Predict meanwhile).",
    "export_button": "Export the new model as a bioimage.io package (.zip) for Fiji "
    "(deepImageJ), ilastik, QuPath or other napari plugins; it is tested before it is "
    "written. Needs: pip install 'napari-unet-cells[interop]'.",
}


class ResultsPanel(QWidget):
    """Three buttons acting on the last trained model; disabled until there is one."""

    def __init__(self) -> None:
        super().__init__()
        self.run_button = QPushButton("Run in Predict")
        self.save_as_button = QPushButton("Save as...")
        self.export_button = QPushButton("Export...")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.run_button, 1)
        row.addWidget(self.save_as_button)
        row.addWidget(self.export_button)
        for name, text in _TIPS.items():
            tip(getattr(self, name), text)
        self.set_available(False)

    def set_available(self, available: bool) -> None:
        """Enable or disable the three buttons (a new model exists or not)."""
        for button in (self.run_button, self.save_as_button, self.export_button):
            button.setEnabled(available)


def save_copy(result: Any, path: str | Path) -> Path:
    """Save a training result's model to ``path`` (.npz) and record it in the result.

    The folder is checked for writing first; an existing file is replaced (atomically,
    ``core.checkpoint.save_model``). On success ``result.saved_to`` is set and
    ``result.save_error`` cleared.

    Parameters
    ----------
    result : TrainResult
        A training result holding a model.
    path : str or Path
        The model file to write (``~`` expanded); its folder must exist.

    Returns
    -------
    Path
        The expanded path.

    Raises
    ------
    UNetCellsError
        The folder cannot be written or saving fails.
    """
    from ...core.checkpoint import save_model

    path = Path(path).expanduser()
    check_writable(path, "the model")
    try:
        result.saved_to = save_model(result.model, path)
    except OSError as err:
        raise UNetCellsError(
            f"Cannot save the model to {path} ({err.strerror}); choose another folder."
        ) from None
    result.save_error = None
    return path


def start_export(model: Any, path: str | Path) -> Any:
    """Export ``model`` as a bioimage.io package at ``path`` in a thread worker.

    ".zip" is added if missing; an existing file is replaced. The worker notifies the
    outcome (info when written, error otherwise).

    Parameters
    ----------
    model : CellModel
        The model to export.
    path : str or Path
        The package to write.

    Returns
    -------
    napari.qt.threading.FunctionWorker
        The started worker.
    """
    from ...core.interop.bioimageio import export_bioimageio

    path = Path(path) if Path(path).suffix == ".zip" else Path(f"{path}.zip")
    worker = dock_worker(export_bioimageio, model, path, overwrite=True)
    worker.returned.connect(lambda p: show_info(f"Exported the model to {p} (tested)."))
    worker.errored.connect(lambda err: show_error(error_text(err, "Export")))
    worker.start()
    return worker


def outcome_message(result: Any, name: str | None) -> str:
    """What a training run produced, for a notification.

    No model (``result.trained`` false), or its validation AP50, where it was saved (or
    why not) and the ``name`` Predict lists it under.

    Parameters
    ----------
    result : TrainResult
        The finished run (``trained``, ``stopped_by``, ``model``, ``saved_to``,
        ``save_error``).
    name : str or None
        The session model's name in Predict.

    Returns
    -------
    str
        One notification text.
    """
    ended = result.ended
    if not result.trained:
        return (
            f"Fine-tuning made no training step ({ended} before the first step): no new "
            "model, nothing saved. Give a larger budget."
        )
    ap = validation_ap50(result.model.provenance)  # with its chosen post-processing
    start = getattr(result, "start_metrics", None)  # (stand-in results may lack it)
    against = f" (start model {start['ap50']:.3f})" if start is not None else ""
    if result.save_error is None:
        saved = f"saved to {result.saved_to}"
    else:
        saved = f"NOT SAVED ({result.save_error}): click 'Save as...' to save it elsewhere"
    return (
        f"Fine-tuning done ({ended}): "
        + (f"validation AP50 {ap:.3f}{against}; " if ap is not None else "")
        + f"{saved}; available in Predict as '{name}' (choosing it sets Predict's sliders "
        "to its post-processing)."
    )


def error_message(err: Exception, what: str) -> str:
    """The notification for an exception a worker raised while doing ``what``.

    A user error as it is, running out of memory with what to change, anything else
    logged (with its traceback) and named.

    Parameters
    ----------
    err : Exception
        What the worker raised.
    what : str
        The work, capitalised ("Training").

    Returns
    -------
    str
        One notification text.
    """
    from ...core.predict import is_out_of_memory

    if isinstance(err, UNetCellsError):
        return str(err)
    logger.error("%s failed", what, exc_info=err)
    if is_out_of_memory(err):
        return (
            f"{what} ran out of memory: lower 'Batch' or 'Tile size' under Advanced, or "
            f"choose Device 'cpu', then train again. ({err})"
        )
    return f"{what} failed: {err}"


def stop_when_closed(dock: Any) -> None:
    """When the Fine-tune ``dock`` is closed (its close button, or napari closing), end
    its run with :func:`finish_without_dock`."""
    from .._window import on_dock_closed

    on_dock_closed(dock, lambda: finish_without_dock(dock.worker, dock._stop))


def finish_without_dock(worker: Any, stop: threading.Event) -> None:
    """The Fine-tune dock closed during training: stop the run as Stop does.

    The step under way ends and the best model is saved (where the dock said); it is
    then offered in Predict and announced in a notification, with nothing left pointing
    at the closed dock. Nothing happens when no run is going.

    Parameters
    ----------
    worker : napari worker or None
        The training worker.
    stop : threading.Event
        The run's stop flag.
    """
    from superqt.utils import ensure_main_thread

    if worker is None:
        return
    stop.set()
    release(worker)  # its handlers were the closed dock's
    worker.returned.connect(ensure_main_thread(_announce))
    worker.errored.connect(
        ensure_main_thread(lambda err: show_error(error_message(err, "Training")))
    )


def _announce(result: Any) -> None:
    """Offer a closed dock's new model in Predict and say where it was saved."""
    if result is not None and result.trained:
        offer_model(result, "The Fine-tune dock was closed, so training stopped. ")
    elif result is not None:
        show_info(outcome_message(result, None))


def offer_model(result: Any, note: str = "") -> str:
    """Register a run's new model for Predict, under its file's name (or the time), and
    announce it (``note`` first); returns the name.

    Parameters
    ----------
    result : TrainResult
        A run that made a model (``trained``).
    note : str
        Text put before the outcome in the notification.
    """
    from ...core.registry import register_model

    name = result.saved_to.stem if result.saved_to is not None else None
    name = name or f"fine-tuned {time.strftime('%H:%M:%S')}"
    register_model(name, result.model)
    notify = show_info if result.save_error is None else show_error
    notify(note + outcome_message(result, name))
    return name
