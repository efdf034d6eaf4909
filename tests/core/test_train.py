from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_unet_cells.core import train as T
from napari_unet_cells.core.checkpoint import CellModel, load_model, save_model
from napari_unet_cells.core.config import ModelConfig, TrainConfig
from napari_unet_cells.core.data import as_samples
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.synthetic import synthetic_cells

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def samples():
    image, labels = synthetic_cells((80, 112), seed=3)
    return as_samples(image, labels)


def _fast(**kw):
    base = dict(steps=4, batch_size=2, validate_every=2, warmup_steps=2)
    return TrainConfig(**{**base, **kw})


#: choose the best validated step and stop early whatever the number of validation
#: cells, and no weight averaging (the behaviour before 2026-12-02)
_CHOOSE_BEST = dict(min_val_cells=0, average_from=None)


def _weights(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_same_seed_same_weights_and_global_rng_untouched(samples):
    config = ModelConfig(base=4, depth=2, dropout=0.3)  # dropout draws random masks too
    rng_before = torch.random.get_rng_state()
    a = T.run(T.train_iter(samples, config, _fast(seed=1), device="cpu")).model
    b = T.run(T.train_iter(samples, config, _fast(seed=1), device="cpu")).model
    c = T.run(T.train_iter(samples, config, _fast(seed=2), device="cpu")).model
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    wa, wb, wc = _weights(a.net), _weights(b.net), _weights(c.net)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert isinstance(a.net.dropout, torch.nn.Dropout)  # the plain layer is back


def test_events_provenance_and_the_callers_model_is_untouched(samples, tiny_config, tmp_path):
    start = CellModel.new(tiny_config, seed=5, extra={"instances": {"threshold": 0.4}})
    before = _weights(start.net)
    # min_val_cells=0: the post-processing is chosen even on this image's few cells
    config = _fast(min_val_cells=0)
    events = list(_drain(T.train_iter(samples, start, config, device="cpu")))
    kinds = [e.kind for e in events]
    # the start model's validation (step 0); the last: the weights averaged over steps 2-4
    assert kinds == [
        "start", "tuning", "tuning", "validation", "step", "step", "validation", "step",
        "step", "validation", "validation", "tuning", "done",
    ]  # fmt: skip
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == [1, 2, 3, 4]
    assert all(np.isfinite(e.loss) and e.lr > 0 for e in steps)
    assert steps[0].lr < steps[1].lr  # warm-up
    assert events[-1].progress == 1.0 and 0 < steps[1].progress < 1
    val = [e.metrics for e in events if e.kind == "validation"]
    assert all({"loss", "ap50", "fg_iou"} <= set(m) for m in val)
    result = events[-1].result
    assert all(torch.equal(before[k], v) for k, v in _weights(start.net).items())
    model = result.model
    assert next(model.net.parameters()).device.type == "cpu" and not model.net.training
    assert start.extra == {"instances": {"threshold": 0.4}}  # the caller's, untouched
    prov = model.provenance
    # the post-processing chosen on the validation data, starting from the model's own
    tuning = prov["instance_tuning"]
    assert model.extra["instances"] == tuning["chosen"]
    assert tuning["ap50"] >= tuning["ap50_before"]
    if tuning["ap50"] == tuning["ap50_before"]:
        assert tuning["chosen"]["threshold"] == 0.4  # nothing better: the model's kept
    assert prov["trained_from"] == "a model in memory"
    assert prov["training"]["steps"] == 4 and prov["training"]["stopped_by"] == "steps"
    assert prov["training"]["config"]["batch_size"] == 2
    assert prov["training"]["data"][0]["shape"] == [80, 112]
    assert prov["validation"]["ap50"] == result.best_metrics["ap50"]
    path = save_model(model, tmp_path / "m.npz")
    loaded = load_model(path)
    assert loaded.provenance["training"]["best_step"] == result.best_step
    assert all(torch.equal(loaded.net.state_dict()[k], v) for k, v in _weights(model.net).items())


def _drain(gen):
    yield from gen


def test_stop_request_returns_the_best_model_so_far(samples, tiny_config, monkeypatch):
    seen = {}
    scores = iter([0.1, 0.2, 0.6, 0.3])  # step 0 (the start model), 2, 4, 5

    def fake_validate(net, regions, device, **kw):
        ap = next(scores)
        seen[ap] = _weights(net)
        return {"loss": 1.0 - ap, "ap50": ap, "fg_iou": ap, "n_true": 1.0, "n_pred": 1.0}

    monkeypatch.setattr(T, "validate", fake_validate)
    stop = threading.Event()
    config = _fast(steps=100, validate_every=2, **_CHOOSE_BEST)
    gen = T.train_iter(samples, tiny_config, config, stop=stop)
    for ev in gen:
        if ev.kind == "step" and ev.step == 5:
            stop.set()  # the user presses Stop after step 5
        if ev.kind == "done":
            result = ev.result
    # validations at steps 0, 2 and 4, a last one at step 5; the best (0.6) was at step 4
    assert result.stopped_by == "user" and result.steps == 5
    assert result.best_step == 4 and result.best_metrics["ap50"] == 0.6
    assert all(torch.equal(seen[0.6][k], v) for k, v in _weights(result.model.net).items())
    # no tuning after a Stop; the model keeps the settings validation used (chosen before)
    assert result.model.provenance["instance_tuning"] is None
    assert set(result.model.extra["instances"]) >= {"threshold", "seed_threshold", "min_size"}


def test_early_stopping_after_patience(samples, tiny_config, monkeypatch):
    scores = iter([0.3, 0.5, 0.4, 0.3, 0.2, 0.1])  # step 0 (the start model), 1, 2, ...
    monkeypatch.setattr(
        T,
        "validate",
        lambda *a, **k: {"loss": 1.0, "ap50": next(scores), "fg_iou": 0.0},
    )
    result = T.run(
        T.train_iter(
            samples, tiny_config, _fast(steps=50, validate_every=1, patience=2, **_CHOOSE_BEST)
        )
    )
    assert result.stopped_by == "early_stopping" and result.steps == 3
    assert result.best_step == 1 and len(result.history) == 4


def _record_weights(monkeypatch):
    """Patch the optimiser step to keep a copy of the weights after every step."""
    after = []
    real = T.optimiser_step

    def step(state):
        out = real(state)
        after.append(_weights(state.net))
        return out

    monkeypatch.setattr(T, "optimiser_step", step)
    return after


def _falling_scores(monkeypatch):
    """Validation AP50 that falls with every validation (noise picking the first)."""
    scores = iter(np.linspace(0.9, 0.1, 50))
    monkeypatch.setattr(
        T,
        "validate",
        lambda *a, **k: {"loss": 1.0, "ap50": float(next(scores)), "fg_iou": 0.0, "n_true": 5.0},
    )


def test_few_validation_cells_keep_the_averaged_final_weights(samples, tiny_config, monkeypatch):
    after = _record_weights(monkeypatch)
    _falling_scores(monkeypatch)
    # the held-out strip of the small image has far fewer than min_val_cells (100) cells:
    # no early stop (patience 1 would stop at the 2nd validation), no best-step choice
    config = _fast(steps=6, validate_every=1, patience=1, tune_post_processing=False)
    result = T.run(T.train_iter(samples, tiny_config, config, device="cpu"))
    assert result.stopped_by == "steps" and result.steps == 6 and result.best_step == 6
    # the mean of the weights after steps 3..6 (from half of the budget on)
    expected = {k: torch.stack([w[k] for w in after[2:]]).mean(0) for k in after[0]}
    got = _weights(result.model.net)
    assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in got)
    assert any(not torch.allclose(got[k], after[-1][k]) for k in got)
    # the result's metrics are the last validation's: the averaged weights'
    assert result.best_metrics["step"] == 6.0
    assert result.best_metrics["ap50"] == result.history[-1]["ap50"]
    assert len(result.history) == 8  # the start, 6 during training, the averaged weights
    training = result.model.provenance["training"]
    assert training["selection"] == "final weights" and training["averaged_steps"] == 4
    assert 0 < training["validation_cells"] < 100


