"""The layers panel of the Annotate dock: which image, annotation and prediction; new
annotation layers (empty or a copy of the prediction) and ignore masks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from qtpy.QtWidgets import QComboBox, QFormLayout, QGridLayout, QPushButton, QVBoxLayout, QWidget

from ... import layers as L
from ...core.errors import UNetCellsError
from ...workspace import AnnotationLink
from .._tips import tip
from ._common import IGNORE_COLOURS, fill, guard, no_margins, select

if TYPE_CHECKING:  # pragma: no cover
    from ..annotate_widget import AnnotateWidget


class LayersPanel(QWidget):
    """Image, Annotation and Prediction choices and the buttons that make layers.

    Parameters
    ----------
    dock : AnnotateWidget
        The dock: its viewer, workspace and annotation links.
    """

    def __init__(self, dock: AnnotateWidget) -> None:
        super().__init__()
        self.dock = dock
        layout = no_margins(QVBoxLayout(self))
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.annotation_combo = QComboBox()
        self.prediction_combo = QComboBox()
        form.addRow("Image", self.image_combo)
        form.addRow("Annotation", self.annotation_combo)
        form.addRow("Prediction", self.prediction_combo)
        layout.addLayout(form)
        row = QGridLayout()  # two columns: fits a narrow dock
        self.new_button = QPushButton("New annotation")
        self.from_prediction_button = QPushButton("Start from prediction")
        self.ignore_button = QPushButton("Ignore mask")
        row.addWidget(self.new_button, 0, 0)
        row.addWidget(self.from_prediction_button, 0, 1)
        row.addWidget(self.ignore_button, 1, 0)
        layout.addLayout(row)
        self._set_tooltips()
        self.new_button.clicked.connect(lambda: guard(self.new_annotation))
        self.from_prediction_button.clicked.connect(
            lambda: guard(self.new_annotation, from_prediction=True)
        )
        self.ignore_button.clicked.connect(lambda: guard(self.add_ignore_mask))
        self.image_combo.currentIndexChanged.connect(self._image_changed)

    def _set_tooltips(self) -> None:
        tips = {
            self.image_combo: "The Image layer you annotate. New annotation layers take its "
            "shape, scale and translate.",
            self.annotation_combo: "The Labels layer you edit (0 = background, each cell its "
            "own number). The edit, Check and training buttons act on it.",
            self.prediction_combo: "A prediction of the same image (e.g. '<image> cells' from "
            "the Predict dock): 'Start from prediction' copies it and Check compares with it. "
            "It is never edited.",
            self.new_button: "Add an empty annotation layer for the chosen image and start "
            "painting (brush 6 px; press N for each new cell).",
            self.from_prediction_button: "Add an annotation layer that starts as a copy of the "
            "chosen prediction, so you only fix its mistakes. The prediction stays as it is.",
            self.ignore_button: "Add the ignore mask paired with this annotation (one per "
            "annotation): paint "
            "areas you did not annotate or are unsure about (debris, out of focus). They get "
            "weight 0 in training, so a partly annotated image is fine.",
        }
        for widget, text in tips.items():
            tip(widget, text)

    # -- choices ---------------------------------------------------------------------------

    def refresh(self, event: Any = None) -> None:
        """Refill the three choices from the viewer's layers (keeping what was chosen)."""
        layers = list(self.dock.viewer.layers)
        images = [x for x in layers if L.is_source_image(x)]
        labels = [x for x in layers if L.is_labels(x) and L.role(x) != "check"]
        ours = {id(link.annotation) for link in self.dock.links}
        # predictions are never edited: they are offered as Prediction, not Annotation
        annotations = [x for x in labels if not L.is_prediction(x)]
        annotations.sort(key=lambda x: id(x) not in ours)  # this dock's layers first
        fill(self.image_combo, images, optional=False)
        fill(self.annotation_combo, annotations, optional=True)
        fill(self.prediction_combo, [x for x in labels if id(x) not in ours], optional=True)
        inserted = event is not None and event.type == "inserted"
        added = L.unwrap(getattr(event, "value", None)) if inserted else None
        self.default_prediction(added)
        own = [x for x in annotations if id(x) in ours]
        if self.annotation_combo.currentData() is None and own:  # never a foreign default
            select(self.annotation_combo, own[-1])

    def default_prediction(self, added: Any = None) -> None:
        """Prediction = the chosen image's prediction in the workspace, else the newest
        prediction layer: when a prediction arrives (``added``), or when none is chosen."""
        arrived = L.is_prediction(added)
        if not arrived and self.prediction_combo.currentData() is not None:
            return
        image = self.image_combo.currentData()
        known = None if image is None else self.dock.workspace.prediction_of(image)
        newest = [x for x in self.dock.viewer.layers if L.is_prediction(x)]
        target = known if known is not None else added if arrived else None
        if target is None and newest:
            target = newest[-1]
        if target is not None:
            select(self.prediction_combo, target)

    def on_prediction_added(self, image: Any, labels: Any) -> None:
        """The workspace recorded a new prediction: offer it if it is the chosen image's."""
        if image is self.image_combo.currentData() or self.image_combo.currentData() is None:
            select(self.prediction_combo, labels)

    def _image_changed(self, _index: int = 0) -> None:
        image = self.image_combo.currentData()
        known = None if image is None else self.dock.workspace.prediction_of(image)
        if known is not None:
            select(self.prediction_combo, known)

    # -- new layers ------------------------------------------------------------------------

    def new_annotation(self, image: Any = None, *, from_prediction: bool | Labels = False):
        """Create an annotation layer for ``image``, empty or a copy of a prediction.

        Parameters
        ----------
        image : napari.layers.Image, optional
            The image to annotate (default: the chosen image).
        from_prediction : bool or napari.layers.Labels
            False: an empty layer; True: a copy of the chosen prediction; a Labels layer:
            a copy of it. The prediction itself is never modified.

        Returns
        -------
        napari.layers.Labels
            The new layer (int32, the image's plane shape, scale and translate), chosen
            as the annotation, in paint mode with the next free cell number selected.
        """
        image = L.unwrap(image) if image is not None else self.image_combo.currentData()
        if not L.is_image(image):
            raise UNetCellsError("Choose an Image layer to annotate.")
        data = self._start_data(image, L.unwrap(from_prediction))
        n = len(data.shape)
        layer = self.dock.viewer.add_labels(
            data,
            name=f"{image.name} annotation",
            scale=image.scale[:n],
            translate=image.translate[:n],
        )
        layer.brush_size = 6
        self.dock.add_link(AnnotationLink(image, layer))
        self.refresh()
        select(self.annotation_combo, layer)
        self.dock.viewer.layers.selection.active = layer
        self.dock.new_cell(layer)
        layer.mode = "paint"
        self.dock.schedule_save()
        return layer

    def _start_data(self, image: Any, from_prediction: bool | Labels) -> np.ndarray:
        """The pixels a new annotation starts with: zeros, or a copy of the prediction."""
        shape = L.plane_shape(image)
        if from_prediction is False:
            return np.zeros(shape, dtype=np.int32)
        pred = from_prediction if L.is_labels(from_prediction) else None
        pred = pred if pred is not None else self.prediction_combo.currentData()
        if not L.is_labels(pred):
            raise UNetCellsError("Choose the prediction (a Labels layer) to start from.")
        if tuple(pred.data.shape) != shape:
            raise UNetCellsError(
                f"The prediction '{pred.name}' {pred.data.shape} does not match the image {shape}."
            )
        return np.array(pred.data, dtype=np.int32, copy=True)

    def add_ignore_mask(self, annotation: Labels | None = None) -> Labels:
        """The ignore ("don't care") layer paired with the annotation (created once).

        Parameters
        ----------
        annotation : napari.layers.Labels, optional
            The annotation (default: the chosen one).

        Returns
        -------
        napari.layers.Labels
            uint8, the annotation's shape; 1 = ignore (painted grey), 0 = annotated.
        """
        link = self.dock.link_for(annotation)
        if link.ignore is not None:
            return link.ignore
        layer = self.dock.viewer.add_labels(
            np.zeros(link.annotation.data.shape, np.uint8),
            name=f"{link.image.name} ignore",
            scale=link.annotation.scale,
            translate=link.annotation.translate,
            opacity=0.4,
        )
        layer.colormap = IGNORE_COLOURS
        layer.selected_label = 1
        link.ignore = layer
        self.dock.watch_ignore(layer)
        self.refresh()
        self.dock.schedule_save()
        return layer
