"""``unet-cells measure``: labels (and image) in, per-cell CSV out, pixel size from the file."""

import numpy as np
import pytest
import tifffile

from napari_unet_cells.cli import main
from napari_unet_cells.core.measure import read_table_csv, tiff_pixel_size
from napari_unet_cells.core.synthetic import synthetic_cells


@pytest.fixture
def files(tmp_path):
    image, labels = synthetic_cells((128, 128), seed=1)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    two = np.stack([image, image // 2])  # (C, Y, X)
    tifffile.imwrite(tmp_path / "image.tif", two)
    # ImageJ labels with a pixel size of 0.5 um
    tifffile.imwrite(
        tmp_path / "labels_um.tif",
        labels.astype(np.uint16),
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"unit": "micron"},
    )
    return tmp_path, image, labels


def test_measure_writes_one_row_per_cell_with_channels(files, capsys):
    folder, _, labels = files
    out = folder / "cells.csv"
    args = ["measure", str(folder / "labels.tif"), "--image", str(folder / "image.tif")]
    assert main([*args, "-o", str(out)]) == 0
    table = read_table_csv(out)
    assert len(table["label"]) == len(np.unique(labels)) - 1
    np.testing.assert_allclose(table["mean_intensity_c1"], table["mean_intensity_c0"] / 2, 0.02)
    assert "area_um2" not in table and "cells" in capsys.readouterr().out
    assert main([*args, "-o", str(out)]) == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err


def test_pixel_size_from_the_file_or_the_option(files, capsys):
    folder = files[0]
    assert tiff_pixel_size(folder / "labels_um.tif") == (0.5, 0.5, "um")
    assert tiff_pixel_size(folder / "labels.tif") is None
    out = folder / "um.csv"
    assert main(["measure", str(folder / "labels_um.tif"), "-o", str(out)]) == 0
    table = read_table_csv(out)
    np.testing.assert_allclose(table["area_um2"], table["area_px"] * 0.25)
    given = folder / "given.csv"
    args = ["measure", str(folder / "labels.tif"), "--pixel-size", "0.2", "0.4", "--unit", "mm"]
    assert main([*args, "-o", str(given)]) == 0
    table = read_table_csv(given)
    np.testing.assert_allclose(table["area_mm2"], table["area_px"] * 0.08)
    assert "perimeter_mm" not in table  # oblong pixels: lengths stay in px


def test_bad_inputs_are_one_line(files, capsys):
    folder, _, _ = files
    assert main(["measure", str(folder / "labels.tif"), "-o", str(folder / "t.txt")]) == 2
    assert ".csv" in capsys.readouterr().err
    small = folder / "small.tif"
    tifffile.imwrite(small, np.zeros((10, 10), np.uint16))
    args = ["measure", str(folder / "labels.tif"), "--image", str(small)]
    assert main([*args, "-o", str(folder / "x.csv")]) == 2
    assert "does not match the labels" in capsys.readouterr().err
    assert not (folder / "x.csv").exists()
