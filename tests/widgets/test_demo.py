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
