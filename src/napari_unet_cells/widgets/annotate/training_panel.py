"""The training-set panel of the Annotate dock: "Add to training set" and the counts of
the training set, which lives in the viewer's workspace (shared with Fine-tune)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Labels
from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from ...core.errors import UNetCellsError
from ...workspace import TrainingPair
from .._tips import tip
from ._common import guard, no_margins

if TYPE_CHECKING:  # pragma: no cover
    from ..annotate_widget import AnnotateWidget


class TrainingPanel(QWidget):
    """The "Add to training set" button and the line counting the training set.

    Parameters
    ----------
    dock : AnnotateWidget
        The dock: its workspace and the chosen annotation.
    """

    def __init__(self, dock: AnnotateWidget) -> None:
        super().__init__()
        self.dock = dock
        layout = no_margins(QVBoxLayout(self))
        self.add_button = QPushButton("Add to training set")
        self.counts = QLabel("training set: empty")
        layout.addWidget(self.add_button)
        layout.addWidget(self.counts)
        tip(
            self.add_button,
            "Add (image, annotation, ignore mask) to the training set, which the "
            "Fine-tune dock trains on (Plugins > U-Net Cells > Fine-tune).",
        )
        self.add_button.clicked.connect(lambda: guard(self.add_to_training_set))

    def add_to_training_set(self, annotation: Labels | None = None) -> TrainingPair:
        """Add (image, annotation, ignore) to the workspace's training set.

        Parameters
        ----------
        annotation : napari.layers.Labels, optional
            The annotation (default: the chosen one); it must have cells.

        Returns
        -------
        TrainingPair
            The pair, as the Fine-tune dock lists it.
        """
        link = self.dock.link_for(annotation)
        if not np.asarray(link.annotation.data).any():
            raise UNetCellsError("The annotation has no cells yet: paint some cells first.")
        return self.dock.workspace.add_pair(link.image, link.annotation, link.ignore)

    def update_counts(self) -> dict[str, int]:
        """Show the images, cells and touching pairs of the training set; returns them."""
        if not self.dock.workspace.pairs:
            self.counts.setText("training set: empty")
            return {}
        counts = self.dock.workspace.training_counts()
        self.counts.setText(
            f"training set: {counts['images']} image(s), {counts['cells']} cells, "
            f"{counts['touching_pairs']} touching pairs"
        )
        return counts
