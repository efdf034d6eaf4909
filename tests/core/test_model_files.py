"""core.model_files: default model file names and the AP50 a model file records."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from napari_unet_cells.core.model_files import (
    default_model_folder,
    default_model_path,
    safe_stem,
    validation_ap50,
)

NOW = dt.datetime(2026, 12, 2, 9, 5, 7)


def test_default_model_path_is_new_and_counts_up(tmp_path):
    first = default_model_path(tmp_path, "cells gt", now=NOW)
    assert first == tmp_path / "cells_gt_unet_20261202-090507.npz" and not first.exists()
    first.write_bytes(b"")
    second = default_model_path(tmp_path, "cells gt", now=NOW)
    assert second == tmp_path / "cells_gt_unet_20261202-090507_1.npz"
    second.write_bytes(b"")
    assert default_model_path(tmp_path, "cells gt", now=NOW).name.endswith("_2.npz")
    assert not (tmp_path / "missing").exists()  # nothing is created
    assert default_model_path(tmp_path / "missing", "x", now=NOW).parent == tmp_path / "missing"


def test_safe_stem_and_default_folder(tmp_path, monkeypatch):
    assert safe_stem("a/b c:d.e-f_g") == "a_b_c_d_e-f_g"
    assert safe_stem("") == "model"
    assert default_model_folder(tmp_path / "img" / "cells.tif") == tmp_path / "img" / "models"
    # NAPARI_UNET_CELLS_HOME moves the models as it moves the annotations (tests set it)
    monkeypatch.setenv("NAPARI_UNET_CELLS_HOME", str(tmp_path / "home"))
    assert default_model_folder(None) == tmp_path / "home" / "models"
    monkeypatch.delenv("NAPARI_UNET_CELLS_HOME")
    assert default_model_folder(None) == Path.home() / "napari-unet-cells" / "models"


def test_validation_ap50_from_provenance():
    assert validation_ap50({"validation": {"ap50": 0.75, "loss": 0.1}}) == 0.75
    assert validation_ap50({"validation": None}) is None  # nothing was validated
    assert validation_ap50({}) is None and validation_ap50(None) is None
