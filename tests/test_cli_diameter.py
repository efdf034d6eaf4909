"""`unet-cells predict --diameter` and `unet-cells info` report the cell size."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet_cells.cli import main
from napari_unet_cells.core.checkpoint import CellModel, save_model
from napari_unet_cells.core.config import ModelConfig
from napari_unet_cells.core.synthetic import synthetic_cells


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_diameter")
    model = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0), seed=0)
    model.extra["diameter"] = 20.0
    save_model(model, folder / "model.npz")
    image, _ = synthetic_cells((120, 100), seed=1)
    tifffile.imwrite(folder / "image.tif", image)
    z = zarr.open_array(str(folder / "image.zarr"), mode="w", shape=image.shape, dtype="u2")
    z[:] = image
    return folder


def _predict(folder, source, out, *extra):
    args = ["predict", str(source), "-o", str(out), "--model", str(folder / "model.npz")]
    return main([*args, "--device", "cpu", *map(str, extra)])


def test_a_given_diameter_resamples_and_labels_keep_the_input_shape(folder, tmp_path, capsys):
    out = tmp_path / "cells.tif"
    assert _predict(folder, folder / "image.tif", out, "--diameter", "40") == 0
    printed = capsys.readouterr().out
    assert "resampled x0.50" in printed
    labels = tifffile.imread(out)
    assert labels.shape == (120, 100)
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


def test_a_bad_diameter_is_one_line_and_exit_2(folder, tmp_path, capsys):
    assert _predict(folder, folder / "image.tif", tmp_path / "x.tif", "--diameter", "big") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diameter" in err
    assert not (tmp_path / "x.tif").exists()


def test_chunked_prediction_refuses_a_diameter_that_needs_resampling(folder, tmp_path, capsys):
    out = tmp_path / "cells.zarr"
    assert _predict(folder, folder / "image.zarr", out, "--diameter", "60") == 2
    assert "does not do yet" in capsys.readouterr().err
    assert _predict(folder, folder / "image.zarr", out, "--diameter", "none") == 0


def test_info_reports_the_models_cell_size(folder, capsys):
    assert main(["info", str(folder / "model.npz")]) == 0
    assert "trained around nuclei of 20 px" in capsys.readouterr().out
