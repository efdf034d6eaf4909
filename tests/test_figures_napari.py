"""The docs' screenshots (scripts/figures_napari.py) in quick mode: each figure docks the
real widget in a real napari window, runs it on the sample data and writes a window grab
that shows what its caption says."""

from __future__ import annotations

import gc
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "figures_napari.py"

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.gui, pytest.mark.slow]


@pytest.fixture(scope="module")
def figures():
    spec = importlib.util.spec_from_file_location("figures_napari_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(figures, name: str, tmp_path: Path) -> tuple[np.ndarray, dict]:
    from napari._qt.qt_viewer import QtViewer

    [path] = figures.FIGURES[name](tmp_path, quick=True)
    assert path == tmp_path / f"{name}.png" and path.is_file()
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        rgb = np.asarray(picture.convert("RGB"))
    height, width = rgb.shape[:2]
    assert 1000 <= width <= figures.MAX_WIDTH and 600 <= height <= 1100, rgb.shape
    # a real window: many colours and contrast, not a blank or black grab
    assert rgb.std() > 20
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 200
    # the viewer is closed and gone: later GUI tests start from a clean slate
    gc.collect()
    assert not QtViewer._instances
    return rgb, figures.FACTS[name]


def test_overview_shows_predicted_cells(figures, tmp_path):
    rgb, facts = _run(figures, "overview", tmp_path)
    assert facts["labels_layer"] == "synthetic nuclei cells"
    assert facts["labels_layer"] in facts["layers"]
    assert facts["cells"] > 10 and facts["status"].startswith(f"{facts['cells']} cells.")
    # the canvas is full of coloured cells: strongly saturated pixels
    saturation = rgb.max(axis=-1).astype(int) - rgb.min(axis=-1)
    assert np.mean(saturation > 80) > 0.05


def test_dock_predict_shows_the_tile_grid(figures, tmp_path):
    _, facts = _run(figures, "dock_predict", tmp_path)
    # 512 px with 380 px tiles (196 px output): 3 x 3 write regions + one read region
    assert facts["grid_rectangles"] == 3 * 3 + 1
    assert "synthetic nuclei tile grid" in facts["layers"] and facts["cells"] > 10


def test_dock_weightmap_shows_bright_ridges(figures, tmp_path):
    rgb, facts = _run(figures, "dock_weightmap", tmp_path)
    assert "synthetic nuclei ground truth weight map" in facts["layers"]
    assert facts["max_weight"] > 10  # w0 = 10 on the borders, plus the class weight
    # viridis' bright end (the ridges between touching cells) is on screen
    yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 180) & (rgb[..., 2] < 90)
    assert yellow.sum() > 2000


def test_dock_finetune_after_training(figures, tmp_path):
    _, facts = _run(figures, "dock_finetune", tmp_path)
    assert facts["loss_points"] == 8 and facts["ap_points"] >= 3
    assert facts["best_ap50"] is not None
    assert "saved to models/synthetic_nuclei_tuned.npz" in facts["status"]
    assert not any(tmp_path.glob("**/*.npz"))  # the model went to a temporary folder


def test_dock_annotate_mid_correction(figures, tmp_path):
    _, facts = _run(figures, "dock_annotate", tmp_path)
    assert "synthetic nuclei annotation" in facts["layers"]
    assert "synthetic nuclei annotation check" in facts["layers"]
    # one merged pair split, the missed cells (none with bundled v4) added at points
    assert facts["cells"] == facts["predicted_cells"] + 1 + facts["points"]
    assert "merged by prediction" in facts["summary"]


def test_measure_shows_the_histogram_and_the_features_table(figures, tmp_path):
    rgb, facts = _run(figures, "measure", tmp_path)
    assert facts["cells"] > 10 and facts["rows"] == facts["cells"]
    assert facts["columns"][:2] == ["index", "label"] and facts["histogram"] == "area_px"
    assert facts["highlighted"] == facts["bar_count"] > 0
    assert facts["summary"].startswith(f"{facts['cells']} cells in 'synthetic nuclei cells'")
    # the highlighted cells: bright yellow on the canvas
    yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 160) & (rgb[..., 2] < 80)
    assert yellow.sum() > 1000
