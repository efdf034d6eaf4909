"""Screenshots of the real plugin in a real napari window (docs/images/overview.png, dock_*).

Each figure opens a napari window of a fixed size, opens the plugin's sample data (the
same as File > Open Sample > U-Net Cells), docks the real widget with
``viewer.window.add_plugin_dock_widget``, drives it through the methods its buttons call,
waits for its thread workers with a Qt event loop, zooms the canvas so that cell
boundaries are visible, grabs the whole window (``viewer.screenshot(canvas_only=False)``)
and closes the viewer, so the next figure can run in the same process.

Needs a display: run it under Xvfb (see make_figures.py). ``quick=True`` makes the
Fine-tune figure train 8 small steps on a 192 px crop of the sample instead of 40 steps
on the whole image (it is meant for the tests; the pictures in the docs come from
``quick=False``); the other figures take a few seconds either way and ignore it.

``FACTS[name]`` records what the last run of a figure saw (cell counts, plot points,
layer names), so a test can check the screenshot shows what its caption says.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PLUGIN = "napari-unet-cells"
WINDOW = (1280, 860)  # width, height of the napari window, px
DOCK_WIDTH = 380  # px, the plugin's dock on the right
LEFT_WIDTH = 250  # px, napari's layer controls and layer list on the left
MAX_WIDTH = 1400  # screenshots wider than this are scaled down
SEED = 0

FACTS: dict[str, dict[str, Any]] = {}


# -- Qt and viewer helpers ---------------------------------------------------------------


def _process(seconds: float = 0.0) -> None:
    """Run the Qt event loop for ``seconds`` (at least one pass)."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while True:
        QApplication.processEvents()
        if time.perf_counter() >= end:
            return
        time.sleep(0.01)


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Run the Qt event loop until ``condition()`` holds; TimeoutError after timeout_s."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError(f"gave up waiting for {what} after {timeout_s:.0f} s")
        QApplication.processEvents()
        time.sleep(0.01)
    _process(0.05)


class _Errors:
    """Collects the error notifications the docks show, so a figure fails loudly
    instead of saving a picture of a failed run."""

    def __init__(self) -> None:
        from napari.utils.notifications import NotificationSeverity, notification_manager

        self.messages: list[str] = []
        self._manager = notification_manager
        self._error = NotificationSeverity.ERROR
        notification_manager.notification_ready.connect(self._on_notification)

    def _on_notification(self, event) -> None:
        notification = getattr(event, "value", event)
        if getattr(notification, "severity", None) == self._error:
            self.messages.append(str(notification.message))

    def check(self) -> None:
        if self.messages:
            raise RuntimeError("the plugin showed an error: " + " | ".join(self.messages))

    def close(self) -> None:
        self._manager.notification_ready.disconnect(self._on_notification)


_restore: list[Callable[[], None]] = []


def _settings() -> None:
    """Use napari's default settings (in memory) unless something loaded settings
    already: the pictures must not depend on, or change, a user's napari preferences."""
    import napari.settings

    if napari.settings._SETTINGS is None:
        napari.settings.get_settings(None)
    application = napari.settings.get_settings().application
    # toasts fade in and out with time: keep them out of the pictures (errors are
    # collected by _Errors and fail the figure); _close restores the level
    level = application.gui_notification_level
    _restore.append(lambda: setattr(application, "gui_notification_level", level))
    application.gui_notification_level = "error"


def _new_viewer():
    import napari

    _settings()
    viewer = napari.Viewer(title="napari", show=True, show_welcome_screen=False)
    viewer.window.resize(*WINDOW)
    _process(0.2)
    return viewer


def _close(viewer) -> None:
    """Close the viewer without saving window settings, and let Qt delete it."""
    import gc

    qt_window = getattr(viewer.window, "_qt_window", None)
    if qt_window is not None and hasattr(qt_window, "_save_current_window_settings"):
        qt_window._save_current_window_settings = lambda *args, **kwargs: None
    viewer.close()
    _process(0.1)
    gc.collect()
    _process(0.05)
    while _restore:
        _restore.pop()()


def _dock(viewer, name: str):
    """Dock the plugin's widget ``name`` at a fixed width; returns (dock, widget)."""
    from qtpy.QtCore import Qt

    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    qt_viewer = viewer.window._qt_viewer
    viewer.window._qt_window.resizeDocks(
        [dock, qt_viewer.dockLayerList, qt_viewer.dockLayerControls],
        [DOCK_WIDTH, LEFT_WIDTH, LEFT_WIDTH],
        Qt.Orientation.Horizontal,
    )
    _process(0.1)
    return dock, widget