def test_few_validation_cells_keep_the_start_models_post_processing(samples, tiny_config):
    """Chosen on a strip of 6-11 cells, the post-processing was never better on unseen
    cells than the start model's, and 0.09-0.12 AP50 worse in 2 of 32 benchmark runs."""
    post = {"threshold": 0.45, "min_size": 7, "seed_threshold": 0.8}
    start = CellModel.new(tiny_config, seed=5, extra={"instances": post})
    events = list(T.train_iter(samples, start, _fast(), device="cpu"))
    result = events[-1].result
    assert "tuning" not in {e.kind for e in events}
    assert 0 < result.model.provenance["training"]["validation_cells"] < 100
    assert result.model.provenance["instance_tuning"] is None
    kept = result.model.extra["instances"]
    assert {k: kept[k] for k in post} == post
    # with enough cells (min_val_cells=1 here) the settings are searched again
    config = _fast(min_val_cells=1)
    events = list(T.train_iter(samples, start, config, device="cpu"))
    assert [e.kind for e in events].count("tuning") == 3  # 2 before training, 1 after
    assert events[-1].result.model.provenance["instance_tuning"] is not None


def test_without_averaging_the_last_step_is_kept(samples, tiny_config, monkeypatch):
    after = _record_weights(monkeypatch)
    _falling_scores(monkeypatch)
    config = _fast(steps=4, average_from=None, tune_post_processing=False)
    result = T.run(T.train_iter(samples, tiny_config, config, device="cpu"))
    got = _weights(result.model.net)
    assert all(torch.equal(got[k], after[-1][k]) for k in got)
    assert result.model.provenance["training"]["averaged_steps"] == 0


