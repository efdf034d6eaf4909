"""The "Predict" dock in a real viewer: run, labels with the image's scale, re-threshold
without inference, replace only its own layer, tile-grid overlay, Stop midway."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_cells.core.checkpoint import CellModel
from napari_unet_cells.core.config import ModelConfig
from napari_unet_cells.core.registry import register_model, unregister_model

MODEL_NAME = "tiny test model"


@pytest.fixture
def dock(make_napari_viewer, qtbot):
    model = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0), seed=0)
    register_model(MODEL_NAME, model)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet-cells", "synthetic_nuclei")
    image = viewer.layers["synthetic nuclei"]
    image.scale = (0.5, 0.25)
    image.translate = (3.0, -2.0)
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Predict")
    widget.refresh_models()
    widget.image_combo.value = image
    widget.model_combo.value = MODEL_NAME
    widget.device.value = "cpu"
    yield viewer, widget, image
    if widget.worker is not None:  # never leave a worker running
        with qtbot.waitSignal(widget.worker.finished, timeout=30000):
            widget.stop()
    unregister_model(MODEL_NAME)


def _start_long_run(widget, qtbot):
    """Start a run of many small tiles and return its worker once a tile is done."""
    widget.tile.value = "48"
    widget.run()
    worker = widget.worker
    with qtbot.waitSignal(worker.yielded, timeout=30000):
        pass
    return worker


def _run(widget, qtbot):
    widget.run()
    assert widget.worker is not None
    # the dock's own finished-handler clears ``worker`` on the GUI thread
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)


def test_run_writes_labels_with_image_geometry_and_rethresholds(dock, qtbot):
    viewer, widget, image = dock
    original = image.data.copy()
    widget.tile.value = "108"
    widget.show_probabilities.value = True
    _run(widget, qtbot)
    layer = viewer.layers["synthetic nuclei cells"]
    assert layer.__class__.__name__ == "Labels"
    np.testing.assert_array_equal(layer.scale, image.scale)
    np.testing.assert_array_equal(layer.translate, image.translate)
    labels = np.asarray(layer.data)
    assert labels.shape == image.data.shape and labels.max() > 0
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))
    np.testing.assert_array_equal(image.data, original)  # the input is never modified
    probability = viewer.layers["synthetic nuclei cell probability"]
    assert widget.inference_runs == 1
    n_layers = len(viewer.layers)
    widget.show_probabilities.value = False  # unticked: hidden, not deleted
    assert probability in viewer.layers and not probability.visible
    widget.show_probabilities.value = True
    assert probability.visible and len(viewer.layers) == n_layers

    # threshold / min size: labels change at once, without running the network
    before = labels.copy()
    widget.threshold.value = 0.45
    widget.min_size.value = 5
    assert widget.worker is None and widget.inference_runs == 1
    assert not np.array_equal(np.asarray(layer.data), before)

    # the seed threshold (hysteresis) too: 0 is a plain threshold
    from napari_unet_cells.core.instances import probabilities_to_labels

    assert widget.seed_threshold.value == 0.0 and widget.instance_config().seed_threshold is None
    plain = np.asarray(layer.data).copy()
    widget.seed_threshold.value = 0.7
    config = widget.instance_config()
    assert config.seed_threshold == 0.7 and config.hysteresis
    seeded = np.asarray(layer.data)
    np.testing.assert_array_equal(seeded, probabilities_to_labels(widget.probabilities, config))
    assert not np.array_equal(seeded, plain) and widget.inference_runs == 1
    widget.seed_threshold.value = 0.0

    # re-running replaces only the dock's own layer
    n_layers = len(viewer.layers)
    _run(widget, qtbot)
    assert len(viewer.layers) == n_layers and viewer.layers["synthetic nuclei cells"] is layer
    assert widget.inference_runs == 2

    # an edited layer is not replaced without asking; declining writes a new layer
    asked = []
    widget.confirm_overwrite = lambda lay: asked.append(lay.name) or False
    layer.paint((10, 10), 1)
    _run(widget, qtbot)
    assert asked == ["synthetic nuclei cells"]
    assert len(viewer.layers) == n_layers + 1


def test_tile_grid_overlay(dock):
    viewer, widget, image = dock
    widget.tile.value = "108"
    widget.show_grid.value = True
    grid = widget.grid_layer
    assert grid is not None and grid in viewer.layers
    np.testing.assert_array_equal(grid.scale, image.scale)
    # 512 px with 108 px tiles of depth 2 (68 px output): 8 x 8 write regions + 1 read region
    assert len(grid.data) == 8 * 8 + 1
    assert list(grid.edge_color[-1][:3]) != list(grid.edge_color[0][:3])
    widget.show_grid.value = False
    assert grid not in viewer.layers


def test_stop_midway_leaves_no_layer(dock, qtbot):
    viewer, widget, _ = dock
    n_layers = len(viewer.layers)
    worker = _start_long_run(widget, qtbot)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        widget.stop()
    assert len(viewer.layers) == n_layers
    assert "synthetic nuclei cells" not in viewer.layers
    assert widget.inference_runs == 0 and "Stopped" in widget.status.value
    assert widget.run_button.enabled


def test_a_damaged_model_file_is_one_notification(dock, qtbot, tmp_path, monkeypatch):
    """An error inside the worker is shown once by the dock, not re-raised by napari too
    (a second notification and a console traceback)."""
    import napari_unet_cells.widgets.predict_widget as pw

    _, widget, _ = dock
    errors = []
    monkeypatch.setattr(pw, "show_error", errors.append)
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"not a zip file")
    widget.model_combo.value = "file"
    widget.model_file.value = str(damaged)
    widget.run()
    worker = widget.worker
    assert worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)
    qtbot.wait(50)  # a re-raised error would reach the Qt event loop now (and fail here)
    assert len(errors) == 1 and "damaged.npz" in errors[0]


def test_no_model_file_is_a_notification_not_a_crash(dock, qtbot):
    _, widget, _ = dock
    widget.model_combo.value = "file"
    widget.run()
    assert widget.worker is None


def test_large_images_relabel_in_the_background_and_the_last_setting_wins(dock, qtbot):
    from napari_unet_cells.core.instances import probabilities_to_labels

    viewer, widget, _ = dock
    _run(widget, qtbot)
    layer = viewer.layers["synthetic nuclei cells"]
    widget.background_relabel_px = 0  # treat the sample as a large image
    widget.threshold.value = 0.4
    assert widget.relabel_worker is not None  # not on the GUI thread
    widget.threshold.value = 0.6  # moved again while the first one runs
    qtbot.waitUntil(
        lambda: widget.relabel_worker is None and widget.relabeller.pending is None, timeout=30000
    )
    expected = probabilities_to_labels(widget.probabilities, widget.instance_config())
    assert widget.instance_config().threshold == 0.6
    np.testing.assert_array_equal(np.asarray(layer.data), expected)
    assert widget.inference_runs == 1


@pytest.mark.parametrize("close", ["close_workers", "close button"])
def test_closing_the_dock_stops_and_detaches_a_running_prediction(dock, qtbot, close):
    """Viewer closed (the widget destroyed: ``close_workers``) or the dock's close button
    (napari's remove_dock_widget only un-parents the widget, which lives on): the run
    stops and writes no layer."""
    viewer, widget, _ = dock
    n_layers = len(viewer.layers)
    worker = _start_long_run(widget, qtbot)
    if close == "close_workers":
        widget.close_workers()
    else:
        viewer.window.remove_dock_widget(widget.native)
    assert worker.abort_requested
    widget.worker = None  # so the fixture's teardown does not wait for a signal
    qtbot.waitUntil(lambda: not worker.is_running, timeout=30000)
    qtbot.wait(50)  # a queued signal would reach the widget now
    assert len(viewer.layers) == n_layers and widget.inference_runs == 0


def test_removing_the_image_stops_its_prediction(dock, qtbot):
    viewer, widget, image = dock
    worker = _start_long_run(widget, qtbot)
    n_layers = len(viewer.layers)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        viewer.layers.remove(image)
    assert len(viewer.layers) == n_layers - 1 and widget.inference_runs == 0


def test_each_image_keeps_its_prediction_and_a_renamed_layer_is_never_written(dock, qtbot):
    """A second image gets its own layers; re-running the first replaces only the first's;
    a layer the user renamed to keep it is left as it is."""
    viewer, widget, image = dock
    widget.show_probabilities.value = True
    _run(widget, qtbot)
    first = viewer.layers["synthetic nuclei cells"]
    first_labels = np.asarray(first.data).copy()
    assert "synthetic nuclei cell probability" not in [x.name for x in widget.image_combo.choices]
    other = viewer.add_image(np.asarray(image.data)[:200, :240].copy(), name="B")
    widget.image_combo.value = other
    _run(widget, qtbot)
    assert viewer.layers["synthetic nuclei cells"] is first
    np.testing.assert_array_equal(first.data, first_labels)  # not overwritten by B's
    assert viewer.layers["B cells"].data.shape == (200, 240)
    assert "B cell probability" in viewer.layers
    assert widget.workspace.prediction_of(image) is first

    first.name = "bundled result (keep)"
    widget.image_combo.value = image
    n_layers = len(viewer.layers)
    _run(widget, qtbot)
    assert viewer.layers["bundled result (keep)"] is first  # neither renamed nor replaced
    np.testing.assert_array_equal(first.data, first_labels)
    assert len(viewer.layers) == n_layers + 1 and "synthetic nuclei cells" in viewer.layers
    widget.threshold.value = 0.3  # re-labelling writes the new layer, not the kept one
    np.testing.assert_array_equal(first.data, first_labels)


def test_a_stopped_run_on_another_image_leaves_the_kept_result_with_its_image(dock, qtbot):
    viewer, widget, _ = dock
    _run(widget, qtbot)
    viewer.layers.remove("synthetic nuclei cells")
    other = viewer.add_image(np.zeros((50, 60), np.float32), name="B", scale=(7, 7))
    widget.image_combo.value = other
    widget.run()
    widget.stop()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    widget.threshold.value = 0.3  # re-labels the kept probabilities, of the first image
    assert "B cells" not in viewer.layers
    assert viewer.layers["synthetic nuclei cells"].data.shape == widget.probabilities.shape


def test_channel_choice_for_multichannel_layers(dock, qtbot):
    """Issue 16.4: a (Y, X, 2) layer ran as 512 planes of 512x2 px, (Z, C, Y, X) channel
    by channel; now the dock refuses to guess and offers the channels."""
    viewer, widget, image = dock
    plane = np.asarray(image.data)
    noise = np.random.default_rng(0).integers(0, 4000, plane.shape).astype(plane.dtype)
    two = viewer.add_image(np.stack([noise, plane], axis=-1), name="two")  # (Y, X, 2)
    widget.image_combo.value = two
    labels = [c for c in widget.channel.choices if c is not None]
    assert labels == [(2, 0), (2, 1)]  # the short last axis, channel 0 or 1
    widget.run()  # refused at once, before any worker
    assert widget.worker is None
    assert "2 channels" in widget.status.value and "'Channel'" in widget.status.value
    assert "two cells" not in viewer.layers
    widget.channel.value = (2, 1)
    _run(widget, qtbot)
    cells = viewer.layers["two cells"]
    assert cells.data.shape == plane.shape and cells.ndim == 2
    assert "1 plane of" in widget.status.value and "channel 1 of 2" in widget.status.value
    hyper = viewer.add_image(np.stack([np.stack([noise, plane])] * 3), name="zcyx")
    widget.image_combo.value = hyper
    assert (1, 1) in widget.channel.choices and (0, 2) in widget.channel.choices
    widget.channel.value = (1, 1)
    _run(widget, qtbot)
    assert viewer.layers["zcyx cells"].data.shape == (3, *plane.shape)
    assert "3 planes of" in widget.status.value


def test_the_worker_gets_plain_values_and_never_reads_a_layer(dock, qtbot, monkeypatch):
    """Issue 13: the worker read ``layer.rgb`` from its thread. Now everything is read on
    the GUI thread: the core entry point gets no layer, and no layer attribute is read
    from another thread during the run."""
    import threading

    from napari.layers import Layer

    from napari_unet_cells.core import predict as core_predict

    viewer, widget, image = dock
    calls, off_thread = [], []

    def fake_predict_iter(*args, **kwargs):
        calls.append((args, kwargs))
        shape = np.asarray(args[0]).shape
        yield core_predict.PredictProgress(1, 1)
        return core_predict.PredictionResult(
            labels=np.zeros(shape, np.int32),
            probabilities=np.zeros(shape, np.float32),
            image_shape=shape,
        )

    monkeypatch.setattr(core_predict, "predict_iter", fake_predict_iter)
    layer_type = type(image)
    for name in ("data", "rgb", "scale", "translate", "multiscale", "name", "ndim"):
        found = [vars(k)[name] for k in layer_type.__mro__ if name in vars(k)]
        # a property, or (rgb, multiscale) a plain instance attribute
        fget = found[0].fget if found else (lambda layer, _n=name: layer.__dict__[_n])
        fset = found[0].fset if found else (lambda layer, v, _n=name: vars(layer).update({_n: v}))

        def spy(layer, _fget=fget, _name=name):
            if threading.current_thread() is not threading.main_thread():
                off_thread.append(_name)
            return _fget(layer)

        monkeypatch.setattr(layer_type, name, property(spy, fset), raising=False)
    _run(widget, qtbot)
    assert len(calls) == 1 and off_thread == []
    args, kwargs = calls[0]
    assert not any(isinstance(v, Layer) for v in (*args, *kwargs.values()))
    assert isinstance(args[0], np.ndarray) and kwargs["rgb"] is None
    assert "synthetic nuclei cells" in viewer.layers


def test_a_workspace_request_runs_a_new_session_model_and_records_the_prediction(dock, qtbot):
    """Issue 13: other docks ask through the workspace (Fine-tune used to drive this dock's
    controls); a model registered after the dock opened is listed and chosen first."""
    from napari_unet_cells.layers import is_prediction
    from napari_unet_cells.workspace import workspace_for

    viewer, widget, image = dock
    workspace = workspace_for(viewer)
    assert workspace.prediction_of(image) is None
    late = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0), seed=1)
    register_model("late model", late)
    try:
        widget.tile.value = "108"
        workspace.request_prediction(image, "late model")
        assert widget.worker is not None and widget.model_combo.value == "late model"
        qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
        layer = viewer.layers["synthetic nuclei cells"]
        assert workspace.prediction_of(image) is layer and is_prediction(layer)
        assert widget.inference_runs == 1

        # a request while a prediction runs waits for it, then runs
        widget.run()
        workspace.request_prediction(image, MODEL_NAME)
        assert widget.model_combo.value == "late model"  # not changed under a running worker
        qtbot.waitUntil(lambda: widget.inference_runs == 2, timeout=60000)
        qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
        assert widget.inference_runs == 3 and widget.model_combo.value == MODEL_NAME

        # an unknown model is a message, not a crash
        workspace.request_prediction(image, "no such model")
        assert widget.worker is None and "no such model" in widget.status.value
    finally:
        unregister_model("late model")


def test_the_model_list_follows_the_registry_until_the_dock_is_destroyed(dock, qtbot):
    import threading

    from napari_unet_cells.core import registry

    viewer, widget, _ = dock
    model = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0), seed=2)
    register_model("listed", model)
    try:
        assert "listed" in widget.model_combo.choices  # no refresh_models() needed
        unregister_model("listed")
        assert "listed" not in widget.model_combo.choices
        # registered from another thread: the list is refreshed on the GUI thread
        thread = threading.Thread(target=register_model, args=("from a thread", model))
        thread.start()
        thread.join()
        qtbot.waitUntil(lambda: "from a thread" in widget.model_combo.choices, timeout=5000)

        n_registry = len(registry.events.changed)
        n_requests = len(widget.workspace.events.prediction_requested)
        viewer.window.remove_dock_widget(widget.native)
        with qtbot.waitSignal(widget.native.destroyed, timeout=5000):
            widget.native.deleteLater()
        assert len(registry.events.changed) == n_registry - 1
        assert len(widget.workspace.events.prediction_requested) == n_requests - 1
        register_model("after closing", model)  # reaches no deleted widget
    finally:
        for name in ("listed", "from a thread", "after closing"):
            unregister_model(name)


def test_the_status_says_why_no_cell_was_found(dock, qtbot):
    viewer, widget, _ = dock
    widget.image_combo.value = viewer.add_image(np.zeros((64, 64), np.float32), name="empty")
    _run(widget, qtbot)
    assert widget.status.value.startswith("0 cells. ")
    assert "signal" in widget.status.value  # the reason, not only a passing notification


def test_choosing_another_model_sets_its_sliders_without_relabelling(dock, qtbot):
    """The labels shown stay the ones the last run's model made (with its settings)."""
    viewer, widget, _ = dock
    _run(widget, qtbot)
    shown = np.asarray(viewer.layers["synthetic nuclei cells"].data).copy()
    other = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0), seed=1)
    other.extra["instances"] = {"threshold": 0.3, "min_size": 3}
    register_model("other test model", other)
    try:
        widget.refresh_models()
        widget.model_combo.value = "other test model"
        assert widget.threshold.value == 0.3 and widget.min_size.value == 3
        np.testing.assert_array_equal(viewer.layers["synthetic nuclei cells"].data, shown)
    finally:
        unregister_model("other test model")
