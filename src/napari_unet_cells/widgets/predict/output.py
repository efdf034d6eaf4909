"""The Predict dock's output layers: "<image> cells" and "<image> cell probability".

The dock owns these layers: a re-run replaces only them, and asks first (``confirm``)
before replacing a labels layer the user edited. The input image is never modified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import layers as L


@dataclass(frozen=True)
class Source:
    """The image a prediction belongs to, read on the GUI thread when it started.

    channel_axis: the axis of ``layer.data`` the channels were read from (None: none);
    layout: how the image was read, e.g. "5 planes of 512x512, channel 1 of 2".
    """

    layer: Any
    channel_axis: int | None
    layout: str

    def geometry(self, ndim: int) -> dict[str, tuple[float, ...]]:
        """Scale and translate of a layer of ``ndim`` axes on this image's grid (the
        channel axis is no axis of the labels)."""
        layer = self.layer
        scale, translate = list(layer.scale), list(layer.translate)
        if self.channel_axis is not None and not layer.rgb:
            del scale[self.channel_axis], translate[self.channel_axis]
        return {"scale": tuple(scale[-ndim:]), "translate": tuple(translate[-ndim:])}


class OutputLayers:
    """Writes and tracks the labels and probability layers of one dock.

    ``confirm(layer)`` is asked before replacing a labels layer the user edited: True
    replaces it, False writes a new layer.
    """

    def __init__(self, viewer: Any, confirm: Callable[[Any], bool]) -> None:
        self.viewer = viewer
        self.confirm = confirm
        self.labels_layer: Any | None = None
        self.probability_layer: Any | None = None
        self.edited = False
        self._writing = False

    def forget_removed(self) -> None:
        """Drop the layers the user removed from the viewer."""
        if self.labels_layer is not None and self.labels_layer not in self.viewer.layers:
            self.labels_layer = None
        if self.probability_layer is not None and self.probability_layer not in self.viewer.layers:
            self.probability_layer = None

    def write_labels(self, source: Source, labels: np.ndarray, new_run: bool) -> bool:
        """Write ``labels`` to "<image> cells".

        Parameters
        ----------
        source : Source
            The image the labels belong to.
        labels : ndarray
            int32 (..., Y, X) instance labels on the image's grid.
        new_run : bool
            The labels come from a new prediction (the layer takes the image's name and
            geometry again), not from re-labelling the kept probabilities.

        Returns
        -------
        bool
            True when a new layer was made (none yet, or the user kept an edited one).
        """
        layer = self.labels_layer
        if layer is not None and layer in self.viewer.layers:
            if self.edited and not self.confirm(layer):
                layer = None
        else:
            layer = None
        name = f"{source.layer.name} cells"
        geometry = source.geometry(labels.ndim)
        self._writing = True
        try:
            if layer is None:
                layer = self.viewer.add_labels(
                    labels, name=name, metadata={L.ROLE_KEY: "prediction"}, **geometry
                )
                layer.events.paint.connect(self._on_user_edit)
                layer.events.data.connect(self._on_user_edit)  # set_data: any redraw
                made = True
            else:
                layer.data = labels
                if new_run:
                    layer.scale, layer.translate = geometry["scale"], geometry["translate"]
                    layer.name = name
                made = False
        finally:
            self._writing = False
        self.labels_layer, self.edited = layer, False
        return made

    def write_probabilities(self, source: Source, shown: np.ndarray) -> None:
        """Write the cell probability (on the image's grid) to "<image> cell probability"."""
        layer = self.probability_layer
        if layer is not None and layer in self.viewer.layers:
            layer.data = shown
            return
        self.probability_layer = self.viewer.add_image(
            shown,
            name=f"{source.layer.name} cell probability",
            colormap="magma",
            contrast_limits=(0.0, 1.0),
            opacity=0.6,
            blending="additive",
            **source.geometry(shown.ndim),
        )

    def _on_user_edit(self, _event=None) -> None:
        if not self._writing:
            self.edited = True


def ask_to_replace(parent: Any, layer: Any) -> bool:
    """Ask (a Yes/No dialog over ``parent``) whether to replace an edited labels layer."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        parent,
        "Replace edited labels?",
        f"You edited the layer {layer.name!r} since the last prediction. Replace it? "
        "(No keeps it and writes a new layer.)",
    )
    return answer == QMessageBox.StandardButton.Yes


def probabilities_on_grid(probabilities: np.ndarray, image_shape: Any) -> np.ndarray:
    """Kept probabilities resampled onto the image's (Y, X) grid (core.predict)."""
    from ...core.predict import PredictionResult, probabilities_on_image_grid

    result = PredictionResult(np.empty(0), probabilities, image_shape=image_shape)
    return probabilities_on_image_grid(result)
