"""The Predict dock's inputs: image, channel, model, device, tile and cell diameter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, LineEdit, PushButton

from ... import layers as L
from ...core.config import InstanceConfig, ModelConfig, PredictConfig
from ...core.errors import UNetCellsError
from .._tips import tip

BUNDLED = "bundled"
FILE = "file"
AUTO = "auto"


def channel_choices(layer: Any) -> list[tuple[str, Any]]:
    """auto, then (axis, channel) for each axis of an Image layer that may hold channels:
    the RGB axis, a last axis of <= 4 values, or a leading axis of <= 8."""
    choices: list[tuple[str, Any]] = [("auto", None)]
    if layer is None or layer.multiscale:
        return choices
    shape = tuple(layer.data.shape)
    last = len(shape) - 1
    axes = [a for a in range(len(shape) - 2) if shape[a] <= 8 and not layer.rgb]
    if layer.rgb or (len(shape) >= 3 and shape[-1] <= 4):
        axes = [last]
    for axis in axes:
        choices += [(f"{k} of {shape[axis]} (axis {axis})", (axis, k)) for k in range(shape[axis])]
    return choices


class InputsPanel:
    """Image, Channel, Model, Model file, Device, Tile, Cell diameter and its ruler button.

    ``own_layers()`` lists the dock's output layers, which are never offered as input.
    """

    def __init__(self, viewer: Any, own_layers: Callable[[], list[Any]]) -> None:
        from ...core.device import available_devices

        self.viewer = viewer
        self._own_layers = own_layers
        self.image_combo = ComboBox(label="Image", choices=self._image_choices)
        self.channel = ComboBox(
            label="Channel", choices=lambda _w=None: channel_choices(self.image_combo.value)
        )
        self.model_combo = ComboBox(label="Model", choices=self._model_choices)
        self.model_file = FileEdit(label="Model file", mode="r", filter="*.npz")
        self.device = ComboBox(label="Device", choices=available_devices(), value="auto")
        self.tile = ComboBox(label="Tile (px)", choices=self._tile_choices, value=AUTO)
        self.diameter = LineEdit(label="Cell diameter (px)", value="auto")
        self.diameter_from_line = PushButton(text="Diameter from drawn line")
        self.image_combo.changed.connect(lambda _value=None: self.channel.reset_choices())
        self.model_combo.changed.connect(self.refresh_tiles)
        self.model_file.changed.connect(self.refresh_tiles)
        self._add_tips()

    @property
    def widgets(self) -> list[Any]:
        """The controls, in the order the dock shows them."""
        return [
            self.image_combo,
            self.channel,
            self.model_combo,
            self.model_file,
            self.device,
            self.tile,
            self.diameter,
            self.diameter_from_line,
        ]

    # -- choices -------------------------------------------------------------------------

    def _image_choices(self, _widget=None) -> list[tuple[str, Any]]:
        own = {id(layer) for layer in self._own_layers()}
        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if L.is_source_image(layer) and id(layer) not in own
        ]

    def _model_choices(self, _widget=None) -> list[tuple[str, Any]]:
        from ...core.registry import bundled_model_path, registered_models

        choices: list[tuple[str, Any]] = []
        if bundled_model_path() is not None:
            choices.append(("Bundled model", BUNDLED))
        choices += [(f"{name} (this session)", name) for name in registered_models()]
        choices.append(("Model file…", FILE))
        return choices

    def _tile_choices(self, _widget=None) -> list[str]:
        from ...core.model_info import valid_tile_sizes

        return [AUTO, *map(str, valid_tile_sizes(self.model_config()))]

    def refresh_tiles(self, _value=None) -> None:
        """Re-list the tile sizes valid for the chosen model, keeping the current one."""
        current = self.tile.value
        self.tile.reset_choices()
        if current in self.tile.choices:
            self.tile.value = current

    def select_model(self, name: str) -> bool:
        """Re-read the model list and choose ``name``; False if no such model is listed."""
        self.model_combo.reset_choices()
        if name not in self.model_combo.choices:
            return False
        self.model_combo.value = name
        return True

    def select_image(self, layer: Any) -> bool:
        """Re-read the image list and choose ``layer``; False if it is not offered."""
        self.image_combo.reset_choices()
        layer = L.unwrap(layer)
        matches = [c for c in self.image_combo.choices if L.unwrap(c) is layer]
        if matches:
            self.image_combo.value = matches[0]
        return bool(matches)

    # -- what the controls mean ------------------------------------------------------------

    def model_choice(self) -> Any:
        """None (the bundled model), a model file Path, or a model of this session."""
        from ...core.registry import registered_models

        choice = self.model_combo.value
        if choice == BUNDLED:
            return None
        if choice == FILE:
            path = Path(self.model_file.value) if self.model_file.value else None
            if path is None or not path.is_file():
                raise UNetCellsError("Choose a model file (.npz) in 'Model file'.")
            return path
        model = registered_models().get(choice)
        if model is None:
            raise UNetCellsError(f"The model {choice!r} is no longer available; choose another.")
        return model

    def model_config(self) -> ModelConfig:
        """The chosen model's network config, without loading its weights (default if unknown)."""
        from ...core.model_info import model_config_of

        try:
            return model_config_of(self.model_choice())
        except UNetCellsError:
            return ModelConfig()

    def instance_defaults(self) -> InstanceConfig:
        """The chosen model's recommended post-processing, read without loading weights."""
        from ...core.model_info import instance_defaults_of

        try:
            return instance_defaults_of(self.model_choice())
        except UNetCellsError:
            return InstanceConfig()

    def predict_config(self, tta: bool) -> PredictConfig:
        """Device, tile and ``tta`` as a PredictConfig."""
        tile = None if self.tile.value in (None, AUTO) else int(self.tile.value)
        return PredictConfig(device=self.device.value, tile=tile, tta=bool(tta))

    def diameter_value(self) -> float | str | None:
        """The diameter control as ``predict`` takes it: "auto", px, or None."""
        from ...core.scale import parse_diameter

        return parse_diameter(self.diameter.value)

    def image(self) -> Any:
        """The chosen Image layer (refusing none and multiscale layers)."""
        layer = self.image_combo.value
        if layer is None:
            raise UNetCellsError("Open or choose an Image layer to segment.")
        if layer.multiscale:
            raise UNetCellsError(
                f"Layer {layer.name!r} is multiscale; use `unet-cells predict` on the zarr file."
            )
        return layer

    def channel_axis_of(self, layer: Any) -> int | None:
        """The channel axis the chosen Channel means for ``layer`` (None: no channels)."""
        from ...core.predict import guess_channel_axis

        axis, channel = self.channel.value or (None, None)
        try:
            return guess_channel_axis(tuple(layer.data.shape), 1, layer.rgb or None, axis, channel)
        except UNetCellsError:
            return None

    def set_diameter_from_line(self, shapes: Any) -> str:
        """Set the Cell diameter control to ``line_diameter(shapes)``; the status line."""
        length = self.line_diameter(shapes)
        self.diameter.value = f"{length:.0f}"
        return f"Cell diameter set to {length:.0f} px from the drawn line."

    def line_diameter(self, shapes: Any) -> float:
        """Length (px of the chosen image's grid) of the last line drawn in ``shapes``."""
        from napari.layers import Shapes

        lines = []
        if isinstance(L.unwrap(shapes), Shapes):
            lines = [
                np.asarray(d)
                for d, t in zip(shapes.data, shapes.shape_type, strict=True)
                if t in ("line", "path")
            ]
        if not lines:
            raise UNetCellsError(
                "Draw a line across a typical cell in a Shapes layer (line tool), select that "
                "layer, then click 'Diameter from drawn line'."
            )
        ends = lines[-1][[0, -1], -2:] * np.asarray(shapes.scale)[-2:]
        pixel = np.asarray(self.image().scale)[-2:] if self.image_combo.value else (1, 1)
        return float(np.hypot(*((ends[1] - ends[0]) / pixel)))

    def _add_tips(self) -> None:
        for widget, text in _tips(self):
            tip(widget, text)


