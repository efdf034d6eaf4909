"""``unet-cells predict --table``: per-cell CSVs and one summary for several images."""

import numpy as np
import tifffile

from napari_unet_cells.cli import main
from napari_unet_cells.core.measure import read_table_csv
from napari_unet_cells.core.synthetic import synthetic_cells


def _images(folder, n=2):
    paths = []
    for seed in range(n):
        image, _ = synthetic_cells((128, 128), seed=seed + 5)
        paths.append(folder / f"img{seed}.tif")
        tifffile.imwrite(paths[-1], image)
    return paths


def test_one_image_table_and_several_with_summary(tmp_path, capsys):
    one, two = _images(tmp_path)
    table = tmp_path / "cells.csv"
    args = ["predict", str(one), "-o", str(tmp_path / "one.tif"), "--diameter", "none"]
    assert main([*args, "--table", str(table)]) == 0
    labels = tifffile.imread(tmp_path / "one.tif")
    rows = read_table_csv(table)
    assert len(rows["label"]) == len(np.unique(labels)) - 1 > 5
    out = tmp_path / "out"
    out.mkdir()
    args = ["predict", str(one), str(two), "-o", str(out), "--diameter", "none", "--table"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "img0_cells.csv",
        "img0_cells.tif",
        "img1_cells.csv",
        "img1_cells.tif",
        "summary.csv",
    ]
    summary = read_table_csv(out / "summary.csv")
    assert list(summary["file"]) == [str(one), str(two)]
    assert summary["cells"][0] == len(read_table_csv(out / "img0_cells.csv")["label"])
    assert "summary of 2 images" in capsys.readouterr().out
    # a second run into the same folder is refused before any work: nothing replaced
    before = (out / "summary.csv").read_bytes()
    assert main(args) == 2 and (out / "summary.csv").read_bytes() == before
    assert "already exists" in capsys.readouterr().err
