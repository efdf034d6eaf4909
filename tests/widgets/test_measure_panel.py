"""Per-cell measurements in the Predict dock (issue 14, "In napari"): after a run the labels
layer has one feature row per label, the table saves as CSV, Measure re-reads an edited
layer, a histogram bar highlights its cells, and no measurement changes a layer's data."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_cells.core.checkpoint import CellModel
from napari_unet_cells.core.config import ModelConfig
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.measure import read_table_csv
from napari_unet_cells.core.registry import register_model, unregister_model
from napari_unet_cells.widgets.predict.measure_job import (
    as_features,
    physical_scale,
    with_user_columns,
    write_table,
)
from napari_unet_cells.widgets.predict.measure_panel import DIMMED, HIGHLIGHT

MODEL_NAME = "tiny measure model"


# -- headless ---------------------------------------------------------------------------------


class _Layer:
    def __init__(self, scale, units=None):
        self.scale, self.units = scale, units


def test_physical_scale_from_the_layer():
    import pint

    ureg = pint.get_application_registry()
    assert physical_scale(_Layer((1.0, 1.0))) == (None, "um")
    assert physical_scale(_Layer((2.0, 0.5, 0.5))) == ((0.5, 0.5), "um")
    pixel = (ureg.Unit("pixel"), ureg.Unit("pixel"))
    assert physical_scale(_Layer((0.5, 0.5), pixel)) == ((0.5, 0.5), "um")
    micron = (ureg.Unit("micrometer"),) * 2
    assert physical_scale(_Layer((0.5, 0.5), micron)) == ((0.5, 0.5), "um")
    assert physical_scale(_Layer((1.0, 1.0), micron)) == ((1.0, 1.0), "um")  # a unit is set
    nano = (ureg.Unit("nanometer"),) * 2
    assert physical_scale(_Layer((65.0, 65.0), nano)) == ((65.0, 65.0), "nm")


def test_features_need_one_row_per_label():
    table = {"label": np.array([1, 2]), "area_px": np.array([3, 4])}
    features = as_features(table)
    assert list(features) == ["index", "label", "area_px"]
    np.testing.assert_array_equal(features["index"], [1, 2])
    assert as_features({"label": np.array([1, 1]), "plane": np.array([0, 1])}) is None


def test_the_layers_own_feature_columns_are_kept_by_label():
    import pandas as pd

    features = as_features({"label": np.array([1, 2, 3]), "area_px": np.array([5, 6, 7])})
    old = pd.DataFrame({"index": [3, 1], "class": ["b", "a"], "area_px": [0, 0]})
    merged = with_user_columns(features, old)
    assert list(merged["class"].fillna("")) == ["a", "", "b"]
    assert list(merged["area_px"]) == [5, 6, 7]  # measured columns are the new ones
    by_row = with_user_columns(features, pd.DataFrame({"class": ["x", "y", "z"]}))
    assert list(by_row["class"]) == ["x", "y", "z"]
    assert with_user_columns(features, pd.DataFrame()) is features


def test_write_table_replaces_a_confirmed_file_and_never_an_unconfirmed_one(tmp_path):
    table = {"label": np.array([1, 2]), "area_px": np.array([3, 4])}
    path = tmp_path / "cells.csv"
    assert write_table(table, path) == path
    smaller = {k: v[:1] for k, v in table.items()}
    write_table(smaller, path)  # the save dialog asked "replace?": replaced
    assert len(read_table_csv(path)["label"]) == 1
    # a name without .csv gets one; that name was not confirmed: refused if it exists
    assert write_table(table, tmp_path / "other") == tmp_path / "other.csv"
    with pytest.raises(UNetCellsError, match="exists"):
        write_table(smaller, tmp_path / "other")
    assert len(read_table_csv(tmp_path / "other.csv")["label"]) == 2


# -- in napari -------------------------------------------------------------------------------


@pytest.fixture
def dock(make_napari_viewer, qtbot):
    model = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0), seed=0)
    register_model(MODEL_NAME, model)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet-cells", "synthetic_nuclei")
    image = viewer.layers["synthetic nuclei"]
    image.scale = (0.5, 0.25)
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Predict")
    widget.refresh_models()
    widget.image_combo.value = image
    widget.model_combo.value = MODEL_NAME
    widget.device.value = "cpu"
    widget.tile.value = "108"
    yield viewer, widget, widget.measure_panel
    for worker in (widget.worker, widget.measure_panel.worker):  # never leave one running
        if worker is not None:
            with qtbot.waitSignal(worker.finished, timeout=30000):
                worker.quit()
    unregister_model(MODEL_NAME)


def _measured(panel, qtbot) -> None:
    qtbot.waitUntil(lambda: panel.worker is None and panel._pending is None, timeout=30000)
    assert panel.table is not None, panel.summary.value


def _run(widget, qtbot) -> None:
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    _measured(widget.measure_panel, qtbot)


def _features_match(layer) -> None:
    labels = np.unique(np.asarray(layer.data))
    features = layer.features
    np.testing.assert_array_equal(features["index"], labels[labels > 0])
    np.testing.assert_array_equal(features["label"], features["index"])


def test_a_run_writes_features_and_the_table_saves(dock, qtbot, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    viewer, widget, panel = dock
    _run(widget, qtbot)
    layer = viewer.layers["synthetic nuclei cells"]
    assert panel.layer is layer and panel.intensity_combo.value is viewer.layers[0]
    _features_match(layer)
    features = layer.features
    n = len(features)
    assert n == int(np.asarray(layer.data).max()) > 0
    assert panel.summary.value.startswith(f"{n} cells in 'synthetic nuclei cells'")
    # oblong pixels (0.5 x 0.25 um): an area in um2, lengths stay in px
    np.testing.assert_allclose(features["area_um2"], features["area_px"] * 0.125)
    assert "perimeter_um" not in features and "mean_intensity" in features
    assert panel.column.value == "area_um2" and panel.histogram.counts.sum() == n
    # napari's status bar shows the values of the cell under the cursor
    first = features["label"].iloc[0]
    y, x = np.argwhere(np.asarray(layer.data) == first)[0]
    status = layer.get_status((y * 0.5, x * 0.25), world=True)
    assert f"label: {first}" in status["coordinates"] and "area_px" in status["coordinates"]

    # Save table…: the CSV holds the same rows
    path = tmp_path / "cells.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    panel.save_button.native.click()
    table = read_table_csv(path)
    np.testing.assert_array_equal(table["label"], features["label"])
    np.testing.assert_allclose(table["area_um2"], features["area_um2"])
    assert str(path) in panel.summary.value
    import napari_unet_cells.widgets.predict.measure_panel as mp

    def read_only(*_a):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(mp, "write_table", read_only)  # a read-only folder: said plainly
    panel.save_button.native.click()
    assert "Cannot write the table to" in panel.summary.value

    # a re-threshold re-labels without inference, and measures again
    widget.threshold.value = 0.35
    _measured(panel, qtbot)
    _features_match(layer)
    assert widget.inference_runs == 1
    viewer.layers.remove(layer)  # the summary no longer describes a layer that is gone
    assert "was removed" in panel.summary.value


def test_measure_again_after_an_edit(dock, qtbot):
    viewer, widget, panel = dock
    _run(widget, qtbot)
    layer = viewer.layers["synthetic nuclei cells"]
    before = len(layer.features)
    data = np.asarray(layer.data)
    y, x = np.argwhere(data == 0)[0]
    layer.paint((y, x), int(data.max()) + 1)  # a new cell
    assert "Edited since" in panel.summary.value
    panel.measure_button.native.click()
    _measured(panel, qtbot)
    assert len(layer.features) == before + 1
    _features_match(layer)
    # the dock owns that layer: a highlight (a colour map) is no edit of it
    assert widget.outputs.edited  # painted above
    widget.outputs.edited = False
    panel.select_bar(int(np.argmax(panel.histogram.counts)))
    assert len(panel.selected_labels) > 0
    panel.clear_selection()
    assert not widget.outputs.edited


def test_histogram_bar_highlights_its_cells_and_user_data_stays(dock, qtbot):
    from qtpy.QtCore import QPoint, Qt

    viewer, _, panel = dock
    truth = viewer.layers["synthetic nuclei ground truth"]
    original = np.asarray(truth.data).copy()
    colormap = truth.colormap
    panel.labels_combo.value = truth
    panel.intensity_combo.value = viewer.layers["synthetic nuclei"]
    panel.measure_button.native.click()
    _measured(panel, qtbot)
    _features_match(truth)
    assert len(truth.features) == len(np.unique(original)) - 1 > 300
    assert panel.column.value == "area_px"  # no pixel size: areas in px

    histogram = panel.histogram
    if histogram.width() < 100:  # the dock is not laid out in a hidden window
        histogram.resize(300, 120)
    bar = int(np.argmax(histogram.counts))
    center = histogram.bar_rect(bar).center()
    qtbot.mouseClick(histogram, Qt.MouseButton.LeftButton, pos=QPoint(int(center.x()), 60))
    areas = truth.features.set_index("index")["area_px"]
    low, high = histogram.edges[bar], histogram.edges[bar + 1]
    inside = areas[(areas >= low) & (areas <= high)].index.to_numpy()
    np.testing.assert_array_equal(np.sort(panel.selected_labels), np.sort(inside))
    assert len(panel.selected_labels) == histogram.counts[bar] > 0
    other = np.setdiff1d(np.unique(original), [0, *inside])[0]
    colours = truth.colormap.map(np.array([inside[0], other]))
    np.testing.assert_allclose(colours, [HIGHLIGHT, DIMMED])
    np.testing.assert_array_equal(truth.data, original)  # only the colours changed

    # the same bar again gives the layer its own colour map back
    qtbot.mouseClick(histogram, Qt.MouseButton.LeftButton, pos=QPoint(int(center.x()), 60))
    assert truth.colormap is colormap and len(panel.selected_labels) == 0
    np.testing.assert_array_equal(truth.data, original)
