"""The boundary-aware variant (background / cell / boundary), scale augmentation, and the
synthetic looks aimed at what fails on real images."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_cells.core.augment import AugmentParams, augment_batch, draw_params
from napari_unet_cells.core.checkpoint import CellModel, load_model, save_model
from napari_unet_cells.core.config import AugmentConfig, ModelConfig, TrainConfig
from napari_unet_cells.core.data import class_target
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.normalize import normalize
from napari_unet_cells.core.predict import cell_score_weights, predict
from napari_unet_cells.core.synthetic import SyntheticConfig, random_config, synthetic_cells
from napari_unet_cells.core.train import finetune


def test_three_class_target_marks_outlines_and_seams_as_boundary():
    labels = np.zeros((12, 16), np.int32)
    labels[2:10, 2:8] = 1
    labels[2:10, 8:14] = 2  # touching along x = 7|8
    target = class_target(labels, 3)
    assert set(np.unique(target)) == {0, 1, 2}
    assert (target[labels == 0] == 0).all()
    assert (target[2:10, 7] == 2).all() and (target[2:10, 8] == 2).all()  # the seam
    assert (target[2, 2:14] == 2).all()  # the outer outline
    assert (target[3:9, 3:7] == 1).all() and (target[3:9, 9:13] == 1).all()
    two = class_target(labels, 2)
    assert set(np.unique(two)) == {0, 1} and (two[2:10, 7] == 0).all()
    with pytest.raises(UNetCellsError, match="2 classes"):
        class_target(labels, 4)


def test_cell_score_weights_by_class_names():
    two = CellModel.new(ModelConfig(base=4, depth=2))
    three = CellModel.new(ModelConfig(base=4, depth=2, n_classes=3))
    assert three.classes == ("background", "cell", "boundary")
    assert cell_score_weights(two).tolist() == [0.0, 1.0]
    assert cell_score_weights(three).tolist() == [0.0, 1.0, 0.5]


def test_a_three_class_model_trains_saves_loads_and_predicts(tmp_path):
    image, labels = synthetic_cells((96, 96), seed=2)
    start = ModelConfig(base=4, depth=2, dropout=0.0, n_classes=3)
    model = finetune(image, labels, model=start, steps=3, config=TrainConfig(validate_every=2))
    assert model.config.n_classes == 3 and model.classes[-1] == "boundary"
    path = save_model(model, tmp_path / "three.npz")
    again = load_model(path)
    labels_out, scores = predict(
        image, again, device="cpu", return_probabilities=True, diameter=None
    )
    assert labels_out.shape == scores.shape == image.shape
    assert 0.0 <= scores.min() and scores.max() <= 1.0
    assert np.isfinite(model.provenance["validation"]["loss"])


def test_zoom_augmentation_scales_cells_and_is_off_by_default():
    assert all(p.zoom == 1.0 for p in draw_params(np.random.default_rng(0), AugmentConfig(), 8))
    zooms = [p.zoom for p in draw_params(np.random.default_rng(0), AugmentConfig(scale=0.5), 64)]
    assert 1 / 1.5 - 1e-6 <= min(zooms) < 0.8 and 1.25 < max(zooms) <= 1.5 + 1e-6
    size = 65
    yy, xx = np.mgrid[:size, :size]
    disk = ((yy - 32) ** 2 + (xx - 32) ** 2 <= 10**2).astype(np.float32)
    image, target = disk[None], disk[None].astype(np.int64)
    weight = np.ones_like(image)
    still = np.zeros((2, 3, 3), np.float32)
    for zoom in (0.7, 1.4):
        params = [AugmentParams(displacement=still, zoom=zoom)]
        out = augment_batch(params, image, weight, target)
        area = float(out.target.sum())
        assert area == pytest.approx(disk.sum() * zoom**2, rel=0.08)
    with pytest.raises(UNetCellsError, match="scale"):
        AugmentConfig(scale=2.0)


def test_synthetic_stress_looks():
    config = SyntheticConfig(
        outlier_fraction=0.1,
        edge_softness=(0.3, 0.5),
        nucleoli=2.0,
        chromocenters=3.0,
        dtype="uint16_8bit",
    )
    image, labels = synthetic_cells((192, 192), seed=3, config=config)
    assert image.dtype == np.uint16 and image.max() <= 255
    # saturated outliers: percentile normalisation leaves the typical nucleus dim
    typical = np.median(normalize(image)[labels > 0])
    assert typical < 0.5
    # a default config draws exactly what it drew before these options existed
    a, _ = synthetic_cells((64, 64), seed=9)
    b, _ = synthetic_cells((64, 64), seed=9, config=SyntheticConfig())
    assert np.array_equal(a, b)
    looks = [random_config(np.random.default_rng(s), diameter=(13, 30)) for s in range(20)]
    assert all(13 / 1.25 - 1e-6 <= c.diameter[0] and c.diameter[1] <= 30 * 1.25 for c in looks)
    assert any(c.outlier_fraction > 0 for c in looks) and any(c.nucleoli > 0 for c in looks)
