from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tifffile

from napari_unet_cells.cli import main
from napari_unet_cells.core.checkpoint import CellModel, save_model


def test_synthetic_writes_image_and_labels(tmp_path, capsys):
    assert (
        main(["synthetic", str(tmp_path / "cells.tif"), "--size", "64", "96", "--seed", "3"]) == 0
    )
    image = tifffile.imread(tmp_path / "cells.tif")
    labels = tifffile.imread(tmp_path / "cells_labels.tif")
    assert image.shape == labels.shape == (64, 96) and labels.max() > 0
    assert "cells" in capsys.readouterr().out


def test_info_prints_the_header(tmp_path, capsys, tiny_config):
    save_model(CellModel.new(tiny_config, provenance={"steps": 7}), tmp_path / "m.npz")
    assert main(["info", str(tmp_path / "m.npz"), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"steps": 7' in out and '"base": 4' in out
    assert main(["info", str(tmp_path / "m.npz")]) == 0  # the readable summary
    out = capsys.readouterr().out
    assert "base 4, depth 2" in out and "device:     auto -> " in out
    assert "precision:  fp32" in out  # the tests run in fp32 (tests/conftest.py)


def test_info_on_a_fine_tuned_model_without_validation(tmp_path, capsys, tiny_config):
    provenance = {
        "saved": "2026-11-26T07:00:00+00:00",
        "trained_from": "nuclei_unet.npz",
        "training": {"data": [{"name": "a.tif", "cells": 12}, {"name": "b.tif", "cells": 30}]},
        "validation": None,  # small images: nothing was validated
    }
    save_model(CellModel.new(tiny_config, provenance=provenance), tmp_path / "m.npz")
    assert main(["info", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "2 image(s), 42 cells (a.tif, b.tif)" in out and "validation:" not in out


def test_info_without_a_model_describes_the_bundled_one(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "nuclei_unet.npz (bundled)" in out and "1,940,851 parameters" in out
    assert "threshold 0.4, seeds at 0.85" in out and "nuclei of 20 px" in out
    assert "classes background, cell, boundary" in out


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    assert main(["synthetic", str(tmp_path / "no" / "x.tif")]) == 2
    assert not (tmp_path / "no").exists()


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("unet-cells")
    out = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "synthetic" in out and "demo" in out and "info" in out


def test_synthetic_never_overwrites(tmp_path, capsys):
    target = tmp_path / "cells.tif"
    target.write_bytes(b"precious")
    assert main(["synthetic", str(target), "--size", "32", "32"]) == 2
    assert target.read_bytes() == b"precious"
    assert not (tmp_path / "cells_labels.tif").exists()
    assert "already exist" in capsys.readouterr().err


def test_cli_import_stays_light_and_help_states_the_rules():
    """The cli package (issue 13) imports each subcommand's module at start; they import
    torch, napari and tifffile only when a command runs, so `unet-cells --help` is quick."""
    code = (
        "import sys, napari_unet_cells.cli as c; c.build_parser(); "
        "print(sorted(m for m in ('torch', 'napari', 'qtpy', 'tifffile') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    from napari_unet_cells.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    predict = sub["predict"].format_help()
    assert "never overwritten" in predict and "NAME_cells.tif" in predict
    assert "--diameter auto" in predict
