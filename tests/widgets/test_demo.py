"""`unet-cells demo` opens the sample data with the plugin's docks in a real viewer."""

from __future__ import annotations

import napari

from napari_unet_cells.cli import DEMO_DOCKS, main


def test_demo_opens_sample_data_and_docks(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    monkeypatch.setattr(napari, "Viewer", lambda **kwargs: viewer)
    monkeypatch.setattr(napari, "run", lambda *args, **kwargs: None)
    assert main(["demo"]) == 0
    assert [layer.name for layer in viewer.layers] == [
        "synthetic nuclei",
        "synthetic nuclei ground truth",
    ]
    docks = " | ".join(viewer.window.dock_widgets)
    for name in DEMO_DOCKS:
        assert name in docks, docks
    assert len(DEMO_DOCKS) == 4  # all four docks, as tabs
    assert not viewer.layers["synthetic nuclei ground truth"].visible  # the image first


def test_readme_tour_one_click_of_run_segments_the_sample(make_napari_viewer, monkeypatch, qtbot):
    # the README promises: `unet-cells demo`, then "Run" in the Predict dock -> cells
    from napari_unet_cells.core.metrics import average_precision

    viewer = make_napari_viewer()
    monkeypatch.setattr(napari, "Viewer", lambda **kwargs: viewer)
    monkeypatch.setattr(napari, "run", lambda *args, **kwargs: None)
    assert main(["demo"]) == 0
    (predict,) = [w for name, w in viewer.window.dock_widgets.items() if "Predict" in name]
    assert predict.image_combo.value is viewer.layers["synthetic nuclei"]
    # the sliders start at the bundled model's stored recommendation
    shown = (predict.threshold, predict.seed_threshold, predict.min_size, predict.min_confidence)
    assert [w.value for w in shown] == [0.5, 0.9, 30, 0.7]
    predict.run_button.native.click()
    qtbot.waitUntil(lambda: predict.worker is None, timeout=60000)
    cells = viewer.layers["synthetic nuclei cells"].data
    truth = viewer.layers["synthetic nuclei ground truth"].data
    assert cells.max() > 50
    assert average_precision(truth, cells, 0.5) > 0.8  # the bundled model, out of the box


def test_demo_without_a_qt_binding_is_one_line(monkeypatch, capsys):
    def no_qt(**kwargs):
        raise ImportError("No Qt bindings could be found")

    monkeypatch.setattr(napari, "Viewer", no_qt)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "napari[pyqt6]"' in err
