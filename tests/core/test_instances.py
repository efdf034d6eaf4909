"""Probabilities -> instance labels: touching cells separated, sizes kept, chunking exact."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_unet_cells.core.config import InstanceConfig
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.instances import (
    filter_and_relabel,
    labels_dask,
    perfect_probabilities,
    probabilities_to_labels,
    separation_border,
)
from napari_unet_cells.core.labels import touching_pairs
from napari_unet_cells.core.synthetic import SyntheticConfig, synthetic_cells


def _best_match(labels, truth, cell):
    values = labels[truth == cell]
    return int(np.bincount(values).argmax())


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_touching_pair_becomes_two_labels(seed):
    _, truth = synthetic_cells((192, 192), seed=seed)
    pairs = touching_pairs(truth)
    assert len(pairs) > 20  # the synthetic data really has touching cells
    labels = probabilities_to_labels(perfect_probabilities(truth), InstanceConfig(min_size=0))
    assert labels.dtype == np.int32
    for a, b in pairs:
        la, lb = _best_match(labels, truth, a), _best_match(labels, truth, b)
        assert la > 0 and lb > 0 and la != lb, (a, b)
    # one label per cell, sequential
    assert labels.max() == truth.max()
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))


def test_cells_grow_back_over_the_border_they_lost():
    _, truth = synthetic_cells((256, 256), seed=3)
    probs = perfect_probabilities(truth)
    carved = probabilities_to_labels(probs, InstanceConfig(min_size=0, border_width=0))
    grown = probabilities_to_labels(probs, InstanceConfig(min_size=0, border_width=2))

    def mean_iou(labels):
        cells = range(1, truth.max() + 1)
        return np.mean([_iou(truth == c, labels == _best_match(labels, truth, c)) for c in cells])

    assert mean_iou(carved) < 0.9 < 0.95 < mean_iou(grown)
    border = separation_border(truth)
    assert (grown[border] > 0).mean() > 0.9  # the border is given back
    # isolated cells (no touching neighbour) keep all their pixels; they gain some only
    # in gaps as thin as a separation border next to a close neighbour
    touching = {c for pair in touching_pairs(truth) for c in pair}
    isolated = sorted(set(range(1, truth.max() + 1)) - touching)
    assert len(isolated) >= 3
    ious = []
    for cell in isolated:
        mask = grown == _best_match(grown, truth, cell)
        assert mask[truth == cell].all()
        ious.append(_iou(truth == cell, mask))
    assert np.median(ious) == 1.0 and min(ious) > 0.9


def test_threshold_and_min_size():
    probs = np.zeros((40, 40), np.float32)
    probs[5:15, 5:15] = 0.9  # 100 px
    probs[25:28, 25:28] = 0.9  # 9 px
    probs[30:38, 2:10] = 0.4  # below the default threshold
    labels = probabilities_to_labels(probs, InstanceConfig(min_size=10))
    assert labels.max() == 1 and (labels == 1).sum() == 100
    labels = probabilities_to_labels(probs, InstanceConfig(threshold=0.3, min_size=5))
    assert labels.max() == 3
    with pytest.raises(UNetCellsError):
        InstanceConfig(threshold=1.5)


def test_stack_labels_are_unique_over_planes():
    _, truth = synthetic_cells((64, 64), seed=4)
    probs = np.stack([perfect_probabilities(truth)] * 3)
    labels = probabilities_to_labels(probs, InstanceConfig(min_size=0))
    n = labels[0].max()
    assert labels.shape == (3, 64, 64) and labels.max() == 3 * n
    assert labels[1][labels[1] > 0].min() == n + 1


def test_filter_and_relabel_is_sequential():
    labels = np.array([[0, 5, 5, 9], [7, 7, 7, 9]])
    out, n = filter_and_relabel(labels, 2)
    assert n == 3 and set(np.unique(out)) == {0, 1, 2, 3}


@pytest.mark.parametrize(("chunk", "connectivity"), [(48, 1), (64, 2), (100, 1)])
def test_chunked_labels_equal_in_memory_labels(tmp_path, chunk, connectivity):
    _, truth = synthetic_cells((230, 210), seed=5)
    probs = perfect_probabilities(truth)
    config = InstanceConfig(min_size=20, connectivity=connectivity)
    expected = probabilities_to_labels(probs, config)
    got = labels_dask(da.from_array(probs, chunks=chunk), config, tmp_path).compute()
    assert got.dtype == np.int32 and got.shape == expected.shape
    # the same partition of the pixels: a one-to-one map between the two labellings
    pairs = np.unique(np.stack([expected.ravel(), got.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    assert ((expected > 0) == (got > 0)).all()
    # unique across chunks and sequential
    np.testing.assert_array_equal(np.unique(got), np.arange(got.max() + 1))


@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flood_seeds_equals_one_watershed_over_the_plane(connectivity, seed):
    # the per-region shortcut must give exactly skimage's watershed of the whole plane
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from napari_unet_cells.core.instances import flood_seeds, seed_components

    rng = np.random.default_rng(seed)
    probability = ndi.gaussian_filter(rng.random((160, 190)), 3.0)
    probability = (probability - probability.min()) / np.ptp(probability)
    config = InstanceConfig(threshold=0.55, seed_threshold=0.7, connectivity=connectivity)
    seeds, count = seed_components(probability, config)
    expected = watershed(
        -probability, markers=seeds, mask=probability > 0.55, connectivity=connectivity
    )
    flooded = flood_seeds(probability, seeds, config)
    assert flooded.dtype == seeds.dtype
    assert not flood_seeds(probability, np.zeros_like(seeds), config).any()  # no seeds
    np.testing.assert_array_equal(flooded, expected)
    # the shortcut and the watershed were both exercised
    regions, _ = ndi.label(probability > 0.55, ndi.generate_binary_structure(2, connectivity))
    seeds_per_region = [
        len(np.unique(seeds[(regions == r) & (seeds > 0)])) for r in range(1, regions.max() + 1)
    ]
    assert 1 in seeds_per_region and max(seeds_per_region) > 1 and count > 3


@pytest.mark.parametrize("side", [2, 3, 4, 6])
def test_square_opening_equals_scipys_binary_opening(side):
    from scipy import ndimage as ndi

    from napari_unet_cells.core.instances import square_opening

    rng = np.random.default_rng(side)
    for _ in range(5):
        mask = ndi.gaussian_filter(rng.random((90, 70)), 1.5) > 0.5
        expected = ndi.binary_opening(mask, np.ones((side, side), bool), border_value=1)
        np.testing.assert_array_equal(square_opening(mask, side), expected)


def test_tune_instances_finds_better_settings_and_keeps_a_good_start():
    from napari_unet_cells.core.instances import tune_instances

    _, truth = synthetic_cells((128, 128), seed=5)
    probs = perfect_probabilities(truth)
    bad = InstanceConfig(min_size=5000)  # removes every cell: AP50 0
    config, ap, scores = tune_instances([probs], [truth], start=bad)
    assert scores["start"] == 0.0 and ap > 0.9 and config.min_size < 5000
    again, ap_again, _ = tune_instances([probs], [truth], start=config)
    assert again == config and ap_again == ap  # nothing better: the start is kept


def test_tuning_can_cap_the_minimum_size():
    from napari_unet_cells.core.instances import perfect_probabilities, tune_instances

    _, labels = synthetic_cells((96, 96), seed=1, config=SyntheticConfig(diameter=(20, 28)))
    probs = perfect_probabilities(labels)
    start = InstanceConfig(min_size=10)
    best, _, scores = tune_instances([probs], [labels], start=start, max_min_size=20)
    assert best.min_size <= 20
    sizes = {int(key.split("_s")[-1].split("_")[0]) for key in scores if key.startswith("t")}
    assert sizes and max(sizes) <= 20
