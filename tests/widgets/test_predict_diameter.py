"""The Predict dock's cell diameter: typed, measured from a drawn line, shown after a run,
and labels always on the image's grid."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_cells.core.checkpoint import CellModel
from napari_unet_cells.core.config import ModelConfig
from napari_unet_cells.core.registry import register_model, unregister_model

MODEL_NAME = "tiny sized model"


@pytest.fixture
def dock(make_napari_viewer, qtbot):
    model = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0), seed=0)
    model.extra["diameter"] = 20.0
    register_model(MODEL_NAME, model)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet-cells", "synthetic_nuclei")
    image = viewer.layers["synthetic nuclei"]
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Predict")
    widget.refresh_models()
    widget.image_combo.value = image
    widget.model_combo.value = MODEL_NAME
    widget.device.value = "cpu"
    yield viewer, widget, image
    if widget.worker is not None:
        with qtbot.waitSignal(widget.worker.finished, timeout=30000):
            widget.stop()
    unregister_model(MODEL_NAME)


def test_a_typed_diameter_resamples_and_the_status_says_so(dock, qtbot):
    viewer, widget, image = dock
    assert widget.diameter.value == "auto"
    widget.diameter.value = "40"
    widget.show_probabilities.value = True
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    labels = np.asarray(viewer.layers["synthetic nuclei cells"].data)
    assert labels.shape == image.data.shape
    assert "Cell diameter 40 px (given; model 20 px; resampled x0.50)" in widget.status.value
    assert widget.probabilities.shape == tuple(n // 2 for n in image.data.shape)
    shown = viewer.layers["synthetic nuclei cell probability"].data
    assert shown.shape == image.data.shape
    widget.threshold.value = 0.6  # re-labelled on the resampled grid, shown on the image's
    assert np.asarray(viewer.layers["synthetic nuclei cells"].data).shape == image.data.shape


def test_diameter_from_a_drawn_line(dock):
    viewer, widget, image = dock
    image.scale = (0.5, 0.5)
    shapes = viewer.add_shapes(
        [np.array([[10.0, 10.0], [10.0, 25.0]])], shape_type="line", name="ruler"
    )
    viewer.layers.selection.active = shapes
    widget.measure_diameter()
    assert widget.diameter.value == "30"  # 15 world units at 0.5 per px
    widget.diameter.value = "banana"
    widget.run()
    assert widget.worker is None  # refused with a message, nothing started


def test_the_bar_is_busy_while_the_size_is_measured(dock, qtbot):
    """Before the first tile (model loading, the size estimate) the bar shows "busy" and
    the status says what happens; after the run it is an ordinary bar again."""
    _, widget, _ = dock
    widget.run()
    assert widget.progress.max == 0 and "measuring the cell size" in widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    assert widget.progress.max > 0 and widget.progress.value == widget.progress.max
