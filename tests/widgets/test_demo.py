"""`unet-cells demo` opens the sample data with the plugin's docks in a real viewer."""

from __future__ import annotations

import napari
import pytest

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
    from napari_unet_cells.core.instances import instance_defaults
    from napari_unet_cells.core.metrics import average_precision
    from napari_unet_cells.core.registry import resolve_model

    viewer = make_napari_viewer()
    monkeypatch.setattr(napari, "Viewer", lambda **kwargs: viewer)
    monkeypatch.setattr(napari, "run", lambda *args, **kwargs: None)
    assert main(["demo"]) == 0
    (predict,) = [w for name, w in viewer.window.dock_widgets.items() if "Predict" in name]
    assert predict.image_combo.value is viewer.layers["synthetic nuclei"]
    # the sliders start at the bundled model's stored recommendation
    shown = (predict.threshold, predict.seed_threshold, predict.min_size, predict.min_confidence)
    stored = instance_defaults(resolve_model(None))
    expected = [stored.threshold, stored.seed_threshold or 0.0, stored.min_size]
    assert [w.value for w in shown] == [*expected, stored.min_confidence]
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


def _controls(root):
    from qtpy.QtWidgets import (
        QAbstractButton,
        QAbstractSlider,
        QAbstractSpinBox,
        QComboBox,
        QLineEdit,
        QListWidget,
    )

    kinds = (QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLineEdit, QListWidget)
    return [w for w in root.findChildren(kinds) if w.isVisibleTo(root)]


def _reachable(control, window) -> bool:
    """Inside the window, or inside a scroll area whose viewport is inside it."""
    from qtpy.QtCore import QRect
    from qtpy.QtWidgets import QAbstractScrollArea

    inside = window.rect()
    parent = control.parentWidget()
    while parent is not None and parent is not window:
        if isinstance(parent, QAbstractScrollArea) and parent.widget() is not None:
            if parent.widget().isAncestorOf(control):  # scrolled into view on demand
                box = parent.viewport()
                return inside.contains(QRect(box.mapTo(window, box.rect().topLeft()), box.size()))
        parent = parent.parentWidget()
    top_left = control.mapTo(window, control.rect().topLeft())
    return inside.contains(QRect(top_left, control.size()))


def test_all_four_docks_fit_a_1280x800_window(make_napari_viewer, monkeypatch, qtbot):
    """Issue 16.5: Predict + Annotate made the window 1,235 px tall, + Fine-tune 1,975 px:
    controls below the screen; tab titles cut; the image partly hidden; the ground truth
    selected instead of the image."""
    from qtpy.QtWidgets import QApplication, QDockWidget, QScrollArea, QTabBar

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    monkeypatch.setattr(napari, "Viewer", lambda **kwargs: viewer)
    monkeypatch.setattr(napari, "run", lambda *args, **kwargs: None)
    assert main(["demo"]) == 0
    window.resize(1280, 800)
    QApplication.processEvents()
    qtbot.wait(100)
    assert (window.width(), window.height()) == (1280, 800)
    assert viewer.layers.selection.active is viewer.layers["synthetic nuclei"]
    image = viewer.layers["synthetic nuclei"]
    assert (
        viewer.scene.camera.zoom * image.data.shape[1]
        <= viewer.window._qt_viewer.canvas.size[1] + 1
    )
    ours = [d for d in window.findChildren(QDockWidget) if d.windowTitle() in DEMO_DOCKS]
    assert sorted(d.windowTitle() for d in ours) == sorted(DEMO_DOCKS)  # short titles
    tabs = [t for t in window.findChildren(QTabBar) if t.count() == 4]
    assert tabs, "the four docks are tabs of one dock area"
    for i in range(4):
        assert tabs[0].tabText(i) in DEMO_DOCKS
        needed = tabs[0].fontMetrics().horizontalAdvance(tabs[0].tabText(i))
        assert tabs[0].tabRect(i).width() >= needed  # not cut
    for dock in ours:
        dock.raise_()
        QApplication.processEvents()
        outside = [
            f"{type(c).__name__} {getattr(c, 'text', lambda: '')()!r}"
            for c in _controls(dock.widget())
            if not _reachable(c, window)
        ]
        assert not outside, f"{dock.windowTitle()}: out of the window: {outside}"
        [area] = [a for a in dock.findChildren(QScrollArea) if a.widget() is not None][:1]
        assert not area.horizontalScrollBar().isVisible(), "the controls fit the dock's width"


def test_demo_without_a_display_says_what_to_do(monkeypatch, capsys):
    """Issue 16 (also): without a display Qt aborted with a misleading 'xcb-cursor0 is
    needed'."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(napari, "Viewer", lambda **kwargs: pytest.fail("no window here"))
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "No display" in err and "xvfb-run -a unet-cells demo" in err
