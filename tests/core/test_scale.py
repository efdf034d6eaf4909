"""Cell size: diameter parsing and estimation, resampling, labels back on the input grid."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet_cells.core.checkpoint import CellModel, load_model
from napari_unet_cells.core.config import ModelConfig, PredictConfig
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.instances import probabilities_to_labels
from napari_unet_cells.core.metrics import match
from napari_unet_cells.core.predict import predict, predict_iter, run
from napari_unet_cells.core.registry import bundled_model_path
from napari_unet_cells.core.scale import (
    factor_for,
    labels_to_shape,
    parse_diameter,
    resize_plane,
    typical_diameter,
)
from napari_unet_cells.core.synthetic import SyntheticConfig, synthetic_cells


def _disks(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for index, (y, x) in enumerate(centres, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = index
    return labels


def test_parse_diameter_accepts_auto_numbers_and_none_and_explains_the_rest():
    assert parse_diameter("auto") == "auto"
    assert parse_diameter(" AUTO ") == "auto"
    assert parse_diameter("30") == 30.0
    assert parse_diameter(12) == 12.0
    for off in (None, 0, "0", "none", ""):
        assert parse_diameter(off) is None
    for bad in ("big", -3, float("nan")):
        with pytest.raises(UNetCellsError, match="diameter"):
            parse_diameter(bad)


def test_factor_is_one_within_tolerance_and_clipped_far_outside():
    assert factor_for(18.0, 20.0) == 1.0
    assert factor_for(24.0, 20.0) == 1.0
    assert factor_for(14.0, 20.0) == 1.0  # enlarging has the wider tolerance
    assert factor_for(26.5, 20.0) == pytest.approx(20 / 26.5)
    assert factor_for(40.0, 20.0) == pytest.approx(0.5)
    assert factor_for(10.0, 20.0) == pytest.approx(2.0)
    assert factor_for(1000.0, 20.0) == pytest.approx(1 / 8)


def test_typical_diameter_measures_disks_and_ignores_cut_ones():
    centres = [(40, 40), (40, 120), (120, 40), (120, 120), (0, 80)]  # the last is cut
    labels = _disks((160, 160), centres, 15)
    assert typical_diameter(labels) == pytest.approx(30.0, rel=0.04)
    assert typical_diameter(np.zeros((20, 20), np.int32)) is None


@pytest.mark.parametrize("factor", [1 / 3, 0.5, 2.0, 2.5])
def test_labels_to_shape_keeps_every_cell_once(factor):
    _, labels = synthetic_cells((120, 120), seed=4, config=SyntheticConfig(diameter=(6, 14)))
    shape = (round(120 * factor), round(120 * factor))
    out = labels_to_shape(labels, shape)
    assert out.shape == shape and out.dtype == np.int32
    n = int(labels.max())
    assert np.array_equal(np.unique(out), np.arange(n + 1))  # none lost, sequential
    back = labels_to_shape(out, labels.shape)
    [m] = match(labels, back, 0.5)
    assert m.ap > (0.9 if factor > 1 else 0.6)


def test_probabilities_to_labels_maps_back_onto_the_given_grid():
    labels = _disks((100, 100), [(30, 30), (30, 70), (70, 50)], 12)
    big = ndi.zoom(labels, 2, order=0)
    probs = (big > 0).astype(np.float32)
    out = probabilities_to_labels(probs, shape=(100, 100))
    assert out.shape == (100, 100) and out.max() == 3
    [m] = match(labels, out, 0.75)
    assert m.tp == 3


def test_resize_plane_keeps_channels_and_values():
    plane = np.random.default_rng(0).random((40, 60, 2)).astype(np.float32)
    out = resize_plane(plane, (80, 120))
    assert out.shape == (80, 120, 2) and out.dtype == np.float32
    assert abs(out.mean() - plane.mean()) < 0.01


def test_resize_plane_enlarges_cubic_and_shrinks_bilinear_unless_told():
    from skimage.transform import resize

    plane = np.random.default_rng(1).random((30, 30)).astype(np.float32)
    cubic = resize(plane, (75, 75), order=3, preserve_range=True)
    np.testing.assert_allclose(resize_plane(plane, (75, 75)), cubic, atol=1e-6)
    linear = resize(plane, (75, 75), order=1, preserve_range=True)
    np.testing.assert_allclose(resize_plane(plane, (75, 75), order=1), linear, atol=1e-6)
    assert not np.allclose(cubic, linear, atol=1e-3)
    small = resize(plane, (12, 12), order=1, anti_aliasing=True, preserve_range=True)
    np.testing.assert_allclose(resize_plane(plane, (12, 12)), small, atol=1e-6)


def test_probabilities_come_back_on_the_input_grid_within_zero_and_one():
    from napari_unet_cells.core.predict import probabilities_on_image_grid

    model = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0))
    model.extra["diameter"] = 20.0
    image, _ = synthetic_cells((64, 64), seed=3, config=SyntheticConfig(diameter=(8, 10)))
    result = run(predict_iter(image, model, PredictConfig(device="cpu"), diameter=9.0))
    assert result.scale.factor > 1
    probs = probabilities_on_image_grid(result)
    assert probs.shape == image.shape and 0.0 <= probs.min() and probs.max() <= 1.0


def test_models_without_a_diameter_are_never_resampled():
    model = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0))
    image, _ = synthetic_cells((64, 64), seed=1)
    result = run(predict_iter(image, model, PredictConfig(device="cpu"), diameter=80))
    assert result.scale.factor == 1.0 and result.labels.shape == image.shape


def test_a_given_diameter_resamples_and_labels_come_back_on_the_input_grid():
    model = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0))
    model.extra["diameter"] = 20.0
    image, _ = synthetic_cells((90, 70), seed=1)
    result = run(predict_iter(image, model, PredictConfig(device="cpu"), diameter=40))
    assert result.scale.factor == pytest.approx(0.5)
    assert result.probabilities.shape == (45, 35)
    assert result.labels.shape == (90, 70)
    assert "resampled x0.50" in result.messages[0]
    labels, probs = predict(image, model, device="cpu", diameter=40, return_probabilities=True)
    assert probs.shape == labels.shape == (90, 70)


@pytest.fixture(scope="module")
def sized_model():
    """The bundled model, with a recorded diameter (older model files have none)."""
    model = load_model(bundled_model_path())
    model.extra.setdefault("diameter", 18.0)
    return model


def test_the_same_cells_on_an_image_enlarged_2x_and_3x(sized_model):
    """Tolerance: AP50 >= 0.75 against the truth at every scale, and the 2x/3x labels,
    brought back to the 1x grid, match the 1x labels with AP50 >= 0.7."""
    image, truth = synthetic_cells((192, 192), seed=31, config=SyntheticConfig(coverage=0.4))
    base = predict(image, sized_model, device="cpu")
    for zoom in (2, 3):
        big = ndi.zoom(image.astype(np.float32), zoom, order=1)
        big_truth = ndi.zoom(truth, zoom, order=0)
        labels = predict(big, sized_model, device="cpu")
        assert labels.shape == big.shape
        [m] = match(big_truth, labels, 0.5)
        assert m.ap >= 0.75, (zoom, m)
        [same] = match(base, labels_to_shape(labels, image.shape), 0.5)
        assert same.ap >= 0.7, (zoom, same)
    [m] = match(truth, base, 0.5)
    assert m.ap >= 0.75, m


def test_auto_estimates_the_diameter_near_the_truth(sized_model):
    image, truth = synthetic_cells((256, 256), seed=5, config=SyntheticConfig(diameter=(36, 50)))
    result = run(predict_iter(image, sized_model, PredictConfig(device="cpu")))
    true_diameter = typical_diameter(truth)
    assert result.scale.estimated
    assert result.scale.diameter == pytest.approx(true_diameter, rel=0.3)
    assert result.scale.factor < 1.0
    assert "Estimated cell diameter" in result.messages[0]


@pytest.mark.parametrize("seed", [0, 2])
def test_auto_diameter_of_an_enlarged_blurry_image(sized_model, seed):
    """An ordinary image enlarged 3x (nuclei ~45 px, blur and noise enlarged with them):
    at its own scale the network finds ~15 px fragments of texture, which the estimate
    used to take for cells (4-16 px measured, AP50 0.17 on the rescaled_3x set); the
    shrunk probes find whole nuclei, and the estimate is near the truth."""
    from napari_unet_cells.core.scale import resize_plane

    image, labels = synthetic_cells((160, 160), seed=seed)
    big = resize_plane(image.astype(np.float32), (480, 480), order=1)
    truth = typical_diameter(labels_to_shape(labels, (480, 480)))
    result = run(predict_iter(big, sized_model, PredictConfig(device="cpu")))
    assert result.scale.diameter == pytest.approx(truth, rel=0.25)
    [m] = match(labels_to_shape(labels, (480, 480)), result.labels, 0.5)
    # 32 cells, one cell ~0.03 AP50: v3 0.82 / 0.94, v4 0.77 / 0.97, v5 0.74 / 1.0 (seeds
    # 0 / 2); the rescaled_3x stress set (16 images of 512 px, v4 and v5 0.954) is the
    # quality measure. The failure this guards against scored 0.17.
    assert m.ap >= 0.7, m


def test_finetuning_resamples_cells_to_the_models_size_and_records_it():
    from napari_unet_cells.core.train import finetune

    start = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0))
    start.extra["diameter"] = 12.0
    image, labels = synthetic_cells((96, 96), seed=2, config=SyntheticConfig(diameter=(20, 28)))
    model = finetune(image, labels, model=start, steps=2)
    note = model.provenance["data_scale"]
    assert note["labels_diameter_px"] == pytest.approx(typical_diameter(labels), abs=0.01)
    assert note["factor"] == pytest.approx(12.0 / note["labels_diameter_px"], rel=1e-3)
    assert model.extra["diameter"] == 12.0
    assert model.provenance["training"]["steps"] == 2


def test_an_empty_field_of_camera_noise_gives_no_cells_and_says_so(sized_model):
    from napari_unet_cells.core.normalize import signal_to_noise

    rng = np.random.default_rng(0)
    noise = rng.poisson(100, (256, 256)).astype(np.uint16)
    assert signal_to_noise(noise) < 5
    result = run(predict_iter(noise, sized_model, PredictConfig(device="cpu")))
    assert result.labels.max() == 0
    assert any("almost no signal" in m for m in result.messages)
    image, _ = synthetic_cells((128, 128), seed=3)
    assert signal_to_noise(image) > 20
    stack = np.stack([image, noise[:128, :128].astype(image.dtype)])
    labels = predict(stack, sized_model, device="cpu")
    assert labels[0].max() > 5 and labels[1].max() == 0


def test_a_cell_size_far_outside_the_models_range_is_reported():
    from napari_unet_cells.core.diameter import _estimated_choice

    far = _estimated_choice(1 / 8, 400.0, 20.0)
    assert far.factor == 1 / 8 and "outside what this model covers" in far.message
    near = _estimated_choice(1.0, 19.0, 20.0)
    assert near.factor == 1.0 and "Estimated cell diameter 19 px" in near.message


def test_a_smooth_background_without_cells_gives_almost_no_cells():
    """Issue 16.7: a smooth, noisy background (no cells, signal/noise above 5) with the
    bundled model and default settings; v1 gave 98 cells on such a field."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:384, :384]
    smooth = 100 + 60 * np.exp(-((yy - 150) ** 2 + (xx - 220) ** 2) / (2 * 110**2))
    smooth = smooth + 30 * np.sin(xx / 60.0)
    image = rng.poisson(smooth).astype(np.uint16)
    labels = predict(image, None, device="cpu")
    assert labels.max() <= 10


