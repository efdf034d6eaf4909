"""The "Weight Map" dock in a real viewer: compute, paint a stroke, watch the map follow."""

from __future__ import annotations

import numpy as np
from napari.layers import Image

from napari_unet_cells.core.config import WeightMapConfig
from napari_unet_cells.core.synthetic import SyntheticConfig, synthetic_cells
from napari_unet_cells.core.weightmap import separation_target, weight_map

TIMEOUT_MS = 20000


def _labels():
    config = SyntheticConfig(diameter=(10.0, 20.0))
    return synthetic_cells((96, 112), seed=4, config=config)[1]


def _dock(viewer, qtbot):
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Weight Map")
    return widget


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None and widget.state is not None, timeout=TIMEOUT_MS)
    qtbot.wait(10)


def test_dock_computes_aligned_layers_and_follows_a_brush_stroke(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    labels = _labels()
    layer = viewer.add_labels(labels.copy(), name="cells", scale=(2.0, 0.5), translate=(10, -3))
    widget = _dock(viewer, qtbot)
    assert widget.labels_combo.value is layer and widget.ignore_combo.value is None

    widget.compute()
    assert widget.worker is not None  # computed in a thread worker
    _wait_idle(qtbot, widget)
    image = viewer.layers["cells weight map"]
    assert isinstance(image, Image)
    np.testing.assert_array_equal(image.data, weight_map(labels))
    np.testing.assert_array_equal(image.scale, layer.scale)
    np.testing.assert_array_equal(image.translate, layer.translate)
    assert image.colormap.name == "viridis"
    assert image.contrast_limits[0] == 0 and image.contrast_limits[1] >= image.data.max() - 1e-6
    # hovering: the image layer reports the weight at a world position
    y, x = 40, 50
    world = (10 + 2.0 * y, -3 + 0.5 * x)
    assert np.isclose(image.get_value(world, world=True), image.data[y, x])

    # paint a stroke with a new label next to existing cells: the map follows by itself
    before = image.data.copy()
    state = widget.state
    new_label = int(labels.max()) + 1
    layer.brush_size = 7
    layer.selected_label = new_label
    layer.mode = "paint"
    for cx in range(45, 60, 3):
        layer.paint((y, cx), new_label)
    assert np.any(layer.data == new_label)
    qtbot.waitUntil(lambda: not np.array_equal(image.data, before), timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    np.testing.assert_allclose(image.data, weight_map(layer.data), rtol=0, atol=1e-6)
    assert widget.state is state  # updated incrementally, not recomputed

    # moving a slider recomputes (debounced, in a worker) and updates the same layer
    widget.w0.value = 25.0
    qtbot.waitUntil(
        lambda: widget.state is not None and widget.state.config.w0 == 25.0, timeout=TIMEOUT_MS
    )
    _wait_idle(qtbot, widget)
    image = viewer.layers["cells weight map"]
    np.testing.assert_array_equal(
        image.data, weight_map(layer.data, config=WeightMapConfig(w0=25))
    )

    # the separation border as its own layer
    widget.show_border.value = True
    border = viewer.layers["cells separation border"]
    carved = (layer.data > 0) & (separation_target(layer.data) == 0)
    np.testing.assert_array_equal(border.data.astype(bool), carved)
    np.testing.assert_array_equal(border.scale, layer.scale)

    # re-running never piles up layers and never touches the labels
    painted = layer.data.copy()
    widget.compute()
    _wait_idle(qtbot, widget)
    names = [item.name for item in viewer.layers]
    assert names == ["cells", "cells weight map", "cells separation border"]
    np.testing.assert_array_equal(layer.data, painted)


def test_dock_preset_ignore_mask_and_errors(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    labels = _labels()
    layer = viewer.add_labels(labels, name="cells")
    mask = np.zeros(labels.shape, np.uint8)
    mask[:20] = 1
    ignore = viewer.add_labels(mask, name="unsure")
    widget = _dock(viewer, qtbot)
    widget.labels_combo.value = layer
    widget.ignore_combo.value = ignore
    widget.preset.value = "fiji"
    assert (widget.w0.value, widget.sigma.value) == (50.0, 6.0)
    widget.compute()
    _wait_idle(qtbot, widget)
    weights = viewer.layers["cells weight map"].data
    fiji = WeightMapConfig.preset("fiji")
    np.testing.assert_array_equal(weights, weight_map(labels, mask, fiji))
    assert np.all(weights[:20] == 0)

    # painting the ignore mask updates the map too
    ignore.paint((60, 60), 1)
    qtbot.waitUntil(lambda: np.all(widget.state.weights[60, 58:62] == 0), timeout=TIMEOUT_MS)
    np.testing.assert_allclose(
        viewer.layers["cells weight map"].data,
        weight_map(labels, ignore.data, fiji),
        rtol=0,
        atol=1e-5,
    )

    # a request while computing stops that run and ends with the latest settings
    widget.live.value = False
    widget.compute()
    widget.sigma.value = 3.0
    widget.compute()
    _wait_idle(qtbot, widget)
    assert widget.state.config.sigma == 3.0
    np.testing.assert_array_equal(
        viewer.layers["cells weight map"].data,
        weight_map(labels, ignore.data, WeightMapConfig.preset("fiji", sigma=3.0)),
    )

    # a mask of the wrong shape: a clear message, no worker, the old map stays
    bad = viewer.add_labels(np.zeros((10, 10), np.uint8), name="bad")
    widget.ignore_combo.value = bad
    widget.compute()
    assert widget.worker is None and "shape" in widget.status.value
    assert "cells weight map" in viewer.layers


def test_dock_refuses_a_binary_mask_fine_tune_numbers_it(make_napari_viewer, qtbot, monkeypatch):
    """Issue 16.3: a 0/1 mask layer was weighted (and trained) as one giant cell."""
    from napari_unet_cells.widgets.finetune.jobs import training_samples

    viewer = make_napari_viewer()
    labels = _labels()
    mask = viewer.add_labels((labels > 0).astype(np.uint8), name="mask")
    widget = _dock(viewer, qtbot)
    widget.labels_combo.value = mask
    widget.compute()
    assert widget.worker is None and "binary mask (values 0 and 1)" in widget.status.value
    assert "mask weight map" not in viewer.layers
    notices = []
    _, finetune = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Fine-tune")
    finetune.add_pair(viewer.add_image(np.random.default_rng(0).random(labels.shape)), mask)
    [sample] = training_samples(finetune.pairs, notices.append)  # what Train reads
    assert sample.labels.max() > 5 and "binary mask" in notices[-1]
    assert set(np.unique(mask.data)) == {0, 1}  # the user's layer is left as it is


def test_live_strokes_update_the_colour_range_and_the_border_stays_with_its_layer(
    make_napari_viewer, qtbot
):
    """Painting cells into an empty layer raises the map's range and status (unless the
    user set the range); the border layer is always the computed layer's, even when
    another layer is chosen; closing the dock mid-run detaches its worker."""
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((64, 64), np.int32), name="A")
    widget = _dock(viewer, qtbot)
    widget.compute()
    _wait_idle(qtbot, widget)
    image = viewer.layers["A weight map"]
    assert tuple(image.contrast_limits) == (0.0, 1.0)
    layer.data_setitem((np.arange(10, 20), np.full(10, 20)), 1)  # two touching cells
    layer.data_setitem((np.arange(10, 20), np.full(10, 21)), 2)
    widget.update_now()
    top = float(image.data.max())
    assert top > 1 and image.contrast_limits[1] == top
    assert widget.status.value == f"max weight {top:.3g}"
    image.contrast_limits = (0.0, 2.0)  # the user's own range is kept
    layer.data_setitem((np.arange(30, 40), np.full(10, 30)), 3)
    widget.update_now()
    assert tuple(image.contrast_limits) == (0.0, 2.0)

    other = viewer.add_labels(np.zeros((30, 40), np.int32), name="B", scale=(2, 2))
    widget.live.value = False
    widget.labels_combo.value = other
    widget.show_border.value = True
    assert "B separation border" not in viewer.layers
    assert viewer.layers["A separation border"].data.shape == (64, 64)

    widget.labels_combo.value = layer
    widget.compute()
    worker = widget.worker
    viewer.window.remove_dock_widget(widget.native)  # the dock's close button
    assert widget.worker is None
    qtbot.waitUntil(lambda: not worker.is_running, timeout=TIMEOUT_MS)
