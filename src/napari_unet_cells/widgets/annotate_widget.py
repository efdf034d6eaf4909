"""The "Annotate" dock: annotate cells fast and safely, and close the loop to training.

Thin: each button reads layers, calls one function of :mod:`core.annotation` and writes
the result. Label edits (merge, split, delete, fill holes, points to cells) are applied
with ``Labels.data_setitem`` inside ``Labels.block_history``, so each is one step of
napari's own undo (Ctrl+Z) and redo. The prediction layer is never modified: "Start from
prediction" copies it into a new annotation layer. "Add to training set" adds
(image, annotation, ignore) to the training set of the Fine-tune dock (its ``add_pair``),
the one list both docks share. With a project folder chosen, annotations, ignore masks
and the training-set list are saved automatically (debounced, atomic writes) and
"Open project" restores them.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core import annotation as A
from ..core.errors import UNetCellsError
from ._tips import tip
from ._window import compact_controls, scrolling_layout, short_dock_title, watch_window_close

if TYPE_CHECKING:  # pragma: no cover
    import napari

logger = logging.getLogger(__name__)

_NONE = "(none)"
_NOTES = object()  # the list entry standing for the folded notes of a check
AUTOSAVE_DELAY_MS = 1500  # a crash loses at most the edits of the last ~2 seconds

# colours of the check layer, by CHECK_CODES value
_CHECK_COLOURS = {
    None: "transparent",
    0: "transparent",
    A.CHECK_CODES["split_id"]: "magenta",
    A.CHECK_CODES["speck"]: "yellow",
    A.CHECK_CODES["edge"]: "orange",
    A.CHECK_CODES["border"]: "white",
    A.CHECK_CODES["merged_by_prediction"]: "red",
    A.CHECK_CODES["split_by_prediction"]: "cyan",
}


@dataclass
class AnnotationLink:
    """An annotation layer, the image it annotates and its ignore mask (or None)."""

    image: Image
    annotation: Labels
    ignore: Labels | None = None
    identity: dict | None = None
    in_training: bool = False
    dirty: bool = True  # edited since the last save
    saved_state: tuple | None = None  # (training flag, names, placement) at the last save

    def state(self) -> tuple:
        return (
            self.in_training,
            self.annotation.name,
            None if self.ignore is None else self.ignore.name,
            tuple(self.annotation.scale),
            tuple(self.annotation.translate),
        )


def _role(layer: Any) -> str | None:
    """What this plugin made a layer for ("prediction", "check"), from its metadata."""
    metadata = getattr(layer, "metadata", None)
    return metadata.get("unet_cells_role") if isinstance(metadata, dict) else None


def _is_prediction(layer: Any) -> bool:
    return isinstance(layer, Labels) and _role(layer) == "prediction"


def _image_plane_shape(image: Image) -> tuple[int, ...]:
    data = image.data[0] if image.multiscale else image.data
    return tuple(data.shape[:-1] if image.rgb else data.shape)


def _unwrap(obj: Any) -> Any:
    """The object behind napari's plugin proxy (a layer or the viewer), else ``obj``."""
    return getattr(obj, "__wrapped__", obj)


def _index_of(combo: QComboBox, data: Any) -> int:
    """The index of the item holding ``data`` (compared by identity), or -1."""
    data = _unwrap(data)
    for i in range(combo.count()):
        if combo.itemData(i) is data:
            return i
    return -1


def select(combo: QComboBox, data: Any) -> None:
    """Select the item holding ``data`` (a layer) in a combo box, if it is there."""
    index = _index_of(combo, data)
    if index >= 0:
        combo.setCurrentIndex(index)


def _image_array(image: Image) -> np.ndarray:
    return np.asarray(image.data[0] if image.multiscale else image.data)


