"""Tiled inference: exactly equal to whole-image prediction, batched, OOM-safe, stoppable."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_unet_cells.core.checkpoint import CellModel, save_model
from napari_unet_cells.core.config import (
    InstanceConfig,
    ModelConfig,
    NormalizationConfig,
    PredictConfig,
)
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.normalize import normalize
from napari_unet_cells.core.predict import (
    PredictionResult,
    TorchPredictor,
    predict,
    predict_iter,
    predict_probabilities_iter,
    prepare_image,
    run,
)
from napari_unet_cells.core.registry import (
    register_model,
    registered_models,
    resolve_model,
    unregister_model,
)
from napari_unet_cells.core.unet import input_size_for_output


def _model(depth=2, base=4, seed=0, **kwargs):
    return CellModel.new(ModelConfig(base=base, depth=depth, dropout=0.0, **kwargs), seed=seed)


def _whole_image_probability(model: CellModel, image: np.ndarray) -> np.ndarray:
    """The reference: the whole (Y, X) image in one network call, mirrored with np.pad."""
    plane = normalize(image, model.normalization)
    depth, m = model.config.depth, model.net.context_margin
    pads = []
    for n in plane.shape:
        size = input_size_for_output(n, depth)
        pads.append((m, size - n - m))
    padded = np.pad(plane, pads, mode="reflect")
    with torch.no_grad():
        logits = model.net.eval()(torch.from_numpy(padded)[None, None])
    probs = torch.softmax(logits, dim=1)[0, 1].numpy()
    return probs[: image.shape[0], : image.shape[1]]


def _tiled(model, image, tile, batch_size=1, **kwargs):
    gen = predict_probabilities_iter(
        image, model, PredictConfig(device="cpu", tile=tile, batch_size=batch_size, **kwargs)
    )
    return run(gen)


@pytest.fixture(scope="module")
def tiny_model():
    return _model()


@pytest.mark.parametrize(
    "shape", [(1, 1), (2, 3), (9, 23), (44, 44), (45, 64), (63, 97), (130, 47), (121, 150)]
)
@pytest.mark.parametrize("tile", [44, 48, 52, 60, 77, 100, 1000])
def test_tiled_equals_whole_image(tiny_model, shape, tile):
    rng = np.random.default_rng(sum(shape) + tile)
    image = rng.gamma(2.0, 100.0, shape).astype(np.float32)
    expected = _whole_image_probability(tiny_model, image)
    got = _tiled(tiny_model, image, tile, batch_size=3)
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("depth", "shape", "tile"),
    [(1, (37, 29), 30), (3, (150, 101), 130), (3, (17, 200), 140), (4, (230, 260), 210)],
)
def test_tiled_equals_whole_image_other_depths(depth, shape, tile):
    # depth 3 and 4: tile outputs are 8k + 4 / 16k + 4 px, so tiles overlap by 4 px
    model = _model(depth=depth, base=2, seed=depth)
    image = np.random.default_rng(depth).random(shape).astype(np.float32)
    expected = _whole_image_probability(model, image)
    got = _tiled(model, image, tile, batch_size=2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_flip_tta_is_tileable_too(tiny_model):
    image = np.random.default_rng(5).random((50, 60)).astype(np.float32)
    whole = _tiled(tiny_model, image, 1000, tta=True)
    tiled = _tiled(tiny_model, image, 48, tta=True)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)
    assert not np.allclose(whole, _tiled(tiny_model, image, 1000))


def test_any_callable_predicts_batches_and_memory_is_preallocated(tiny_model):
    image = np.random.default_rng(1).random((100, 100)).astype(np.float32)
    calls = []
    real = TorchPredictor(tiny_model.net, "cpu")

    def fake(batch):
        calls.append(batch.shape)
        return real(batch)

    gen = predict_probabilities_iter(
        image, tiny_model, PredictConfig(tile=48, batch_size=4), predictor=fake
    )
    events = []
    probs = run(gen, events.append)
    n_tiles = events[-1].total
    assert [e.done for e in events] == list(range(1, n_tiles + 1))
    assert all(shape[0] <= 4 for shape in calls) and sum(s[0] for s in calls) == n_tiles
    assert len(calls) == -(-n_tiles // 4)
    np.testing.assert_allclose(probs, _whole_image_probability(tiny_model, image), atol=1e-5)


class _OomPredictor:
    """Raises CUDA-like out-of-memory for tiles larger than ``limit`` px."""

    def __init__(self, model, limit, on_cpu_ok=True):
        self.real = TorchPredictor(model.net, "cpu")
        self.device = torch.device("cpu")
        self.limit = limit
        self.on_cpu_ok = on_cpu_ok
        self.sizes = []
        self.released = 0

    def __call__(self, batch):
        self.sizes.append(batch.shape[-1])
        if batch.shape[-1] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.real(batch)

    def release(self):
        self.released += 1

    def on_cpu(self):
        return self.real if self.on_cpu_ok else None


def test_out_of_memory_halves_the_tile_and_result_is_identical(tiny_model):
    image = np.random.default_rng(2).random((2, 150, 140)).astype(np.float32)
    fake = _OomPredictor(tiny_model, limit=70)
    messages = []
    probs = run(
        predict_probabilities_iter(
            image, tiny_model, PredictConfig(tile=200, batch_size=2), predictor=fake
        ),
        lambda e: e.message and messages.append(e.message),
    )
    assert fake.sizes[0] > 70 and fake.sizes[-1] <= 70
    assert messages and "Out of memory" in messages[0] and fake.released >= 1
    for k in range(2):
        np.testing.assert_allclose(
            probs[k], _whole_image_probability(tiny_model, image[k]), atol=1e-5
        )


def test_out_of_memory_falls_back_to_cpu_then_gives_a_clear_error(tiny_model):
    image = np.random.default_rng(3).random((90, 90)).astype(np.float32)
    fake = _OomPredictor(tiny_model, limit=0)
    messages = []
    probs = run(
        predict_probabilities_iter(
            image, tiny_model, PredictConfig(tile=100, batch_size=1), predictor=fake
        ),
        lambda e: e.message and messages.append(e.message),
    )
    assert any("CPU" in m for m in messages)
    np.testing.assert_allclose(probs, _whole_image_probability(tiny_model, image), atol=1e-5)
    never = _OomPredictor(tiny_model, limit=0, on_cpu_ok=False)
    with pytest.raises(UNetCellsError, match="smallest tile"):
        run(
            predict_probabilities_iter(image, tiny_model, PredictConfig(tile=100), predictor=never)
        )


def test_stop_between_tiles_returns_nothing(tiny_model):
    image = np.random.default_rng(4).random((3, 120, 120)).astype(np.float32)
    stop = threading.Event()
    seen = []

    def on_event(event):
        seen.append(event.done)
        if event.done == 3:
            stop.set()

    gen = predict_iter(image, tiny_model, PredictConfig(device="cpu", tile=48), stop=stop)
    assert run(gen, on_event) is None
    assert seen[-1] == 3  # no tile after the stop request


def test_progress_per_tile_over_planes(tiny_model):
    image = np.random.default_rng(6).random((2, 60, 60)).astype(np.float32)
    events = []
    result = run(
        predict_iter(image, tiny_model, PredictConfig(device="cpu", tile=48)), events.append
    )
    assert isinstance(result, PredictionResult)
    assert {e.plane for e in events} == {0, 1} and events[-1].done == events[-1].total
    assert events[-1].fraction == 1.0


def test_stacks_rgb_dtypes_and_nan(tiny_model):
    rng = np.random.default_rng(7)
    plane = rng.integers(0, 4000, (50, 60)).astype(np.uint16)
    single = predict(plane, tiny_model, device="cpu", tile=52, return_probabilities=True)[1]
    # 3D stack and time series (T, Z, Y, X): plane by plane, same as each plane alone
    stack = np.stack([plane, plane[::-1]])
    _, probs = predict(stack, tiny_model, device="cpu", tile=52, return_probabilities=True)
    assert probs.shape == (2, 50, 60)
    np.testing.assert_allclose(probs[0], single, atol=1e-5)
    labels = predict(stack[None], tiny_model, device="cpu", tile=52)
    assert labels.shape == (1, 2, 50, 60) and labels.dtype == np.int32
    # RGB: mean of channels for a 1-channel model, or the chosen channel, with a message
    rgb = np.stack([plane, plane, plane], axis=-1)
    result = run(predict_iter(rgb, tiny_model, PredictConfig(device="cpu", tile=52)))
    assert "mean" in result.messages[0]
    np.testing.assert_allclose(result.probabilities, single, atol=1e-5)
    chosen = run(predict_iter(rgb, tiny_model, PredictConfig(device="cpu"), channel=1))
    assert "channel 1" in chosen.messages[0]
    # any dtype
    for dtype in (np.uint8, np.int16, np.float64, np.float16, bool):
        out = predict((plane % 200).astype(dtype), tiny_model, device="cpu")
        assert out.shape == plane.shape and out.dtype == np.int32
    # NaN / Inf replaced before the network
    bad = plane.astype(np.float32)
    bad[5:9, 5:9] = np.nan
    bad[0, 0] = np.inf
    _, probs = predict(bad, tiny_model, device="cpu", return_probabilities=True)
    assert np.isfinite(probs).all()


def test_input_errors(tiny_model):
    for bad in (np.zeros(5), np.zeros((0, 5)), np.zeros((4, 4), complex)):
        with pytest.raises(UNetCellsError):
            predict(bad, tiny_model, device="cpu")
    two = _model(in_channels=2)
    with pytest.raises(UNetCellsError, match="reads 2 channels"):
        predict(np.zeros((30, 30)), two, device="cpu")
    assert prepare_image(np.zeros((30, 30, 2)), 2).planes.shape == (1, 30, 30, 2)
    with pytest.raises(UNetCellsError, match="channel 5"):
        prepare_image(np.zeros((30, 30, 3)), 1, channel=5)
    with pytest.raises(UNetCellsError, match=r"channel 1 does not exist.*1 channel \(0\)"):
        prepare_image(np.zeros((30, 30)), 1, channel=1)  # a one-channel image
    assert prepare_image(np.zeros((30, 30)), 1, channel=0).planes.shape == (1, 30, 30, 1)


def test_models_bundled_files_and_session_registry(tiny_model, tmp_path, monkeypatch):
    import napari_unet_cells.core.registry as P

    monkeypatch.setattr(P, "bundled_model_path", lambda: None)  # a build without the file
    with pytest.raises(UNetCellsError, match="no bundled model"):
        resolve_model(None)
    monkeypatch.undo()
    path = save_model(tiny_model, tmp_path / "m.npz")
    loaded = resolve_model(path)
    image = np.random.default_rng(8).random((40, 40)).astype(np.float32)
    np.testing.assert_array_equal(
        predict(image, str(path), device="cpu"), predict(image, tiny_model, device="cpu")
    )
    assert isinstance(loaded, CellModel)
    register_model("session model", tiny_model)
    try:
        assert "session model" in registered_models()
        assert resolve_model("session model") is tiny_model
    finally:
        unregister_model("session model")
    assert "session model" not in registered_models()


def test_threshold_and_min_size_rerun_without_inference(tiny_model):
    from napari_unet_cells.core.instances import probabilities_to_labels

    image = np.random.default_rng(9).random((60, 60)).astype(np.float32)
    result = run(predict_iter(image, tiny_model, PredictConfig(device="cpu")))
    again = probabilities_to_labels(result.probabilities, InstanceConfig())
    np.testing.assert_array_equal(again, result.labels)


def test_normalization_params_apply_to_any_values_like_normalize():
    from napari_unet_cells.core.normalize import apply_normalization, normalization_params

    rng = np.random.default_rng(10)
    sample = rng.gamma(2.0, 300.0, (300, 200)).astype(np.float32)
    for config in (NormalizationConfig(p_low=2, p_high=99), NormalizationConfig(clip=True)):
        params = normalization_params(sample, config)
        np.testing.assert_array_equal(
            apply_normalization(sample, params), normalize(sample, config)
        )
        # the same mapping on a part of the plane (a dask chunk), clipped if configured
        part = sample[:50, :70]
        np.testing.assert_array_equal(
            apply_normalization(part, params), normalize(sample, config)[:50, :70]
        )
    constant = normalization_params(np.full((4, 4), 3.0), NormalizationConfig())
    assert constant.scale == 0.0
    assert not apply_normalization(np.arange(5.0), constant).any()


def test_predict_takes_every_instance_setting():
    # each setting overrides the model's recommendation; 0 switches the seeds off
    import dataclasses

    from napari_unet_cells.core.instances import instance_defaults, probabilities_to_labels
    from napari_unet_cells.core.registry import resolve_model
    from napari_unet_cells.core.synthetic import synthetic_cells

    model = resolve_model(None)
    image, _ = synthetic_cells((160, 160), seed=4)
    # at the image's own grid (diameter=None), so the probabilities are the labels' own
    labels, probs = predict(image, model, device="cpu", return_probabilities=True, diameter=None)
    defaults = instance_defaults(model)
    assert defaults.seed_threshold is not None
    np.testing.assert_array_equal(labels, probabilities_to_labels(probs, defaults))
    for given, field in (
        ({"seed_threshold": 0}, {"seed_threshold": None}),
        ({"seed_threshold": 0.97}, {"seed_threshold": 0.97}),
        ({"min_confidence": 0.7, "threshold": 0.6}, {"min_confidence": 0.7, "threshold": 0.6}),
    ):
        expected = probabilities_to_labels(probs, dataclasses.replace(defaults, **field))
        assert not np.array_equal(expected, labels)  # the setting matters here
        given = {**given, "diameter": None}
        np.testing.assert_array_equal(predict(image, model, device="cpu", **given), expected)


def test_session_models_are_capped_oldest_first(tiny_model, monkeypatch):
    import napari_unet_cells.core.registry as P

    monkeypatch.setattr(P, "MAX_SESSION_MODELS", 3)
    before = registered_models()
    names = [f"capped {i}" for i in range(5)]
    try:
        for name in names:
            register_model(name, tiny_model)
        register_model("capped 3", tiny_model)  # re-registering makes it the newest
        kept = [n for n in registered_models() if n.startswith("capped")]
        assert len(registered_models()) == 3
        assert kept[-1] == "capped 3" and "capped 0" not in kept and "capped 1" not in kept
        with pytest.raises(UNetCellsError, match="choose its model file"):
            resolve_model("capped 0")
    finally:
        for name in [*names, *before]:
            unregister_model(name)
        for name, model in before.items():
            register_model(name, model)


# --------------------------------------------------------------------------------------
# the one tile loop, shared by in-memory, chunked and validation prediction
# --------------------------------------------------------------------------------------


def test_predict_plane_region_with_real_context_equals_whole_image(tiny_model):
    from napari_unet_cells.core.predict import cell_score_weights, predict_plane
    from napari_unet_cells.core.tiling import dependency_reach

    image = np.random.default_rng(11).random((120, 130)).astype(np.float32)
    whole = _whole_image_probability(tiny_model, image)
    plane = normalize(image, tiny_model.normalization)
    reach = dependency_reach(tiny_model.config.depth)
    # a region on the pooling grid, with real context around it (cropped like validation)
    y0, y1, x0, x1 = 36, 80, 40, 100
    crop = plane[y0 - reach : y1 + reach, x0 - reach :]  # ends at the image's right edge
    core = (reach, reach + y1 - y0, reach, reach + x1 - x0)
    events = []
    done = run(
        predict_plane(
            TorchPredictor(tiny_model.net, "cpu"),
            crop,
            tiny_model.config,
            cell_score_weights(["background", "cell"]),
            tile=48,
            batch_size=2,
            core=core,
        ),
        events.append,
    )
    assert done.scores.shape == (y1 - y0, x1 - x0) and done.n_tiles == events[-1].total
    np.testing.assert_allclose(done.scores, whole[y0:y1, x0:x1], atol=1e-5)
    # a class index instead of weights, and the whole plane mirrored at its edges
    full = run(
        predict_plane(TorchPredictor(tiny_model.net, "cpu"), plane, tiny_model.config, 1, tile=60)
    )
    np.testing.assert_allclose(full.scores, whole, atol=1e-5)


def test_predict_plane_stops_between_batches_and_retries_out_of_memory(tiny_model):
    from napari_unet_cells.core.predict import predict_plane

    image = np.random.default_rng(12).random((150, 150)).astype(np.float32)
    plane = normalize(image, tiny_model.normalization)[..., None]
    stop = threading.Event()
    gen = predict_plane(
        TorchPredictor(tiny_model.net, "cpu"), plane, tiny_model.config, 1, tile=48, stop=stop
    )
    next(gen)
    stop.set()
    assert run(gen) is None
    fake = _OomPredictor(tiny_model, limit=70)
    messages = []
    done = run(
        predict_plane(fake, plane, tiny_model.config, 1, tile=200, batch_size=2),
        lambda e: e.message and messages.append(e.message),
    )
    assert done.tile <= 70 and done.predictor is fake and "Out of memory" in messages[0]
    np.testing.assert_allclose(done.scores, _whole_image_probability(tiny_model, image), atol=1e-5)


def test_torch_predictor_leaves_the_callers_network_alone(tiny_model):
    """The caller's network keeps its device, memory layout and mode (it used to be
    converted in place, and ``close()`` moved it to the CPU)."""
    net = _model(seed=3).net.train()
    before = [p.data_ptr() for p in net.parameters()]
    image = np.random.default_rng(13).random((1, 1, 60, 60)).astype(np.float32)
    predictor = TorchPredictor(net, "cpu", channels_last=True)
    first = predictor(image)
    predictor.close()
    assert net.training and predictor.owns_copy
    assert [p.data_ptr() for p in net.parameters()] == before
    assert all(p.is_contiguous() for p in net.parameters())  # not made channels-last
    np.testing.assert_array_equal(predictor(image), first)  # usable again after close
    shared = TorchPredictor(net, "cpu", channels_last=False)  # already fits: no copy
    assert not shared.owns_copy and shared.net is net
    shared.close()
    assert [p.data_ptr() for p in net.parameters()] == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_predictor_on_the_gpu_keeps_the_network_where_it_was(tiny_model):
    net = _model(seed=4).net
    image = np.random.default_rng(14).random((1, 1, 60, 60)).astype(np.float32)
    predictor = TorchPredictor(net, "cuda")
    predictor(image)
    predictor.close()
    assert all(p.device.type == "cpu" for p in net.parameters())
    net.to("cuda")
    predictor = TorchPredictor(net, "cuda", channels_last=False)
    predictor(image)
    cpu = predictor.on_cpu()
    predictor.close()
    assert all(p.device.type == "cuda" for p in net.parameters())  # not moved back
    assert cpu.device.type == "cpu" and cpu(image).shape == (1, 2, *cpu(image).shape[2:])


# --------------------------------------------------------------------------------------
# chunked (dask) prediction
# --------------------------------------------------------------------------------------


def test_cached_predictor_closes_the_one_it_replaces(monkeypatch):
    """A dask worker switching models used to drop the cached predictor without
    ``close()``, leaving its weights and cached memory on the GPU."""
    import napari_unet_cells.core.predict_large as PL

    made = []

    class Recording:
        def __init__(self, net, device="auto", tta=False):
            self.device, self.closed = torch.device("cpu"), 0
            made.append(self)

        def close(self):
            self.closed += 1

    monkeypatch.setattr(PL, "TorchPredictor", Recording)
    PL.release_cached_predictors()
    first, second = _model(seed=1), _model(seed=2)
    config = PredictConfig(device="cpu")
    PL._cached_predictor(first, config)
    PL._cached_predictor(first, config)  # reused, not replaced
    assert len(made) == 1 and made[0].closed == 0
    PL._cached_predictor(second, config)
    assert len(made) == 2 and made[0].closed == 1 and made[1].closed == 0
    PL.release_cached_predictors()
    assert made[1].closed == 1


def test_chunked_prediction_retries_out_of_memory_and_normalises_like_memory(monkeypatch):
    """The dask path gets the tile loop's out-of-memory retry (it had none) and applies
    the model's normalisation itself, clipping included (it used to skip ``clip``)."""
    import dataclasses

    import dask
    import dask.array as da

    import napari_unet_cells.core.predict_large as PL

    clipped = NormalizationConfig(p_low=5, p_high=90, clip=True)
    model = dataclasses.replace(_model(seed=5), normalization=clipped)
    image = np.random.default_rng(15).gamma(2.0, 100.0, (150, 170)).astype(np.float32)
    expected = _tiled(model, image, 1000)
    sizes = []

    class OutOfMemoryAbove70(TorchPredictor):
        def __call__(self, batch):
            sizes.append(batch.shape[-1])
            if batch.shape[-1] > 70:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
            return super().__call__(batch)

    monkeypatch.setattr(PL, "TorchPredictor", OutOfMemoryAbove70)
    PL.release_cached_predictors()
    lazy = PL.predict_probabilities_dask(
        da.from_array(image, chunks=64), model, PredictConfig(device="cpu", tile=200), chunk=64
    )
    with dask.config.set(scheduler="synchronous"):
        got = lazy.compute()
    PL.release_cached_predictors()
    assert max(sizes) > 70 and sizes[-1] <= 70
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_describe_layout_says_the_mean_only_for_rgb():
    from napari_unet_cells.core.inputs import describe_layout

    assert describe_layout((2, 96, 96), 0, None) == "1 plane of 96x96, all 2 channels"
    assert describe_layout((2, 96, 96), 0, 1) == "1 plane of 96x96, channel 1 of 2"
    assert (
        describe_layout((96, 96, 3), -1, None) == "1 plane of 96x96, the mean of the channels of 3"
    )