def _open_sample(viewer, crop: int | None = None):
    """The plugin's sample (image, ground-truth labels), optionally cropped to the top-left
    ``crop`` x ``crop`` px (quick figures)."""
    viewer.open_sample(PLUGIN, "synthetic_nuclei")
    image = viewer.layers["synthetic nuclei"]
    truth = viewer.layers["synthetic nuclei ground truth"]
    if crop is not None:
        image.data = np.asarray(image.data)[:crop, :crop]
        truth.data = np.asarray(truth.data)[:crop, :crop]
    return image, truth


def _zoom(viewer, center: tuple[float, float], size: float, cover: bool = False) -> None:
    """Centre the canvas on ``center`` (Y, X, data px of a layer with unit scale) and zoom
    so that a square of ``size`` px fits the canvas (``cover``: covers the canvas)."""
    _process(0.1)
    viewer.reset_view()  # after processing events, so the canvas has its final size
    _process(0.05)
    height, width = viewer.window._qt_viewer.canvas.size
    fit = max if cover else min
    viewer.scene.camera.zoom = fit(height, width) / size
    viewer.scene.camera.center = tuple(float(c) for c in center)
    _process(0.1)


def _grab(viewer, path: Path) -> Path:
    """Screenshot of the whole window, scaled down to at most MAX_WIDTH px, as PNG."""
    from PIL import Image as PILImage

    _process(0.3)
    array = viewer.screenshot(canvas_only=False, flash=False)
    picture = PILImage.fromarray(np.asarray(array)[..., :3])
    if picture.width > MAX_WIDTH:
        height = round(picture.height * MAX_WIDTH / picture.width)
        picture = picture.resize((MAX_WIDTH, height), PILImage.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, optimize=True)
    return path


def _busiest_region(labels: np.ndarray, size: int) -> tuple[float, float]:
    """Centre (Y, X) of the ``size`` px window with the most touching-cell border pixels."""
    from scipy import ndimage

    from napari_unet_cells.core.instances import separation_border

    contact = separation_border(labels).astype(np.float32)
    density = ndimage.uniform_filter(contact, size=size, mode="constant")
    half = size // 2
    inner = density[half : labels.shape[0] - half, half : labels.shape[1] - half]
    if inner.size == 0:
        return labels.shape[0] / 2, labels.shape[1] / 2
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return float(y + half), float(x + half)


# -- Predict -------------------------------------------------------------------------------


def _run_predict(viewer, image, *, grid: bool = False):
    dock, widget = _dock(viewer, "Predict")
    widget.image_combo.value = image
    widget.device.value = "cpu"  # the same picture on every machine
    if grid:
        # "auto" picks one tile for the sample image on a CPU; 380 px (196 px output,
        # the training tile) shows a 3 x 3 grid and one tile's context margin
        widget.tile.value = "380"
        widget.show_grid.value = True
    widget.run()  # what the Run button calls
    _wait(lambda: widget.worker is None, 300, "the Predict dock")
    return dock, widget


def _predict_scene(out: Path, name: str, grid: bool) -> list[Path]:
    errors = _Errors()
    viewer = _new_viewer()
    try:
        image, truth = _open_sample(viewer)
        truth.visible = False  # the prediction is what the picture shows
        _, widget = _run_predict(viewer, image, grid=grid)
        errors.check()
        labels = widget.labels_layer
        if labels is None:
            raise RuntimeError(f"the Predict dock wrote no labels: {widget.status.value!r}")
        viewer.layers.selection.active = labels
        shape = np.asarray(image.data).shape
        _zoom(viewer, (shape[0] / 2, shape[1] / 2), max(shape), cover=not grid)
        path = _grab(viewer, out / f"{name}.png")
        FACTS[name] = {
            "cells": int(np.asarray(labels.data).max()),
            "labels_layer": labels.name,
            "layers": [layer.name for layer in viewer.layers],
            "status": widget.status.value,
            "grid_rectangles": 0 if widget.grid_layer is None else len(widget.grid_layer.data),
        }
        return [path]
    finally:
        _close(viewer)
        errors.close()


def figure_overview(out_dir: Path, quick: bool = False) -> list[Path]:
    """The sample data after one click of Run in the Predict dock: every cell its colour."""
    return _predict_scene(Path(out_dir), "overview", grid=False)


