"""The Fine-tune dock in a real viewer: trains from layers, live plot, Stop, Predict."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_unet_cells.core.checkpoint import CellModel, load_model, save_model
from napari_unet_cells.core.registry import registered_models, unregister_model
from napari_unet_cells.core.synthetic import synthetic_cells

MAX_GUI_GAP_S = 0.5  # the main thread must never be blocked longer than this


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_model_file(tmp_path, tiny_config):
    path = tmp_path / "tiny.npz"
    save_model(CellModel.new(tiny_config, seed=0), path)
    return path


def _dock(viewer, tmp_path, tiny_model_file, seed=4):
    image, labels = synthetic_cells((96, 128), seed=seed)
    image_layer = viewer.add_image(image, name="cells")
    labels_layer = viewer.add_labels(labels, name="cells gt")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Fine-tune")
    widget.add_pair(image_layer, labels_layer)
    widget.set_base_model(tiny_model_file)
    widget.batch.setValue(2)
    widget.validate_every.setValue(3)
    widget.device.setCurrentText("cpu")
    widget.output.setText(str(tmp_path / "out" / "tuned.npz"))
    return widget, image_layer, labels_layer


class _GapMeter:
    """Ticks a QTimer on the main thread and records the longest gap between ticks."""

    def __init__(self, interval_ms: int = 10):
        self.last = time.perf_counter()
        self.max_gap = 0.0
        self.ticks = 0
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        self.max_gap = max(self.max_gap, now - self.last)
        self.last = now
        self.ticks += 1

    def start(self):
        self.last = time.perf_counter()
        self.timer.start()

    def stop(self):
        self.timer.stop()


def test_train_from_layers_live_plot_stop_and_predict(
    make_napari_viewer, qtbot, tmp_path, tiny_model_file
):
    viewer = make_napari_viewer(show=True)
    widget, image_layer, labels_layer = _dock(viewer, tmp_path, tiny_model_file)
    before = labels_layer.data.copy()
    widget.budget.setValue(100_000)  # only Stop ends this run
    # a user spends seconds choosing layers after opening the dock: torch's one-time lazy
    # imports, started in the background when the dock opened, are over by then
    qtbot.waitUntil(lambda: not widget.warmup_thread.is_alive(), timeout=60_000)
    meter = _GapMeter()
    meter.start()
    widget.train_button.click()
    worker = widget.worker
    assert worker is not None and not widget.train_button.isEnabled()
    # the plot updates live: loss points every step, AP points at each validation; train
    # for at least 1.5 s so that the gap measurement sees many timer ticks
    started = time.perf_counter()
    qtbot.waitUntil(
        lambda: (
            len(widget.plot.loss) >= 8
            and len(widget.plot.ap) >= 2
            and time.perf_counter() - started > 1.5
        ),
        timeout=60_000,
    )
    assert "step" in widget.status.text()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        widget.stop_button.click()
    meter.stop()
    assert meter.ticks > 20
    print(f"longest main-thread gap during training: {meter.max_gap * 1000:.0f} ms")
    assert meter.max_gap < MAX_GUI_GAP_S, f"main thread blocked for {meter.max_gap:.3f} s"

    result = widget.result
    assert result is not None and result.stopped_by == "user"
    assert result.steps < 100_000 and result.steps >= 8
    saved = tmp_path / "out" / "tuned.npz"
    assert result.saved_to == saved and saved.is_file()
    model = load_model(saved)
    assert model.provenance["training"]["stopped_by"] == "user"
    assert model.provenance["training"]["best_step"] == result.best_step
    assert "tuned" in registered_models()
    np.testing.assert_array_equal(labels_layer.data, before)  # user's layer untouched
    assert widget.train_button.isEnabled() and widget.run_button.isEnabled()

    # one click runs the new model in the Predict dock of the same window
    viewer.layers.selection.active = image_layer
    predict = widget.run_in_predict()
    assert predict.model_combo.value == "tuned"
    assert predict.worker is not None
    with qtbot.waitSignal(predict.worker.finished, timeout=60_000):
        pass
    assert predict.labels_layer is not None and predict.labels_layer in viewer.layers
    assert predict.labels_layer.data.shape == image_layer.data.shape
    unregister_model("tuned")


def test_preview_augmentation_adds_layers(make_napari_viewer, qtbot, tmp_path, tiny_model_file):
    viewer = make_napari_viewer()
    widget, *_ = _dock(viewer, tmp_path, tiny_model_file)
    worker = widget.preview_augmentation(n=3)
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    image = viewer.layers["augmentation preview: image"]
    labels = viewer.layers["augmentation preview: labels"]
    weight = viewer.layers["augmentation preview: weight map"]
    assert image.data.shape == labels.data.shape == weight.data.shape
    assert image.data.shape[0] == 3 and labels.data.max() > 0 and weight.data.max() > 0
    assert len(viewer.layers) == 5
    # again: the dock reuses its own layers
    worker = widget.preview_augmentation(n=3)
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    assert len(viewer.layers) == 5


def test_user_errors_become_notifications(make_napari_viewer, tmp_path, monkeypatch):
    import napari_unet_cells.widgets.finetune_widget as fw

    errors = []
    monkeypatch.setattr(fw, "show_error", errors.append)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Fine-tune")
    assert widget.start_training() is None and "empty" in errors[-1]
    image, labels = synthetic_cells((64, 64), seed=1)
    img = viewer.add_image(image)
    lab = viewer.add_labels(np.zeros_like(labels))
    widget.add_pair(img, lab)
    assert widget.start_training() is None and "no cells" in errors[-1]
    assert widget.worker is None and widget.train_button.isEnabled()
    # layer combos follow the viewer; removing a layer drops its pair
    assert widget.image_combo.findData(img) >= 0
    viewer.layers.remove(lab)
    assert widget.pairs == []
    # default model file: a new file in models/ beside the image's file, never an old one
    import tifffile

    tifffile.imwrite(tmp_path / "cells.tif", image)
    [opened] = viewer.open(tmp_path / "cells.tif")
    widget.add_pair(opened, viewer.add_labels(labels, name="cells labels"))
    first = widget.output_path()
    assert first.parent == tmp_path / "models" and first.suffix == ".npz"
    first.parent.mkdir()
    first.write_bytes(b"")
    assert widget.output_path() != first


def test_closing_napari_stops_training(make_napari_viewer, qtbot, tmp_path, tiny_model_file):
    viewer = make_napari_viewer(show=True)
    widget, *_ = _dock(viewer, tmp_path, tiny_model_file)
    widget.budget.setValue(100_000)
    widget.train_button.click()
    worker = widget.worker
    qtbot.waitUntil(lambda: len(widget.plot.loss) >= 2, timeout=60_000)
    start = time.perf_counter()
    viewer.close()
    assert not worker.is_running
    assert time.perf_counter() - start < 30
    assert widget._stop.is_set()
    with qtbot.waitSignal(worker.finished, timeout=10_000, raising=False):
        pass


def test_unwritable_save_to_fails_first_a_failed_save_keeps_the_model(
    make_napari_viewer, qtbot, tmp_path, tiny_model_file, unwritable_dir, monkeypatch
):
    """Issue 16.2: on a read-only share training ran to the end and the model was lost."""
    import napari_unet_cells.core.train as T
    import napari_unet_cells.widgets.finetune_widget as fw

    errors, infos = [], []
    monkeypatch.setattr(fw, "show_error", errors.append)
    monkeypatch.setattr(fw, "show_info", infos.append)
    viewer = make_napari_viewer()
    widget, _, _ = _dock(viewer, tmp_path, tiny_model_file)
    widget.budget.setValue(2)
    widget.output.setText(str(unwritable_dir / "models" / "tuned.npz"))
    assert widget.start_training() is None and widget.worker is None  # at once
    assert "Cannot write the model" in errors[-1]
    # the share goes read-only during training: the model stays usable, Save as... saves it
    monkeypatch.setattr(T, "save_model", lambda *a: (_ for _ in ()).throw(OSError(30, "RO")))
    widget.output.setText(str(tmp_path / "share" / "tuned.npz"))
    with qtbot.waitSignal(widget.start_training().finished, timeout=60_000):
        pass
    assert "NOT SAVED" in errors[-1] and "Save as" in errors[-1]
    assert widget.model_name in registered_models() and widget.save_as_button.isEnabled()
    path = widget.save_model_as(tmp_path / "elsewhere.npz")
    assert load_model(path).provenance["training"]["steps"] == 2
    unregister_model(widget.model_name)


def test_a_stop_before_the_first_step_offers_no_model(
    make_napari_viewer, qtbot, tmp_path, tiny_model_file, monkeypatch
):
    """Issue 16.8: Stop during the tuning saved and offered a 'fine-tuned' model with 0
    steps; the status claimed it was validating; the bar stayed part-way."""
    import napari_unet_cells.widgets.finetune_widget as fw

    infos = []
    monkeypatch.setattr(fw, "show_info", infos.append)
    viewer = make_napari_viewer()
    widget, _, _ = _dock(viewer, tmp_path, tiny_model_file)
    before = set(registered_models())
    widget._stop.set()  # as if Stop came before the first step
    monkeypatch.setattr(widget._stop, "clear", lambda: None)
    with qtbot.waitSignal(widget.start_training().finished, timeout=60_000):
        widget.stop_training()
        assert "validating" not in widget.status.text()
    assert widget.result is None and set(registered_models()) == before
    assert not (tmp_path / "out" / "tuned.npz").exists()
    assert "no training step" in infos[-1] and not widget.run_button.isEnabled()
    assert widget.progress.value() == 1000