def test_enough_validation_cells_choose_the_best_step(samples, tiny_config, monkeypatch):
    after = _record_weights(monkeypatch)
    _falling_scores(monkeypatch)
    config = _fast(steps=4, validate_every=1, min_val_cells=1, tune_post_processing=False)
    result = T.run(T.train_iter(samples, tiny_config, config, device="cpu"))
    # the start model's validation (step 0) scored best: it is returned unchanged, not
    # the averaged weights nor any step's
    start = _weights(T.resolve_start_model(tiny_config, config.seed)[0].net)  # the same init
    assert result.best_step == 0 and result.best_metrics["ap50"] == pytest.approx(0.9)
    got = _weights(result.model.net)
    assert all(torch.equal(got[k], start[k]) for k in got)
    assert any(not torch.equal(got[k], after[-1][k]) for k in got)  # training did move
    assert result.model.provenance["training"]["selection"] == "best validation"
    assert "no step validated better, so it is kept unchanged" in _summary_of(result)


def test_a_step_that_validates_better_than_the_start_is_chosen(samples, tiny_config, monkeypatch):
    after = _record_weights(monkeypatch)
    scores = iter([0.5, 0.9, 0.8, 0.7, 0.6, 0.6])  # step 0 (the start model), 1, 2, ...
    monkeypatch.setattr(
        T,
        "validate",
        lambda *a, **k: {"loss": 1.0, "ap50": float(next(scores)), "fg_iou": 0.0, "n_true": 5.0},
    )
    config = _fast(steps=4, validate_every=1, min_val_cells=1, tune_post_processing=False)
    result = T.run(T.train_iter(samples, tiny_config, config, device="cpu"))
    assert result.best_step == 1 and result.best_metrics["ap50"] == pytest.approx(0.9)
    got = _weights(result.model.net)
    assert all(torch.equal(got[k], after[0][k]) for k in got)
    assert "(the start model: 0.500)" in _summary_of(result)


def _summary_of(result) -> str:
    return T._summary(result)


def test_averaging_settings_are_checked():
    with pytest.raises(UNetCellsError, match="average_from"):
        TrainConfig(average_from=1.0)
    with pytest.raises(UNetCellsError, match="min_val_cells"):
        TrainConfig(min_val_cells=-1)


