"""Layer choices in every dock follow renames, and plugin overlays are not offered."""

from __future__ import annotations

import numpy as np

from napari_unet_cells import layers as L
from napari_unet_cells.core.synthetic import synthetic_cells
from napari_unet_cells.workspace import workspace_for


def _texts(combo) -> list[str]:
    """The item texts of a Qt combo box (or a magicgui one's native widget)."""
    native = getattr(combo, "native", combo)
    return [native.itemText(i) for i in range(native.count())]


def test_a_renamed_layer_is_shown_by_its_new_name_in_every_dock(make_napari_viewer):
    viewer = make_napari_viewer()
    image, gt = synthetic_cells((64, 64), seed=1)
    image_layer = viewer.add_image(image, name="old image")
    labels_layer = viewer.add_labels(gt, name="old labels")
    docks = {
        name: viewer.window.add_plugin_dock_widget("napari-unet-cells", name)[1]
        for name in ("Predict", "Annotate", "Fine-tune", "Weight Map")
    }
    workspace_for(viewer).add_pair(image_layer, labels_layer)
    image_layer.name = "new image"
    labels_layer.name = "new labels"
    combos = [
        docks["Predict"].image_combo,
        docks["Annotate"].image_combo,
        docks["Annotate"].annotation_combo,
        docks["Fine-tune"].image_combo,
        docks["Fine-tune"].labels_combo,
        docks["Weight Map"].labels_combo,
    ]
    for combo in combos:
        texts = _texts(combo)
        assert not [t for t in texts if t.startswith("old")], texts
        assert "new image" in texts or "new labels" in texts, texts
    pair_list = docks["Fine-tune"].pair_list
    assert pair_list.item(0).text().startswith("new image  /  new labels")


def test_the_weight_map_dock_does_not_offer_the_check_overlay(make_napari_viewer):
    viewer = make_napari_viewer()
    _, gt = synthetic_cells((48, 48), seed=2)
    viewer.add_labels(gt, name="cells")
    _, dock = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Weight Map")
    viewer.add_labels(np.zeros_like(gt), name="check", metadata={L.ROLE_KEY: "check"})
    assert _texts(dock.labels_combo) == ["cells"]
