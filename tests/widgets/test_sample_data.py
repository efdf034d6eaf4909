"""A real napari viewer under Xvfb opens the plugin's sample data."""

from __future__ import annotations

import numpy as np


def test_sample_data_opens_in_a_real_viewer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-unet-cells", "synthetic_nuclei")
    names = [layer.name for layer in viewer.layers]
    assert names == ["synthetic nuclei", "synthetic nuclei ground truth"]
    image, labels = viewer.layers
    assert image._type_string == "image" and labels._type_string == "labels"
    assert image.data.shape == labels.data.shape == (512, 512)
    assert labels.data.max() > 50

    viewer.reset_view()
    shot = viewer.screenshot(str(tmp_path / "viewer.png"), canvas_only=False)
    assert (tmp_path / "viewer.png").stat().st_size > 10_000
    assert shot.ndim == 3 and shot.shape[0] > 300 and shot.shape[1] > 300
    # the canvas shows the data, not a blank window: many distinct colours
    canvas = viewer.screenshot(canvas_only=True)
    assert len(np.unique(canvas[..., :3].reshape(-1, 3), axis=0)) > 50


def test_manifest_is_discovered():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-unet-cells")
    assert manifest.display_name == "U-Net Cells"
    assert [s.key for s in manifest.contributions.sample_data] == ["synthetic_nuclei"]