def figure_dock_predict(out_dir: Path, quick: bool = False) -> list[Path]:
    """The Predict dock with its tile grid shown over the prediction."""
    return _predict_scene(Path(out_dir), "dock_predict", grid=True)


def figure_measure(out_dir: Path, quick: bool = False) -> list[Path]:
    """Per-cell measurements after one Predict run: the dock's cell count and area
    histogram with its largest bar clicked (those cells highlighted, the others dimmed), and
    napari's own features table of the labels layer docked below the canvas."""
    from qtpy.QtCore import Qt

    out = Path(out_dir)
    errors = _Errors()
    viewer = _new_viewer()
    try:
        image, truth = _open_sample(viewer)
        truth.visible = False
        _, widget = _run_predict(viewer, image)
        panel = widget.measure_panel
        _wait(lambda: panel.worker is None and panel.table is not None, 60, "the measurement")
        errors.check()
        labels = widget.labels_layer
        viewer.layers.selection.active = labels  # the features table follows it
        table_dock, _ = viewer.window.add_plugin_dock_widget("napari", "Features table widget")
        qt_window = viewer.window._qt_window
        qt_window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, table_dock)
        qt_window.resizeDocks([table_dock], [230], Qt.Orientation.Vertical)
        bar = int(np.argmax(panel.histogram.counts))
        panel.select_bar(bar)  # what a click on the bar does
        _process(0.2)
        widget.native.ensureWidgetVisible(panel.histogram)  # the dock scrolls to it
        widget.native.horizontalScrollBar().setValue(0)
        shape = np.asarray(image.data).shape
        _zoom(viewer, (shape[0] / 2, shape[1] / 2), max(shape) / 1.6, cover=True)
        path = _grab(viewer, out / "measure.png")
        FACTS["measure"] = {
            "cells": int(np.asarray(labels.data).max()),
            "rows": len(labels.features),
            "columns": list(labels.features.columns),
            "histogram": panel.column.value,
            "highlighted": len(panel.selected_labels),
            "bar_count": int(panel.histogram.counts[bar]),
            "summary": panel.summary.value,
            "seconds": panel.seconds,
        }
        return [path]
    finally:
        _close(viewer)
        errors.close()


# -- Weight Map ------------------------------------------------------------------------------


def figure_dock_weightmap(out_dir: Path, quick: bool = False) -> list[Path]:
    """The Weight Map dock: the paper's weight map of the ground truth, ridges between
    touching cells bright."""
    out = Path(out_dir)
    errors = _Errors()
    viewer = _new_viewer()
    try:
        _, truth = _open_sample(viewer)
        _, widget = _dock(viewer, "Weight Map")
        widget.labels_combo.value = truth
        widget.compute()  # the "Compute weight map" button
        _wait(lambda: widget.worker is None and widget.state is not None, 120, "the weight map")
        errors.check()
        weights = viewer.layers[f"{truth.name} weight map"]
        _zoom(viewer, _busiest_region(np.asarray(truth.data), 160), 160)
        viewer.layers.selection.active = weights
        path = _grab(viewer, out / "dock_weightmap.png")
        FACTS["dock_weightmap"] = {
            "layers": [layer.name for layer in viewer.layers],
            "max_weight": float(np.max(weights.data)),
            "status": widget.status.value,
        }
        return [path]
    finally:
        _close(viewer)
        errors.close()


# -- Fine-tune -------------------------------------------------------------------------------


