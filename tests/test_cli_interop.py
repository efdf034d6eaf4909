"""`unet-cells export` and `unet-cells predict` to OME-Zarr: wiring, messages, exit codes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

pytest.importorskip("bioimageio.core", reason="needs the interop extra")
pytest.importorskip("ome_zarr", reason="needs the interop extra")

import zarr
from ome_zarr.writer import write_image

from napari_unet_cells.cli import main
from napari_unet_cells.core.checkpoint import CellModel, load_model, save_model
from napari_unet_cells.core.interop import bioimageio as bio
from napari_unet_cells.core.interop.omezarr import read_labels
from napari_unet_cells.core.synthetic import synthetic_cells

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def model_file(tmp_path, tiny_config):
    return save_model(CellModel.new(tiny_config, seed=0), tmp_path / "tiny.npz")


def test_export_writes_a_package_that_loads(model_file, tmp_path, capsys, monkeypatch):
    # bioimageio.core's test itself runs in tests/core/test_interop_bioimageio.py
    monkeypatch.setattr(bio, "test_package", lambda path: type("S", (), {"status": "passed"}))
    out = tmp_path / "my_model.zip"
    argv = ["export", str(model_file), "-o", str(out), "--author", "A. Biologist"]
    assert main([*argv, "--name", "Nuclei test model", "--no-torchscript"]) == 0
    assert f"-> {out}: bioimage.io model package, test passed" in capsys.readouterr().out
    assert bio.read_bioimageio_weights(out) == ["pytorch_state_dict"]
    assert load_model(out).config == load_model(model_file).config
    before = out.read_bytes()
    assert main(argv) == 2  # never overwrites without --overwrite
    err = capsys.readouterr().err.strip()
    assert err.startswith("unet-cells export: error:") and "--overwrite" in err
    assert len(err.splitlines()) == 1 and out.read_bytes() == before
    assert main(["export", str(model_file), "-o", str(tmp_path / "m.npz")]) == 2
    assert ".zip" in capsys.readouterr().err
    new = ["export", str(model_file), "-o", str(tmp_path / "new.zip")]
    for extra, says in ((["--name", "Mine!"], "letters, digits"), (["--license", "x"], "SPDX")):
        assert main([*new, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1
    assert not (tmp_path / "new.zip").exists()


def test_info_and_predict_accept_an_exported_package(model_file, tmp_path, capsys):
    package = bio.export_bioimageio(model_file, tmp_path / "m.zip", torchscript=False, test=False)
    assert main(["info", str(package)]) == 0
    assert "base 4, depth 2" in capsys.readouterr().out
    image, _ = synthetic_cells((80, 90), seed=2)
    tifffile.imwrite(tmp_path / "image.tif", image)
    for model, out in ((model_file, "a.tif"), (package, "b.tif")):
        argv = ["predict", str(tmp_path / "image.tif"), "-o", str(tmp_path / out)]
        assert main([*argv, "--model", str(model), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "a.tif"), tifffile.imread(tmp_path / "b.tif")
    )


def test_predict_ome_zarr_labels(model_file, tmp_path, capsys):
    image, _ = synthetic_cells((100, 110), seed=3)
    store = tmp_path / "image.ome.zarr"
    write_image(image, zarr.open_group(str(store), mode="w"), axes="yx")
    common = ["--model", str(model_file), "--device", "cpu"]
    assert main(["predict", str(store), "--ome-labels", *common]) == 0
    assert f"-> {store / 'labels' / 'cells'}" in capsys.readouterr().out
    labels = read_labels(store, "cells")["labels"]
    assert labels.shape == image.shape
    # an existing labels group: one line, exit 2, unchanged; --overwrite replaces it
    assert main(["predict", str(store), "--ome-labels", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    argv = ["predict", str(store), "--ome-labels", "--overwrite", *common, "--threshold", "0.9"]
    assert main(argv) == 0
    assert not np.array_equal(read_labels(store, "cells")["labels"], labels)
    # a folder run: several stores, each gets its own labels/<name>
    other = tmp_path / "other.ome.zarr"
    write_image(image[:, ::-1], zarr.open_group(str(other), mode="w"), axes="yx")
    argv = ["predict", str(store), str(other), "--ome-labels", "--labels-name", "unet"]
    assert main([*argv, *common]) == 0
    assert read_labels(other, "unet")["labels"].shape == image.shape
    assert dict(zarr.open_group(str(store / "labels")).attrs)["ome"]["labels"] == ["cells", "unet"]
    # TIFF in, a new OME-Zarr out
    tifffile.imwrite(tmp_path / "image.tif", image)
    out = tmp_path / "cells.ome.zarr"
    assert main(["predict", str(tmp_path / "image.tif"), "-o", str(out), *common]) == 0
    np.testing.assert_array_equal(read_labels(out)["labels"], labels)
    # user errors: one line, exit 2
    for argv in (
        ["predict", str(store), *common],  # no -o
        ["predict", str(store), "--ome-labels", "-o", str(tmp_path / "x.tif"), *common],
        ["predict", str(tmp_path / "image.tif"), "--ome-labels", *common],  # TIFF input
        ["predict", str(tmp_path / "image.tif"), "-o", str(tmp_path / "c.tif"), "--overwrite"],
    ):
        assert main(argv) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
