"""Per-cell measurements (core/measure.py) against direct numpy and skimage computations."""

import numpy as np
import pytest
from skimage.measure import regionprops_table

from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.labels import touching_pairs
from napari_unet_cells.core.measure import measure, read_table_csv, summarize, table_to_csv
from napari_unet_cells.core.synthetic import synthetic_cells


@pytest.fixture(scope="module")
def sample():
    image, labels = synthetic_cells((256, 256), seed=3)
    return image, labels


def test_areas_centroids_and_intensities_match_numpy(sample):
    image, labels = sample
    table = measure(labels, image)
    assert table["area_px"].sum() == np.count_nonzero(labels)
    assert list(table["label"]) == sorted(np.unique(labels[labels > 0]))
    for row in (0, len(table["label"]) // 2, -1):
        mask = labels == table["label"][row]
        ys, xs = np.nonzero(mask)
        assert table["centroid_y"][row] == pytest.approx(ys.mean())
        assert table["centroid_x"][row] == pytest.approx(xs.mean())
        values = image[mask].astype(np.float64)
        assert table["mean_intensity"][row] == pytest.approx(values.mean())
        assert table["max_intensity"][row] == pytest.approx(values.max())
        assert table["min_intensity"][row] == pytest.approx(values.min())
        assert table["integrated_intensity"][row] == pytest.approx(values.sum())


def test_shape_columns_match_skimage(sample):
    _, labels = sample
    table = measure(labels)
    names = ["axis_major_length", "axis_minor_length", "eccentricity", "perimeter"]
    reference = regionprops_table(labels, properties=["label", *names, "solidity"])
    ours = ["major_axis_px", "minor_axis_px", "eccentricity", "perimeter_px"]
    for theirs, mine in zip(names, ours, strict=True):
        np.testing.assert_allclose(table[mine], reference[theirs], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(table["equivalent_diameter_px"] ** 2 * np.pi / 4, table["area_px"])
    # solidity: the hull polygon around the pixels' squares, a little larger than skimage's
    # count of pixel centres inside it
    difference = table["solidity"] - reference["solidity"]
    assert difference.max() <= 1e-9 and difference.min() > -0.08


def test_solidity_of_simple_shapes():
    labels = np.zeros((10, 12), np.int32)
    labels[1:4, 1:6] = 1  # a rectangle: its own hull
    labels[6:8, 6:8] = 2
    labels[7, 7] = 0  # an L of 3 pixels: hull = 2 x 2 square minus a corner triangle
    labels[6, 10] = 3  # one pixel
    table = measure(labels)
    np.testing.assert_allclose(table["solidity"], [1.0, 3 / 3.5, 1.0])


def test_edge_flag_neighbours_and_units():
    labels = np.zeros((20, 30), np.int32)
    labels[0:4, 0:4] = 1  # at the top-left corner
    labels[8:12, 8:12] = 2
    labels[8:12, 12:16] = 3  # touches 2 and 4
    labels[8:12, 16:20] = 4
    labels[15:18, 25:28] = 5  # alone, inside
    table = measure(labels, scale=(0.5, 0.5))
    assert list(table["touches_edge"]) == [True, False, False, False, False]
    assert list(table["n_neighbours"]) == [0, 1, 2, 1, 0]
    np.testing.assert_allclose(table["area_um2"], table["area_px"] * 0.25)
    np.testing.assert_allclose(
        table["equivalent_diameter_um"], table["equivalent_diameter_px"] / 2
    )
    anisotropic = measure(labels, scale=(1.0, 0.5), unit="mm")
    np.testing.assert_allclose(anisotropic["area_mm2"], table["area_px"] * 0.5)
    assert "perimeter_mm" not in anisotropic  # a length has no unit on oblong pixels
    with pytest.raises(UNetCellsError, match="positive"):
        measure(labels, scale=(0, 1))


def test_neighbour_counts_match_touching_pairs(sample):
    _, labels = sample
    table = measure(labels)
    pairs = touching_pairs(labels)
    assert len(pairs) > 5  # the synthetic image has touching nuclei
    expected = [sum(k in pair for pair in pairs) for k in table["label"]]
    assert list(table["n_neighbours"]) == expected


def test_stacks_channels_and_empty_planes(sample):
    image, labels = sample
    stack = np.stack([labels, np.zeros_like(labels), labels])
    table = measure(stack)
    n = int(len(np.unique(labels)) - 1)
    assert list(table)[:2] == ["label", "plane"]
    assert list(np.bincount(table["plane"], minlength=3)) == [n, 0, n]
    two = np.stack([image, 2.0 * image], axis=-1)
    channels = measure(labels, two)
    np.testing.assert_allclose(channels["mean_intensity_c1"], 2 * channels["mean_intensity_c0"])
    empty = measure(np.zeros((10, 10), np.int32), np.ones((10, 10)))
    assert len(empty["label"]) == 0 and "mean_intensity" in empty
    assert summarize(empty)["cells"] == 0
    with pytest.raises(UNetCellsError, match="does not match the labels"):
        measure(labels, image[:10])


def test_csv_round_trip_and_summary(sample, tmp_path):
    image, labels = sample
    table = measure(labels, image, scale=(0.65, 0.65))
    path = tmp_path / "cells.csv"
    text = table_to_csv(table, path)
    assert text.splitlines()[0].startswith("label,centroid_y,centroid_x,area_px")
    back = read_table_csv(path)
    assert list(back) == list(table)
    for name in table:
        if table[name].dtype.kind == "f":
            np.testing.assert_allclose(back[name], table[name], rtol=0, atol=0)
        else:
            np.testing.assert_array_equal(back[name], table[name])
    with pytest.raises(UNetCellsError, match="already exists"):
        table_to_csv(table, path)  # never replaced
    row = summarize(table)
    assert row["cells"] == len(table["label"])
    assert row["median_area_px"] == np.median(table["area_px"])
    assert row["mean_intensity"] == pytest.approx(table["mean_intensity"].mean())
