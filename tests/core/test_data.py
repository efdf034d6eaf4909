from __future__ import annotations

import numpy as np
import pytest

from napari_unet_cells.core import data
from napari_unet_cells.core.config import ModelConfig, TrainConfig
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.normalize import normalize
from napari_unet_cells.core.synthetic import synthetic_cells
from napari_unet_cells.core.unet import is_valid_input_size, output_size
from napari_unet_cells.core.weightmap import weight_map


@pytest.fixture(scope="module")
def cells():
    return synthetic_cells((96, 128), seed=2)


def test_as_samples_checks_inputs_and_splits_stacks(cells):
    image, labels = cells
    [s] = data.as_samples(image, labels)
    assert s.image.shape == (96, 128) and s.ignore is None
    stack = np.stack([image, image, image])
    lstack = np.stack([labels, np.zeros_like(labels), labels])
    planes = data.as_samples([stack], [lstack])
    assert [p.name for p in planes] == ["image 0 [plane 0]", "image 0 [plane 2]"]
    with pytest.raises(UNetCellsError, match=r"must match"):
        data.as_samples(image, labels[:-1])
    with pytest.raises(UNetCellsError, match="no cells"):
        data.as_samples(image, np.zeros_like(labels))
    with pytest.raises(UNetCellsError, match="integer"):
        data.as_samples(image, labels.astype(np.float32))
    with pytest.raises(UNetCellsError, match="one label image per image"):
        data.as_samples([image, image], [labels])


def test_prepared_sample_uses_the_prediction_normalisation_and_the_weight_map(cells):
    image, labels = cells
    ignore = np.zeros(labels.shape, bool)
    ignore[:, :40] = True  # left part not annotated
    [s] = data.as_samples(image, labels, [ignore])
    p = data.prepare_sample(s)
    np.testing.assert_array_equal(p.image, normalize(image))
    np.testing.assert_allclose(p.weight, weight_map(labels, ignore=ignore), rtol=1e-6)
    assert not p.weight[:, :40].any() and p.weight[:, 40:].min() > 0
    assert set(np.unique(p.target)) == {0, 1}


def test_held_out_strip_when_only_one_image(cells, tiny_config):
    image, labels = cells
    samples = data.as_samples(image, labels)
    train, regions = data.split_validation(samples, None, TrainConfig(), tiny_config)
    [region] = regions
    y0, y1, x0, x1 = region.core
    assert (y1 - y0, x1 - x0) == (96, round(0.2 * 128))  # strip along the longer axis
    # training never sees the strip's labels ...
    assert not train[0].weight[:, 128 - 26 :].any()
    # ... the strip is evaluated with real context from the rest of the image
    assert region.image.shape[1] == 26 + 20  # + context margin of the tiny net
    np.testing.assert_array_equal(region.labels, labels[:, -26:])
    # separate validation samples are used whole and the training images stay whole
    train2, regions2 = data.split_validation(samples, samples, TrainConfig(), tiny_config)
    assert train2[0].weight.all() and regions2[0].labels.shape == (96, 128)


def test_choose_tile_gives_valid_sizes():
    tile, out = data.choose_tile(ModelConfig(), [(1000, 1000)])
    assert (tile, out) == (380, 196) and is_valid_input_size(tile)
    tile, out = data.choose_tile(ModelConfig(), [(1000, 1000)], tile=500)
    assert tile == 492 and out == output_size(492)
    small = ModelConfig(base=4, depth=2)
    tile, out = data.choose_tile(small, [(30, 30)])
    assert is_valid_input_size(tile, 2) and out >= 30


def test_tiles_favour_touching_cells_and_mirror_beyond_the_image(cells, tiny_config):
    image, labels = cells
    train, _ = data.split_validation(
        data.as_samples(image, labels), None, TrainConfig(val_fraction=0), tiny_config
    )
    tile, out = data.choose_tile(tiny_config, [train[0].shape], tile=60)
    off = (tile - out) // 2

    def border_share(bias, seed=0):
        sampler = data.TileSampler(train, tile, out, cell_bias=bias)
        batch = sampler.sample(np.random.default_rng(seed), 200)
        w = batch.weight[:, off : off + out, off : off + out]
        return float(w.mean()), batch

    biased, batch = border_share(1.0)
    uniform, _ = border_share(0.0)
    assert biased > 1.1 * uniform  # more high-weight pixels (cells, borders) seen
    # every tile's output window lies on the image; the input mirrors beyond it
    h, w = train[0].shape
    for y0, x0 in batch.origins:
        oy, ox = y0 + off, x0 + off
        assert 0 <= oy <= h - out and 0 <= ox <= w - out
    i = int(np.argmin(batch.origins[:, 0]))
    y0, x0 = batch.origins[i]
    assert y0 < 0  # some tile reaches above the image: row -1 mirrors row 1
    np.testing.assert_array_equal(batch.image[i, -y0 - 1], batch.image[i, -y0 + 1])
    assert not batch.weight[i, :-y0].any()
    # same seed, same tiles
    again = data.TileSampler(train, tile, out, cell_bias=1.0).sample(np.random.default_rng(0), 200)
    np.testing.assert_array_equal(again.origins, batch.origins)
