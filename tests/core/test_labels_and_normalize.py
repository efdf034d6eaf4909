from __future__ import annotations

import numpy as np
import pytest

from napari_unet_cells.core.config import NormalizationConfig
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.labels import check_labels, touching_pairs
from napari_unet_cells.core.normalize import normalize


def _touching_pairs_brute_force(labels):
    pairs = set()
    h, w = labels.shape
    for y in range(h):
        for x in range(w):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        a, b = labels[y, x], labels[yy, xx]
                        if a and b and a != b:
                            pairs.add((min(a, b), max(a, b)))
    return pairs


@pytest.mark.parametrize("seed", range(5))
def test_touching_pairs_matches_brute_force(seed):
    labels = np.random.default_rng(seed).integers(0, 6, (13, 17)).astype(np.uint16)
    labels[labels < 3] = 0
    assert touching_pairs(labels) == _touching_pairs_brute_force(labels.astype(int))


def test_check_labels_errors():
    with pytest.raises(UNetCellsError, match="integer"):
        check_labels(np.zeros((3, 3), np.float32))
    with pytest.raises(UNetCellsError, match="negative"):
        check_labels(-np.ones((3, 3), np.int32))
    with pytest.raises(UNetCellsError, match="binary mask"):
        check_labels(np.zeros((3, 3), bool))


def test_normalize_percentiles():
    image = np.arange(1001, dtype=np.uint16).reshape(7, 143)[:, :143]
    out = normalize(image, NormalizationConfig(p_low=0, p_high=100))
    assert out.dtype == np.float32
    assert out.min() == pytest.approx(0) and out.max() == pytest.approx(1)
    clipped = normalize(image, NormalizationConfig(p_low=10, p_high=90, clip=True))
    assert clipped.min() == 0 and clipped.max() == 1


def test_normalize_handles_nan_inf_and_constant():
    image = np.ones((8, 8), np.float64)
    image[0, 0] = np.nan
    image[1, 1] = np.inf
    image[2, 2] = 0.0
    out = normalize(image)
    assert np.isfinite(out).all()
    assert np.array_equal(normalize(np.full((4, 4), 7)), np.zeros((4, 4), np.float32))
    assert np.array_equal(normalize(np.full((4, 4), np.nan)), np.zeros((4, 4), np.float32))


def test_normalization_params_ignore_nan_and_inf():
    from napari_unet_cells.core.normalize import apply_normalization, normalization_params

    values = np.linspace(0, 100, 1001).astype(np.float32)
    clean = normalization_params(values, NormalizationConfig())
    values[17] = np.nan
    values[33] = np.inf
    values[44] = -np.inf
    params = normalization_params(values, NormalizationConfig())
    assert params.scale > 0 and params.scale == pytest.approx(clean.scale, rel=1e-2)
    assert params.low == pytest.approx(clean.low, abs=1.0)
    assert (params.fill_low, params.fill_high) == (0.0, 100.0)
    out = apply_normalization(values, params)
    np.testing.assert_array_equal(out, normalize(values))
    assert out[17] == out[44] == out[0] and out[33] == out[-1]


@pytest.mark.parametrize("on", [1, 255])
def test_binary_masks_are_numbered_with_a_notice(on, caplog):
    """Issue 16.3: a 0/1 or Fiji 0/255 mask was trained and weighted as one giant cell."""
    from napari_unet_cells.core.data import as_samples
    from napari_unet_cells.core.labels import binary_mask_values, mask_to_instances
    from napari_unet_cells.core.synthetic import synthetic_cells
    from napari_unet_cells.core.weightmap import weight_map

    image, labels = synthetic_cells((160, 160), seed=0)
    mask = np.where(labels > 0, on, 0).astype(np.uint8)
    assert binary_mask_values(mask) == (0, on)
    assert binary_mask_values(labels) is None  # instance labels pass unchanged
    one_cell = np.zeros((20, 20), np.uint8)
    one_cell[5:9, 5:9] = on
    assert binary_mask_values(one_cell) is None  # a single cell is not a mask
    numbered, notice = mask_to_instances(mask, "m.tif")
    objects = ndi_label_count(labels > 0)
    assert numbered.max() == objects > 3 and "binary mask" in notice and "merged" in notice
    with caplog.at_level("WARNING"):
        [sample] = as_samples(image, mask, names=["m.tif"])
    assert len(np.unique(sample.labels[sample.labels > 0])) == objects
    assert "binary mask" in caplog.text
    np.testing.assert_array_equal(weight_map(mask), weight_map(numbered))
    bool_numbered, _ = mask_to_instances(labels > 0)
    np.testing.assert_array_equal(bool_numbered, numbered)


def ndi_label_count(mask):
    from scipy import ndimage as ndi

    return ndi.label(mask, structure=np.ones((3, 3), bool))[1]
