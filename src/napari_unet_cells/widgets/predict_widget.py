"""The "Predict" dock: seamless overlap-tile U-Net prediction to a Labels layer.

Thin: reads the Image layer and the controls on the GUI thread into plain values, runs
:func:`napari_unet_cells.core.predict.predict_iter` in a napari thread worker (progress
per tile, Stop between tiles) and writes "<image> cells" (Labels, with the image's scale
and translate) and optionally "<image> cell probability"; the labels are recorded in the
viewer's workspace as the image's prediction. Threshold and minimum size changes re-run
only ``probabilities_to_labels`` on the kept probabilities. The input layer is never
modified; a re-run replaces only the layer this dock created (asking first if the user
edited it). A toggle shows the tile grid (the paper's Figure 2).

The dock runs what other docks ask through ``workspace.request_prediction(image, model)``
(one that comes during a run or a folder run waits for it) and re-lists the models
whenever ``core.registry`` registers or forgets one. Its parts live in
:mod:`napari_unet_cells.widgets.predict`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container
from napari.utils.notifications import show_error, show_info

from ..core.config import InstanceConfig, PredictConfig
from ..core.errors import UNetCellsError
from ..workspace import workspace_for
from ._window import connect_while_alive, layer_list_events, on_dock_closed, short_dock_title
from ._workers import detach
from .predict.folder_panel import FolderPanel
from .predict.grid import TileGridOverlay, dock_grid
from .predict.inputs import InputsPanel
from .predict.measure_panel import MeasurePanel
from .predict.output import OutputLayers, Source, ask_to_replace, probabilities_on_grid
from .predict.postprocess import PostProcessPanel
from .predict.requests import PredictionRequests
from .predict.run_panel import RunPanel, result_text
from .predict.worker import Relabeller, prediction_worker, read_job, read_settings

if TYPE_CHECKING:  # pragma: no cover
    import napari

logger = logging.getLogger(__name__)

# the panels' controls, also attributes of the dock (as before the split)
_PANEL_CONTROLS = {
    "inputs": "image_combo channel model_combo model_file device tile diameter diameter_from_line",
    "post": "threshold seed_threshold min_size min_confidence",
    "controls": "tta show_probabilities show_grid run_button stop_button progress status",
}


class PredictWidget(Container):
    """Dock widget "Predict". ``worker`` is the running thread worker, or None.

    After a run, ``probabilities`` holds the cell probability (float32, like the image
    without channels) and ``labels_layer`` the Labels layer this dock owns. Moving a
    post-processing control re-labels those probabilities: at once for images up to
    ``background_relabel_px`` pixels, in a background thread above (the last setting
    wins), so the window stays responsive on large images.
    """

    background_relabel_px = 4_000_000

    @property
    def native(self):
        """What napari docks: the scroll area around the controls (magicgui's ``native``
        is the panel inside it), so the dock fits any window height."""
        return self.root_native_widget

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(scrollable=True)  # fits any window height
        short_dock_title(self.native, "Predict")
        self.viewer = napari_viewer
        self.workspace = workspace_for(napari_viewer)
        self.worker = None
        self.probabilities: np.ndarray | None = None
        self.inference_runs = 0
        self._source: Source | None = None  # the image ``probabilities`` belong to
        self._running_source: Source | None = None
        self._image_shape: tuple[int, int] | None = None  # (Y, X) the labels go back to
        self._last_tile: tuple[int, int] | None = None
        self._stop = threading.Event()
        self.outputs = OutputLayers(napari_viewer, lambda layer: self.confirm_overwrite(layer))
        self.grid = TileGridOverlay(napari_viewer)
        self.relabeller = Relabeller(self._on_relabelled, lambda err: show_error(str(err)))
        self.inputs = InputsPanel(napari_viewer, self._own_layers)
        self.post = PostProcessPanel()
        self.controls = RunPanel()
        self.folder = FolderPanel(
            lambda: read_settings(self.inputs, self.post, self.tta.value),
            dock_running=lambda: self.worker is not None,
            finished=lambda: self.requests.release(),
        )
        for panel, names in _PANEL_CONTROLS.items():
            for name in names.split():
                setattr(self, name, getattr(getattr(self, panel), name))
        self.extend([*self.inputs.widgets, *self.post.widgets, *self.controls.widgets])
        self.measure_panel = MeasurePanel(napari_viewer)  # per-cell table, histogram
        self.extend(self.measure_panel.widgets)
        self.extend(self.folder.widgets)  # folded: a whole folder to files
        self.requests = PredictionRequests(
            self.workspace,
            busy=lambda: self.worker is not None or self.folder.worker is not None,
            run_on=self.run_on,
            status=self.status,
        )
        self._connect()
        self.apply_model_defaults()

    def _connect(self) -> None:
        from superqt.utils import ensure_main_thread

        from ..core import registry

        self.run_button.changed.connect(self.run)
        self.stop_button.changed.connect(self.stop)
        self.diameter_from_line.changed.connect(self.measure_diameter)
        self.post.connect(self.update_labels)
        self.model_combo.changed.connect(self.apply_model_defaults)
        self.model_file.changed.connect(self.apply_model_defaults)
        self.show_grid.changed.connect(self.update_grid)
        self.show_probabilities.changed.connect(self._write_probabilities)
        for widget in (self.image_combo, self.model_combo, self.model_file, self.tile):
            widget.changed.connect(self._on_inputs_changed)
        for emitter in layer_list_events(self.viewer):
            connect_while_alive(self.native, emitter, self._refresh_layers)
        # other threads may register models: handle every outside event on the GUI thread
        self._requested = ensure_main_thread(self.requests.take)
        self._models_changed = ensure_main_thread(self._on_models_changed)
        self.workspace.events.prediction_requested.connect(self._requested)
        registry.events.changed.connect(self._models_changed)
        on_dock_closed(self.native, self._on_destroyed)
        self.requests.take()  # one asked for before this dock was opened

    def _on_destroyed(self) -> None:
        """The dock was closed: stop the workers and stop listening."""
        from ..core import registry

        self.close_workers()
        self.workspace.events.prediction_requested.disconnect(self._requested)
        registry.events.changed.disconnect(self._models_changed)

    # -- the layers this dock owns ----------------------------------------------------------

    @property
    def labels_layer(self) -> Any | None:
        """The "<image> cells" Labels layer this dock wrote last, or None."""
        return self.outputs.labels_layer

    @property
    def probability_layer(self) -> Any | None:
        """The "<image> cell probability" Image layer, or None."""
        return self.outputs.probability_layer

    @property
    def grid_layer(self) -> Any | None:
        """The tile grid overlay (a Shapes layer), or None."""
        return self.grid.layer

    @property
    def relabel_worker(self) -> Any | None:
        """The background re-labelling worker, or None."""
        return self.relabeller.worker

    def _own_layers(self) -> list[Any]:
        return [x for x in (self.labels_layer, self.probability_layer, self.grid_layer) if x]

    def _refresh_layers(self, _event=None) -> None:
        if self.worker is not None and self._running_source.layer not in self.viewer.layers:
            self.stop()  # its image was removed: no layer is written for it
        self.outputs.forget_removed()
        self.grid.forget_removed()
        self.image_combo.reset_choices()

    # -- models and settings -----------------------------------------------------------------

    def refresh_models(self) -> None:
        """Re-read the model list (the bundled model, this session's models, a file)."""
        self.model_combo.reset_choices()

    def _on_models_changed(self) -> None:
        with contextlib.suppress(RuntimeError):  # the widget was deleted meanwhile
            self.refresh_models()

    def apply_model_defaults(self, _value=None) -> None:
        """Set the post-processing controls to the chosen model's recommendation (the
        labels shown stay those of the model that made them, until the next Run)."""
        self.post.show(self.inputs.instance_defaults())

    def _on_inputs_changed(self, _value=None) -> None:
        if self.show_grid.value:
            self.update_grid()

    def predict_config(self) -> PredictConfig:
        """Device, tile and test-time augmentation as a ``PredictConfig``."""
        return self.inputs.predict_config(self.tta.value)

    def instance_config(self) -> InstanceConfig:
        """The model's recommended post-processing with the controls' values.

        Raises UNetCellsError for an invalid setting.
        """
        return self.post.config(self.inputs.instance_defaults())

    def diameter_value(self) -> float | str | None:
        """The diameter control as ``predict`` takes it: "auto", px, or None."""
        return self.inputs.diameter_value()

    def measure_diameter(self, _value=None) -> None:
        """Set the diameter from the last line drawn in the selected Shapes layer (px of
        the image's data grid)."""
        try:
            self.status.value = self.inputs.set_diameter_from_line(
                self.viewer.layers.selection.active
            )
        except UNetCellsError as err:
            show_error(str(err))

    # -- running -------------------------------------------------------------------------------

    def run(self) -> None:
        """Start prediction in a thread worker (Run button); refusals go to the status."""
        if self.worker is not None or self.folder.refuses_run(self.status):
            return
        try:
            layer = self.inputs.image()
            job = read_job(
                layer,
                **read_settings(self.inputs, self.post, self.tta.value),
                channel_choice=self.channel.value,
                in_channels=self.inputs.model_config().in_channels,
            )
        except UNetCellsError as err:
            show_error(str(err))
            self.status.value = str(err)
            return
        from ..core.predict import describe_layout

        axis = self.inputs.channel_axis_of(layer)
        layout = describe_layout(tuple(layer.data.shape), axis, job.channel)
        self._running_source = Source(layer, axis, layout)  # ``_source`` with its result
        self._stop.clear()
        self.relabeller.cancel()  # re-labelling old probabilities is moot now
        self.controls.running(True)
        measuring = ", then measuring the cell size" if job.diameter == "auto" else ""
        self.status.value = f"Loading the model{measuring}…"
        self.worker = worker = prediction_worker(job, self._stop)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        worker.start()

    def run_on(self, image: Any, model: str) -> None:
        """Choose an image and a model, then :meth:`run` (what a workspace request does).

        Parameters
        ----------
        image : napari.layers.Image
            A layer of this viewer.
        model : str
            A model's name in the Model list, e.g. one fine-tuned in this session (the
            list is re-read first), or "bundled". Unknown: a message, nothing runs.
        """
        problem = None
        if not self.inputs.select_model(model):
            problem = f"The model {model!r} is not available (any more); choose another."
        elif not self.inputs.select_image(image):
            problem = f"The image {getattr(image, 'name', image)!r} is not in this viewer."
        if problem is not None:
            show_error(problem)
            self.status.value = problem
            return
        self.run()

    def stop(self) -> None:
        """Ask the running prediction to stop after the current tile (Stop button)."""
        self._stop.set()
        self.requests.drop()
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "Stopping…"

    def close_workers(self) -> None:
        """The dock closes: stop the workers and detach them from this (deleted) widget."""
        self._stop.set()
        self.requests.drop()
        self.relabeller.close()
        self.folder.close()
        detach(self.worker)

    def _on_progress(self, event) -> None:
        if event.message:
            show_info(event.message)
        self.controls.show_progress(event)
        if event.tile_shape != (0, 0):
            self._last_tile = event.tile_shape

    def _on_result(self, result) -> None:
        if result is None or self._stop.is_set():
            self.status.value = "Stopped: no layer written."
            return
        self.inference_runs += 1
        self._source = self._running_source  # the probabilities and their image, together
        self.probabilities = result.probabilities
        self._image_shape = result.image_shape
        self._write_labels(result.labels, new_run=True)
        if self.show_probabilities.value:
            self._write_probabilities()
        self.status.value = result_text(int(result.labels.max()), self._source.layout, result)
        if self.show_grid.value:
            self.update_grid()

    def _on_error(self, err: Exception) -> None:
        message = str(err) if isinstance(err, UNetCellsError) else f"Prediction failed: {err!r}"
        show_error(message)
        self.status.value = message
        if not isinstance(err, UNetCellsError):
            logger.exception("prediction failed", exc_info=err)

    def _on_finished(self) -> None:
        self.worker = None
        self.controls.running(False)
        if self._stop.is_set() and "Stopped" not in self.status.value:
            self.status.value = "Stopped: no layer written."
        self.requests.release()

    # -- output layers ---------------------------------------------------------------------

    def confirm_overwrite(self, layer: Any) -> bool:
        """Ask before replacing a Labels layer the user edited (tests may replace this).

        Returns True to replace it, False to write a new layer.
        """
        return ask_to_replace(self.native, layer)

    def _write_labels(self, labels: np.ndarray, new_run: bool) -> None:
        made = self.outputs.write_labels(self._source, labels, new_run)
        if (made or new_run) and self._source.layer in self.viewer.layers:
            self.workspace.add_prediction(self._source.layer, self.labels_layer)
        self.measure_panel.measure(self.labels_layer, self._source.layer)  # features

    def _write_probabilities(self, show: bool = True) -> None:
        """Write the probability layer (``show``: the Show probabilities box was ticked);
        unticked: hide it."""
        if not show:
            self.outputs.hide_probabilities()
        elif self.probabilities is not None:
            shown = probabilities_on_grid(self.probabilities, self._image_shape)
            self.outputs.write_probabilities(self._source, shown)

    def update_labels(self, _value=None) -> None:
        """A post-processing control changed: new labels from the kept probabilities, no
        inference (in a background thread for large images, see the class docstring)."""
        if self.probabilities is None or self.worker is not None:
            return
        from ..core.instances import probabilities_to_labels

        try:
            config = self.instance_config()
        except UNetCellsError as err:
            show_error(str(err))
            return
        if self.probabilities.size <= self.background_relabel_px:
            labels = probabilities_to_labels(self.probabilities, config, shape=self._image_shape)
            self._show_relabelled(labels)
            return
        self.relabeller.request(self.probabilities, config, self._image_shape)
        self.status.value = "Re-labelling…"

    def _on_relabelled(self, probabilities: np.ndarray, labels: np.ndarray) -> None:
        if self.probabilities is probabilities and self.worker is None:  # still current
            self._show_relabelled(labels)

    def _show_relabelled(self, labels: np.ndarray) -> None:
        self._write_labels(labels, new_run=False)
        self.status.value = f"{int(labels.max())} cells."

    # -- tile grid overlay -----------------------------------------------------------------

    def update_grid(self, _value=None) -> None:
        """Show/refresh or hide the tile grid overlay (a Shapes layer this dock owns)."""
        if not self.show_grid.value:
            self.grid.hide()
            return
        try:
            layer = self.inputs.image()
        except UNetCellsError as err:
            show_error(str(err))
            return
        self.grid.show(layer, *dock_grid(self.inputs, layer, self._last_tile))
