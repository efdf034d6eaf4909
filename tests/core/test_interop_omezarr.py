"""OME-Zarr labels (core/interop/omezarr.py): written with ome-zarr-py, read back with it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ome_zarr", reason="needs the interop extra")

import tifffile
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_image

from napari_unet_cells.core.checkpoint import CellModel, save_model
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.interop.omezarr import (
    predict_to_ome_zarr,
    read_labels,
    write_labels_into,
    write_ome_zarr,
)
from napari_unet_cells.core.synthetic import synthetic_cells

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _labels(shape=(150, 130)) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    labels[10:40, 10:30] = 1
    labels[60:100, 50:90] = 2
    labels[120:140, 100:125] = 7
    return labels


def _image_store(path: Path, fmt, channels: int = 2) -> Path:
    """An OME-Zarr image (c, y, x) with a pixel size in micrometres and 2 levels."""
    image = np.random.default_rng(0).integers(0, 4000, (channels, 150, 130), dtype=np.uint16)
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    write_image(
        image,
        group,
        axes="cyx",
        fmt=fmt,
        scale_factors=[2],
        scale={"c": 1.0, "y": 0.65, "x": 0.65},
        axes_units={"y": "micrometer", "x": "micrometer"},
    )
    return path


def _digests(store: Path) -> dict[str, str]:
    """SHA-256 of every file of the store outside labels/."""
    return {
        str(f.relative_to(store)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(store.rglob("*"))
        if f.is_file() and f.relative_to(store).parts[0] != "labels"
    }


@pytest.mark.parametrize("fmt", [FormatV05(), FormatV04()], ids=["ngff0.5", "ngff0.4"])
def test_labels_into_an_ome_zarr_image(tmp_path, fmt):
    store = _image_store(tmp_path / "image.ome.zarr", fmt)
    before = _digests(store)
    labels = _labels()
    target = write_labels_into(store, labels, "cells", attributes={"note": "test"})
    assert target == store / "labels" / "cells"
    assert _digests(store) == before  # the image's arrays and metadata are untouched
    back = read_labels(store, "cells")
    np.testing.assert_array_equal(back["labels"], labels[None])  # c axis of size 1
    assert back["image"] is not None and back["image"].shape == (2, 150, 130)  # linked image
    meta = back["metadata"]
    assert meta["color"][0] == [0, 0, 0, 0]  # background transparent
    assert set(meta["properties"]) == {1, 2, 7}
    assert meta["properties"][2]["area (pixels)"] == 40 * 40
    axes = {a["name"]: a for a in meta["axes"]}
    assert axes["y"]["unit"] == "micrometer"
    level0 = meta["coordinateTransformations"][0][0]["scale"]
    assert level0 == pytest.approx([1.0, 0.65, 0.65])  # the image's pixel size
    assert len(meta["coordinateTransformations"]) == 2  # the image's pyramid levels
    root = zarr.open_group(str(store), mode="r")
    attrs = dict(root["labels"].attrs)
    assert attrs.get("ome", attrs)["labels"] == ["cells"]


def test_existing_labels_group_is_refused_unless_overwrite(tmp_path):
    store = _image_store(tmp_path / "image.ome.zarr", FormatV05(), channels=1)
    write_labels_into(store, _labels(), "cells")
    with pytest.raises(UNetCellsError, match="already has a labels image 'cells'"):
        write_labels_into(store, _labels() * 0, "cells")
    np.testing.assert_array_equal(read_labels(store)["labels"][0], _labels())  # unchanged
    write_labels_into(store, _labels() * 2, "cells", overwrite=True)
    np.testing.assert_array_equal(read_labels(store)["labels"][0], _labels() * 2)
    root = zarr.open_group(str(store), mode="r")
    assert dict(root["labels"].attrs)["ome"]["labels"] == ["cells"]  # listed once
    write_labels_into(store, _labels(), "second")
    assert dict(root["labels"].attrs)["ome"]["labels"] == ["cells", "second"]


def test_labels_must_fit_the_image_and_store_must_be_ome(tmp_path):
    store = _image_store(tmp_path / "image.ome.zarr", FormatV05(), channels=1)
    with pytest.raises(UNetCellsError, match="do not match the image"):
        write_labels_into(store, _labels((100, 100)), "cells")
    plain = tmp_path / "plain.zarr"
    zarr.open_array(str(plain), mode="w", shape=(10, 10), dtype="u1")
    with pytest.raises(UNetCellsError, match="is not an OME-Zarr image"):
        write_labels_into(plain, np.zeros((10, 10), np.int32))
    with pytest.raises(UNetCellsError, match="cannot name"):
        write_labels_into(store, _labels(), "../escape")
    assert not (store / "labels").exists()


def test_new_ome_zarr_round_trip(tmp_path):
    image, labels = synthetic_cells((300, 260), seed=2)
    path = write_ome_zarr(tmp_path / "cells.ome.zarr", image, labels)
    back = read_labels(path, "cells")
    np.testing.assert_array_equal(back["labels"], labels)
    np.testing.assert_array_equal(back["image"], image)  # linked to its image
    assert len(back["metadata"]["properties"]) == labels.max()
    with pytest.raises(UNetCellsError, match="already exists"):
        write_ome_zarr(path, image, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.ome.zarr"]  # no leftovers


def test_predict_into_ome_zarr_and_from_tiff(tmp_path, tiny_config):
    model = save_model(CellModel.new(tiny_config, seed=0), tmp_path / "tiny.npz")
    image, _ = synthetic_cells((120, 100), seed=1)
    store = tmp_path / "image.ome.zarr"
    write_image(image, zarr.open_group(str(store), mode="w"), axes="yx")
    before = _digests(store)
    summary = predict_to_ome_zarr(store, None, model, name="unet")
    assert summary["output"] == str(store / "labels" / "unet")
    assert _digests(store) == before
    labels = read_labels(store, "unet")["labels"]
    assert labels.shape == image.shape and labels.max() == summary["cells"]
    with pytest.raises(UNetCellsError, match="already has a labels image"):
        predict_to_ome_zarr(store, None, model, name="unet")
    tiff = tmp_path / "image.tif"
    tifffile.imwrite(tiff, image)
    out = tmp_path / "cells.ome.zarr"
    predict_to_ome_zarr(tiff, out, model)
    np.testing.assert_array_equal(read_labels(out)["labels"], labels)
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["cells.ome.zarr", "image.ome.zarr", "image.tif", "tiny.npz"]


def test_interop_modules_import_neither_napari_nor_qt_nor_torch():
    code = (
        "import json, sys; import napari_unet_cells.core.interop.bioimageio, "
        "napari_unet_cells.core.interop.omezarr; print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}
    assert not loaded & {"napari", "PyQt5", "PyQt6", "PySide2", "PySide6", "qtpy", "vispy"}
    assert not loaded & {"torch", "bioimageio", "ome_zarr"}
