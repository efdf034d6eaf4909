"""The Predict dock's output layers: "<image> cells" and "<image> cell probability".

The dock owns these layers, one pair per image predicted: a re-run replaces only that
image's, and asks first (``confirm``) before replacing a labels layer the user edited; a
layer the user renamed is left alone. The input image is never modified.
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
    """Writes and tracks the labels and probability layers of one dock, per image.

    Each image predicted keeps its own "<image> cells" (and "<image> cell probability"):
    predicting another image never replaces them. A re-run on the same image replaces
    its layers, asking first (``confirm(layer)``: True replaces, False writes a new layer)
    when the user painted on the labels. A layer the user renamed is theirs: it is never
    written to again (a new layer is made instead).
    """

    def __init__(self, viewer: Any, confirm: Callable[[Any], bool]) -> None:
        self.viewer = viewer
        self.confirm = confirm
        self.labels_layer: Any | None = None  # of the image predicted last
        self.probability_layer: Any | None = None
        self._by_image: dict[int, tuple[Any, Any | None, Any | None]] = {}
        self._given_names: dict[int, str] = {}  # id(layer) -> the name this dock gave it
        self._edited: set[int] = set()  # ids of labels layers the user painted on
        self._writing = False

    @property
    def edited(self) -> bool:
        """The user painted on the current labels layer since it was written."""
        return self.labels_layer is not None and id(self.labels_layer) in self._edited

    @edited.setter
    def edited(self, value: bool) -> None:
        if self.labels_layer is not None:
            (self._edited.add if value else self._edited.discard)(id(self.labels_layer))

    def forget_removed(self) -> None:
        """Drop the layers the user removed from the viewer."""
        if not self._ours(self.labels_layer):
            self.labels_layer = None
        if not self._ours(self.probability_layer):
            self.probability_layer = None
        for key, (image, labels, probability) in list(self._by_image.items()):
            labels = labels if self._ours(labels) else None
            probability = probability if self._ours(probability) else None
            if image not in self.viewer.layers or (labels is None and probability is None):
                del self._by_image[key]
            else:
                self._by_image[key] = (image, labels, probability)

    def _ours(self, layer: Any | None) -> bool:
        """``layer`` is in the viewer under the name this dock gave it."""
        return (
            layer is not None
            and layer in self.viewer.layers
            and self._given_names.get(id(layer)) == layer.name
        )

    def _switch_to(self, source: Source) -> None:
        """Make ``source``'s layers (if any) the current ones."""
        image, labels, probability = self._by_image.get(id(source.layer), (None, None, None))
        if image is not source.layer:
            labels = probability = None
        self.labels_layer, self.probability_layer = labels, probability

    def _remember(self, source: Source) -> None:
        self._by_image[id(source.layer)] = (
            source.layer,
            self.labels_layer,
            self.probability_layer,
        )

    def write_labels(self, source: Source, labels: np.ndarray, new_run: bool) -> bool:
        """Write ``labels`` to ``source``'s "<image> cells".

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
            True when a new layer was made (none yet for this image, the user renamed
            or removed it, or kept an edited one).
        """
        if new_run:
            self._switch_to(source)
        layer = self.labels_layer if self._ours(self.labels_layer) else None
        if layer is not None and self.edited and not self.confirm(layer):
            layer = None
        name = f"{source.layer.name} cells"
        geometry = source.geometry(labels.ndim)
        self._writing = True
        try:
            if layer is None:
                layer = self.viewer.add_labels(
                    labels, name=name, metadata={L.ROLE_KEY: "prediction"}, **geometry
                )
                layer.events.paint.connect(self._on_user_edit(layer))
                layer.events.data.connect(self._on_user_edit(layer))  # set_data: any redraw
                made = True
            else:
                layer.data = labels
                if new_run:
                    layer.scale, layer.translate = geometry["scale"], geometry["translate"]
                    layer.name = name
                made = False
        finally:
            self._writing = False
        self._given_names[id(layer)] = layer.name
        self._edited.discard(id(layer))
        self.labels_layer = layer
        self._remember(source)
        return made

    def write_probabilities(self, source: Source, shown: np.ndarray) -> None:
        """Write the cell probability (on the image's grid) to ``source``'s
        "<image> cell probability"."""
        layer = self.probability_layer
        if self._ours(layer):
            layer.data = shown
            layer.visible = True
            return
        layer = self.viewer.add_image(
            shown,
            name=f"{source.layer.name} cell probability",
            colormap="magma",
            contrast_limits=(0.0, 1.0),
            opacity=0.6,
            blending="additive",
            metadata={L.ROLE_KEY: "probability"},
            **source.geometry(shown.ndim),
        )
        self._given_names[id(layer)] = layer.name
        self.probability_layer = layer
        self._remember(source)

    def hide_probabilities(self) -> None:
        """Hide (not delete) the current image's probability layer, if it is ours."""
        if self._ours(self.probability_layer):
            self.probability_layer.visible = False

    def _on_user_edit(self, layer: Any) -> Callable[..., None]:
        key = id(layer)

        def edited(_event=None) -> None:
            if not self._writing:
                self._edited.add(key)

        return edited


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
