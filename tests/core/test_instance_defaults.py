"""Faint objects are dropped by confidence; models carry their own post-processing."""

from __future__ import annotations

import dask.array as da
import numpy as np

from napari_unet_cells.core.checkpoint import CellModel, load_model, save_model
from napari_unet_cells.core.config import InstanceConfig
from napari_unet_cells.core.instances import (
    instance_defaults,
    labels_dask,
    probabilities_to_labels,
)
from napari_unet_cells.core.predict import predict
from napari_unet_cells.core.synthetic import synthetic_cells


def _two_blobs() -> np.ndarray:
    probs = np.zeros((40, 60), np.float32)
    probs[5:15, 5:15] = 0.95  # a confident cell
    probs[20:32, 30:45] = 0.55  # a faint response, e.g. to background texture
    return probs


def test_min_confidence_drops_faint_objects():
    probs = _two_blobs()
    assert probabilities_to_labels(probs, InstanceConfig(min_size=1)).max() == 2
    labels = probabilities_to_labels(probs, InstanceConfig(min_size=1, min_confidence=0.7))
    assert labels.max() == 1 and labels[10, 10] == 1 and labels[25, 35] == 0


def test_min_confidence_in_chunks_equals_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    probs = np.clip(
        np.kron(rng.random((12, 12)), np.ones((8, 8))) + rng.normal(0, 0.05, (96, 96)), 0, 1
    ).astype(np.float32)
    config = InstanceConfig(min_size=4, min_confidence=0.75)
    expected = probabilities_to_labels(probs, config)
    got = labels_dask(da.from_array(probs, chunks=40), config, tmp_path).compute()
    assert expected.max() > 3
    # same cells (numbering may differ): a one-to-one map between the two labelings
    pairs = np.unique(np.stack([expected.ravel(), got.ravel()]), axis=1)
    assert pairs.shape[1] == expected.max() + 1 == got.max() + 1


def test_model_stored_defaults_are_used_unless_overridden(tiny_config, tmp_path):
    model = CellModel.new(tiny_config, seed=0)
    assert instance_defaults(model) == InstanceConfig()
    model.extra["instances"] = {"threshold": 0.4, "min_size": 10**6, "min_confidence": 0.2}
    path = save_model(model, tmp_path / "m.npz")
    loaded = load_model(path)
    assert instance_defaults(loaded) == InstanceConfig(
        threshold=0.4, min_size=10**6, min_confidence=0.2
    )
    image, _ = synthetic_cells((48, 48), seed=1)  # (noise alone would give no cells)
    _, probs = predict(image, loaded, device="cpu", threshold=0.01, return_probabilities=True)
    assert predict(image, loaded, device="cpu", threshold=0.01).max() == 0  # huge min size
    assert probs.max() > 0.01  # so the default min size, not the threshold, removed them
    assert predict(image, loaded, device="cpu", threshold=0.01, min_size=1).max() > 0


def test_hysteresis_splits_cells_joined_by_an_uncertain_border():
    probs = np.zeros((30, 50), np.float32)
    probs[5:25, 5:45] = 0.65  # one blob above threshold...
    probs[8:22, 8:20] = 0.95  # ...holding two confident cores
    probs[8:22, 30:42] = 0.95
    probs[26:29, 2:8] = 0.65  # and a faint blob with no confident core
    plain = probabilities_to_labels(probs, InstanceConfig(min_size=1))
    assert plain.max() == 2  # the big blob as one cell + the faint blob
    split = probabilities_to_labels(probs, InstanceConfig(min_size=1, seed_threshold=0.9))
    assert split.max() == 2 and split[15, 12] != split[15, 35]
    assert split[27, 4] == 0  # no seed: dropped
    assert (split > 0).sum() == ((probs > 0.5).sum() - (probs[26:29, 2:8] > 0.5).sum())
    # a seed threshold at or below the threshold means no hysteresis
    same = probabilities_to_labels(probs, InstanceConfig(min_size=1, seed_threshold=0.5))
    assert np.array_equal(same, plain)


def test_hysteresis_in_chunks_equals_in_memory(tmp_path):
    from napari_unet_cells.core.instances import perfect_probabilities
    from napari_unet_cells.core.synthetic import synthetic_cells

    _, truth = synthetic_cells((230, 220), seed=3)
    rng = np.random.default_rng(0)
    probs = np.clip(perfect_probabilities(truth) * 0.9 + rng.random(truth.shape) * 0.1, 0, 1)
    config = InstanceConfig(min_size=10, seed_threshold=0.85)
    expected = probabilities_to_labels(probs, config)
    got = labels_dask(da.from_array(probs, chunks=100), config, tmp_path).compute()
    pairs = np.unique(np.stack([expected.ravel(), got.ravel()]), axis=1)
    assert expected.max() > 10
    assert pairs.shape[1] == expected.max() + 1 == got.max() + 1