class _Clock:
    """A clock that advances 1 s per reading: a time budget runs out after the same
    number of readings on any machine (the test does not depend on the CPU's speed)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


def test_time_budget_and_release_of_device_memory(samples, tiny_config, monkeypatch):
    from napari_unet_cells.core import train_run

    released = []
    monkeypatch.setattr(T, "release_memory", lambda device: released.append(str(device)))
    monkeypatch.setattr(train_run, "time", _Clock())
    result = T.run(
        T.train_iter(samples, tiny_config, _fast(steps=None, minutes=0.2), device="cpu")
    )
    assert result.stopped_by == "time" and 1 <= result.steps < 12  # 12 s of clock readings
    assert released == ["cpu"]
    # closing the generator mid-run (napari closing) also releases it
    gen = T.train_iter(samples, tiny_config, _fast(steps=100), device="cpu")
    next(gen), next(gen)
    gen.close()
    assert released == ["cpu", "cpu"]


def test_weighted_loss_ignores_zero_weight_pixels_and_schedule():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 0, 0] = 10.0  # confident "cell" at (0, 0)
    target = torch.zeros(1, 2, 2, dtype=torch.long)  # ... but the truth is background
    weight = torch.ones(1, 2, 2)
    assert T.weighted_cross_entropy(logits, target, weight) > 2
    weight[0, 0, 0] = 0.0  # that pixel is not annotated: no penalty
    assert T.weighted_cross_entropy(logits, target, weight) == pytest.approx(np.log(2))
    cfg = TrainConfig(learning_rate=1.0, warmup_steps=10, final_lr_fraction=0.1)
    assert T.learning_rate(cfg, 5, 0.0) == pytest.approx(0.5)
    assert T.learning_rate(cfg, 10, 0.5) == pytest.approx(0.55)
    assert T.learning_rate(cfg, 99, 1.0) == pytest.approx(0.1)
    assert TrainConfig(optimizer="sgd").peak_learning_rate == 1e-2
    with pytest.raises(UNetCellsError):
        TrainConfig(steps=None, minutes=None)


def test_training_reduces_the_loss_with_partial_annotation(tiny_config):
    image, labels = synthetic_cells((64, 96), seed=7)
    ignore = np.zeros(labels.shape, bool)
    ignore[:, 64:] = True  # right third not annotated
    labels[ignore] = 0
    samples = as_samples(image, labels, [ignore])
    losses = []
    cfg = _fast(steps=60, validate_every=1000, learning_rate=1e-2, val_fraction=0.0)
    result = T.run(
        T.train_iter(samples, tiny_config, cfg),
        lambda e: losses.append(e.loss) if e.kind == "step" else None,
    )
    assert np.mean(losses[-10:]) < 0.85 * np.mean(losses[:10])
    assert result.model.provenance["training"]["data"][0]["annotated_fraction"] == pytest.approx(
        64 / 96, abs=1e-3
    )


def test_finetune_api_saves_and_refuses_to_overwrite(tmp_path, tiny_config):
    image, labels = synthetic_cells((64, 64), seed=1)
    out = tmp_path / "model.npz"
    model = T.finetune(image, labels, model=tiny_config, steps=2, output=out, device="cpu")
    assert load_model(out).provenance["training"]["steps"] == 2
    assert model.provenance["training"]["steps"] == 2
    with pytest.raises(UNetCellsError, match="already exists"):
        T.finetune(image, labels, model=tiny_config, steps=2, output=out)
    with pytest.raises(UNetCellsError, match="no cells"):
        T.finetune(image, np.zeros_like(labels), model=tiny_config, steps=2)


def test_preview_shows_tiles_as_taught_and_save_to(samples, tiny_config, tmp_path):
    tiles = T.preview_augmentation(samples, _fast(), tiny_config, n=3, seed=0)
    shapes = {key: value.shape for key, value in tiles.items()}
    assert len(set(shapes.values())) == 1 and shapes["image"][0] == 3
    size = shapes["image"][1]
    margin = 20  # tiny net: the loss sees only the output window
    assert not tiles["weight"][:, :margin].any() and tiles["weight"][:, margin:-margin].any()
    assert set(np.unique(tiles["labels"])) <= set(np.unique(samples[0].labels))
    assert size > 2 * margin
    path = tmp_path / "deep" / "m.npz"
    result = T.run(T.train_iter(samples, tiny_config, _fast(steps=1), save_to=path))
    assert result.saved_to == path and load_model(path).provenance["training"]["steps"] == 1
    with pytest.raises(UNetCellsError, match="already exists"):
        next(T.train_iter(samples, tiny_config, _fast(steps=1), save_to=path))


def test_unwritable_output_fails_before_any_work(samples, tiny_config, unwritable_dir):
    """Issue 16.2: a read-only 'Save to' failed only after the whole training run."""
    gen = T.train_iter(
        samples, tiny_config, _fast(), device="cpu", save_to=unwritable_dir / "m" / "x.npz"
    )
    with pytest.raises(UNetCellsError, match=r"Cannot write the model to .*choose a folder"):
        next(gen)  # the first event: nothing trained yet


def test_a_failed_save_keeps_the_trained_model(samples, tiny_config, tmp_path, monkeypatch):
    """Issue 16.2: if saving fails at the end, the model is kept, never lost."""

    def read_only(model, path):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(T, "save_model", read_only)
    events = list(
        T.train_iter(samples, tiny_config, _fast(), device="cpu", save_to=tmp_path / "m.npz")
    )
    result = events[-1].result
    assert result.trained and result.saved_to is None
    assert "Read-only file system" in result.save_error
    assert "NOT SAVED" in events[-1].message and "kept" in events[-1].message
    monkeypatch.setattr(T, "logger", __import__("logging").getLogger("t"))
    model = T.finetune(
        samples[0].image,
        samples[0].labels,
        model=tiny_config,
        steps=1,
        output=tmp_path / "api.npz",
        device="cpu",
    )
    assert model.provenance["training"]["steps"] == 1  # returned although not saved


def test_no_step_no_model_and_budgeted_tuning(samples, tiny_config, tmp_path, monkeypatch):
    """Issue 16.8: tuning ate short budgets before the first step, a Stop then saved a
    'fine-tuned' model with 0 steps, and the reported AP50 was not the model's."""
    out = tmp_path / "m.npz"
    gen = T.train_iter(samples, tiny_config, _fast(), device="cpu", stop=lambda: True, save_to=out)
    result = T.run(gen)
    assert not result.trained and result.steps == 0 and not out.exists()
    calls = []
    real = T.tune_instances

    def spy(probabilities, labels, ignore, **kw):
        calls.append((sum(p.size for p in probabilities), kw["time_limit_s"]))
        return real(probabilities, labels, ignore, **kw)

    monkeypatch.setattr(T, "tune_instances", spy)
    monkeypatch.setattr(T, "TUNE_PIXELS", 400)
    # 3 s: tuning may take 1 s of it at most (min_val_cells=0: tune on the few cells)
    config = _fast(steps=None, minutes=0.05, min_val_cells=0)
    result = T.run(T.train_iter(samples, tiny_config, config, device="cpu"))
    (before_px, before_s), (after_px, after_s) = calls
    assert before_px <= 400 and before_s <= 1.0 and after_px <= 1600 and after_s <= T.TUNE_SECONDS
    assert result.trained
    tuning = result.model.provenance["instance_tuning"]
    assert result.best_metrics["ap50"] == tuning["ap50"]  # one number: the kept settings'
    assert result.model.provenance["validation"]["ap50"] == tuning["ap50"]
    assert result.model.extra["instances"] == tuning["chosen"]


