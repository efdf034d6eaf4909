"""The "Training set" panel: choose (image, labels, ignore) layers, see the pairs.

The pairs live in the viewer's workspace (``workspace_for(viewer).pairs``); this panel
adds and removes them there and redraws its list whenever the workspace says the set
changed, also when another dock (Annotate) changed it.
"""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QPushButton,
    QVBoxLayout,
)

from ... import layers as L
from ...core.errors import UNetCellsError
from ...workspace import Workspace
from .._tips import tip
from .._window import connect_while_alive, layer_list_events

NONE = "(none)"

_TIPS = {
    "image_combo": "Image layer of the next training pair: greyscale, 2-D or a stack of "
    "2-D planes.",
    "labels_combo": "Labels layer of the next training pair: the image's shape, 0 = "
    "background, each cell its own number.",
    "ignore_combo": "Optional: a layer marking pixels to leave out of training (nonzero = "
    "ignore), e.g. areas you did not annotate.",
    "add_button": "Add the chosen image, labels and ignore layer to the training set. The "
    "Annotate dock's 'Add to training set' adds here too.",
    "remove_button": "Remove the selected pair from the training set (the layers stay open).",
    "pair_list": "The training set: image / labels / ignore mask. Select a pair to remove it.",
}


class TrainingSetPanel(QGroupBox):
    """Layer choosers, "Add pair", "Remove selected" and the list of the workspace's pairs.

    Parameters
    ----------
    viewer
        The napari viewer whose layers are offered.
    workspace
        The viewer's workspace, which holds the pairs.
    """

    def __init__(self, viewer: Any, workspace: Workspace) -> None:
        super().__init__("Training set")
        self.viewer = viewer
        self.workspace = workspace
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.ignore_combo = QComboBox()
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Ignore", self.ignore_combo)
        self.add_button = QPushButton("Add pair")
        self.remove_button = QPushButton("Remove selected")
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(80)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.pair_list)
        for name, text in _TIPS.items():
            tip(getattr(self, name), text)

        self.add_button.clicked.connect(lambda: self.add_selected())
        self.remove_button.clicked.connect(lambda: self.remove_selected())
        for emitter in (*layer_list_events(viewer), viewer.layers.events.reordered):
            connect_while_alive(self, emitter, self.refresh_layers)
        for emitter in (viewer.layers.events.renamed, workspace.events.training_set):
            connect_while_alive(self, emitter, self.refresh_pairs)
        self.refresh_layers()
        self.refresh_pairs()  # pairs added before this dock opened

    def refresh_layers(self, event: Any = None) -> None:
        """Offer the viewer's current Image and Labels layers, keeping the choices."""
        layers = list(self.viewer.layers)
        images = [layer for layer in layers if L.is_image(layer)]
        labels = [layer for layer in layers if L.is_labels(layer)]
        for combo, choices, optional in (
            (self.image_combo, images, False),
            (self.labels_combo, labels, False),
            (self.ignore_combo, labels + images, True),
        ):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            if optional:
                combo.addItem(NONE, None)
            for layer in choices:
                combo.addItem(layer.name, layer)
            index = combo.findData(current) if current is not None else -1
            if index >= 0:
                combo.setCurrentIndex(index)
            combo.blockSignals(False)

    def refresh_pairs(self, _event: Any = None) -> None:
        """Show the workspace's pairs (called whenever the training set changes)."""
        self.pair_list.clear()
        self.pair_list.addItems([pair.describe() for pair in self.workspace.pairs])

    def add_selected(self) -> None:
        """Add the chosen layers as a pair; a user error becomes a notification."""
        image, labels = self.image_combo.currentData(), self.labels_combo.currentData()
        if image is None or labels is None:
            show_error("Choose an Image layer and a Labels layer to add.")
            return
        try:
            self.workspace.add_pair(image, labels, self.ignore_combo.currentData())
        except UNetCellsError as err:
            show_error(str(err))

    def remove_selected(self) -> None:
        """Remove the pair selected in the list from the training set."""
        row = self.pair_list.currentRow()
        if 0 <= row < len(self.workspace.pairs):
            self.workspace.remove_pair(row)