def test_the_estimate_keeps_the_pass_before_when_enlarging_splits_nuclei():
    """A network that finds ~12 px objects whatever the scale (texture, not nuclei): the
    enlarged pass measures them smaller in image px, and used to be enlarged again and
    again (a 20 px model, 5.6 px "measured", 22228 objects on a low-contrast image of
    324 nuclei). The estimate keeps the pass at the image's own scale."""
    from napari_unet_cells.core.config import InstanceConfig
    from napari_unet_cells.core.diameter import estimate_diameter
    from napari_unet_cells.core.predictor import TorchPredictor

    model = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0))
    model.extra["diameter"] = 20.0
    shape_of = TorchPredictor(model.net, "cpu")
    seen = []

    def texture(batch):
        out = shape_of(batch)
        yy, xx = np.mgrid[: out.shape[2], : out.shape[3]]
        blobs = (yy % 16 - 8) ** 2 + (xx % 16 - 8) ** 2 <= 6**2
        out[:, 1] = blobs
        out[:, 0] = ~blobs
        seen.append(batch.shape[-1])
        return out

    plane = np.random.default_rng(0).random((300, 300)).astype(np.float32)
    choice, scores, labels = estimate_diameter(plane, model, texture, InstanceConfig())
    assert choice.factor == 1.0
    assert choice.diameter == pytest.approx(typical_diameter(labels), rel=0.01)
    assert 10 < choice.diameter < 14
    assert scores.shape == labels.shape == plane.shape
    assert max(seen) < 3 * 300  # one enlarged pass at most, not a runaway