def _tips(p: InputsPanel) -> list[tuple[Any, str]]:
    return [
        (
            p.channel,
            "Which channel holds the nuclei, for a multi-channel image (the model reads one). "
            "auto: a single-channel image or stack as it is, RGB as the mean; other channel "
            "counts ask you to choose here. The status line says how the image was read, "
            "e.g. '5 planes of 512x512, channel 1 of 2'.",
        ),
        (
            p.image_combo,
            "The Image layer to segment: 2-D, a stack of 2-D planes, or RGB. It is never "
            "changed; the cells go to a new Labels layer '<image> cells'.",
        ),
        (
            p.model_combo,
            "The bundled model (trained on synthetic nuclei), a model fine-tuned in this "
            "session, or 'Model file…'. Choosing a model sets Threshold, Seed threshold, "
            "Min size and Min confidence to that model's recommendation.",
        ),
        (
            p.model_file.line_edit,
            "Path of a model file (.npz) saved by this plugin; used when Model is 'Model file…'.",
        ),
        (p.model_file.choose_btn, "Browse for a model file (.npz)."),
        (
            p.device,
            "Where the network runs. auto: the first CUDA GPU, else Apple MPS, else the CPU. "
            "Only devices found on this computer are listed.",
        ),
        (
            p.tile,
            "Network input tile, in pixels. auto: as large as the device's memory allows "
            "(smaller for small images). The cells do not depend on the tile size; smaller "
            "tiles need less memory. After an out-of-memory error the tile is halved "
            "automatically.",
        ),
        (
            p.diameter,
            "Typical cell (nucleus) diameter in pixels. auto: estimated from the image at "
            "each run (shown below after Run). The image is resampled so its cells appear at "
            "the size the model was trained around, and the labels come back on the image's "
            "own grid. 'none': never resample.",
        ),
        (
            p.diameter_from_line,
            "Measure the diameter: draw a line across a typical cell in a Shapes layer (line "
            "tool), select that layer, then click here.",
        ),
    ]
