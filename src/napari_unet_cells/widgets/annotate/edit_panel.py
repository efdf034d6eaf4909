"""The edit panel of the Annotate dock: new cell, merge, delete, fill holes, split (by a
line or a watershed) and points to cells, each one step of napari's undo history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels, Points, Shapes
from qtpy.QtWidgets import QDoubleSpinBox, QGridLayout, QGroupBox, QLabel, QPushButton, QSpinBox

from ... import layers as L
from ...core import annotation as A
from ...core.errors import UNetCellsError
from .._tips import tip
from ._common import guard

if TYPE_CHECKING:  # pragma: no cover
    from ..annotate_widget import AnnotateWidget


def _spin(low: int, high: int, value: int = 0) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    return spin


class EditPanel(QGroupBox):
    """The edit buttons; each reads the chosen annotation, calls one function of
    :mod:`core.annotation` and applies the returned :class:`~core.annotation.Edit`.

    Parameters
    ----------
    dock : AnnotateWidget
        The dock: its viewer and the chosen annotation (``link_for``).
    """

    def __init__(self, dock: AnnotateWidget) -> None:
        super().__init__("Edit (undo with Ctrl+Z)")
        self.dock = dock
        self._split_lines: dict[int, Shapes] = {}  # id(annotation) -> its split-line layer
        grid = QGridLayout(self)
        self.new_cell_button = QPushButton("New cell (N)")
        self.label_spin = _spin(0, 2**31 - 1)
        self.other_spin = _spin(0, 2**31 - 1)
        self.merge_button = QPushButton("Merge")
        self.delete_button = QPushButton("Delete")
        self.fill_button = QPushButton("Fill holes")
        self.line_button = QPushButton("Split by line")
        self.watershed_button = QPushButton("Split (watershed)")
        self.parts_spin = _spin(2, 20, 2)
        self.radius_spin = QDoubleSpinBox()
        self.radius_spin.setRange(1.0, 100.0)
        self.radius_spin.setValue(4.0)
        self.radius_spin.setSuffix(" px")
        self.points_button = QPushButton("Points → cells")
        self.edit_status = QLabel("")
        self.edit_status.setWordWrap(True)
        for widget, *place in (
            (self.new_cell_button, 0, 0, 1, 2),
            (QLabel("Cell"), 1, 0),
            (self.label_spin, 1, 1),
            (QLabel("with"), 2, 0),
            (self.other_spin, 2, 1),
            (self.merge_button, 0, 2),
            (self.delete_button, 1, 2),
            (self.fill_button, 2, 2),
            (self.line_button, 3, 0, 1, 2),
            (self.watershed_button, 3, 2),
            (QLabel("parts"), 4, 1),
            (self.parts_spin, 4, 2),
            (self.points_button, 5, 0, 1, 2),
            (self.radius_spin, 5, 2),
            (self.edit_status, 6, 0, 1, 3),
        ):
            grid.addWidget(widget, *place)
        self._set_tooltips()
        self._connect()

    def _set_tooltips(self) -> None:
        tips = {
            self.new_cell_button: "Select the next free cell number, so the next stroke paints "
            "a new cell (shortcut: N on the annotation layer).",
            self.label_spin: "The cell number that Merge, Delete and Split act on; it follows "
            "the label selected in the layer (0 = the layer's selected label).",
            self.other_spin: "The second cell number for Merge.",
            self.merge_button: "Merge the two cells 'Cell' and 'with' into one (undo: Ctrl+Z).",
            self.delete_button: "Delete cell 'Cell': its pixels become background (undo: Ctrl+Z).",
            self.fill_button: "Fill background holes inside all cells, plane by plane "
            "(undo: Ctrl+Z).",
            self.line_button: "Split a cell along a line: the first click adds a 'split line' "
            "layer; draw a path across the cell there, then click again. The cell the line "
            "crosses most is split (undo: Ctrl+Z).",
            self.watershed_button: "Split cell 'Cell' into 'parts' pieces by a watershed on the "
            "image, e.g. two round nuclei painted as one (undo: Ctrl+Z).",
            self.parts_spin: "Number of pieces for 'Split (watershed)', 2 to 20.",
            self.points_button: "Turn the points of the last Points layer (click the centres "
            "of missed cells) into small disk cells, each with a new number (undo: Ctrl+Z).",
            self.radius_spin: "Radius of the disk cells made by 'Points → cells', in pixels "
            "(1 to 100; default 4).",
        }
        for widget, text in tips.items():
            tip(widget, text)

    def _connect(self) -> None:
        for button, action in (
            (self.new_cell_button, self.new_cell),
            (self.merge_button, self.merge),
            (self.delete_button, self.delete),
            (self.fill_button, self.fill_holes),
            (self.line_button, self.split_by_line),
            (self.watershed_button, self.split_watershed),
            (self.points_button, self.points_to_cells),
        ):
            button.clicked.connect(lambda _=False, action=action: guard(action))

    # -- helpers ---------------------------------------------------------------------------

    def _layer(self) -> Labels:
        return self.dock.link_for().annotation

    def apply(self, layer: Labels, edit: A.Edit) -> A.Edit:
        """Apply an edit to ``layer`` as one undoable step of napari's history; its
        message goes to the status line (not a notification per edit)."""
        if edit.size:
            with layer.block_history():
                layer.data_setitem(edit.indices, edit.values)
        if edit.message:
            self.edit_status.setText(edit.message)
        return edit

    def plane(self, layer: Labels) -> tuple[int, ...]:
        """The leading (plane) indices of the plane shown in the viewer; () for 2D."""
        if layer.ndim <= 2:
            return ()
        point = layer.world_to_data(self.dock.viewer.dims.point)
        lead = np.clip(np.round(point[: layer.ndim - 2]).astype(int), 0, None)
        return tuple(min(int(v), s - 1) for v, s in zip(lead, layer.data.shape, strict=False))

    def _cell(self, label: int | None, layer: Labels) -> int:
        value = int(label if label is not None else self.label_spin.value())
        return value if value > 0 else int(layer.selected_label)

    # -- edits -----------------------------------------------------------------------------

    def new_cell(self, annotation: Labels | None = None) -> int:
        """Select the next free cell number in the annotation (default: the chosen one)
        and return it."""
        layer = self.dock.link_for(annotation).annotation
        label = A.next_free_label(np.asarray(layer.data))
        layer.selected_label = label
        self.label_spin.setValue(label)
        return label

    def merge(self, a: int | None = None, b: int | None = None) -> A.Edit:
        """Merge cells ``a`` and ``b`` (default: 'Cell' and 'with') into ``a``."""
        layer = self._layer()
        a = self._cell(a, layer)
        b = int(b if b is not None else self.other_spin.value())
        return self.apply(layer, A.merge_labels(np.asarray(layer.data), [a, b]))

    def delete(self, label: int | None = None) -> A.Edit:
        """Delete cell ``label`` (default: 'Cell'): its pixels become background."""
        layer = self._layer()
        return self.apply(layer, A.delete_label(np.asarray(layer.data), self._cell(label, layer)))

    def fill_holes(self, label: int | None = None) -> A.Edit:
        """Fill the background holes in ``label`` (default: in all cells)."""
        layer = self._layer()
        return self.apply(layer, A.fill_holes(np.asarray(layer.data), label))

    def split_line_layer(self) -> Shapes:
        """The '<annotation> split line' Shapes layer (created on first use, path mode;
        the same layer after either is renamed)."""
        layer = self._layer()
        known = self._split_lines.get(id(layer))
        if known is not None and known in self.dock.viewer.layers:
            return known
        name = f"{layer.name} split line"
        if name in self.dock.viewer.layers:
            return self.dock.viewer.layers[name]
        shapes = self._split_lines[id(layer)] = self.dock.viewer.add_shapes(
            ndim=layer.ndim,
            name=name,
            scale=layer.scale,
            translate=layer.translate,
            edge_color="yellow",
            edge_width=1,
        )
        shapes.mode = "add_path"
        return shapes

    def split_by_line(self, line: np.ndarray | None = None, label: int | None = None) -> A.Edit:
        """Split a cell along a drawn line.

        Parameters
        ----------
        line : np.ndarray, optional
            (N, ndim) vertices in the annotation's data coordinates (pixels); default:
            the last path drawn in the 'split line' layer, which is then cleared.
        label : int, optional
            The cell to split; default: the cell the line crosses most.
        """
        layer = self._layer()
        shapes = None
        if line is None:
            shapes = self.split_line_layer()
            if not len(shapes.data):
                self.dock.viewer.layers.selection.active = shapes
                raise UNetCellsError(
                    "Draw a line across the cell in the 'split line' layer, then click "
                    "'Split by line' again."
                )
            line = np.asarray(shapes.data[-1])
        line = np.asarray(line, float)
        plane = tuple(int(np.round(v)) for v in line[0, : layer.ndim - 2])
        data = np.asarray(layer.data)
        if label is None:
            under = data[plane][A.line_mask(line[:, -2:], data.shape[-2:], 1)]
            under = under[under > 0]
            if not under.size:
                raise UNetCellsError("The line crosses no cell; draw it across the cell.")
            label = int(np.bincount(under).argmax())
        edit = self.apply(layer, A.split_label_by_line(data, label, line[:, -2:], plane=plane))
        if shapes is not None:
            shapes.data = []
        return edit

    def split_watershed(self, label: int | None = None, n: int | None = None) -> A.Edit:
        """Split cell ``label`` (default: 'Cell') into ``n`` parts (default: 'parts') by a
        watershed on the image, in the plane shown."""
        link = self.dock.link_for()
        layer = link.annotation
        plane = self.plane(layer)
        image = np.asarray(L.full_resolution(link.image))
        if link.image.rgb:
            image = image.mean(axis=-1)
        edit = A.split_label_watershed(
            np.asarray(layer.data),
            self._cell(label, layer),
            image[plane],
            plane=plane,
            n=int(n or self.parts_spin.value()),
        )
        return self.apply(layer, edit)

    def points_to_cells(self, points: Points | None = None, radius: float | None = None) -> A.Edit:
        """Turn each point of ``points`` (default: the last Points layer) into a disk cell
        of ``radius`` pixels (default: the dock's), each with a new number."""
        layer = self._layer()
        if points is None:
            candidates = [x for x in self.dock.viewer.layers if isinstance(x, Points)]
            if not candidates:
                raise UNetCellsError(
                    "Add a Points layer and click the centres of the missed cells first."
                )
            points = candidates[-1]
        points: Any = L.unwrap(points)
        coords = np.array([layer.world_to_data(points.data_to_world(p)) for p in points.data])
        edit = A.points_to_disks(
            np.asarray(layer.data),
            coords.reshape(-1, layer.ndim),
            float(radius or self.radius_spin.value()),
        )
        return self.apply(layer, edit)
