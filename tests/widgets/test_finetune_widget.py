"""The Fine-tune dock in a real viewer: trains from layers, live plot, Stop, Predict."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QDockWidget

from napari_unet_cells.core.checkpoint import CellModel, load_model, save_model
from napari_unet_cells.core.registry import events as registry_events
from napari_unet_cells.core.registry import register_model, registered_models, unregister_model
from napari_unet_cells.core.synthetic import synthetic_cells
from napari_unet_cells.layers import unwrap
from napari_unet_cells.workspace import workspace_for

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


def _recording_train_iter(monkeypatch):
    """Wrap core.train.train_iter: record the thread each piece of training runs on, and
    after the first step wait until the GUI thread has processed a timer event."""
    import napari_unet_cells.core.train as T

    real = T.train_iter
    record = SimpleNamespace(threads=[], gui_ticked=threading.Event(), waited=[])

    def recording(*args, **kwargs):
        gen = real(*args, **kwargs)
        while True:
            try:
                event = next(gen)  # a piece of training, on the calling thread
            except StopIteration as end:
                return end.value
            record.threads.append(threading.current_thread())
            if event.kind == "step" and not record.waited:
                record.gui_ticked.clear()  # a step run on the GUI thread would wait in vain
                record.waited.append(record.gui_ticked.wait(30))
            yield event

    monkeypatch.setattr(T, "train_iter", recording)
    return record


def test_train_from_layers_live_plot_stop_and_predict(
    make_napari_viewer, qtbot, tmp_path, tiny_model_file, monkeypatch
):
    viewer = make_napari_viewer(show=True)
    widget, image_layer, labels_layer = _dock(viewer, tmp_path, tiny_model_file)
    before = labels_layer.data.copy()
    widget.budget.setValue(100_000)  # only Stop ends this run
    record = _recording_train_iter(monkeypatch)
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(record.gui_ticked.set)
    timer.start()
    widget.train_button.click()
    worker = widget.worker
    assert worker is not None and not widget.train_button.isEnabled()
    # the plot updates live: loss points every step, AP points at each validation
    qtbot.waitUntil(
        lambda: len(widget.plot.loss) >= 8 and len(widget.plot.ap) >= 2, timeout=60_000
    )
    assert "step" in widget.status.text()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        widget.stop_button.click()
    timer.stop()
    # training ran off the GUI thread, and the GUI thread processed events meanwhile
    assert record.threads and threading.main_thread() not in record.threads
    assert record.waited == [True]

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

    # one click runs the new model in the Predict dock of the same window (Predict
    # answers the workspace's prediction request)
    viewer.layers.selection.active = image_layer
    _, predict = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Predict")
    assert widget.run_in_predict() is True
    assert predict.model_combo.value == "tuned"
    assert predict.worker is not None
    qtbot.waitUntil(lambda: predict.worker is None, timeout=60_000)  # a fast run may end first
    assert predict.labels_layer is not None and predict.labels_layer in viewer.layers
    assert predict.labels_layer.data.shape == image_layer.data.shape
    unregister_model("tuned")


def test_run_in_predict_asks_through_the_workspace(
    make_napari_viewer, qtbot, tmp_path, tiny_model_file, tiny_config
):
    """Issue 13: Fine-tune requests the prediction from the workspace; it no longer docks
    Predict, sets its controls or calls its run(). A Predict dock opened later runs the
    request that waited."""
    viewer = make_napari_viewer()
    widget, image_layer, _ = _dock(viewer, tmp_path, tiny_model_file)
    heard = []
    workspace_for(viewer).events.prediction_requested.connect(
        lambda image, name: heard.append((image, name))
    )
    register_model("request test", CellModel.new(tiny_config, seed=0))
    widget.model_name = "request test"
    viewer.layers.selection.active = None  # no image selected: the first training image
    names = {w.objectName() for w in viewer.window._qt_window.findChildren(QDockWidget)}
    assert widget.run_in_predict() is False  # no Predict dock open: the request waits
    assert heard == [(image_layer, "request test")]
    after = {w.objectName() for w in viewer.window._qt_window.findChildren(QDockWidget)}
    assert after == names  # Fine-tune opened no dock
    _, predict = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Predict")
    assert predict.model_combo.value == "request test" and predict.worker is not None
    # the dock's own finished-handler clears ``worker`` (a fast run may end before a
    # waitSignal could connect)
    qtbot.waitUntil(lambda: predict.worker is None, timeout=60_000)
    assert workspace_for(viewer).prediction_of(image_layer) is unwrap(predict.labels_layer)
    unregister_model("request test")


def test_training_set_is_the_workspace(make_napari_viewer, qtbot):
    """Issue 13: pairs added through the workspace (as Annotate does) before and after the
    dock opens show in its list; the dock adds and removes through the workspace."""
    viewer = make_napari_viewer()
    image, labels = synthetic_cells((64, 64), seed=2)
    img = viewer.add_image(image, name="a")
    lab = viewer.add_labels(labels, name="a gt")
    img2 = viewer.add_image(image, name="b")
    lab2 = viewer.add_labels(labels, name="b gt")
    workspace = workspace_for(viewer)
    first = workspace.add_pair(img, lab)  # before the dock exists
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Fine-tune")
    assert widget.pairs == [first] and widget.pair_list.count() == 1
    assert widget.pair_list.item(0).text() == "a  /  a gt"
    workspace.add_pair(img2, lab2)  # another dock adds a pair
    assert widget.pair_list.count() == 2
    # the dock's own buttons go through the workspace
    widget.image_combo.setCurrentIndex(widget.image_combo.findData(img2))
    widget.labels_combo.setCurrentIndex(widget.labels_combo.findData(lab2))
    widget.ignore_combo.setCurrentIndex(widget.ignore_combo.findData(lab))
    widget.add_button.click()
    assert len(workspace.pairs) == 2 and workspace.pairs[1].ignore is lab
    assert widget.pair_list.item(1).text().endswith("ignore: a gt")
    widget.pair_list.setCurrentRow(0)
    widget.remove_button.click()
    assert [p.image for p in workspace.pairs] == [img2] and widget.pair_list.count() == 1
    widget.remove_pair(0)
    assert workspace.pairs == [] and widget.pair_list.count() == 0


def test_base_models_follow_the_registry_until_the_dock_is_gone(
    make_napari_viewer, qtbot, tiny_config
):
    """Issue 13: the base-model list refreshes when the session's models change; a
    deleted dock is disconnected from the registry and the workspace."""
    from qtpy.QtCore import QCoreApplication, QEvent

    viewer = make_napari_viewer()
    workspace = workspace_for(viewer)
    connected = len(registry_events.changed), len(workspace.events.training_set)
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Fine-tune")
    assert len(registry_events.changed) == connected[0] + 1
    register_model("registry test", CellModel.new(tiny_config, seed=0))
    assert widget.base_combo.findData("registry test") >= 0
    unregister_model("registry test")
    assert widget.base_combo.findData("registry test") < 0
    widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert len(registry_events.changed) == connected[0]
    assert len(workspace.events.training_set) == connected[1]
    register_model("registry test", CellModel.new(tiny_config, seed=0))  # no error
    unregister_model("registry test")


def test_preview_augmentation_adds_layers(
    make_napari_viewer, qtbot, tmp_path, tiny_model_file, monkeypatch
):
    import napari_unet_cells.core.checkpoint as C

    viewer = make_napari_viewer()
    widget, *_ = _dock(viewer, tmp_path, tiny_model_file)
    # the start model's config comes from the file's header: no whole model is loaded
    monkeypatch.setattr(C, "load_model", lambda *a, **k: pytest.fail("loaded a whole model"))
    worker = widget.preview_augmentation(n=3)
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    image = viewer.layers["augmentation preview: image"]
    labels = viewer.layers["augmentation preview: labels"]
    weight = viewer.layers["augmentation preview: weight map"]
    assert image.data.shape == labels.data.shape == weight.data.shape
    assert image.data.shape[0] == 3 and labels.data.max() > 0 and weight.data.max() > 0
    assert len(viewer.layers) == 5
    # again: the dock reuses its own layers, but never a user's layer of that name
    image.metadata = {}  # as if the user had made it
    kept = image.data.copy()
    worker = widget.preview_augmentation(n=3)
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    assert len(viewer.layers) == 6 and np.array_equal(image.data, kept)


def test_user_errors_become_notifications(make_napari_viewer, tmp_path, monkeypatch):
    import napari_unet_cells.widgets.finetune.progress as progress
    import napari_unet_cells.widgets.finetune_widget as fw

    errors = []
    monkeypatch.setattr(fw, "show_error", errors.append)
    monkeypatch.setattr(progress, "show_error", errors.append)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Fine-tune")
    assert widget.start_training() is None and "empty" in errors[-1]
    assert widget.status.text() == f"Not started: {errors[-1]}"  # stays in the dock too
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


@pytest.mark.slow
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


def test_shutdown_waits_with_the_gui_responsive(
    make_napari_viewer, qtbot, tmp_path, tiny_model_file, monkeypatch
):
    """Issue 13: shutdown (napari's window closing during training) waited in a sleep
    loop on the GUI thread, up to 120 s. Now the window keeps processing events while the
    worker ends: this training run ends only once the GUI thread has handled a timer
    event (with the sleep loop it waited in vain)."""
    import napari_unet_cells.core.train as T

    gui_ticked = threading.Event()
    ticked_in_time = []

    def fake_train_iter(samples, base, config, *, stop, **kwargs):
        step = 0
        while not stop.is_set():
            step += 1
            yield SimpleNamespace(
                kind="step",
                step=step,
                total_steps=None,
                loss=1.0,
                progress=0.0,
                metrics=None,
                best_metrics=None,
                eta_s=None,
                message="",
            )
            time.sleep(0.01)
        ticked_in_time.append(gui_ticked.wait(10))  # "saving the best model"
        return None

    monkeypatch.setattr(T, "train_iter", fake_train_iter)
    viewer = make_napari_viewer()
    widget, *_ = _dock(viewer, tmp_path, tiny_model_file)
    worker = widget.start_training()
    qtbot.waitUntil(lambda: len(widget.plot.loss) >= 2, timeout=30_000)
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(gui_ticked.set)
    returned = []

    def close_during_training():  # as napari's close event would, from the event loop
        timer.start()
        widget.shutdown(timeout_s=60)
        returned.append(widget.worker)

    with qtbot.waitSignal(worker.finished, timeout=60_000):
        QTimer.singleShot(0, close_during_training)
    qtbot.waitUntil(lambda: bool(returned), timeout=60_000)
    timer.stop()
    assert widget._stop.is_set() and ticked_in_time == [True]
    assert returned == [None] and not worker.is_running  # shutdown returned after the end
    assert widget.train_button.isEnabled()


def test_unwritable_save_to_fails_first_a_failed_save_keeps_the_model(
    make_napari_viewer, qtbot, tmp_path, tiny_model_file, unwritable_dir, monkeypatch
):
    """Issue 16.2: on a read-only share training ran to the end and the model was lost."""
    import napari_unet_cells.core.train as T
    import napari_unet_cells.widgets.finetune.progress as P
    import napari_unet_cells.widgets.finetune.results as R
    import napari_unet_cells.widgets.finetune_widget as fw

    errors, infos = [], []
    for module in (fw, R, P):  # the dock's messages, refusals, the new model's announcement
        monkeypatch.setattr(module, "show_error", errors.append)
    for module in (fw, R):
        monkeypatch.setattr(module, "show_info", infos.append)
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
    assert "(start model " in errors[-1]  # the line to beat: step 0's validation
    assert widget.model_name in registered_models() and widget.save_as_button.isEnabled()
    path = widget.save_model_as(tmp_path / "elsewhere.npz")
    assert load_model(path).provenance["training"]["steps"] == 2
    unregister_model(widget.model_name)


def test_a_folder_as_the_model_file_is_refused_without_asking_and_npz_is_added(
    make_napari_viewer, tmp_path, tiny_model_file, monkeypatch
):
    import napari_unet_cells.widgets.finetune.progress as P
    import napari_unet_cells.widgets.finetune_widget as fw

    errors = []
    monkeypatch.setattr(P, "show_error", errors.append)
    monkeypatch.setattr(fw.QMessageBox, "question", lambda *a: pytest.fail("asked"))
    viewer = make_napari_viewer()
    widget, _, _ = _dock(viewer, tmp_path, tiny_model_file)
    folder = tmp_path / "precious"
    folder.mkdir()
    widget.output.setText(str(folder))
    assert widget.start_training() is None and widget.worker is None
    assert "is a folder" in errors[-1] and folder.is_dir()
    widget.output.setText(str(tmp_path / "mymodel"))  # found by Predict's *.npz picker
    assert widget.output_path() == tmp_path / "mymodel.npz"


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


def test_closing_the_dock_during_training_stops_it_and_keeps_the_model(
    make_napari_viewer, qtbot, tmp_path, tiny_model_file
):
    """The dock's title-bar x during training: the run stops as Stop does, its model is
    saved and offered in Predict, and nothing refers to the deleted dock."""
    from qtpy.QtCore import QCoreApplication, QEvent

    from napari_unet_cells.core.registry import registered_models

    viewer = make_napari_viewer()
    widget, *_ = _dock(viewer, tmp_path, tiny_model_file)
    widget.budget.setValue(100_000)
    widget.train_button.click()
    worker, stop = widget.worker, widget._stop
    qtbot.waitUntil(lambda: len(widget.plot.loss) >= 2, timeout=60_000)
    viewer.window.remove_dock_widget(widget)  # the x: the widget is only un-parented
    assert stop.is_set()
    widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    qtbot.waitUntil(lambda: "tuned" in registered_models(), timeout=60_000)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)
    assert (tmp_path / "out" / "tuned.npz").is_file()
    unregister_model("tuned")
