"""The model shipped in the wheel: loadable, small, with its post-processing, and good."""

from __future__ import annotations

import numpy as np

from napari_unet_cells.core.checkpoint import load_model, read_model_info
from napari_unet_cells.core.config import config_to_dict
from napari_unet_cells.core.instances import instance_defaults
from napari_unet_cells.core.metrics import match
from napari_unet_cells.core.predict import predict
from napari_unet_cells.core.registry import bundled_model_path
from napari_unet_cells.core.synthetic import SyntheticConfig, synthetic_cells


def test_bundled_model_is_shipped_small_and_described():
    path = bundled_model_path()
    assert path is not None and path.suffix == ".npz"
    assert path.stat().st_size <= 20 * 1024**2
    assert (path.parent / "MODEL_CARD.md").is_file()
    info = read_model_info(path)
    assert info["model_config"]["padding"] == "valid"
    assert "synthetic" in info["provenance"]["data"]
    model = load_model(path)
    assert config_to_dict(instance_defaults(model)) == info["extra"]["instances"]


def test_bundled_model_segments_unseen_synthetic_nuclei():
    """A regression guard on an image from a seed no training stream uses (AP50 > 0.7)."""
    image, truth = synthetic_cells((256, 256), seed=987654, config=SyntheticConfig(dtype="uint8"))
    labels = predict(image, None, device="cpu")
    [result] = match(truth, labels, 0.5)
    assert result.ap > 0.7, result
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
