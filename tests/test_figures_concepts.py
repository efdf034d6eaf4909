"""The concept figures (scripts/figures_concepts.py) render, and draw the library's numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "figures_concepts.py"


@pytest.fixture(scope="module")
def figures():
    spec = importlib.util.spec_from_file_location("figures_concepts_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.slow
def test_every_concept_figure_renders_a_real_picture(figures, tmp_path, one_torch_thread):
    from PIL import Image

    assert set(figures.FIGURES) == {
        "concept_architecture",
        "concept_tile_sizes",
        "concept_overlap_tile",
        "concept_weight_map",
        "concept_elastic",
        "concept_separation",
    }
    written = []
    for name, make in figures.FIGURES.items():
        paths = make(tmp_path / name, quick=True)
        assert paths, name
        for path in paths:
            path = Path(path)
            assert path.parent == tmp_path / name and path.name.startswith("concept_")
            with Image.open(path) as picture:
                assert picture.format == "PNG"
                width, height = picture.size
                pixels = np.asarray(picture.convert("L"), dtype=np.float32)
            assert 600 <= width <= 1400 and 300 <= height <= 1400, (path.name, picture.size)
            assert pixels.std() > 20, f"{path.name} looks blank (std {pixels.std():.1f})"
            written.append(path.name)
    assert len(written) == len(set(written)), "two figures wrote the same file"


def test_architecture_sizes_come_from_the_network(figures):
    """The diagram's numbers are recorded from core.unet.UNet and agree with its arithmetic."""
    from napari_unet_cells.core.config import ModelConfig
    from napari_unet_cells.core.unet import context_margin, output_size

    maps = figures.unet_feature_maps(ModelConfig(), 572)
    assert maps[0].size == 572 and maps[-1].size == 388 == output_size(572, 4)
    assert maps[-1].kind == "head" and maps[-1].channels == 2
    assert len([m for m in maps if m.kind != "input"]) == 23  # convolution layers
    down = {m.level: m for m in maps if m.path == "down" and m.name.endswith(".2")}
    assert [down[level].channels for level in range(5)] == [64, 128, 256, 512, 1024]
    assert [down[level].size for level in range(5)] == [568, 280, 136, 64, 28]
    ups = [m for m in maps if m.kind == "upconv"]
    assert [(m.level, m.size) for m in ups] == [(3, 56), (2, 104), (1, 200), (0, 392)]
    concat = [m.concat for m in maps if m.concat]
    assert concat == [1024, 512, 256, 128]  # skip + up-convolved channels
    assert (maps[0].size - maps[-1].size) // 2 == context_margin(4) == 92

    # another configuration: the numbers follow the code, not a table
    small = figures.unet_feature_maps(ModelConfig(base=16, depth=3), 300)
    assert small[-1].size == output_size(300, 3) == 300 - 2 * context_margin(3)
    assert max(m.channels for m in small) == 16 * 2**3


def test_naive_blocks_differ_from_overlap_tile(figures, one_torch_thread):
    """The comparison in concept_overlap_tile is honest: overlap-tile equals the whole-image
    prediction; predicting each output region on its own does not."""
    from napari_unet_cells.core.config import ModelConfig, PredictConfig
    from napari_unet_cells.core.normalize import normalize
    from napari_unet_cells.core.predict import TorchPredictor, predict_probabilities_iter
    from napari_unet_cells.core.progress import run
    from napari_unet_cells.core.synthetic import synthetic_cells
    from napari_unet_cells.core.tiling import plan_tiles
    from napari_unet_cells.core.unet import UNet

    net = UNet(ModelConfig(base=4, depth=2, dropout=0.0))
    image, _ = synthetic_cells((96, 96), seed=2)
    whole = run(predict_probabilities_iter(image, net, PredictConfig(device="cpu", tile=512)))
    grid = plan_tiles(image.shape, 60, 2)
    assert len(grid) > 1
    tiled = run(predict_probabilities_iter(image, net, PredictConfig(device="cpu", tile=60)))
    plane = normalize(image)[..., None]
    naive = figures.naive_blocks_probability(plane, grid, TorchPredictor(net, "cpu"), 1)
    assert np.abs(tiled - whole).max() < 1e-5
    assert np.abs(naive - whole).max() > 1e-3