class AnnotateWidget(QWidget):
    """Dock widget "Annotate". ``links``: the annotation layers this dock manages."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        # napari hands plugins a proxy of the viewer whose layers are proxies too (new
        # objects): this dock keeps track of layers by identity, so it uses the viewer
        # itself and stores the layers themselves
        self.viewer = _unwrap(napari_viewer)
        self.links: list[AnnotationLink] = []
        self.project: A.AnnotationProject | None = None
        self.report: A.CheckReport | None = None
        self._findings: list[Any] = []  # what each row of the problem list shows
        self.check_worker = None
        self._watching_close = False
        self.last_save_error: str | None = None
        self.saves = 0
        self._finetune = None

        layout = scrolling_layout(self)  # fits any window height
        short_dock_title(self, "Annotate")

        # -- layers ---------------------------------------------------------------------
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

        # -- edits ----------------------------------------------------------------------
        box = QGroupBox("Edit (undo with Ctrl+Z)")
        grid = QGridLayout(box)
        self.new_cell_button = QPushButton("New cell (N)")
        self.label_spin = QSpinBox()
        self.label_spin.setRange(0, 2**31 - 1)
        self.other_spin = QSpinBox()
        self.other_spin.setRange(0, 2**31 - 1)
        self.merge_button = QPushButton("Merge")
        self.delete_button = QPushButton("Delete")
        self.fill_button = QPushButton("Fill holes")
        self.line_button = QPushButton("Split by line")
        self.watershed_button = QPushButton("Split (watershed)")
        self.parts_spin = QSpinBox()
        self.parts_spin.setRange(2, 20)
        self.parts_spin.setValue(2)
        grid.addWidget(self.new_cell_button, 0, 0, 1, 2)
        grid.addWidget(QLabel("Cell"), 1, 0)
        grid.addWidget(self.label_spin, 1, 1)
        grid.addWidget(QLabel("with"), 2, 0)
        grid.addWidget(self.other_spin, 2, 1)
        grid.addWidget(self.merge_button, 0, 2)
        grid.addWidget(self.delete_button, 1, 2)
        grid.addWidget(self.fill_button, 2, 2)
        grid.addWidget(self.line_button, 3, 0, 1, 2)
        grid.addWidget(self.watershed_button, 3, 2)
        grid.addWidget(QLabel("parts"), 4, 1)
        grid.addWidget(self.parts_spin, 4, 2)
        self.radius_spin = QDoubleSpinBox()
        self.radius_spin.setRange(1.0, 100.0)
        self.radius_spin.setValue(4.0)
        self.radius_spin.setSuffix(" px")
        self.points_button = QPushButton("Points → cells")
        grid.addWidget(self.points_button, 5, 0, 1, 2)
        grid.addWidget(self.radius_spin, 5, 2)
        self.edit_status = QLabel("")
        self.edit_status.setWordWrap(True)
        grid.addWidget(self.edit_status, 6, 0, 1, 3)
        layout.addWidget(box)

        # -- check ----------------------------------------------------------------------
        check = QGroupBox("Check")
        check_layout = QVBoxLayout(check)
        crow = QHBoxLayout()
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 100_000)
        self.min_size.setValue(20)
        self.min_size.setSuffix(" px min")
        self.check_button = QPushButton("Check")
        crow.addWidget(self.min_size)
        crow.addWidget(self.check_button)
        check_layout.addLayout(crow)
        self.check_progress = QProgressBar()
        self.check_progress.hide()
        check_layout.addWidget(self.check_progress)
        self.check_summary = QLabel("")
        self.check_summary.setWordWrap(True)
        self.problem_list = QListWidget()
        self.problem_list.setMaximumHeight(120)
        check_layout.addWidget(self.check_summary)
        check_layout.addWidget(self.problem_list)
        layout.addWidget(check)

        # -- training set ---------------------------------------------------------------
        self.add_button = QPushButton("Add to training set")
        self.counts = QLabel("training set: empty")
        layout.addWidget(self.add_button)
        layout.addWidget(self.counts)

        # -- project --------------------------------------------------------------------
        project = QGroupBox("Project folder (autosave)")
        prow = QHBoxLayout(project)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("choose a folder once; annotations are saved there")
        self.folder_button = QPushButton("...")
        self.open_button = QPushButton("Open")
        prow.addWidget(self.folder, 1)
        prow.addWidget(self.folder_button)
        prow.addWidget(self.open_button)
        layout.addWidget(project)
        self.save_status = QLabel(
            f"autosave: to {A.default_project_folder()} from the first cell, unless you "
            "choose a project folder"
        )
        self.save_status.setWordWrap(True)
        layout.addWidget(self.save_status)
        layout.addStretch(1)

        self._set_tooltips()
        compact_controls(self)

        self.autosave_timer = QTimer(self)
        self.autosave_timer.setSingleShot(True)
        self.autosave_timer.setInterval(AUTOSAVE_DELAY_MS)
        self.autosave_timer.timeout.connect(self.save_now)

        # -- signals --------------------------------------------------------------------
        self.new_button.clicked.connect(lambda: self._guard(self.new_annotation))
        self.from_prediction_button.clicked.connect(
            lambda: self._guard(self.new_annotation, from_prediction=True)
        )
        self.ignore_button.clicked.connect(lambda: self._guard(self.add_ignore_mask))
        self.new_cell_button.clicked.connect(lambda: self._guard(self.new_cell))
        self.merge_button.clicked.connect(lambda: self._guard(self.merge))
        self.delete_button.clicked.connect(lambda: self._guard(self.delete))
        self.fill_button.clicked.connect(lambda: self._guard(self.fill_holes))
        self.line_button.clicked.connect(lambda: self._guard(self.split_by_line))
        self.watershed_button.clicked.connect(lambda: self._guard(self.split_watershed))
        self.points_button.clicked.connect(lambda: self._guard(self.points_to_cells))
        self.check_button.clicked.connect(lambda: self._guard(self.start_check))
        self.problem_list.currentRowChanged.connect(self.show_problem)
        self.add_button.clicked.connect(lambda: self._guard(self.add_to_training_set))
        self.folder_button.clicked.connect(self._browse_folder)
        self.open_button.clicked.connect(
            lambda: self._guard(self.open_project, self.folder.text().strip())
        )
        self.annotation_combo.currentIndexChanged.connect(self._annotation_changed)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

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
            self.min_size: "Check reports cells smaller than this many pixels as specks "
            "(usually stray brush strokes); default 20 px.",
            self.check_button: "Check the annotation before training: numbers used by two "
            "separate pieces, specks, cells cut by the ignore mask, and the border carved "
            "between touching cells; with a prediction chosen, also cells it merged or split. "
            "Problems are listed below and shown in a '<annotation> check' layer.",
            self.problem_list: "Problems found by Check, most urgent first; click one to centre "
            "the view on it. The touching pairs (information, nothing to fix) are folded into "
            "the last line: click it to list them.",
            self.add_button: "Add (image, annotation, ignore mask) to the training set of the "
            "Fine-tune dock (opened if needed).",
            self.folder: "The project folder: annotations, ignore masks and the training-set "
            "list are saved there automatically (about 1.5 s after each edit) and restored by "
            "Open.",
            self.folder_button: "Choose the project folder (created if needed) and open it.",
            self.open_button: "Use the folder typed on the left as the project and restore the "
            "annotations saved in it.",
        }
        for widget, text in tips.items():
            tip(widget, text)

    # -- helpers ---------------------------------------------------------------------------

    def _guard(self, fn, *args, **kwargs) -> Any:
        try:
            return fn(*args, **kwargs)
        except UNetCellsError as err:
            show_error(str(err))
            return None

    def _refresh_layers(self, event=None) -> None:
        layers = list(self.viewer.layers)
        images = [x for x in layers if isinstance(x, Image)]
        labels = [x for x in layers if isinstance(x, Labels)]
        ours = {id(link.annotation) for link in self.links}
        check_layers = {id(x) for x in labels if _role(x) == "check"}
        # predictions are never edited: they are offered as Prediction, not Annotation
        annotations = [x for x in labels if id(x) not in check_layers and not _is_prediction(x)]
        annotations.sort(key=lambda x: id(x) not in ours)  # this dock's layers first
        predictions = [x for x in labels if id(x) not in ours and id(x) not in check_layers]
        for combo, items, optional in (
            (self.image_combo, images, False),
            (self.annotation_combo, annotations, True),
            (self.prediction_combo, predictions, True),
        ):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            if optional:
                combo.addItem(_NONE, None)
            for layer in items:
                combo.addItem(layer.name, layer)
            index = _index_of(combo, current) if current is not None else -1
            if index >= 0:
                combo.setCurrentIndex(index)
            combo.blockSignals(False)
        self._default_prediction(event)
        own = [x for x in annotations if id(x) in ours]
        if self.annotation_combo.currentData() is None and own:  # never a foreign default
            select(self.annotation_combo, own[-1])
        alive = {id(x) for x in layers}
        self.links = [
            link for link in self.links if id(link.annotation) in alive and id(link.image) in alive
        ]
        for link in self.links:
            if link.ignore is not None and id(link.ignore) not in alive:
                link.ignore = None

    def _default_prediction(self, event=None) -> None:
        """Prediction = the newest prediction: when one is added, or when none is chosen."""
        added = _unwrap(getattr(event, "value", None)) if event is not None else None
        newest = [x for x in self.viewer.layers if _is_prediction(x)]
        if not newest:
            return
        if _is_prediction(added) or self.prediction_combo.currentData() is None:
            select(self.prediction_combo, added if _is_prediction(added) else newest[-1])

    def _annotation_changed(self, index: int = 0) -> None:
        layer = self.annotation_combo.currentData()
        if isinstance(layer, Labels):
            self.label_spin.setValue(int(layer.selected_label))

    def link_for(self, layer: Labels | None = None) -> AnnotationLink:
        """The link of ``layer`` (default: the chosen annotation layer)."""
        layer = _unwrap(layer) if layer is not None else self.annotation_combo.currentData()
        if not isinstance(layer, Labels):
            raise UNetCellsError("Choose an annotation (Labels) layer, or click 'New annotation'.")
        if _is_prediction(layer):
            raise UNetCellsError(
                f"'{layer.name}' is a prediction and is never edited: click 'Start from "
                "prediction' to correct a copy of it."
            )
        for link in self.links:
            if link.annotation is layer:
                return link
        image = self.image_combo.currentData()
        if not isinstance(image, Image):
            raise UNetCellsError("Choose the Image layer this annotation belongs to.")
        if _image_plane_shape(image) != tuple(layer.data.shape):
            raise UNetCellsError(
                f"'{layer.name}' {layer.data.shape} does not match the image '{image.name}' "
                f"{_image_plane_shape(image)}; choose the matching image."
            )
        return self._link(AnnotationLink(image, layer))

    def _link(self, link: AnnotationLink) -> AnnotationLink:
        self.links.append(link)
        if not self._watching_close:  # closing napari saves what is not saved yet
            self._watching_close = watch_window_close(self, self._on_main_window_close)
        layer = link.annotation
        layer.bind_key("n", self._new_cell_key, overwrite=True)
        layer.events.paint.connect(self._schedule_save)
        layer.events.data.connect(self._schedule_save)
        layer.events.selected_label.connect(self._selected_label_changed)
        if link.ignore is not None:
            link.ignore.events.paint.connect(self._schedule_save)
        return link

    def _selected_label_changed(self, event=None) -> None:
        layer = self.annotation_combo.currentData()
        if isinstance(layer, Labels) and event is not None and event.source is layer:
            self.label_spin.setValue(int(layer.selected_label))

    def _new_cell_key(self, layer: Labels) -> None:
        try:
            self.new_cell(layer)
        except (RuntimeError, UNetCellsError):  # the dock was closed: still a new id
            layer.selected_label = A.next_free_label(np.asarray(layer.data))

    def _apply(self, layer: Labels, edit: A.Edit) -> A.Edit:
        """Apply an edit as one undoable step of napari's history."""
        if edit.size:
            with layer.block_history():
                layer.data_setitem(edit.indices, edit.values)
        if edit.message:  # the status line, not a notification per edit
            self.edit_status.setText(edit.message)
        return edit

    def _plane(self, layer: Labels) -> tuple[int, ...]:
        """The leading (plane) indices of the plane shown in the viewer."""
        if layer.ndim <= 2:
            return ()
        point = layer.world_to_data(self.viewer.dims.point)
        lead = np.clip(np.round(point[: layer.ndim - 2]).astype(int), 0, None)
        return tuple(min(int(v), s - 1) for v, s in zip(lead, layer.data.shape, strict=False))

    def _cell(self, label: int | None, layer: Labels) -> int:
        value = int(label if label is not None else self.label_spin.value())
        if value <= 0:
            value = int(layer.selected_label)
        return value

    # -- layers ----------------------------------------------------------------------------

    def new_annotation(
        self, image: Image | None = None, *, from_prediction: bool | Labels = False
    ) -> Labels:
        """Create an annotation layer for ``image`` (default: the chosen image), empty or a
        copy of the chosen (or given) prediction; matches the image's scale and translate."""
        image = _unwrap(image) if image is not None else self.image_combo.currentData()
        from_prediction = _unwrap(from_prediction)
        if not isinstance(image, Image):
            raise UNetCellsError("Choose an Image layer to annotate.")
        shape = _image_plane_shape(image)
        if from_prediction is not False:
            pred = (
                from_prediction
                if isinstance(from_prediction, Labels)
                else self.prediction_combo.currentData()
            )
            if not isinstance(pred, Labels):
                raise UNetCellsError("Choose the prediction (a Labels layer) to start from.")
            if tuple(pred.data.shape) != shape:
                raise UNetCellsError(
                    f"The prediction '{pred.name}' {pred.data.shape} does not match the image "
                    f"{shape}."
                )
            data = np.array(pred.data, dtype=np.int32, copy=True)
        else:
            data = np.zeros(shape, dtype=np.int32)
        n = image.ndim - (1 if image.rgb else 0)
        layer = self.viewer.add_labels(
            data,
            name=f"{image.name} annotation",
            scale=image.scale[:n],
            translate=image.translate[:n],
        )
        layer.brush_size = 6
        self._link(AnnotationLink(image, layer))
        self._refresh_layers()
        select(self.annotation_combo, layer)
        self.viewer.layers.selection.active = layer
        self.new_cell(layer)
        layer.mode = "paint"
        self._schedule_save()
        return layer

    def add_ignore_mask(self, annotation: Labels | None = None) -> Labels:
        """The ignore ("don't care") layer paired with the annotation (created once)."""
        link = self.link_for(annotation)
        if link.ignore is not None:
            return link.ignore
        layer = self.viewer.add_labels(
            np.zeros(link.annotation.data.shape, np.uint8),
            name=f"{link.image.name} ignore",
            scale=link.annotation.scale,
            translate=link.annotation.translate,
            opacity=0.4,
        )
        layer.colormap = {None: "transparent", 0: "transparent", 1: "gray"}
        layer.selected_label = 1
        layer.events.paint.connect(self._schedule_save)
        link.ignore = layer
        self._refresh_layers()
        self._schedule_save()
        return layer

    # -- edits -----------------------------------------------------------------------------

    def new_cell(self, annotation: Labels | None = None) -> int:
        """Select the next free id in the annotation layer and return it."""
        layer = self.link_for(annotation).annotation
        label = A.next_free_label(np.asarray(layer.data))
        layer.selected_label = label
        self.label_spin.setValue(label)
        return label

    def merge(self, a: int | None = None, b: int | None = None) -> A.Edit:
        layer = self.link_for().annotation
        a = self._cell(a, layer)
        b = int(b if b is not None else self.other_spin.value())
        return self._apply(layer, A.merge_labels(np.asarray(layer.data), [a, b]))

    def delete(self, label: int | None = None) -> A.Edit:
        layer = self.link_for().annotation
        return self._apply(layer, A.delete_label(np.asarray(layer.data), self._cell(label, layer)))

    def fill_holes(self, label: int | None = None) -> A.Edit:
        """Fill holes in ``label`` (default: in all cells)."""
        layer = self.link_for().annotation
        return self._apply(layer, A.fill_holes(np.asarray(layer.data), label))

    def split_line_layer(self) -> Shapes:
        """The 'split line' Shapes layer (created on first use, in path mode)."""
        layer = self.link_for().annotation
        name = f"{layer.name} split line"
        if name in self.viewer.layers:
            return self.viewer.layers[name]
        shapes = self.viewer.add_shapes(
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
        """Split the cell the line crosses most (or ``label``) along a drawn line.

        line: (N, ndim) vertices in the annotation's data coordinates; default: the last
        path drawn in the 'split line' layer (which is then cleared). label: the cell to
        split; default: the cell the line crosses most.
        """
        layer = self.link_for().annotation
        shapes = None
        if line is None:
            shapes = self.split_line_layer()
            if not len(shapes.data):
                self.viewer.layers.selection.active = shapes
                raise UNetCellsError(
                    "Draw a line across the cell in the 'split line' layer, then click "
                    "'Split by line' again."
                )
            line = np.asarray(shapes.data[-1])
        line = np.asarray(line, float)
        plane = tuple(int(np.round(v)) for v in line[0, : layer.ndim - 2])
        yx = line[:, -2:]
        data = np.asarray(layer.data)
        if label is None:
            mask = A.line_mask(yx, data.shape[-2:], 1)
            under = data[plane][mask]
            under = under[under > 0]
            if not under.size:
                raise UNetCellsError("The line crosses no cell; draw it across the cell.")
            label = int(np.bincount(under).argmax())
        edit = A.split_label_by_line(data, label, yx, plane=plane)
        self._apply(layer, edit)
        if shapes is not None:
            shapes.data = []
        return edit

    def split_watershed(self, label: int | None = None, n: int | None = None) -> A.Edit:
        """Split a cell into ``n`` parts by a watershed on the image."""
        link = self.link_for()
        layer = link.annotation
        plane = self._plane(layer)
        image = _image_array(link.image)
        if link.image.rgb:
            image = image.mean(axis=-1)
        edit = A.split_label_watershed(
            np.asarray(layer.data),
            self._cell(label, layer),
            image[plane],
            plane=plane,
            n=int(n or self.parts_spin.value()),
        )
        return self._apply(layer, edit)

    def points_to_cells(self, points: Points | None = None, radius: float | None = None) -> A.Edit:
        """Turn the points of a Points layer (default: the first one) into disk cells."""
        layer = self.link_for().annotation
        if points is None:
            candidates = [x for x in self.viewer.layers if isinstance(x, Points)]
            if not candidates:
                raise UNetCellsError(
                    "Add a Points layer and click the centres of the missed cells first."
                )
            points = candidates[-1]
        points = _unwrap(points)
        coords = np.array([layer.world_to_data(points.data_to_world(p)) for p in points.data])
        edit = A.points_to_disks(
            np.asarray(layer.data),
            coords.reshape(-1, layer.ndim),
            float(radius or self.radius_spin.value()),
        )
        return self._apply(layer, edit)

    # -- check -----------------------------------------------------------------------------

    def _check_inputs(self) -> tuple[AnnotationLink, dict[str, Any]]:
        """The annotation to check and the arguments of the core check."""
        link = self.link_for()
        pred = self.prediction_combo.currentData()
        prediction = None
        if isinstance(pred, Labels) and tuple(pred.data.shape) == link.annotation.data.shape:
            prediction = np.asarray(pred.data)
        kwargs = {
            "labels": np.array(link.annotation.data, copy=True),  # painting may go on
            "ignore": None if link.ignore is None else np.array(link.ignore.data, copy=True),
            "min_size": self.min_size.value(),
            "prediction": prediction,
        }
        return link, kwargs

    def check(self) -> A.CheckReport:
        """Run the check here and now (scripts); the Check button runs it in the background
        (:meth:`start_check`). Lists the problems and shows them in a '<annotation> check'
        layer."""
        link, kwargs = self._check_inputs()
        report = A.check_annotation(**kwargs)
        self._show_report(link, report)
        return report

    def start_check(self):
        """Run the check in a thread worker with progress (Check button); returns it. The
        window stays responsive; the result is shown when it arrives."""
        from napari.qt.threading import thread_worker

        if self.check_worker is not None:
            return self.check_worker
        link, kwargs = self._check_inputs()

        @thread_worker
        def work():
            return (yield from A.iter_check_annotation(**kwargs))

        worker = work()
        worker.yielded.connect(self._on_check_progress)
        worker.returned.connect(lambda report: self._show_report(link, report))
        worker.errored.connect(lambda err: show_error(f"Check failed: {err}"))
        worker.finished.connect(self._on_check_finished)
        self.check_worker = worker
        self.check_button.setEnabled(False)
        self.check_progress.setValue(0)
        self.check_progress.show()
        self.check_summary.setText("checking ...")
        worker.start()
        return worker

    def _on_check_progress(self, event: A.CheckProgress) -> None:
        self.check_progress.setMaximum(event.total)
        self.check_progress.setValue(event.done)

    def _on_check_finished(self) -> None:
        self.check_worker = None
        with contextlib.suppress(RuntimeError):  # the dock was closed meanwhile
            self.check_button.setEnabled(True)
            self.check_progress.hide()

    def _show_report(self, link: AnnotationLink, report: A.CheckReport | None) -> None:
        if report is None or link.annotation not in self.viewer.layers:
            return
        self.report = report
        name = f"{link.annotation.name} check"
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], Labels):
            self.viewer.layers[name].data = report.mask
        else:
            layer = self.viewer.add_labels(
                report.mask,
                name=name,
                scale=link.annotation.scale,
                translate=link.annotation.translate,
                opacity=0.8,
                metadata={"unet_cells_role": "check"},
            )
            layer.colormap = _CHECK_COLOURS
            layer.editable = False
        self.check_summary.setText(report.summary())
        self._list_findings(show_notes=False)
        self.viewer.layers.selection.active = link.annotation

    def _list_findings(self, show_notes: bool) -> None:
        """Problems first; the notes folded into one line, listed when it is clicked."""
        report = self.report
        self._findings = list(report.problems)
        items = [self._finding_text(p) for p in report.problems]
        if report.notes and show_notes:
            self._findings += report.notes
            items += [self._finding_text(p) for p in report.notes]
        elif report.notes:
            self._findings.append(_NOTES)
            items.append(f"▸ {report.notes_summary()}: click to list them")
        self.problem_list.blockSignals(True)
        self.problem_list.clear()
        self.problem_list.addItems(items)
        self.problem_list.blockSignals(False)

    @staticmethod
    def _finding_text(problem: A.Problem) -> str:
        return (f"[{', '.join(map(str, problem.plane))}] " if problem.plane else "") + (
            problem.message
        )

    def show_problem(self, row: int) -> None:
        """Centre the view on finding ``row`` of the list (the folded notes line: list
        the notes)."""
        if self.report is None or not 0 <= row < len(self._findings):
            return
        problem = self._findings[row]
        if problem is _NOTES:
            self._list_findings(show_notes=True)
            return
        layer = self.link_for().annotation
        world = layer.data_to_world((*problem.plane, *problem.position))
        if layer.ndim > 2:
            self.viewer.dims.set_point(range(layer.ndim - 2), world[: layer.ndim - 2])
        camera = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera
        camera.center = tuple(world[-2:])

    # -- training set ----------------------------------------------------------------------

    def finetune_dock(self):
        """The Fine-tune dock of this viewer (docked if needed): it holds the training set."""
        _, widget = self.viewer.window.add_plugin_dock_widget(
            "napari-unet-cells",
            "Fine-tune",
            tabify=True,  # a tab, not stacked below
        )
        self._finetune = widget
        return widget

    def _sync_training_flags(self) -> None:
        """Mark as "in training" exactly the annotations in the Fine-tune dock's list (pairs
        may be added or removed there too)."""
        if self._finetune is None:
            return
        in_set = {id(_unwrap(p.labels)) for p in self._finetune.pairs}
        for link in self.links:
            link.in_training = id(link.annotation) in in_set

    def add_to_training_set(self, annotation: Labels | None = None):
        """Add (image, annotation, ignore) to the Fine-tune dock's training set."""
        link = self.link_for(annotation)
        data = np.asarray(link.annotation.data)
        if not data.any():
            raise UNetCellsError("The annotation has no cells yet: paint some cells first.")
        pair = self.finetune_dock().add_pair(link.image, link.annotation, link.ignore)
        link.in_training = True
        self._update_counts()
        self._schedule_save()
        return pair

    def _update_counts(self) -> dict[str, int]:
        try:
            pairs = self.finetune_dock().pairs
        except Exception:  # the dock could not open: counts are only informative
            logger.debug("no Fine-tune dock", exc_info=True)
            return {}
        counts = A.training_counts([np.asarray(p.labels.data) for p in pairs])
        self.counts.setText(
            f"training set: {counts['images']} image(s), {counts['cells']} cells, "
            f"{counts['touching_pairs']} touching pairs"
        )
        return counts

    # -- project folder --------------------------------------------------------------------

    def _browse_folder(self) -> None:
        name = QFileDialog.getExistingDirectory(self, "Project folder")
        if name:
            self.folder.setText(name)
            self._guard(self.open_project, name)

    def set_project(self, folder: str | Path) -> A.AnnotationProject:
        """Save into ``folder`` from now on (created if needed) and save everything now."""
        if not str(folder).strip():
            raise UNetCellsError("Choose a project folder first.")
        self.project = A.AnnotationProject(folder)
        self.folder.setText(str(self.project.folder))
        for link in self.links:
            link.dirty = True
        self.save_now()
        return self.project

    def _schedule_save(self, event=None) -> None:
        source = _unwrap(getattr(event, "source", None))
        owners = [
            link for link in self.links if source is link.annotation or source is link.ignore
        ]
        for link in owners or self.links:
            link.dirty = True
        try:
            if self.project is None:
                self._default_project()
            if self.project is not None:
                self.save_status.setText("unsaved changes ...")
                self.autosave_timer.start()
        except RuntimeError:  # the dock was closed while its layers stay open
            logger.debug("Annotate dock closed; autosave off")

    def _default_project(self) -> None:
        """No project folder chosen: autosave to the default one (said in the dock), so
        that closing napari never loses painted cells."""
        if not self.links:
            return
        folder = A.default_project_folder()
        try:
            self.project = A.AnnotationProject(folder)
        except OSError as err:
            self.save_status.setText(
                f"NOT SAVED: cannot autosave to {folder} ({err.strerror}); choose a project folder"
            )
            return
        self.folder.setText(str(self.project.folder))
        show_info(
            f"Annotations are autosaved to {self.project.folder} (no project folder was "
            "chosen; choose one in the Annotate dock to save them elsewhere)."
        )

    def _on_main_window_close(self) -> None:
        """napari is closing: save what is not saved yet."""
        self._schedule_save()
        if self.autosave_timer.isActive() or any(link.dirty for link in self.links):
            self.save_now()

    def save_now(self) -> int:
        """Save the annotations changed since the last save (and the training-set flags)
        to the project; returns the number saved. Errors are shown, never raised (autosave
        must not break editing); what was not saved is retried at the next save."""
        self.autosave_timer.stop()
        if self.project is None:
            return 0
        n = 0
        self._sync_training_flags()
        try:
            for link in self.links:
                state = link.state()
                if not link.dirty and state == link.saved_state:
                    continue
                image = _image_array(link.image)
                if link.identity is None or tuple(link.identity["shape"]) != image.shape:
                    link.identity = A.image_identity(link.image.name, image)
                self.project.save(
                    link.identity,
                    np.asarray(link.annotation.data),
                    None if link.ignore is None else np.asarray(link.ignore.data),
                    image=image,
                    scale=link.annotation.scale,
                    translate=link.annotation.translate,
                    in_training=link.in_training,
                    labels_name=link.annotation.name,
                    ignore_name=None if link.ignore is None else link.ignore.name,
                )
                link.dirty, link.saved_state = False, state
                n += 1
        except (OSError, UNetCellsError) as err:
            self.last_save_error = str(err)
            self.save_status.setText(f"NOT SAVED: {err}")
            show_error(f"Autosave failed: {err}")
            return n
        self.last_save_error = None
        self.saves += 1
        self.save_status.setText(f"saved {n} annotation(s) to {self.project.folder}")
        return n

    def open_project(self, folder: str | Path) -> list[AnnotationLink]:
        """Use ``folder`` as the project and restore its annotations as layers (and the
        training-set list into the Fine-tune dock). Images already open are matched by
        content; others are restored from the project's copy."""
        if not str(folder).strip():
            raise UNetCellsError("Choose a project folder first.")
        has_index = (Path(folder).expanduser() / A.INDEX_NAME).is_file()
        project = A.AnnotationProject(folder, create=not has_index)
        restored: list[AnnotationLink] = []
        for key, entry in project.entries.items():
            if any(
                link.identity is not None and link.identity["hash"] == entry.image["hash"]
                for link in self.links
            ):
                continue  # already open and linked
            arrays = project.load(key)
            image = self._find_image(entry.image)
            if image is None:
                if arrays["image"] is None:
                    logger.warning("no image for %s; skipped", key)
                    continue
                image = self.viewer.add_image(
                    arrays["image"],
                    name=entry.image["name"],
                    scale=entry.scale,
                    translate=entry.translate,
                )
            layer = self.viewer.add_labels(
                arrays["labels"],
                name=entry.labels_name or f"{entry.image['name']} annotation",
                scale=entry.scale,
                translate=entry.translate,
            )
            link = self._link(AnnotationLink(image, layer, None, dict(entry.image)))
            if arrays["ignore"] is not None:
                ignore = self.viewer.add_labels(
                    arrays["ignore"].astype(np.uint8),
                    name=entry.ignore_name or f"{entry.image['name']} ignore",
                    scale=entry.scale,
                    translate=entry.translate,
                    opacity=0.4,
                )
                ignore.colormap = {None: "transparent", 0: "transparent", 1: "gray"}
                ignore.events.paint.connect(self._schedule_save)
                link.ignore = ignore
            if entry.in_training:
                self.finetune_dock().add_pair(link.image, link.annotation, link.ignore)
                link.in_training = True
            restored.append(link)
        self.project = project
        self.folder.setText(str(project.folder))
        self._refresh_layers()
        self._update_counts()
        self.save_status.setText(
            f"project {project.folder}: {len(project.entries)} annotation(s), "
            f"{len(restored)} restored"
        )
        self.save_now()
        return restored

    def _find_image(self, identity: dict) -> Image | None:
        for layer in self.viewer.layers:
            if not isinstance(layer, Image):
                continue
            data = _image_array(layer)
            if list(data.shape) != list(identity["shape"]):
                continue
            if A.image_identity(identity["name"], data)["hash"] == identity["hash"]:
                return layer
        return None

    def closeEvent(self, event) -> None:
        if self.check_worker is not None:
            self.check_worker.quit()
        if self.autosave_timer.isActive():
            self.save_now()
        super().closeEvent(event)
