"""The "Predict" dock: seamless overlap-tile U-Net prediction to a Labels layer.

Thin: reads the Image layer, builds a PredictConfig and an InstanceConfig, runs
:func:`napari_unet_cells.core.predict.predict_iter` in a napari thread worker (progress
per tile, Stop between tiles) and writes "<image> cells" (Labels, with the image's
scale and translate) and optionally "<image> cell probability". Threshold and minimum
size changes re-run only :func:`probabilities_to_labels` on the kept probabilities.
The input layer is never modified; a re-run replaces only the layer this dock created
(asking first if the user edited it). A toggle shows the tile grid: every tile's write
region and one tile's read region with its context margin, as in the paper's Figure 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

from ..core.config import InstanceConfig, ModelConfig, PredictConfig, config_from_dict
from ..core.errors import UNetCellsError
from ._tips import tip
from ._window import short_dock_title

if TYPE_CHECKING:  # pragma: no cover
    import napari

logger = logging.getLogger(__name__)

_BUNDLED = "bundled"
_FILE = "file"
_AUTO = "auto"


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
        from ..core.device import available_devices

        self.viewer = napari_viewer
        self.worker = None
        self.probabilities: np.ndarray | None = None
        self.labels_layer: Labels | None = None
        self.probability_layer: Image | None = None
        self.grid_layer: Shapes | None = None
        self.inference_runs = 0
        self.relabel_worker = None
        self._pending_relabel: InstanceConfig | None = None
        self._source: Image | None = None  # the image ``probabilities`` belong to
        self._running_source: Image | None = None
        self._edited = False
        self._writing = False
        self._stop = threading.Event()
        self._last_tile: tuple[int, int] | None = None
        self._image_shape: tuple[int, int] | None = None  # (Y, X) the labels go back to

        self.image_combo = ComboBox(label="Image", choices=self._image_choices)
        self.channel = ComboBox(label="Channel", choices=self._channel_choices)
        self.model_combo = ComboBox(label="Model", choices=self._model_choices)
        self.model_file = FileEdit(label="Model file", mode="r", filter="*.npz")
        self.device = ComboBox(label="Device", choices=available_devices(), value="auto")
        self.tile = ComboBox(label="Tile (px)", choices=self._tile_choices, value=_AUTO)
        self.diameter = LineEdit(label="Cell diameter (px)", value="auto")
        self.diameter_from_line = PushButton(text="Diameter from drawn line")
        defaults = InstanceConfig()
        self.threshold = FloatSlider(
            label="Threshold", min=0.01, max=0.99, step=0.01, value=defaults.threshold
        )
        self.seed_threshold = FloatSlider(label="Seed threshold", min=0.0, max=0.99, step=0.01)
        self.min_size = SpinBox(label="Min size (px)", min=0, max=100000, value=defaults.min_size)
        self.min_confidence = FloatSlider(
            label="Min confidence", min=0.0, max=0.99, step=0.01, value=defaults.min_confidence
        )
        self.tta = CheckBox(text="Flip test-time augmentation (4x slower)", value=False)
        self.show_probabilities = CheckBox(text="Also show probabilities", value=False)
        self.show_grid = CheckBox(text="Show tile grid", value=False)
        self.run_button = PushButton(text="Run")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="Progress", min=0, max=1, value=0)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # the size note after a run is long
        self.extend(
            [
                self.image_combo,
                self.channel,
                self.model_combo,
                self.model_file,
                self.device,
                self.tile,
                self.diameter,
                self.diameter_from_line,
                self.threshold,
                self.seed_threshold,
                self.min_size,
                self.min_confidence,
                self.tta,
                self.show_probabilities,
                self.show_grid,
                self.run_button,
                self.stop_button,
                self.progress,
                self.status,
            ]
        )
        tips = [
            (
                self.channel,
                "Which channel holds the nuclei, for a multi-channel image (the model reads "
                "one). auto: a single-channel image or stack as it is, RGB as the mean; "
                "other channel counts ask you to choose here. The status line says how the "
                "image was read, e.g. '5 planes of 512x512, channel 1 of 2'.",
            ),
            (
                self.image_combo,
                "The Image layer to segment: 2-D, a stack of 2-D planes, or RGB. It is never "
                "changed; the cells go to a new Labels layer '<image> cells'.",
            ),
            (
                self.model_combo,
                "The bundled model (trained on synthetic nuclei), a model fine-tuned in this "
                "session, or 'Model file…'. Choosing a model sets Threshold, Seed threshold, "
                "Min size and Min confidence to that model's recommendation.",
            ),
            (
                self.model_file.line_edit,
                "Path of a model file (.npz) saved by this plugin; used when Model is "
                "'Model file…'.",
            ),
            (self.model_file.choose_btn, "Browse for a model file (.npz)."),
            (
                self.device,
                "Where the network runs. auto: the first CUDA GPU, else Apple MPS, else the "
                "CPU. Only devices found on this computer are listed.",
            ),
            (
                self.tile,
                "Network input tile, in pixels. auto: as large as the device's memory allows "
                "(smaller for small images). The cells do not depend on the tile size; smaller "
                "tiles need less memory. After an out-of-memory error the tile is halved "
                "automatically.",
            ),
            (
                self.diameter,
                "Typical cell (nucleus) diameter in pixels. auto: estimated from the image at "
                "each run (shown below after Run). The image is resampled so its cells appear "
                "at the size the model was trained around, and the labels come back on the "
                "image's own grid. 'none': never resample.",
            ),
            (
                self.diameter_from_line,
                "Measure the diameter: draw a line across a typical cell in a Shapes layer "
                "(line tool), select that layer, then click here.",
            ),
            (
                self.threshold,
                "Cell probability (0.01 to 0.99) above which a pixel belongs to a cell. "
                "Lower: cells grow and may merge; higher: cells shrink and may split or "
                "vanish. Applied at once, without running the network again.",
            ),
            (
                self.seed_threshold,
                "Separates touching cells: each cell grows from a seed, a core where the cell "
                "probability is above this (0.9 for the bundled model), out to Threshold. "
                "Raise it when touching cells merge, lower it when single cells are cut in "
                "two. 0 (or at most Threshold): no seeds, plain threshold. Applied at once, "
                "without running the network again.",
            ),
            (
                self.min_size,
                "Objects smaller than this many pixels are removed (0 keeps all). Applied at "
                "once, without running the network again.",
            ),
            (
                self.min_confidence,
                "Remove objects whose mean cell probability is below this, 0 to 0.99 (faint "
                "false detections on background texture or debris; 0 keeps all). Applied at "
                "once, without running the network again.",
            ),
            (
                self.tta,
                "Average the predictions of 4 flipped copies of the image: a little smoother, "
                "4 times slower.",
            ),
            (
                self.show_probabilities,
                "Also add the cell probability (0 to 1) as an image layer; it helps to choose "
                "the threshold.",
            ),
            (
                self.show_grid,
                "Show the tiles: yellow = the part of the image each tile writes; blue = the "
                "larger area one tile reads (its context margin, 92 px for a depth-4 network, "
                "mirrored at the image edge).",
            ),
            (
                self.run_button,
                "Segment the chosen image (progress per tile below). Writes '<image> cells'; "
                "a later run replaces only that layer, asking first if you edited it.",
            ),
            (self.stop_button, "Stop after the current tile; no layer is written."),
        ]
        for widget, text in tips:
            tip(widget, text)

        self.run_button.changed.connect(self.run)
        self.diameter_from_line.changed.connect(self.measure_diameter)
        self.stop_button.changed.connect(self.stop)
        self.threshold.changed.connect(self.update_labels)
        self.seed_threshold.changed.connect(self.update_labels)
        self.min_size.changed.connect(self.update_labels)
        self.min_confidence.changed.connect(self.update_labels)
        self.model_combo.changed.connect(self.apply_model_defaults)
        self.model_file.changed.connect(self.apply_model_defaults)
        self.show_grid.changed.connect(self.update_grid)
        self.show_probabilities.changed.connect(self._on_show_probabilities)
        for widget in (self.image_combo, self.model_combo, self.model_file, self.tile):
            widget.changed.connect(self._on_inputs_changed)
        self.image_combo.changed.connect(lambda _value=None: self.channel.reset_choices())
        self.model_combo.changed.connect(self._refresh_tiles)
        self.model_file.changed.connect(self._refresh_tiles)
        self.native.destroyed.connect(lambda *_: self.close_workers())
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.apply_model_defaults()

    # -- choices -------------------------------------------------------------------------

    def _own_layers(self) -> list[Any]:
        return [x for x in (self.labels_layer, self.probability_layer, self.grid_layer) if x]

    def _channel_choices(self, _widget=None) -> list[tuple[str, Any]]:
        """auto, then (axis, channel) for each axis that may hold channels: the RGB axis,
        a last axis of <= 4 values, or a leading axis of <= 8."""
        combo = getattr(self, "image_combo", None)  # None while the dock is being built
        layer = combo.value if combo is not None else None
        choices: list[tuple[str, Any]] = [("auto", None)]
        if layer is None or layer.multiscale:
            return choices
        shape = tuple(layer.data.shape)
        last = len(shape) - 1
        axes = [a for a in range(len(shape) - 2) if shape[a] <= 8 and not layer.rgb]
        if layer.rgb or (len(shape) >= 3 and shape[-1] <= 4):
            axes = [last]
        for axis in axes:
            choices += [
                (f"{k} of {shape[axis]} (axis {axis})", (axis, k)) for k in range(shape[axis])
            ]
        return choices

    def _image_choices(self, _widget=None) -> list[tuple[str, Image]]:
        own = {id(layer) for layer in self._own_layers()}
        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Image) and id(layer) not in own
        ]

    def _model_choices(self, _widget=None) -> list[tuple[str, Any]]:
        from ..core.registry import bundled_model_path, registered_models

        choices: list[tuple[str, Any]] = []
        if bundled_model_path() is not None:
            choices.append(("Bundled model", _BUNDLED))
        choices += [(f"{name} (this session)", name) for name in registered_models()]
        choices.append(("Model file…", _FILE))
        return choices

    def _tile_choices(self, _widget=None) -> list[str]:
        from ..core.tiling import snap_tile

        config = self._model_config()
        small = range(1, 257, 2**config.depth)  # every valid size up to 256 px
        large = range(256, 2049, 64)
        sizes = {snap_tile(s, config.depth, config.padding) for s in (*small, *large)}
        return [_AUTO, *map(str, sorted(sizes))]

    def _refresh_layers(self, _event=None) -> None:
        if self.labels_layer is not None and self.labels_layer not in self.viewer.layers:
            self.labels_layer = None
        if self.probability_layer is not None and self.probability_layer not in self.viewer.layers:
            self.probability_layer = None
        if self.grid_layer is not None and self.grid_layer not in self.viewer.layers:
            self.grid_layer = None
        self.image_combo.reset_choices()

    def _refresh_tiles(self, _value=None) -> None:
        current = self.tile.value
        self.tile.reset_choices()
        if current in self.tile.choices:
            self.tile.value = current

    def refresh_models(self) -> None:
        """Re-read the model list (e.g. after the Fine-tune dock registered a model)."""
        self.model_combo.reset_choices()

    def _on_inputs_changed(self, _value=None) -> None:
        if self.show_grid.value:
            self.update_grid()

    # -- inputs --------------------------------------------------------------------------

    def _model_choice(self) -> Any:
        from ..core.registry import registered_models

        choice = self.model_combo.value
        if choice == _BUNDLED:
            return None
        if choice == _FILE:
            path = Path(self.model_file.value) if self.model_file.value else None
            if path is None or not path.is_file():
                raise UNetCellsError("Choose a model file (.npz) in 'Model file'.")
            return path
        model = registered_models().get(choice)
        if model is None:
            raise UNetCellsError(f"The model {choice!r} is no longer available; choose another.")
        return model

    def _model_config(self) -> ModelConfig:
        """The chosen model's network config, without loading its weights (default if unknown)."""
        from ..core.checkpoint import read_model_info

        try:
            model = self._model_choice()
            if model is None:
                from ..core.registry import bundled_model_path

                model = bundled_model_path()
            if isinstance(model, Path):
                return config_from_dict(ModelConfig, read_model_info(model)["model_config"])
            return model.config
        except (UNetCellsError, AttributeError, KeyError):
            return ModelConfig()

    def _model_instance_defaults(self) -> InstanceConfig:
        """The chosen model's recommended post-processing, read without loading weights."""
        from ..core.checkpoint import read_model_info
        from ..core.instances import instance_defaults

        try:
            model = self._model_choice()
            if model is None:
                from ..core.registry import bundled_model_path

                model = bundled_model_path()
            if isinstance(model, Path):
                stored = read_model_info(model).get("extra", {}).get("instances")
                return config_from_dict(InstanceConfig, stored) if stored else InstanceConfig()
            return instance_defaults(model)
        except (UNetCellsError, AttributeError, KeyError, TypeError):
            return InstanceConfig()

    def apply_model_defaults(self, _value=None) -> None:
        """Set the post-processing controls to the chosen model's recommendation."""
        defaults = self._model_instance_defaults()
        self.threshold.value = defaults.threshold
        self.seed_threshold.value = defaults.seed_threshold or 0.0
        self.min_size.value = defaults.min_size
        self.min_confidence.value = defaults.min_confidence

    def diameter_value(self) -> float | str | None:
        """The diameter control as ``predict`` takes it: "auto", px, or None."""
        from ..core.scale import parse_diameter

        return parse_diameter(self.diameter.value)

    def measure_diameter(self, _value=None) -> None:
        """Set the diameter from the last line drawn in the selected Shapes layer (px of
        the image's data grid)."""
        layer = self.viewer.layers.selection.active
        lines = []
        if isinstance(layer, Shapes):
            lines = [
                np.asarray(d)
                for d, t in zip(layer.data, layer.shape_type, strict=True)
                if t in ("line", "path")
            ]
        if not lines:
            show_error(
                "Draw a line across a typical cell in a Shapes layer (line tool), select that "
                "layer, then click 'Diameter from drawn line'."
            )
            return
        ends = lines[-1][[0, -1], -2:] * np.asarray(layer.scale)[-2:]
        pixel = np.asarray(self._image().scale)[-2:] if self.image_combo.value else (1, 1)
        length = float(np.hypot(*((ends[1] - ends[0]) / pixel)))
        self.diameter.value = f"{length:.0f}"
        self.status.value = f"Cell diameter set to {length:.0f} px from the drawn line."

    def predict_config(self) -> PredictConfig:
        tile = None if self.tile.value in (None, _AUTO) else int(self.tile.value)
        return PredictConfig(device=self.device.value, tile=tile, tta=bool(self.tta.value))

    def instance_config(self) -> InstanceConfig:
        defaults = self._model_instance_defaults()
        return dataclasses.replace(
            defaults,
            threshold=float(self.threshold.value),
            seed_threshold=float(self.seed_threshold.value) or None,  # 0: no seeds
            min_size=int(self.min_size.value),
            min_confidence=float(self.min_confidence.value),
        )

    def _image(self) -> Image:
        layer = self.image_combo.value
        if layer is None:
            raise UNetCellsError("Open or choose an Image layer to segment.")
        if layer.multiscale:
            raise UNetCellsError(
                f"Layer {layer.name!r} is multiscale; use `unet-cells predict` on the zarr file."
            )
        return layer

    # -- running -------------------------------------------------------------------------

    def run(self) -> None:
        """Start prediction in a thread worker (Run button)."""
        from ..core.predict import channel_layout

        if self.worker is not None:
            return
        try:
            layer = self._image()
            model = self._model_choice()
            config = self.predict_config()
            instances = self.instance_config()
            diameter = self.diameter_value()
            channel_axis, channel = self.channel.value or (None, None)
            channel_layout(
                layer.data.shape,
                self._model_config().in_channels,
                layer.rgb or None,
                channel_axis,
                channel,
            )  # a refusal now, not from the worker
        except UNetCellsError as err:
            show_error(str(err))
            self.status.value = str(err)
            return
        from ..core.predict import predict_iter

        data = np.asarray(layer.data)  # read only: never modified
        self._stop.clear()
        self._pending_relabel = None  # re-labelling old probabilities is moot now
        self._running_source = layer  # becomes ``_source`` with its result, not before
        self.progress.value = 0
        self.status.value = "Loading the model…"
        self.run_button.enabled = False
        self.stop_button.enabled = True
        stop = self._stop

        @thread_worker
        def work():
            return (
                yield from predict_iter(
                    data,
                    model,
                    config,
                    instances,
                    stop=stop,
                    rgb=True if layer.rgb else None,  # None: a (Y, X, 2) layer is channels
                    channel_axis=channel_axis,
                    channel=channel,
                    diameter=diameter,
                )
            )

        self.worker = worker = work()
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        worker.start()

    def stop(self) -> None:
        """Ask the running prediction to stop after the current tile (Stop button)."""
        self._stop.set()
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "Stopping…"

    def close_workers(self) -> None:
        """The dock closes: stop the workers and detach them from this (deleted) widget."""
        self._stop.set()
        self._pending_relabel = None
        for worker in (self.worker, self.relabel_worker):
            if worker is None:
                continue
            for name in ("yielded", "returned", "errored", "finished"):
                signal = getattr(worker, name, None)  # a function worker has no "yielded"
                with contextlib.suppress(AttributeError, TypeError, RuntimeError):
                    signal.disconnect()  # raises when nothing is connected
            worker.quit()

    def _on_progress(self, event) -> None:
        if event.message:
            show_info(event.message)
        if event.total:
            self.progress.max = event.total
            self.progress.value = event.done
            plane = f"plane {event.plane + 1}/{event.n_planes}, " if event.n_planes > 1 else ""
            self.status.value = f"{plane}tile {event.done}/{event.total}"
        if event.tile_shape != (0, 0):
            self._last_tile = event.tile_shape

    def _layout_text(self) -> str:
        """How the last image was read, e.g. "5 planes of 512x512, channel 1 of 2"."""
        from ..core.predict import describe_layout

        layer = self._source
        channel = (self.channel.value or (None, None))[1]
        return describe_layout(tuple(layer.data.shape), self._channel_axis_of(layer), channel)

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
        layout = self._layout_text()  # said when there is more than one plane or channel
        read_as = f" Read as {layout}." if "," in layout or not layout.startswith("1 ") else ""
        self.status.value = (
            f"{int(result.labels.max())} cells.{read_as} {_size_note(result.scale)}"
        )
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
        self.run_button.enabled = True
        self.stop_button.enabled = False
        if self._stop.is_set() and "Stopped" not in self.status.value:
            self.status.value = "Stopped: no layer written."

    # -- output layers -------------------------------------------------------------------

    def confirm_overwrite(self, layer: Labels) -> bool:
        """Ask before replacing a Labels layer the user edited (tests may replace this)."""
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(
            self.native,
            "Replace edited labels?",
            f"You edited the layer {layer.name!r} since the last prediction. Replace it? "
            "(No keeps it and writes a new layer.)",
        )
        return answer == QMessageBox.StandardButton.Yes

    def _geometry(self) -> dict[str, Any]:
        layer = self._source
        ndim = self.probabilities.ndim if self.probabilities is not None else 2
        scale, translate = list(layer.scale), list(layer.translate)
        axis = self._channel_axis_of(layer)
        if axis is not None and not layer.rgb:  # the channel axis is no axis of the labels
            del scale[axis], translate[axis]
        return {"scale": tuple(scale[-ndim:]), "translate": tuple(translate[-ndim:])}

    def _channel_axis_of(self, layer: Image) -> int | None:
        from ..core.predict import guess_channel_axis

        axis, channel = self.channel.value or (None, None)
        try:
            return guess_channel_axis(tuple(layer.data.shape), 1, layer.rgb or None, axis, channel)
        except UNetCellsError:
            return None

    def _write_labels(self, labels: np.ndarray, new_run: bool) -> None:
        name = f"{self._source.name} cells"
        layer = self.labels_layer
        if layer is not None and layer in self.viewer.layers:
            if self._edited and not self.confirm_overwrite(layer):
                layer = None
        else:
            layer = None
        self._writing = True
        try:
            if layer is None:
                role = {"unet_cells_role": "prediction"}  # Annotate offers it, never edits it
                layer = self.viewer.add_labels(
                    labels, name=name, metadata=role, **self._geometry()
                )
                layer.events.paint.connect(self._on_user_edit)
                layer.events.set_data.connect(self._on_user_edit)
                self.labels_layer = layer
            else:
                layer.data = labels
                if new_run:
                    layer.scale = self._geometry()["scale"]
                    layer.translate = self._geometry()["translate"]
                    layer.name = name
        finally:
            self._writing = False
        self._edited = False

    def _on_user_edit(self, _event=None) -> None:
        if not self._writing:
            self._edited = True

    def _write_probabilities(self) -> None:
        if self.probabilities is None:
            return
        from ..core.predict import PredictionResult, probabilities_on_image_grid

        name = f"{self._source.name} cell probability"
        shown = probabilities_on_image_grid(
            PredictionResult(np.empty(0), self.probabilities, image_shape=self._image_shape)
        )
        if self.probability_layer is not None and self.probability_layer in self.viewer.layers:
            self.probability_layer.data = shown
        else:
            self.probability_layer = self.viewer.add_image(
                shown,
                name=name,
                colormap="magma",
                contrast_limits=(0.0, 1.0),
                opacity=0.6,
                blending="additive",
                **self._geometry(),
            )

    def _on_show_probabilities(self, value: bool) -> None:
        if value:
            self._write_probabilities()

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
            self._show_relabelled(
                probabilities_to_labels(self.probabilities, config, shape=self._image_shape)
            )
            return
        self._pending_relabel = config
        if self.relabel_worker is None:
            self._start_relabel()

    def _start_relabel(self) -> None:
        from ..core.instances import probabilities_to_labels

        config, self._pending_relabel = self._pending_relabel, None
        probabilities = self.probabilities
        worker = thread_worker(probabilities_to_labels)(
            probabilities, config, shape=self._image_shape
        )

        def done(labels) -> None:
            if self.probabilities is probabilities and self.worker is None:  # still current
                self._show_relabelled(labels)

        worker.returned.connect(done)
        worker.errored.connect(lambda err: show_error(str(err)))
        worker.finished.connect(self._on_relabel_finished)
        self.relabel_worker = worker
        self.status.value = "Re-labelling…"
        worker.start()

    def _on_relabel_finished(self) -> None:
        self.relabel_worker = None
        if self._pending_relabel is not None and self.worker is None:
            self._start_relabel()  # the controls moved meanwhile: the latest setting wins

    def _show_relabelled(self, labels: np.ndarray) -> None:
        self._write_labels(labels, new_run=False)
        self.status.value = f"{int(labels.max())} cells."

    # -- tile grid overlay ---------------------------------------------------------------

    def update_grid(self, _value=None) -> None:
        """Show/refresh or hide the tile grid overlay (a Shapes layer this dock owns)."""
        if not self.show_grid.value:
            if self.grid_layer is not None and self.grid_layer in self.viewer.layers:
                self.viewer.layers.remove(self.grid_layer)
            self.grid_layer = None
            return
        try:
            layer = self._image()
        except UNetCellsError as err:
            show_error(str(err))
            return
        rectangles, colors = self.grid_rectangles(layer)
        scale = tuple(layer.scale)[-2:]
        translate = tuple(layer.translate)[-2:]
        if self.grid_layer is not None and self.grid_layer in self.viewer.layers:
            self.viewer.layers.remove(self.grid_layer)
        self.grid_layer = self.viewer.add_shapes(
            rectangles,
            shape_type="rectangle",
            edge_color=colors,
            face_color="transparent",
            edge_width=max(1.0, max(layer.data.shape[-2:]) / 400),
            name=f"{layer.name} tile grid",
            scale=scale,
            translate=translate,
        )
        self.grid_layer.editable = False

    def grid_rectangles(self, layer: Image) -> tuple[list[np.ndarray], list[str]]:
        """Write regions of all tiles (yellow) and a middle tile's read region (blue).

        Rectangles in the image's (Y, X) pixel coordinates, corners (4, 2), half-pixel
        edges so they frame the pixels.
        """
        from ..core.predict import auto_tile_and_batch
        from ..core.tiling import plan_tiles

        shape = layer.data.shape[-3:-1] if layer.rgb else layer.data.shape[-2:]
        config = self._model_config()
        if self._last_tile is not None and self.tile.value == _AUTO:
            tile = self._last_tile
        else:
            from ..core.device import resolve_device

            try:
                device = resolve_device(self.device.value)
            except UNetCellsError:
                device = resolve_device("cpu")
            requested = None if self.tile.value == _AUTO else int(self.tile.value)
            tile = auto_tile_and_batch(SimpleNamespace(config=config), device, requested, 1)[0]
        grid = plan_tiles(tuple(shape), tile, config.depth, config.padding)

        def box(y0, y1, x0, x1):
            return np.array(
                [
                    [y0 - 0.5, x0 - 0.5],
                    [y0 - 0.5, x1 - 0.5],
                    [y1 - 0.5, x1 - 0.5],
                    [y1 - 0.5, x0 - 0.5],
                ]
            )

        rectangles = [box(*t.write) for t in grid.tiles]
        colors = ["yellow"] * len(rectangles)
        middle = grid.tiles[len(grid.tiles) // 2]
        rectangles.append(box(*middle.read))
        colors.append("dodgerblue")
        return rectangles, colors


def _size_note(scale) -> str:
    """One line on the cell size used, for the status (core/scale.py ScaleChoice)."""
    if scale.diameter is None:
        return ""
    how = "estimated" if scale.estimated else "given"
    text = f"Cell diameter {scale.diameter:.0f} px ({how}"
    if scale.model_diameter:
        text += f"; model {scale.model_diameter:g} px"
    if scale.factor != 1.0:
        text += f"; resampled x{scale.factor:.2f}"
    return text + ")."