def test_finetune_output_can_be_replaced_on_request(samples, tiny_config, tmp_path):
    """Issue 16.10: re-running the README's snippet failed because tuned.npz existed."""
    out = tmp_path / "tuned.npz"
    sample = samples[0]
    for _ in range(2):  # the README snippet, run twice
        T.finetune(
            sample.image,
            sample.labels,
            model=tiny_config,
            steps=1,
            output=out,
            overwrite=True,
            device="cpu",
        )
        assert load_model(out).provenance["training"]["steps"] == 1
    with pytest.raises(UNetCellsError, match="overwrite=True"):
        T.finetune(sample.image, sample.labels, model=tiny_config, steps=1, output=out)


def test_tuning_crops_predict_as_the_whole_region(samples, tiny_config):
    """Issue 16.8: the search before training runs the network on a crop of the
    validation data only; the crop, with its real context, predicts as the region does."""
    from napari_unet_cells.core.data import split_validation
    from napari_unet_cells.core.tiling import dependency_reach

    image, labels = synthetic_cells((160, 200), seed=5)
    model = CellModel.new(tiny_config, seed=1)
    _, regions = split_validation(as_samples(image, labels), None, TrainConfig(), tiny_config)
    reach = dependency_reach(tiny_config.depth, tiny_config.padding)
    [crop] = T.tuning_regions(regions, 300, reach=reach, align=2**tiny_config.depth)
    assert crop.labels.size <= 300 < regions[0].labels.size
    [whole] = T.region_probabilities(model.net, regions, torch.device("cpu"))
    [part] = T.region_probabilities(model.net, [crop], torch.device("cpu"))
    oy = (whole.shape[0] - part.shape[0]) // 2  # the central crop of the evaluated core
    ox = (whole.shape[1] - part.shape[1]) // 2
    window = np.s_[oy : oy + part.shape[0], ox : ox + part.shape[1]]
    np.testing.assert_array_equal(crop.labels, regions[0].labels[window])
    np.testing.assert_allclose(part, whole[window], atol=1e-5)