def figure_dock_finetune(out_dir: Path, quick: bool = False) -> list[Path]:
    """The Fine-tune dock after a short real training run from the bundled model on the
    sample image and its ground truth: live loss and validation AP50 plot."""
    from napari_unet_cells.core.registry import unregister_model

    out = Path(out_dir).resolve()
    errors = _Errors()
    viewer = _new_viewer()
    widget = None
    try:
        image, truth = _open_sample(viewer, crop=192 if quick else None)
        _, widget = _dock(viewer, "Fine-tune")
        widget.image_combo.setCurrentIndex(widget.image_combo.findData(image))
        widget.labels_combo.setCurrentIndex(widget.labels_combo.findData(truth))
        widget.add_button.click()
        widget.budget.setValue(8 if quick else 40)
        widget.validate_every.setValue(2 if quick else 5)
        widget.device.setCurrentText("cpu")
        if quick:
            widget.batch.setValue(2)
            widget.tile.setValue(220)
        widget.seed.setValue(SEED)
        _wait(lambda: not widget.warmup_thread.is_alive(), 120, "torch warm-up")
        with tempfile.TemporaryDirectory() as folder:
            _train(widget, Path(folder))
        errors.check()
        if widget.result is None:
            raise RuntimeError(f"training returned no model: {widget.status.text()!r}")
        viewer.layers.selection.active = image
        size = np.asarray(image.data).shape[0]
        _zoom(viewer, (size / 2, size / 2), min(size, 256))
        path = _grab(viewer, out / "dock_finetune.png")
        FACTS["dock_finetune"] = {
            "loss_points": len(widget.plot.loss),
            "ap_points": len(widget.plot.ap),
            "best_ap50": widget.result.best_metrics.get("ap50"),
            "status": widget.status.text(),
        }
        return [path]
    finally:
        if widget is not None and widget.model_name is not None:
            unregister_model(widget.model_name)  # the session's model list, as before
        _close(viewer)
        errors.close()


def _train(widget, folder: Path) -> None:
    """Click Train and wait for the end, saving into ``folder``."""
    import torch

    cwd, threads = Path.cwd(), torch.get_num_threads()
    # a relative path, so the dock's status line shows no temporary folder
    os.chdir(folder)
    # one torch thread: the same sums (so the same curve) on every machine, and faster
    # than two on a busy 2-core one (docs/finetune.md, "torch threads")
    torch.set_num_threads(1)
    try:
        widget.output.setText(str(Path("models") / "synthetic_nuclei_tuned.npz"))
        widget.train_button.click()
        _wait(lambda: widget.worker is None, 900, "training")
    finally:
        torch.set_num_threads(threads)
        os.chdir(cwd)


# -- Annotate --------------------------------------------------------------------------------


def figure_dock_annotate(out_dir: Path, quick: bool = False) -> list[Path]:
    """The Annotate dock mid-correction: a copy of the prediction in which a merged pair
    was split and the cells it missed (if any) were added at points, then Check with the
    prediction audit."""
    out = Path(out_dir)
    errors = _Errors()
    viewer = _new_viewer()
    try:
        image, truth = _open_sample(viewer)
        truth.visible = False
        predict_dock, _ = _run_predict(viewer, image)
        errors.check()
        prediction = viewer.layers[f"{image.name} cells"]  # the layer, not the dock's proxy
        viewer.window.remove_dock_widget(predict_dock)
        _, widget = _dock(viewer, "Annotate")
        _select(widget.image_combo, image)
        _select(widget.prediction_combo, prediction)
        widget.from_prediction_button.click()
        annotation = widget.annotation_combo.currentData()
        predicted = np.asarray(prediction.data)
        true = np.asarray(truth.data)

        # 1. the largest predicted object that covers two true cells: split it in two
        merged = _merged_objects(predicted, true)
        if not merged:
            raise RuntimeError("the bundled model merged no touching cells in the sample")
        label, parts, center = merged[0]
        widget.label_spin.setValue(label)
        widget.parts_spin.setValue(parts)
        widget.watershed_button.click()
        # 2. true cells the model missed near it: click their centres, Points -> cells
        for radius in (80, 160, 10_000):  # the nearest missed cells, wherever they are
            missed = _missed_cells(predicted, true, center, radius=radius)
            if len(missed):
                break
        if len(missed):  # (bundled v4 misses no cell of the sample: then none to add)
            viewer.add_points(missed, name="missed cells", size=3, face_color="white")
            widget.radius_spin.setValue(5.0)
            widget.points_button.click()
        # 3. Check, with the prediction chosen: the audit marks the pair it merged
        widget.check_button.click()  # runs in the background
        _wait(lambda: widget.check_worker is None, 60, "the check")
        errors.check()
        viewer.layers.selection.active = annotation
        prediction.visible = False
        _zoom(viewer, center, 160)
        path = _grab(viewer, out / "dock_annotate.png")
        FACTS["dock_annotate"] = {
            "layers": [layer.name for layer in viewer.layers],
            "cells": int(np.asarray(annotation.data).max()),
            "predicted_cells": int(predicted.max()),
            "points": len(missed),
            "problems": widget.problem_list.count(),
            "summary": widget.check_summary.text(),
        }
        return [path]
    finally:
        _close(viewer)
        errors.close()


