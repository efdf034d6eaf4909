"""The "Fine-tune" dock: train a U-Net on annotated layers, live, with a Stop that works.

Thin: the training set is the viewer's workspace (``workspace_for(viewer).pairs``, which
Annotate adds to); the dock runs :func:`core.train.train_iter` in a thread worker and shows
its events (progress, a live plot of loss and validation AP50). The best model is saved
by the core and registered in ``core.registry``; "Run in Predict" asks Predict, through the
workspace, to run it. Closing napari stops training and waits with the window responsive.
Toolkit: plain Qt (panels in ``widgets/finetune/``): the pair list, the folded "Advanced"
section and the live plot do not fit magicgui. The user's layers are never modified."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEventLoop, Qt, QThread, QTimer
from qtpy.QtWidgets import QFileDialog, QMessageBox, QWidget

from .. import layers as L
from ..core.config import TrainConfig
from ..core.errors import UNetCellsError
from ..core.fileio import check_writable
from ..core.model_files import default_model_folder, default_model_path
from ..workspace import TrainingPair, Workspace, workspace_for
from ._window import compact_controls, scrolling_layout, short_dock_title, watch_window_close
from ._workers import dock_worker
from .finetune import ModelPanel, ProgressPanel, ResultsPanel, SettingsPanel, TrainingSetPanel
from .finetune.jobs import preview_tiles, show_preview, start_warm_up, training_samples
from .finetune.results import (
    error_message,
    offer_model,
    outcome_message,
    save_copy,
    start_export,
    stop_when_closed,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ..core.train import TrainResult

logger = logging.getLogger(__name__)

__all__ = ["FinetuneWidget", "TrainingPair"]

# the panels' controls, also reachable as attributes of the dock (tests, scripts)
_CONTROLS = {
    "training_set": "image_combo labels_combo ignore_combo add_button remove_button pair_list",
    "models": "base_combo base_browse output output_browse",
    "settings": "budget budget_unit lr device advanced tile batch strength preset optimizer "
    "validate_every seed",
    "run_panel": "train_button stop_button preview_button progress status plot",
    "results": "run_button save_as_button export_button",
}


class FinetuneWidget(QWidget):
    """Dock widget "Fine-tune".

    Attributes
    ----------
    worker
        The running training worker, or None.
    result
        The last training run's ``TrainResult`` that made a model, or None.
    model_name
        The name the last trained model is registered under, or None.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.workspace: Workspace = workspace_for(napari_viewer)
        self.worker = None
        self.preview_worker = None
        self.export_worker = None
        self.result: TrainResult | None = None
        self.model_name: str | None = None
        self._stop = threading.Event()
        self._watching_close = False
        self._auto_output = False
        self._closing_loop: QEventLoop | None = None
        self._worker_done = threading.Event()

        layout = scrolling_layout(self)  # fits any window height
        short_dock_title(self, "Fine-tune")
        self.training_set = TrainingSetPanel(napari_viewer, self.workspace)
        self.models = ModelPanel()
        self.settings = SettingsPanel()
        self.run_panel = ProgressPanel()
        self.results = ResultsPanel()
        for name, controls in _CONTROLS.items():
            panel = getattr(self, name)
            layout.addWidget(panel, 1 if name == "run_panel" else 0)
            for control in controls.split():
                setattr(self, control, getattr(panel, control))
        compact_controls(self)

        stop_when_closed(self)
        self.train_button.clicked.connect(lambda: self.start_training())  # not clicked(bool)
        self.stop_button.clicked.connect(lambda: self.stop_training())
        self.preview_button.clicked.connect(lambda: self.preview_augmentation())
        self.run_button.clicked.connect(lambda: self.run_in_predict())
        self.export_button.clicked.connect(lambda: self.export_bioimageio())
        self.save_as_button.clicked.connect(lambda: self._guard(self.save_model_as))
        self.warmup_thread = start_warm_up()  # torch's lazy imports, before Train is pressed

    # -- the training set (held by the workspace) -----------------------------------------

    @property
    def pairs(self) -> list[TrainingPair]:
        """The training set: the workspace's pairs (a live list; change it with
        :meth:`add_pair` and :meth:`remove_pair`)."""
        return self.workspace.pairs

    def add_pair(self, image: Any, labels: Any, ignore: Any | None = None) -> TrainingPair:
        """Add (image, labels, ignore) to the training set; shapes are checked now.

        Parameters
        ----------
        image, labels
            An Image layer and the Labels layer that covers it pixel for pixel.
        ignore
            Optional layer of the labels' shape; nonzero pixels are left out of training.

        Returns
        -------
        TrainingPair
            The new pair, or the existing one for the same layers (its ignore replaced).
        """
        return self.workspace.add_pair(image, labels, ignore)

    def remove_pair(self, index: int) -> None:
        """Remove the ``index``-th pair from the training set (the layers stay)."""
        self.workspace.remove_pair(index)

    # -- configuration ---------------------------------------------------------------------

    def set_base_model(self, model: str | Path) -> None:
        """Start from a model file, a model registered in this session (by name) or
        "scratch"."""
        self.models.set_base_model(model)

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` the current settings describe."""
        return self.settings.train_config()

    def output_path(self) -> Path:
        """The chosen model file (".npz" added if missing, so Predict's file picker finds
        it), or a new file in a "models" folder beside the first training image."""
        text = self.output.text().strip()
        if text:
            path = Path(text).expanduser()
            return path if path.suffix == ".npz" or path.is_dir() else Path(f"{path}.npz")
        first = self.pairs[0] if self.pairs else None
        source = getattr(first.image.source, "path", None) if first is not None else None
        stem = first.labels.name if first is not None else "model"
        return default_model_path(default_model_folder(source), stem)

    # -- training ------------------------------------------------------------------------

    def start_training(self) -> Any:
        """Start training in a thread worker.

        Returns
        -------
        The worker (its ``finished`` signal marks the end), or None after a user error
        (shown as a notification) or a declined overwrite.
        """
        if self.worker is not None:
            show_info("Training is already running.")
            return None
        try:
            gen, path, config = self._training_run()
        except UNetCellsError as err:
            self.run_panel.refuse(str(err))
            return None
        if gen is None:
            return None
        self._watch_close()
        self._stop.clear()
        self.result = None
        self.output.setText(str(path))
        self.run_panel.started(config.steps)
        self.results.set_available(False)

        def run():
            return (yield from gen)

        worker = dock_worker(run)
        self._worker_done = done = threading.Event()  # set in the worker's thread, at its end
        worker.finished.connect(done.set, Qt.ConnectionType.DirectConnection)
        worker.yielded.connect(self.run_panel.show_event)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        return worker

    def _training_run(self) -> tuple[Any, Path, TrainConfig]:
        """The training generator (not started), its model file and config; the
        generator is None when the user declines to replace an existing file."""
        from ..core.train import train_iter

        samples = training_samples(self.pairs, show_info)
        config = self.train_config()
        self._auto_output = not self.output.text().strip()
        path = self.output_path()
        check_writable(path, "the model")  # now, not after the training run
        if path.is_dir():
            raise UNetCellsError(f"{path} is a folder; give a file name for the model.")
        overwrite = False
        if path.exists():
            answer = QMessageBox.question(
                self, "Overwrite?", f"{path} exists. Replace it with the new model?"
            )
            if answer != QMessageBox.StandardButton.Yes:
                return None, path, config
            overwrite = True
        gen = train_iter(
            samples,
            self.models.base_model(),
            config,
            device=self.device.currentText(),
            stop=self._stop,
            save_to=path,
            overwrite=overwrite,
        )
        return gen, path, config

    def stop_training(self) -> None:
        """Ask training to stop after the current step; the best model is kept and saved."""
        if self.worker is not None:
            self._stop.set()
            self.run_panel.stopping()

    def _on_result(self, result: TrainResult | None) -> None:
        if result is not None and not result.trained:  # the start model: never offered
            show_info(outcome_message(result, None))
        elif result is not None:
            self.result = result
            self.model_name = offer_model(result)  # usable in Predict even if unsaved
            self.results.set_available(True)

    def save_model_as(self, path: str | Path | None = None) -> Path | None:
        """Save the last trained model.

        Parameters
        ----------
        path
            The model file (.npz); None asks with a file dialog.

        Returns
        -------
        The path written, or None when the dialog was cancelled. Raises UNetCellsError
        when there is no model or the file cannot be written.
        """
        if self.result is None:
            raise UNetCellsError("Train a model first.")
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save model", "", "Model (*.npz)")
            if not path:
                return None
        path = save_copy(self.result, path)
        self.status.setText(f"saved to {path}")
        return path

    def _guard(self, fn, *args, **kwargs) -> Any:
        try:
            return fn(*args, **kwargs)
        except UNetCellsError as err:
            show_error(str(err))
            return None

    def _on_error(self, err: Exception) -> None:
        show_error(error_message(err, "Training"))
        self.status.setText(f"failed: {err}")

    def _on_finished(self) -> None:
        self.worker = None
        if self._auto_output:  # the next run gets a new default file, not this one
            self.output.clear()
        self.run_panel.set_running(False)
        if self._closing_loop is not None:  # shutdown() is waiting for this
            self._closing_loop.quit()

    # -- preview ---------------------------------------------------------------------------

    def preview_augmentation(self, n: int = 4) -> Any:
        """Add ``n`` augmented training tiles (image, labels, weight map) as new layers.

        Returns
        -------
        The worker making the tiles (the layers appear when it returns), or None after a
        user error.
        """
        try:
            samples = training_samples(self.pairs, show_info)
            config = self.train_config()
        except UNetCellsError as err:
            self.run_panel.refuse(str(err))
            return None
        seed = int(time.time()) % 100_000
        base = self.models.base_model()
        worker = dock_worker(preview_tiles, samples, config, base, n, seed)
        worker.returned.connect(lambda tiles: show_preview(self.viewer, tiles))
        worker.errored.connect(self._on_error)
        self.preview_worker = worker
        worker.start()
        return worker

    # -- the new model ---------------------------------------------------------------------

    def run_in_predict(self) -> bool | None:
        """Ask Predict, through the workspace, to run the new model on the selected image
        (else the first training image); a closed Predict dock runs it as it opens.
        Returns True (taken), False (waiting for Predict) or None (no model or image)."""
        if self.model_name is None:
            show_error("Train a model first.")
            return None
        image = self.viewer.layers.selection.active
        if not L.is_image(image):
            image = self.pairs[0].image if self.pairs else None
        if image is None:
            show_error("Select an image layer to run the model on.")
            return None
        taken = self.workspace.request_prediction(image, self.model_name)
        if not taken:
            show_info(
                f"Open the Predict dock (Plugins > U-Net Cells > Predict): it runs "
                f"'{self.model_name}' on '{image.name}' as it opens."
            )
        return taken

    def export_bioimageio(self, path: str | Path | None = None) -> Any:
        """Export the new model as a bioimage.io package (``core.interop.bioimageio``)
        in the background.

        Parameters
        ----------
        path
            The package file (".zip" is added if missing); None asks with a file dialog.

        Returns
        -------
        The export worker, or None when there is no model or the dialog was cancelled.
        """
        if self.result is None:
            show_error("Train a model first.")
            return None
        if path is None:  # the dialog has the user confirm replacing an existing file
            path, _ = QFileDialog.getSaveFileName(self, "Export", "", "bioimage.io (*.zip)")
            if not path:
                return None
        self.export_worker = start_export(self.result.model, path)
        return self.export_worker

    # -- closing ---------------------------------------------------------------------------

    def _watch_close(self) -> None:
        if not self._watching_close:
            self._watching_close = watch_window_close(self, self.shutdown)

    def shutdown(self, timeout_s: float = 120.0) -> None:
        """Stop training and wait for its worker to end, at most ``timeout_s`` seconds.

        Called when napari's window closes during training. Inside Qt's event loop (a
        user closing the window) the wait runs a local event loop, so the window keeps
        drawing and answering while the current step ends and the best model is saved.
        Without a running event loop (a script calling ``viewer.close()``) there is no
        window to keep alive, and the wait blocks on the worker's end.
        """
        if self.worker is None or self._closing_loop is not None:
            return
        self._stop.set()
        if QThread.currentThread().loopLevel() > 0:
            self._wait_in_event_loop(timeout_s)
        else:
            self._worker_done.wait(timeout_s)
        if not self._worker_done.is_set():
            logger.warning("training did not end within %.0f s of napari closing", timeout_s)
        else:
            logger.info("training stopped because napari is closing")

    def _wait_in_event_loop(self, timeout_s: float) -> None:
        loop = QEventLoop()
        self._closing_loop = loop  # _on_finished quits it
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        try:
            if self.worker is not None:  # _on_finished has not run yet
                loop.exec()
        finally:
            self._closing_loop = None