def test_every_event_kind_emitted_is_declared(samples, tiny_config):
    """TrainEvent.kind's Literal left out "tuning", which train_iter emits."""
    import typing

    declared = set(typing.get_args(typing.get_type_hints(T.TrainEvent)["kind"]))
    config = _fast(min_val_cells=0)  # tuning needs enough validation cells
    kinds = {e.kind for e in T.train_iter(samples, tiny_config, config, device="cpu")}
    assert kinds == {"start", "tuning", "step", "validation", "done"}
    assert kinds <= declared


def test_a_file_created_during_training_is_not_replaced(samples, tiny_config, tmp_path):
    """The final save replaced a file that appeared after the check at the start."""
    out = tmp_path / "m.npz"

    def someone_else_writes(event):
        if event.kind == "step" and event.step == 1:
            out.write_bytes(b"theirs")

    gen = T.train_iter(samples, tiny_config, _fast(steps=2), device="cpu", save_to=out)
    result = T.run(gen, someone_else_writes)
    assert out.read_bytes() == b"theirs"
    assert result.trained and result.saved_to is None
    assert str(out) in result.save_error and "not replaced" in result.save_error
    assert result.model.provenance["training"]["steps"] == 2  # kept, usable, savable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temporary file
    # asked to overwrite: the file is replaced by the model
    gen = T.train_iter(
        samples, tiny_config, _fast(steps=1), device="cpu", save_to=out, overwrite=True
    )
    result = T.run(gen)
    assert result.saved_to == out and result.save_error is None
    assert load_model(out).provenance["training"]["steps"] == 1


def test_validation_scores_the_cell_class_the_model_names(samples, tiny_config, monkeypatch):
    """Validation predicted with default class names whatever the model said; it now
    uses the model's own classes (``cell_score_weights``), as prediction does."""
    from napari_unet_cells.core.data import split_validation

    net = CellModel.new(tiny_config, seed=1).net
    _, regions = split_validation(samples, None, TrainConfig(), tiny_config)
    cpu = torch.device("cpu")
    [cell] = T.region_probabilities(net, regions, cpu)
    [swapped] = T.region_probabilities(net, regions, cpu, classes=("cell", "background"))
    np.testing.assert_allclose(cell + swapped, 1.0, atol=1e-5)  # the other channel
    seen = []

    def spy(net, regions, device, **kw):
        seen.append(kw["classes"])
        return {"loss": 1.0, "ap50": 0.5, "fg_iou": 0.5}

    monkeypatch.setattr(T, "validate", spy)
    start = CellModel.new(tiny_config, seed=1, classes=("cell", "background"))
    T.run(T.train_iter(samples, start, _fast(tune_post_processing=False), device="cpu"))
    assert seen and all(tuple(c) == ("cell", "background") for c in seen)
