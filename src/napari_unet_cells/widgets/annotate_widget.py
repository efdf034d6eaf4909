"""The "Annotate" dock: annotate cells fast and safely, and close the loop to training.

A thin dock made of the panels in :mod:`.annotate` (layers, edits, check, training set,
project folder); each button reads layers, calls one function of :mod:`core.annotation`
and writes the result. Label edits (merge, split, delete, fill holes, points to cells)
are applied with ``Labels.data_setitem`` inside ``Labels.block_history``, so each is one
step of napari's own undo (Ctrl+Z) and redo. The prediction layer is never modified:
"Start from prediction" copies it into a new annotation layer.

State shared with the other docks lives in the viewer's workspace
(:func:`napari_unet_cells.workspace.workspace_for`): the annotation links (which Labels
layer annotates which image, with which ignore mask), the training set that "Add to
training set" adds to and that Fine-tune trains on, and the newest prediction of each
image (the default "Prediction"), and the project folder that annotations, ignore masks
and training-set flags are autosaved into (:mod:`.annotate.autosave`); "Open" restores them.

Toolkit: plain Qt, not magicgui: the dock needs a key binding (N) on the annotation
layer, a list of findings that folds, combo boxes holding layers by identity, and a grid
of edit buttons that fits a narrow dock.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels, Points, Shapes
from qtpy.QtWidgets import QWidget

from .. import layers as L
from ..core import annotation as A
from ..core.errors import UNetCellsError
from ..workspace import AnnotationLink, TrainingPair, workspace_for
from ._window import (
    compact_controls,
    layer_list_events,
    scrolling_layout,
    short_dock_title,
    watch_window_close,
)
from .annotate._common import select
from .annotate.autosave import AUTOSAVE_DELAY_MS
from .annotate.check_panel import CheckPanel
from .annotate.edit_panel import EditPanel
from .annotate.layers_panel import LayersPanel
from .annotate.project_panel import ProjectPanel
from .annotate.training_panel import TrainingPanel

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["AUTOSAVE_DELAY_MS", "AnnotateWidget", "AnnotationLink", "select"]

logger = logging.getLogger(__name__)

#: the Annotate dock that saves each workspace's annotations (the newest one)
_SAVING_DOCK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class AnnotateWidget(QWidget):
    """Dock widget "Annotate".

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari's plugin proxy is unwrapped: layers are kept by identity).

    Attributes
    ----------
    workspace : Workspace
        The viewer's workspace: annotation links, training set, predictions.
    layers_panel, edit_panel, check_panel, training_panel, project_panel : QWidget
        The panels; their controls are also attributes of the dock (``image_combo``,
        ``label_spin``, ``check_button``, ``counts``, ``folder`` ...).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = L.unwrap(napari_viewer)
        self.workspace = workspace_for(self.viewer)
        self._watching_close = False
        self._retired = False
        layout = scrolling_layout(self)  # fits any window height
        short_dock_title(self, "Annotate")
        self.layers_panel = LayersPanel(self)
        self.edit_panel = EditPanel(self)
        self.check_panel = CheckPanel(self)
        self.training_panel = TrainingPanel(self)
        self.project_panel = ProjectPanel(self)
        for panel in self._panels():
            layout.addWidget(panel)
            self._expose(panel)
        layout.addStretch(1)
        compact_controls(self)
        self._connect()
        self._take_over()
        self.refresh_layers()
        self.training_panel.update_counts()

    def _take_over(self) -> None:
        """Save this viewer's annotations from now on: an earlier (closed) Annotate dock
        saves and retires, so that two docks never write the project at once."""
        previous = _SAVING_DOCK.get(self.workspace)
        previous = previous() if previous is not None else None
        if previous is not None and previous is not self:
            previous.retire()
        _SAVING_DOCK[self.workspace] = weakref.ref(self)
        for link in self.links:  # links made by an earlier Annotate dock of this viewer
            self._hook(link)
        if any(link.dirty for link in self.links) and self.project is not None:
            self.autosave.timer.start()

    def retire(self) -> None:
        """Save what is pending, then stop following the layers (a newer dock took over)."""
        self._retired = True
        with contextlib.suppress(RuntimeError):  # the Qt side may already be deleted
            self.check_panel.quit()
            if self.autosave.busy:
                self.autosave.save_now()
        for link in self.links:
            events = link.annotation.events
            events.paint.disconnect(self.schedule_save)
            events.data.disconnect(self.schedule_save)
            events.selected_label.disconnect(self._selected_label_changed)
            if link.ignore is not None:
                link.ignore.events.paint.disconnect(self.schedule_save)

    def _panels(self) -> tuple[QWidget, ...]:
        names = ("layers", "edit", "check", "training", "project")
        return tuple(getattr(self, f"{name}_panel") for name in names)

    def _expose(self, panel: QWidget) -> None:
        """Make the panel's controls attributes of the dock (scripts and tests use them)."""
        for name, value in vars(panel).items():
            if not name.startswith("_") and name != "dock" and isinstance(value, QWidget):
                setattr(self, name, value)

    def _connect(self) -> None:
        self.annotation_combo.currentIndexChanged.connect(self._annotation_changed)
        for emitter in layer_list_events(self.viewer):
            emitter.connect(self.refresh_layers)
        # psygnal holds bound methods weakly: nothing to disconnect when the dock goes
        self.workspace.events.training_set.connect(self._on_training_set)
        self.workspace.events.prediction_added.connect(self._on_prediction_added)

    # -- state -----------------------------------------------------------------------------

    @property
    def links(self) -> list[AnnotationLink]:
        """The annotation links of this viewer (``workspace.links``)."""
        return self.workspace.links

    @property
    def project(self) -> A.AnnotationProject | None:
        """The project folder annotations are saved to, or None."""
        return self.project_panel.autosave.project

    @property
    def autosave(self):
        """The :class:`~.annotate.autosave.Autosaver` (``busy``, ``wait``, ``saves``)."""
        return self.project_panel.autosave

    @property
    def autosave_timer(self):
        """The debounce timer of the autosave (single shot, ``AUTOSAVE_DELAY_MS``)."""
        return self.autosave.timer

    @property
    def saves(self) -> int:
        """Saves completed without error."""
        return self.autosave.saves

    @property
    def last_save_error(self) -> str | None:
        """The error of the last save, or None."""
        return self.autosave.last_save_error

    @property
    def report(self) -> A.CheckReport | None:
        """The last check report shown, or None."""
        return self.check_panel.report

    @property
    def check_worker(self):
        """The check running in the background, or None."""
        return self.check_panel.check_worker

    # -- links -----------------------------------------------------------------------------

    def link_for(self, layer: Labels | None = None) -> AnnotationLink:
        """The link of an annotation layer, made on first use with the chosen image.

        Parameters
        ----------
        layer : napari.layers.Labels, optional
            The annotation (default: the chosen one). Predictions are refused: they are
            never edited.

        Returns
        -------
        AnnotationLink
            The workspace's link of ``layer``.
        """
        layer = L.unwrap(layer) if layer is not None else self.annotation_combo.currentData()
        if not L.is_labels(layer):
            raise UNetCellsError("Choose an annotation (Labels) layer, or click 'New annotation'.")
        if L.is_prediction(layer):
            raise UNetCellsError(
                f"'{layer.name}' is a prediction and is never edited: click 'Start from "
                "prediction' to correct a copy of it."
            )
        link = self.workspace.link_of(layer)
        if link is not None:
            return link
        image = self.image_combo.currentData()
        removed = self.workspace.removed_image_of(layer)
        if removed is not None and not (L.is_image(image) and image.name == removed):
            raise UNetCellsError(
                f"The image of '{layer.name}', '{removed}', was removed from the viewer. "
                f"Open '{removed}' again and choose it as Image (nothing was changed)."
            )
        if not L.is_image(image):
            raise UNetCellsError("Choose the Image layer this annotation belongs to.")
        return self.add_link(AnnotationLink(image, layer))

    def add_link(self, link: AnnotationLink) -> AnnotationLink:
        """Record ``link`` in the workspace (checked: the annotation covers the image)
        and follow its edits (autosave, the N key)."""
        self.workspace.add_link(link)
        self._hook(link)
        return link

    def _hook(self, link: AnnotationLink) -> None:
        if not self._watching_close:  # closing napari saves what is not saved yet
            self._watching_close = watch_window_close(self, self._on_main_window_close)
        layer = link.annotation
        layer.bind_key("n", self._new_cell_key, overwrite=True)
        layer.events.paint.connect(self.schedule_save)
        layer.events.data.connect(self.schedule_save)
        layer.events.selected_label.connect(self._selected_label_changed)
        if link.ignore is not None:
            self.watch_ignore(link.ignore)

    def watch_ignore(self, layer: Labels) -> None:
        """Save after each stroke on an ignore mask."""
        layer.events.paint.connect(self.schedule_save)

    def refresh_layers(self, event: Any = None) -> None:
        """Refill the layer choices from the viewer."""
        with contextlib.suppress(RuntimeError):  # the dock was closed
            self.layers_panel.refresh(event)

    def _annotation_changed(self, _index: int = 0) -> None:
        layer = self.annotation_combo.currentData()
        if L.is_labels(layer):
            self.label_spin.setValue(int(layer.selected_label))

    def _selected_label_changed(self, event: Any = None) -> None:
        with contextlib.suppress(RuntimeError):  # the dock was closed
            layer = self.annotation_combo.currentData()
            if L.is_labels(layer) and event is not None and event.source is layer:
                self.label_spin.setValue(int(layer.selected_label))

    def _new_cell_key(self, layer: Labels) -> None:
        try:
            self.new_cell(layer)
        except (RuntimeError, UNetCellsError):  # the dock was closed: still a new id
            layer.selected_label = A.next_free_label(np.asarray(layer.data))

    # -- workspace events ------------------------------------------------------------------

    def _on_training_set(self) -> None:
        """The training set changed (here or in Fine-tune): the flags of the links
        changed with it (the workspace keeps them): count and save."""
        with contextlib.suppress(RuntimeError):  # the dock was closed
            self.training_panel.update_counts()
            if self.project is not None and not self._retired:  # retired: the new dock saves
                self.autosave_timer.start()

    def _on_prediction_added(self, image: Any, labels: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the dock was closed
            self.layers_panel.on_prediction_added(image, labels)

    # -- layers (LayersPanel) ------------------------------------------------------------

    def new_annotation(self, image: Any = None, *, from_prediction: bool | Labels = False):
        """Create an annotation layer for ``image`` (default: the chosen image), empty or
        a copy of the chosen (or given) prediction; see :meth:`LayersPanel.new_annotation`."""
        return self.layers_panel.new_annotation(image, from_prediction=from_prediction)

    def add_ignore_mask(self, annotation: Labels | None = None) -> Labels:
        """The ignore ("don't care") layer paired with the annotation (created once)."""
        return self.layers_panel.add_ignore_mask(annotation)

    # -- edits (EditPanel) ---------------------------------------------------------------

    def new_cell(self, annotation: Labels | None = None) -> int:
        """Select the next free cell number in the annotation and return it."""
        return self.edit_panel.new_cell(annotation)

    def merge(self, a: int | None = None, b: int | None = None) -> A.Edit:
        """Merge cells ``a`` and ``b`` (default: 'Cell' and 'with'); one undo step."""
        return self.edit_panel.merge(a, b)

    def delete(self, label: int | None = None) -> A.Edit:
        """Delete cell ``label`` (default: 'Cell'); one undo step."""
        return self.edit_panel.delete(label)

    def fill_holes(self, label: int | None = None) -> A.Edit:
        """Fill holes in ``label`` (default: in all cells); one undo step."""
        return self.edit_panel.fill_holes(label)

    def split_line_layer(self) -> Shapes:
        """The 'split line' Shapes layer (created on first use, in path mode)."""
        return self.edit_panel.split_line_layer()

    def split_by_line(self, line: np.ndarray | None = None, label: int | None = None) -> A.Edit:
        """Split a cell along a line; see :meth:`EditPanel.split_by_line`."""
        return self.edit_panel.split_by_line(line, label)

    def split_watershed(self, label: int | None = None, n: int | None = None) -> A.Edit:
        """Split a cell into ``n`` parts by a watershed on the image."""
        return self.edit_panel.split_watershed(label, n)

    def points_to_cells(self, points: Points | None = None, radius: float | None = None) -> A.Edit:
        """Turn the points of a Points layer (default: the last one) into disk cells."""
        return self.edit_panel.points_to_cells(points, radius)

    def _plane(self, layer: Labels) -> tuple[int, ...]:
        return self.edit_panel.plane(layer)

    # -- check (CheckPanel) --------------------------------------------------------------

    def check(self) -> A.CheckReport:
        """Run the check now and show its report (the Check button: :meth:`start_check`)."""
        return self.check_panel.check()

    def start_check(self):
        """Run the check in a thread worker with progress; returns the worker."""
        return self.check_panel.start_check()

    def show_problem(self, row: int) -> None:
        """Centre the view on finding ``row`` of the list."""
        self.check_panel.show_problem(row)

    # -- training set (TrainingPanel) ----------------------------------------------------

    def add_to_training_set(self, annotation: Labels | None = None) -> TrainingPair:
        """Add (image, annotation, ignore) to the workspace's training set."""
        return self.training_panel.add_to_training_set(annotation)

    # -- project (ProjectPanel) ----------------------------------------------------------

    def schedule_save(self, event: Any = None) -> None:
        """Save shortly (debounced) what changed; ``event``: a layer's edit event."""
        if self._retired:
            return
        source = L.unwrap(getattr(event, "source", None))
        owners = [k for k in self.links if source is k.annotation or source is k.ignore]
        try:
            self.project_panel.schedule_save(owners)
        except RuntimeError:  # the dock was closed while its layers stay open
            logger.debug("Annotate dock closed; autosave off")

    def set_project(self, folder: str | Path) -> A.AnnotationProject:
        """Save into ``folder`` from now on (created if needed) and save everything now."""
        return self.project_panel.set_project(folder)

    def save_now(self) -> int:
        """Save the annotations changed since the last save (and the training-set flags)
        here and now; returns the number saved. Errors are shown, never raised."""
        return self.autosave.save_now()

    def open_project(self, folder: str | Path) -> list[AnnotationLink]:
        """Use ``folder`` as the project and restore its annotations as layers (and their
        training-set entries); returns the links restored."""
        return self.project_panel.open_project(folder)

    def _on_main_window_close(self) -> None:
        """napari is closing: save what is not saved yet (here and now)."""
        if self._retired:
            return
        dirty = [link for link in self.links if link.dirty]
        if dirty and self.project is None:
            self.project_panel.schedule_save(dirty)  # to the default folder
        if self.project is not None:
            self.save_now()

    def closeEvent(self, event) -> None:
        """The dock closes: stop the check, save what is pending."""
        self.check_panel.quit()
        if self.autosave.busy:
            self.save_now()
        super().closeEvent(event)