def _select(combo, layer) -> None:
    for i in range(combo.count()):
        if combo.itemData(i) is layer:
            combo.setCurrentIndex(i)
            return
    raise RuntimeError(f"{layer.name!r} is not offered in the dock")


def _merged_objects(prediction: np.ndarray, truth: np.ndarray) -> list:
    """(label, number of true cells, centre Y, X) of the predicted objects that cover at
    least half of each of two or more true cells, largest first."""
    found = []
    for label in range(1, int(prediction.max()) + 1):
        mask = prediction == label
        ids, counts = np.unique(truth[mask], return_counts=True)
        covered = [
            i for i, c in zip(ids, counts, strict=True) if i > 0 and c >= 0.5 * np.sum(truth == i)
        ]
        if len(covered) >= 2:
            ys, xs = np.nonzero(mask)
            found.append((int(mask.sum()), label, len(covered), (ys.mean(), xs.mean())))
    found.sort(reverse=True)
    return [(label, n, (float(c[0]), float(c[1]))) for _, label, n, c in found]


def _missed_cells(
    prediction: np.ndarray, truth: np.ndarray, center: tuple[float, float], radius: float
) -> np.ndarray:
    """Centres (N, 2) of the true cells within ``radius`` px of ``center`` of which the
    prediction found less than a fifth."""
    points = []
    for i in range(1, int(truth.max()) + 1):
        mask = truth == i
        if not mask.any() or (prediction[mask] > 0).mean() >= 0.2:
            continue
        ys, xs = np.nonzero(mask)
        y, x = ys.mean(), xs.mean()
        if np.hypot(y - center[0], x - center[1]) <= radius and prediction[int(y), int(x)] == 0:
            points.append((round(y), round(x)))
    return np.array(points, dtype=float).reshape(-1, 2)


def figure_window_1280x800(out_dir: Path, quick: bool = False) -> list[Path]:
    """``unet-cells demo`` in a 1280 x 800 window, all four docks open as tabs: the whole
    window (Predict in front), and each dock's panel as it shows in that window, side by
    side (the controls below a panel's edge scroll into view)."""
    from PIL import Image as PILImage

    from napari_unet_cells.cli import DEMO_DOCKS, setup_demo

    viewer = _new_viewer()
    errors = _Errors()
    try:
        window = viewer.window._qt_window
        window.resize(1280, 800)
        _open_sample(viewer, crop=256 if quick else None)
        setup_demo(viewer)
        window.resize(1280, 800)
        _process(0.3)
        viewer.reset_view()
        size = (window.width(), window.height())
        path = _grab(viewer, out_dir / "window_1280x800.png")
        panels = []
        for name in DEMO_DOCKS:
            dock = _dock_named(window, name)
            dock.raise_()
            _process(0.2)
            grab = dock.grab().toImage()
            panels.append(_qimage_to_pil(grab))
        height = max(p.height for p in panels)
        strip = PILImage.new("RGB", (sum(p.width for p in panels) + 8 * 3, height), "white")
        x = 0
        for panel in panels:
            strip.paste(panel, (x, 0))
            x += panel.width + 8
        strip_path = out_dir / "window_1280x800_docks.png"
        strip.save(strip_path, optimize=True)
        errors.check()
        FACTS["window_1280x800"] = {"window": list(size), "docks": list(DEMO_DOCKS)}
        return [path, strip_path]
    finally:
        errors.close()
        _close(viewer)


def _dock_named(window, title: str):
    from qtpy.QtWidgets import QDockWidget

    [dock] = [d for d in window.findChildren(QDockWidget) if d.windowTitle() == title]
    return dock


def _qimage_to_pil(image):
    from PIL import Image as PILImage
    from qtpy.QtGui import QImage

    image = image.convertToFormat(QImage.Format.Format_RGB888)
    width, height = image.width(), image.height()
    data = bytes(image.constBits().asarray(image.sizeInBytes()))
    stride = image.bytesPerLine()
    array = np.frombuffer(data, np.uint8).reshape(height, stride)[:, : width * 3]
    return PILImage.fromarray(array.reshape(height, width, 3))


FIGURES: dict[str, Callable[..., list[Path]]] = {
    "overview": figure_overview,
    "dock_predict": figure_dock_predict,
    "measure": figure_measure,
    "dock_weightmap": figure_dock_weightmap,
    "dock_finetune": figure_dock_finetune,
    "dock_annotate": figure_dock_annotate,
    "window_1280x800": figure_window_1280x800,
}
