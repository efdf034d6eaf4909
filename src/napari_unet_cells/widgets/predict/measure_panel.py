"""The Predict dock's "Cells" panel: per-cell measurements as a Labels layer's features.

"Measure" reads the chosen Labels layer (and the image chosen for intensities) on the GUI
thread, runs :func:`napari_unet_cells.core.measure.measure` in a napari thread worker and
writes the table to the layer's ``features`` (one row per label, an ``index`` column =
the label, so napari's status bar and its features table show a cell's values). The
Predict dock asks for a measurement after each run and each re-labelling. The panel
shows the cell count and a histogram of a chosen column; clicking a bar highlights those
cells through the layer's colour map (the others are dimmed; clicking it again, or
measuring again, restores the colour map). "Save table…" writes the CSV.

magicgui, like the rest of the dock: its rows join the dock's form (aligned labels) and
its layer pickers refresh with the layer list; the histogram is a small QPainter widget
(``widgets/_histogram.py``, no plotting library) held in a one-row Container. The user's
label data is never modified: the worker measures a copy, the highlight is a colour map.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton
from napari.utils.notifications import show_error

from ... import layers as L
from ...core.errors import UNetCellsError
from .._histogram import Histogram
from .._tips import tip
from .._window import layer_list_events
from .._workers import detach, dock_worker, error_text
from .measure_job import (
    MeasureJob,
    as_features,
    read_measure_job,
    run_measure,
    with_user_columns,
    write_table,
)

HIGHLIGHT = (1.0, 0.85, 0.1, 1.0)  # the chosen cells
DIMMED = (0.35, 0.5, 1.0, 0.35)  # the other cells (faint blue), meanwhile
NO_HISTOGRAM = ("label", "plane", "touches_edge")


class MeasurePanel:
    """Labels and intensity pickers, Measure, Save table…, the count and the histogram
    (``widgets``: the rows the dock shows, in its form).

    After a measurement ``table`` is the measured table, ``layer`` the layer it belongs to,
    ``seconds`` the time from reading the layer to writing its features, and
    ``selected_labels`` the labels of the highlighted histogram bar.
    """

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.worker = None
        self.table: dict[str, np.ndarray] | None = None
        self.layer: Any | None = None
        self.seconds: float | None = None
        self.selected_labels = np.zeros(0, np.int64)
        self._pending: MeasureJob | None = None
        self._highlight: tuple[Any, Any, Any] | None = None  # layer, its colormap, ours
        self._watched: Any | None = None
        self._edits = 0
        self.heading = Label(label="<b>Cells</b>", value="")  # a title in the label column
        self.labels_combo = ComboBox(label="Labels", choices=self._labels_choices)
        self.intensity_combo = ComboBox(label="Intensities", choices=self._image_choices)
        self.measure_button = PushButton(text="Measure")
        self.save_button = PushButton(text="Save table…", enabled=False)
        self.buttons = Container(layout="horizontal", labels=False)
        self.buttons.extend([self.measure_button, self.save_button])
        self.buttons.margins = (0, 0, 0, 0)
        self.summary = Label(value="")
        self.summary.native.setWordWrap(True)
        self.column = ComboBox(label="Histogram", choices=self._column_choices)
        self.histogram = Histogram()
        self.plot = Container(labels=False)  # holds the (Qt) histogram in the form
        self.plot.margins = (0, 0, 0, 0)
        self.plot.native.layout().addWidget(self.histogram)
        self._connect()
        _add_tips(self)

    @property
    def widgets(self) -> list[Any]:
        """The rows, in the order the dock shows them."""
        return [
            self.heading,
            self.labels_combo,
            self.intensity_combo,
            self.buttons,
            self.summary,
            self.column,
            self.plot,
        ]

    def _connect(self) -> None:
        self.measure_button.changed.connect(lambda _=None: self.measure())
        self.save_button.changed.connect(lambda _=None: self.save())
        self.column.changed.connect(self._show_histogram)
        self.histogram.bar_clicked.connect(self.select_bar)
        for emitter in layer_list_events(self.viewer):
            emitter.connect(self._refresh_layers)
        self.plot.native.destroyed.connect(lambda *_: self.close())

    def close(self) -> None:
        """The dock closes: forget the queued measurement, detach the worker, stop
        listening to the viewer and the watched layer."""
        self._pending = None
        detach(self.worker)
        self._watch(None)
        for emitter in layer_list_events(self.viewer):
            with contextlib.suppress(RuntimeError, ValueError, TypeError):
                emitter.disconnect(self._refresh_layers)

    # -- choices ----------------------------------------------------------------------------

    def _labels_choices(self, _widget=None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers if L.is_labels(layer)]

    def _image_choices(self, _widget=None) -> list[tuple[str, Any]]:
        images = [(layer.name, layer) for layer in self.viewer.layers if L.is_image(layer)]
        return [("none", None), *images]

    def _column_choices(self, _widget=None) -> list[str]:
        if self.table is None:
            return ["area_px"]
        return [k for k, v in self.table.items() if k not in NO_HISTOGRAM and v.dtype != bool]

    def _refresh_layers(self, _event=None) -> None:
        with contextlib.suppress(RuntimeError):  # the widget was deleted meanwhile
            self.labels_combo.reset_choices()
            self.intensity_combo.reset_choices()
        if self.layer is not None and self.layer not in self.viewer.layers:
            self.summary.value = f"'{self.layer.name}' was removed: measure a layer."
            self.layer, self._highlight = None, None
            self._watch(None)

    def _choose(self, combo: ComboBox, layer: Any) -> bool:
        combo.reset_choices()
        matches = [c for c in combo.choices if c is not None and L.unwrap(c) is L.unwrap(layer)]
        if matches:
            combo.value = matches[0]
        return bool(matches)

    # -- measuring ------------------------------------------------------------------------

    def measure(self, layer: Any | None = None, image: Any | None = None) -> None:
        """Measure ``layer`` (default: the chosen Labels layer) with the intensities of
        ``image`` (default: the chosen one) in a worker; a request made while one runs is
        measured when it ends (the latest wins). The Predict dock calls it after each run."""
        if layer is not None and not self._choose(self.labels_combo, layer):
            self.summary.value = f"'{layer.name}' is not a Labels layer of this viewer."
            return
        if image is not None:
            self._choose(self.intensity_combo, image)
        layer = self.labels_combo.value
        if layer is None:
            self.summary.value = "Choose a Labels layer to measure."
            return
        self._watch(layer)
        try:
            job = read_measure_job(layer, self.intensity_combo.value, self._edits)
        except UNetCellsError as err:
            self._fail(err)
            return
        self._pending = job
        if self.worker is None:
            self._start()
        self.summary.value = f"Measuring '{layer.name}'…"

    def _start(self) -> None:
        job, self._pending = self._pending, None
        worker = dock_worker(run_measure, job)
        worker.returned.connect(lambda table: self._on_measured(job, table))
        worker.errored.connect(self._fail)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()

    def _on_finished(self) -> None:
        self.worker = None
        if self._pending is not None:
            self._start()

    def _fail(self, err: Exception) -> None:
        message = error_text(err, "Measuring")
        show_error(message)
        self.summary.value = message

    def _on_measured(self, job: MeasureJob, table: dict[str, np.ndarray]) -> None:
        if self._pending is not None or job.layer not in self.viewer.layers:
            return  # a newer request replaces it, or the layer is gone
        self.clear_selection()
        features = as_features(table)
        if features is not None:  # the layer's own columns (e.g. a "class") are kept
            job.layer.features = with_user_columns(features, job.layer.features)
        self.table, self.layer = table, job.layer
        self.seconds = time.perf_counter() - job.started
        self.save_button.enabled = True
        current = self.column.value
        self.column.reset_choices()
        area = [k for k in self.column.choices if k.startswith("area_") and k != "area_px"]
        area.append("area_px")
        with self.column.changed.blocked():
            keep = current in self.column.choices and not current.startswith("area_")
            self.column.value = current if keep else area[0]  # the area in units if any
        self._show_histogram()
        notes = [job.note] if job.note else []
        if features is None:
            notes.append("Labels repeat across planes: saved with a 'plane' column, no hover.")
        if job.edits != self._edits:
            notes.append("The labels changed since: click Measure.")
        self.summary.value = " ".join([self._count_text(), *notes])

    def _count_text(self) -> str:
        n = len(self.table["label"]) if self.table is not None else 0
        name = self.layer.name if self.layer is not None else "a removed layer"
        return f"{n} cells in '{name}' ({self.seconds or 0:.2f} s)."

    def _watch(self, layer: Any | None) -> None:
        """Count edits of the measured layer (painting, new data): its table is stale."""
        if self._watched is not None:
            for emitter in (self._watched.events.paint, self._watched.events.data):
                with contextlib.suppress(RuntimeError, ValueError, TypeError):
                    emitter.disconnect(self._on_edit)
        self._watched = layer
        if layer is not None:
            layer.events.paint.connect(self._on_edit)
            layer.events.data.connect(self._on_edit)

    def _on_edit(self, _event=None) -> None:
        self._edits += 1
        if self.table is not None and self.worker is None and self._pending is None:
            with contextlib.suppress(RuntimeError):
                self.summary.value = f"{self._count_text()} Edited since: click Measure."

    # -- histogram and selection --------------------------------------------------------------

    def _show_histogram(self, _value=None) -> None:
        self.clear_selection()
        if self.table is not None and self.column.value in self.table:
            self.histogram.set_values(self.table[self.column.value], self.column.value)

    def select_bar(self, bar: int) -> None:
        """Highlight the cells of histogram bar ``bar``; the same bar again, or -1, clears."""
        if self.table is None or bar < 0 or bar == self.histogram.selected:
            self.clear_selection()
            return
        column = self.column.value
        chosen = self.table["label"][self.histogram.bar_of(self.table[column]) == bar]
        self.highlight(np.unique(chosen))
        self.histogram.selected = bar
        self.histogram.update()
        low, high = self.histogram.edges[bar], self.histogram.edges[bar + 1]
        self.summary.value = (
            f"{self._count_text()} {len(self.selected_labels)} highlighted: {column} "
            f"{low:.4g} to {high:.4g}. Click the bar again to clear."
        )

    def highlight(self, labels: np.ndarray) -> None:
        """Colour the cells ``labels`` of the measured layer, dim the others (the layer's
        colour map; its data is untouched)."""
        from napari.utils.colormaps import DirectLabelColormap

        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            return
        original = self._highlight[1] if self._highlight else layer.colormap
        colors = {None: DIMMED, 0: (0.0, 0.0, 0.0, 0.0)}
        colors.update({int(k): HIGHLIGHT for k in labels})
        ours = DirectLabelColormap(color_dict=colors)
        layer.colormap = ours
        self._highlight = (layer, original, ours)
        self.selected_labels = np.asarray(labels, dtype=np.int64)

    def clear_selection(self) -> None:
        """Give the layer back its colour map (unless the user changed it meanwhile)."""
        highlight, self._highlight = self._highlight, None
        self.selected_labels = np.zeros(0, np.int64)
        if self.histogram.selected != -1:
            self.histogram.selected = -1
            self.histogram.update()
        if highlight is not None:
            layer, original, ours = highlight
            if layer in self.viewer.layers and layer.colormap is ours:
                layer.colormap = original

    # -- saving -----------------------------------------------------------------------------

    def save(self) -> Path | None:
        """Ask for a CSV file name and write the table ("Save table…")."""
        from qtpy.QtWidgets import QFileDialog

        if self.table is None or self.layer is None:
            self.summary.value = "Measure first: there is no table to save."
            return None
        default = str(Path.home() / f"{self.layer.name}.csv")
        path, _ = QFileDialog.getSaveFileName(
            self.plot.native, "Save the cell table", default, "CSV table (*.csv)"
        )
        if not path:
            return None
        try:
            written = write_table(self.table, Path(path))
        except OSError as err:  # e.g. a read-only folder
            reason = err.strerror or str(err)
            self._fail(
                UNetCellsError(
                    f"Cannot write the table to {path} ({reason}): choose a "
                    "folder you can write to."
                )
            )
            return None
        except UNetCellsError as err:
            self._fail(err)
            return None
        self.summary.value = f"{self._count_text()} Saved to {written}."
        return written


def _add_tips(p: MeasurePanel) -> None:
    tip(p.labels_combo, "The Labels layer to measure (any: a prediction, a corrected one).")
    tip(
        p.intensity_combo,
        "The image whose intensities are measured under each cell (all its channels); "
        "'none' measures shapes only.",
    )
    tip(
        p.measure_button,
        "Measure every cell again (after an edit). The values become the layer's "
        "features: hover a cell to see them in the status bar.",
    )
    tip(p.save_button, "Write the table as CSV, one row per cell.")
    tip(p.column, "The column the histogram shows; click a bar to highlight its cells.")
    p.histogram.setToolTip("Click a bar to highlight those cells; click it again to clear.")
