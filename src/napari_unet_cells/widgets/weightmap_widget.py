"""The "Weight Map" dock: the paper's loss weight map of a Labels layer, updated live.

Thin: reads the Labels (and optional ignore) layer, builds a :class:`WeightMapConfig`,
calls :func:`iter_weight_map` (in a napari thread worker, with progress) or
:func:`update_weight_map` (after a brush stroke: only the affected windows, a few ms),
and writes two layers it owns: "<labels> weight map" (Image) and, on request,
"<labels> separation border" (Image of the carved pixels). It never edits the user's
layers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer

from .. import layers as L
from ..core.config import WEIGHT_MAP_PRESETS, WeightMapConfig
from ..core.errors import UNetCellsError
from ..core.labels import refuse_binary_mask
from ..core.weightmap import WeightMapState, iter_weight_map, update_weight_map
from ._tips import tip
from ._window import connect_while_alive, layer_list_events, on_dock_closed, short_dock_title
from ._workers import detach, dock_worker

if TYPE_CHECKING:  # pragma: no cover
    import napari

logger = logging.getLogger(__name__)

_NO_MASK = "(none)"
PAINT_DEBOUNCE_MS = 120
SETTINGS_DEBOUNCE_MS = 300


class WeightMapWidget(Container):
    """Dock widget "Weight Map". ``worker`` is the running thread worker, or None."""

    @property
    def native(self):
        """What napari docks: the scroll area around the controls (magicgui's ``native``
        is the panel inside it), so the dock fits any window height."""
        return self.root_native_widget

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(scrollable=True)  # fits any window height
        short_dock_title(self.native, "Weight Map")
        self.viewer = L.unwrap(napari_viewer)
        self.worker = None
        self.state: WeightMapState | None = None
        self._state_key: tuple | None = None  # (labels layer, ignore layer, config)
        self._state_layer: Labels | None = None  # the Labels layer ``state`` is of
        self._owned: dict[int, dict[str, Image]] = {}  # id(labels layer) -> our layers
        self._limits: dict[int, tuple] = {}  # id(weight map layer) -> the range we set
        self._watched: list[Labels] = []
        self._pending_full = False
        self._pending_update = False
        self._add_controls()
        self._set_tooltips()
        self._paint_timer = self._timer(PAINT_DEBOUNCE_MS, self.update_now)
        self._settings_timer = self._timer(SETTINGS_DEBOUNCE_MS, self._live_compute)
        self._connect()
        self._watch()

    def _add_controls(self) -> None:
        self.labels_combo = ComboBox(label="Labels", choices=self._labels_choices)
        self.ignore_combo = ComboBox(label="Ignore mask", choices=self._ignore_choices)
        self.preset = ComboBox(label="Preset", choices=list(WEIGHT_MAP_PRESETS), value="paper")
        defaults = WeightMapConfig()
        self.w0 = FloatSlider(label="w0", min=0.0, max=100.0, step=0.5, value=defaults.w0)
        self.sigma = FloatSlider(
            label="sigma (px)", min=0.5, max=30.0, step=0.5, value=defaults.sigma
        )
        self.class_balance = CheckBox(text="Class balance", value=True)
        self.border_width = SpinBox(label="Border (px/side)", min=0, max=8, value=1)
        self.show_border = CheckBox(text="Show separation border layer", value=False)
        self.live = CheckBox(text="Live update", value=True)
        self.compute_button = PushButton(text="Compute weight map")
        self.progress = ProgressBar(label="Progress", min=0, max=1, value=0)
        self.status = Label(value="")
        self.extend([self.labels_combo, self.ignore_combo, self.preset, self.w0, self.sigma])
        self.extend([self.class_balance, self.border_width, self.show_border, self.live])
        self.extend([self.compute_button, self.progress, self.status])

    def _set_tooltips(self) -> None:
        tips = {
            self.labels_combo: "The instance labels (a Labels layer: 0 = background, each "
            "cell its own number) whose loss weight map is shown.",
            self.ignore_combo: "Optional: a layer marking pixels to leave out of training "
            "(nonzero = ignore, e.g. unannotated areas). They get weight 0.",
            self.preset: "paper: w0 = 10, sigma = 5 px, cells and background balanced by "
            "pixel counts (Ronneberger et al. 2015, eq. 2). fiji: w0 = 50, sigma = 6 px, "
            "background weight 0.1 (the Fiji U-Net plugin). Choosing a preset sets w0 and sigma.",
            self.w0: "Extra weight on background pixels in the narrow gaps between touching "
            "cells (eq. 2), 0 to 100. Paper: 10; Fiji: 50. 0 turns the border term off.",
            self.sigma: "Width of the extra border weight, in pixels (0.5 to 30): it fades "
            "with the distance to the two nearest cells. Paper: 5 px; Fiji: 6 px.",
            self.class_balance: "On: weight cell and background pixels so that both classes "
            "count equally. Off: every pixel starts from weight 1.",
            self.border_width: "Pixels turned into background on each side of the border "
            "between two touching cells in the training target (0 to 8; default 1). 0: no "
            "gap, touching cells would be learnt as one.",
            self.show_border: "Also show the carved separation border (the cell pixels made "
            "background) as a red layer '<labels> separation border'.",
            self.live: "Recompute the map after each brush stroke (only the changed area) and "
            "after each setting change.",
            self.compute_button: "Compute the weight map of the chosen labels now. It appears "
            "as an image layer '<labels> weight map'; your layers are not changed.",
        }
        for widget, text in tips.items():
            tip(widget, text)

    def _timer(self, interval_ms: int, slot) -> QTimer:
        timer = QTimer(self.native)
        timer.setSingleShot(True)
        timer.setInterval(interval_ms)
        timer.timeout.connect(slot)
        return timer

    def _connect(self) -> None:
        self.compute_button.changed.connect(self.compute)
        self.preset.changed.connect(self._on_preset)
        for widget in (self.w0, self.sigma, self.class_balance, self.border_width):
            widget.changed.connect(self._on_settings)
        self.labels_combo.changed.connect(self._on_layers_chosen)
        self.ignore_combo.changed.connect(self._on_layers_chosen)
        self.show_border.changed.connect(self._on_show_border)
        for emitter in layer_list_events(self.viewer):
            connect_while_alive(self.native, emitter, self.reset_choices)
        on_dock_closed(self.native, self.close_worker)

    # -- inputs --------------------------------------------------------------------------

    def _labels_choices(self, _widget=None) -> list[tuple[str, Labels]]:
        """The Labels layers, but not Annotate's check overlay (findings, not cells)."""
        layers = [x for x in self.viewer.layers if L.is_labels(x) and L.role(x) != "check"]
        return [(layer.name, layer) for layer in layers]

    def _ignore_choices(self, _widget=None) -> list[tuple[str, Any]]:
        return [(_NO_MASK, None), *self._labels_choices()]

    def config(self) -> WeightMapConfig:
        """The config the controls describe (raises UNetCellsError when invalid)."""
        return WeightMapConfig.preset(
            self.preset.value,
            w0=float(self.w0.value),
            sigma=float(self.sigma.value),
            class_balance=bool(self.class_balance.value),
            border_width=int(self.border_width.value),
        )

    def _inputs(self) -> tuple[Labels, Labels | None, np.ndarray, np.ndarray | None]:
        layer = self.labels_combo.value
        if layer is None:
            raise UNetCellsError("Add or choose a Labels layer to compute its weight map.")
        mask_layer = self.ignore_combo.value
        if mask_layer is layer:
            raise UNetCellsError(
                f"The ignore mask must be a different layer than the labels ({layer.name!r}): "
                "choose another layer or '(none)'."
            )
        for item in (layer, mask_layer):
            if item is not None and getattr(item, "multiscale", False):
                raise UNetCellsError(
                    f"Layer {item.name!r} is multiscale; weight maps need single-scale labels: "
                    "add the full-resolution level as its own Labels layer."
                )
        labels = np.asarray(layer.data)
        ignore = None if mask_layer is None else np.asarray(mask_layer.data)
        return layer, mask_layer, labels, ignore

    # -- events --------------------------------------------------------------------------

    def _watch(self) -> None:
        """Listen to edits of the chosen labels and ignore layers (and only those)."""
        self._connect_edits(self._watched, connect=False)
        self._watched = [
            layer
            for layer in (self.labels_combo.value, self.ignore_combo.value)
            if layer is not None
        ]
        self._connect_edits(self._watched, connect=True)

    def _connect_edits(self, layers: list[Labels], connect: bool) -> None:
        for layer in layers:
            for name in ("paint", "labels_update", "data", "set_data"):
                emitter = getattr(layer.events, name, None)
                if emitter is not None:
                    (emitter.connect if connect else emitter.disconnect)(self._on_edit)

    def _on_edit(self, event=None) -> None:
        if self.live.value and self.state is not None:
            self._paint_timer.start()

    def _on_settings(self, _value=None) -> None:
        if self.live.value and self.state is not None:
            self._settings_timer.start()

    def _on_preset(self, name: str) -> None:
        preset = WeightMapConfig.preset(name)
        with self.w0.changed.blocked(), self.sigma.changed.blocked():
            self.w0.value = preset.w0
            self.sigma.value = preset.sigma
        self._on_settings()

    def _on_layers_chosen(self, _value=None) -> None:
        self._watch()
        if self.live.value and self.state is not None:
            self._settings_timer.start()

    def _on_show_border(self, show: bool) -> None:
        layers = self._owned.get(id(self.labels_combo.value), {})
        if "border" in layers and layers["border"] in self.viewer.layers:
            layers["border"].visible = bool(show)
        if show and self.state is not None:
            self._write_border()

    def _live_compute(self) -> None:
        if self.live.value and self.labels_combo.value is not None:
            self.compute()

    # -- work ----------------------------------------------------------------------------

    def compute(self, _value=None) -> None:
        """Recompute the whole map in a thread worker (progress in the dock)."""
        if self.worker is not None:
            self._pending_full = True
            self.worker.quit()
            return
        try:
            layer, mask_layer, labels, ignore = self._inputs()
            refuse_binary_mask(labels, layer.name)  # live updates follow its numbers
            config = self.config()
            # the first step checks and copies the inputs, here on the GUI thread: mistakes
            # show at once and painting during the computation cannot tear the copy
            gen = iter_weight_map(labels, ignore, config)
            first = next(gen)
        except UNetCellsError as err:
            show_error(str(err))
            self.status.value = str(err)
            return
        key = (id(layer), None if mask_layer is None else id(mask_layer), config)

        def run():
            yield first
            result = yield from gen
            return result

        worker = dock_worker(run)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda state: self._install(state, layer, key))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.status.value = "computing..."
        worker.start()

    def update_now(self) -> None:
        """Apply the latest edits to the map (incremental; full compute if needed)."""
        if self.worker is not None:
            self._pending_update = True
            return
        if self.state is None:
            return
        try:
            layer, mask_layer, labels, ignore = self._inputs()
            key = (id(layer), None if mask_layer is None else id(mask_layer), self.config())
            if key != self._state_key or labels.shape != self.state.shape:
                self.compute()
                return
            update_weight_map(self.state, labels, ignore)
        except UNetCellsError as err:
            show_error(str(err))
            self.status.value = str(err)
            return
        self._write_layers(layer)
        self.status.value = f"max weight {float(self.state.weights.max()):.3g}"

    def _on_progress(self, event) -> None:
        self.progress.max = max(1, event.total)
        self.progress.value = min(event.done, event.total)
        self.status.value = event.message

    def _on_error(self, err: Exception) -> None:
        message = str(err) if isinstance(err, UNetCellsError) else f"Weight map failed: {err}"
        if not isinstance(err, UNetCellsError):
            logger.exception("weight map failed", exc_info=err)
        show_error(message)
        self.status.value = message

    def _on_finished(self) -> None:
        self.worker = None
        if self._pending_full:
            self._pending_full = self._pending_update = False
            self.compute()
        elif self._pending_update:
            self._pending_update = False
            self.update_now()

    def _install(self, state: WeightMapState | None, layer: Labels, key: tuple) -> None:
        if state is None:  # stopped
            return
        self.state = state
        self._state_key = key
        self._state_layer = layer
        if layer not in self.viewer.layers:
            return
        self._write_layers(layer, new=True)
        self._pending_update = True  # catch edits made while computing
        self.status.value = f"max weight {float(state.weights.max()):.3g}"

    # -- output layers -------------------------------------------------------------------

    def _write_layers(self, layer: Labels, new: bool = False) -> None:
        state = self.state
        owned = self._owned.setdefault(id(layer), {})
        image = owned.get("weights")
        top = float(state.weights.max()) if state.weights.size else 1.0
        if image is None or image not in self.viewer.layers:
            owned["weights"] = self._add_image(
                layer,
                state.weights,
                "weight map",
                colormap="viridis",
                contrast_limits=(0.0, max(top, 1e-6)),
                blending="translucent",
                opacity=0.8,
            )
        elif new or image.data is not state.weights:
            image.data = state.weights
            image.contrast_limits = (0.0, max(top, 1e-6))
        else:
            image.refresh()
            if tuple(image.contrast_limits) == self._limits.get(id(image)):  # not the user's
                image.contrast_limits = (0.0, max(top, 1e-6))
        self._limits[id(owned["weights"])] = tuple(owned["weights"].contrast_limits)
        if self.show_border.value or "border" in owned:
            self._write_border()

    def _add_image(self, layer: Labels, data: np.ndarray, what: str, **kwargs) -> Image:
        """Add the Image layer "<labels> <what>", placed like ``layer`` (role ``what``)."""
        return self.viewer.add_image(
            data,
            name=f"{layer.name} {what}",
            scale=layer.scale,
            translate=layer.translate,
            metadata={L.ROLE_KEY: what},
            **kwargs,
        )

    def _write_border(self) -> None:
        """Write (or update) the separation border of the layer the map was computed for
        (not necessarily the chosen one)."""
        layer = self._state_layer
        if layer is None or self.state is None or layer not in self.viewer.layers:
            return
        owned = self._owned.setdefault(id(layer), {})
        carved = ((self.state.labels > 0) & (self.state.target == 0)).view(np.uint8)
        border = owned.get("border")
        if border is None or border not in self.viewer.layers:
            if not self.show_border.value:
                return
            owned["border"] = self._add_image(
                layer,
                carved,
                "separation border",
                colormap="red",
                contrast_limits=(0, 1),
                blending="additive",
            )
        else:
            border.data = carved
            border.visible = bool(self.show_border.value)

    # -- cleanup -------------------------------------------------------------------------

    def close_worker(self) -> None:
        """Stop a running computation and live updates (used when the dock closes)."""
        self._pending_full = self._pending_update = False
        self._paint_timer.stop()  # a pending live update must not add layers after closing
        self._settings_timer.stop()
        detach(self.worker)  # its handlers would reach this dock's deleted widgets
        self.worker = None
