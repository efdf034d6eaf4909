"""`unet-cells weightmap` and the public `napari_unet_cells.weight_map`."""

from __future__ import annotations

import numpy as np
import tifffile

import napari_unet_cells as uc
from napari_unet_cells.cli import main
from napari_unet_cells.core.config import WeightMapConfig
from napari_unet_cells.core.weightmap import separation_target, weight_map


def _labels(seed=0, shape=(64, 80)):
    return uc.synthetic_cells(shape, seed=seed, config=uc.SyntheticConfig(diameter=(8.0, 16.0)))[1]


def test_weightmap_writes_the_same_map_as_the_api(tmp_path, capsys):
    labels = _labels()
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    assert main(["weightmap", str(tmp_path / "labels.tif"), "-o", str(tmp_path / "w.tif")]) == 0
    written = tifffile.imread(tmp_path / "w.tif")
    assert written.dtype == np.float32
    np.testing.assert_array_equal(written, uc.weight_map(labels))
    assert "w.tif" in capsys.readouterr().out


def test_weightmap_options_preset_ignore_and_target(tmp_path):
    labels = _labels(1)
    ignore = np.zeros(labels.shape, np.uint8)
    ignore[:10] = 1
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "ignore.tif", ignore)
    args = ["weightmap", str(tmp_path / "labels.tif"), "-o", str(tmp_path / "w.tif")]
    args += ["--preset", "fiji", "--w0", "20", "--sigma", "4", "--ignore"]
    args += [str(tmp_path / "ignore.tif"), "--target", str(tmp_path / "t.tif")]
    assert main(args) == 0
    config = WeightMapConfig.preset("fiji", w0=20.0, sigma=4.0)
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "w.tif"), weight_map(labels, ignore, config)
    )
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "t.tif"), separation_target(labels, config)
    )
    assert np.all(tifffile.imread(tmp_path / "w.tif")[:10] == 0)
    # without class balance and with a wider border
    more = ["--no-class-balance", "--border-width", "2", "--overwrite"]
    assert main([*args[:4], *more]) == 0
    plain = WeightMapConfig(class_balance=False, border_width=2)
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "w.tif"), weight_map(labels, None, plain)
    )


def test_weightmap_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    labels = _labels(2)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "float.tif", labels.astype(np.float32))
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((32, 40, 3), np.uint8), photometric="rgb")
    src = str(tmp_path / "labels.tif")
    out = str(tmp_path / "w.tif")
    cases = [
        (["weightmap", str(tmp_path / "missing.tif"), "-o", out], "does not exist"),
        (["weightmap", str(tmp_path / "float.tif"), "-o", out], "integer"),
        (["weightmap", src, "-o", out, "--ignore", str(tmp_path / "small.tif")], "shape"),
        (["weightmap", src, "-o", src], "input file"),
        (["weightmap", src, "-o", str(tmp_path / "no" / "w.tif")], "does not exist"),
        (["weightmap", src, "-o", out, "--sigma", "0"], "sigma"),
        (["weightmap", src, "-o", out, "--target", out], "same file"),
        (["weightmap", src, "-o", str(tmp_path / "w.png")], "TIFF"),
        (["weightmap", str(tmp_path / "rgb.tif"), "-o", out], "RGB"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    assert not (tmp_path / "w.tif").exists()
    # an existing output is never replaced without --overwrite
    (tmp_path / "w.tif").write_bytes(b"mine")
    assert main(["weightmap", src, "-o", out]) == 2
    assert (tmp_path / "w.tif").read_bytes() == b"mine"
    assert tifffile.imread(tmp_path / "labels.tif").tolist() == labels.tolist()


def test_weightmap_3d_stack(tmp_path):
    stack = np.stack([_labels(3, (40, 48)), _labels(4, (40, 48))])
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    assert main(["weightmap", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "w.tif")]) == 0
    written = tifffile.imread(tmp_path / "w.tif")
    assert written.shape == stack.shape
    np.testing.assert_array_equal(written[1], weight_map(stack[1]))


def test_weightmap_numbers_a_fiji_mask_and_says_so(tmp_path, capsys):
    """Issue 16.3: a 0/255 mask was weighted as one cell, without a word."""
    labels = _labels(2)
    tifffile.imwrite(tmp_path / "mask.tif", np.where(labels > 0, 255, 0).astype(np.uint8))
    assert main(["weightmap", str(tmp_path / "mask.tif"), "-o", str(tmp_path / "w.tif")]) == 0
    assert "binary mask (values 0 and 255)" in capsys.readouterr().err
    from napari_unet_cells.core.labels import mask_to_instances

    numbered = mask_to_instances(labels > 0)[0]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "w.tif"), weight_map(numbered))
