"""Fine-tuning: the paper's training recipe as a generator of progress events.

``train_iter`` yields a ``TrainEvent`` after every optimiser step and every validation
and checks a stop request between steps; its return value (and the last event's
``result``) is a ``TrainResult`` holding the best model seen. ``finetune`` runs it to
the end. The Fine-tune dock runs the same generator in napari's ``thread_worker``; the
CLI consumes it directly.

One step: draw ``batch_size`` tiles (core/data.py: biased towards cells and touching
pairs), draw and apply one augmentation per tile (core/augment.py: the paper's elastic
deformation, flips, quarter turns, intensity), run the U-Net, and minimise the
pixel-wise softmax cross-entropy weighted by the weight map (paper eq. 1-2,
core/weightmap.py) over each tile's output window:

    loss = sum_x w(x) * CE(x) / sum_x w(x)      (pixels with w = 0 do not count)

Optimisers: "adam" (default) with a linear warm-up and a cosine decay, or "sgd", the
paper's SGD with momentum 0.99 (same schedule). The default was chosen by measurement
(``benchmarks/bench_finetune.py``, docs/finetune.md): on 2 CPU cores and small batches
Adam reached a usable model several times sooner; the paper's high-momentum SGD was made
for large tiles on a GPU over many hours.

Validation (every ``validate_every`` steps and at the end): tiled prediction of the
held-out regions with the one tile loop (core/tile_loop.py ``predict_plane``; the cell
score weighs the classes the model names), instances by core/instances.py, then object
AP at IoU 0.5 (``ap50``), foreground IoU (``fg_iou``) and the weighted loss (``loss``).
The best model is the one with the highest AP50 (ties: lower validation loss); early
stopping after ``patience`` validations without improvement. Stopping (budget, early
stop or request) returns the best model so far.

Determinism: with a step budget on the CPU, the same seed gives the same weights: all
randomness comes from one numpy Generator (tiles, augmentation) and, for dropout, a
torch Generator local to the run (the global torch RNG is never touched).

Memory: the network trains on a copy; the returned model lives on the CPU, in eval mode,
and the device's cached memory is released when the generator ends, is closed, or fails.

Where things are: ``train_iter`` below is the orchestration of named steps: prepare
(``train_run.prepare_run``), step (``train_run.optimiser_step``), validate
(``_validate``), tune (``_tune_for_validation`` before training, ``_tune_for_model``
after it) and provenance (``train_run.provenance``), then save (``_save_or_keep``). The
loss, schedule, optimiser and start model are in core/train_setup.py, validation scoring
and the tuning crops in core/validation.py; this module re-exports them.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CellModel, ModelFileExistsError, create_new_file, save_model
from .config import ModelConfig, TrainConfig
from .data import TrainingSample, as_samples
from .device import release_memory
from .errors import UNetCellsError
from .fileio import check_new_output, check_writable
from .instances import tune_instances
from .progress import StopFlag, run, stop_requested
from .tiling import dependency_reach
from .train_run import (
    Best,
    TrainEvent,
    TrainEventKind,
    TrainingRun,
    TrainResult,
    optimiser_step,
    prepare_run,
    provenance,
)
from .train_setup import (
    SCRATCH_CONFIG,
    SeededDropout,
    learning_rate,
    make_optimizer,
    match_model_scale,
    preview_augmentation,
    resolve_start_model,
    weighted_cross_entropy,
)
from .validation import (
    TUNE_PIXELS,
    TUNE_SECONDS,
    pooled_ap50,
    region_probabilities,
    tuning_crops,
    tuning_regions,
    tuning_time_cap,
    validate,
)

__all__ = [
    "SCRATCH_CONFIG",
    "TUNE_PIXELS",
    "TUNE_SECONDS",
    "SeededDropout",
    "TrainEvent",
    "TrainEventKind",
    "TrainResult",
    "finetune",
    "learning_rate",
    "make_optimizer",
    "match_model_scale",
    "preview_augmentation",
    "region_probabilities",
    "resolve_start_model",
    "run",
    "train_iter",
    "tuning_crops",
    "tuning_regions",
    "tuning_time_cap",
    "validate",
    "weighted_cross_entropy",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------


def train_iter(
    samples: Sequence[TrainingSample],
    model: CellModel | str | Path | ModelConfig | None = None,
    config: TrainConfig | None = None,
    *,
    val_samples: Sequence[TrainingSample] | None = None,
    device: str | torch.device = "auto",
    stop: StopFlag = None,
    save_to: str | Path | None = None,
    overwrite: bool = False,
) -> Generator[TrainEvent, None, TrainResult]:
    """Fine-tune ``model`` on ``samples``; yields TrainEvents, returns the TrainResult.

    Parameters
    ----------
    samples, val_samples : from ``core.data.as_samples`` (2-D planes with instance
        labels); without ``val_samples`` a strip of each image is held out.
    model : see ``train_setup.resolve_start_model``; the caller's model is never modified.
    config : the training settings (default ``TrainConfig()``).
    device : "auto" | "cpu" | "cuda[:N]" | "mps".
    stop : checked between steps (and between validation tiles); when set, training ends
        with the best model so far.
    save_to : write the best model there (atomically) before the "done" event; missing
        folders are created. An existing file is an error at the start unless
        ``overwrite``; a file that appears there during training is not replaced either
        (the model is then kept in the result, with ``save_error`` saying so).
    overwrite : allow replacing ``save_to``.

    Yields
    ------
    TrainEvent: "start", "tuning" (before and after training, when the post-processing
    is tuned), "step" after every optimiser step, "validation", and "done" last.

    Returns
    -------
    The TrainResult (also on the "done" event): the best model, CPU, eval mode.
    """
    config = config or TrainConfig()
    samples = list(samples)
    if not samples:
        raise UNetCellsError("No training samples: add at least one image with labels.")
    save_to = None if save_to is None else _check_save_to(Path(save_to), overwrite)
    state = prepare_run(samples, model, config, val_samples, device, stop)
    finished = False
    try:
        yield state.event("start", message=state.start_message())
        yield from _tune_for_validation(state)
        yield from _validate_start(state)
        yield from _train(state)
        yield from _validate_last(state)
        _load_best(state)
        tuning = yield from _tune_for_model(state)
        result = _result(state, tuning)
        finished = True
        _release(state)
        if save_to is not None and result.trained:
            _save_or_keep(result, save_to, overwrite)
        yield state.event(
            "done", metrics=result.best_metrics, result=result, message=_summary(result)
        )
        return result
    finally:
        if not finished:  # error or closed early: leave nothing on the device
            state.restore_network()
            _release(state)


def _check_save_to(path: Path, overwrite: bool) -> Path:
    """Refuse a model path before any work: an existing file (unless ``overwrite``), a
    folder, or a place that cannot be written (a read-only share would otherwise fail
    only after training)."""
    path = path.expanduser()
    if path.is_dir():
        raise UNetCellsError(f"{path} is a folder; give a file name for the model.")
    if path.parent.is_dir():  # (missing folders are created when saving)
        hint = "choose another file name (models are never overwritten without asking)"
        check_new_output(path, "the model", overwrite=overwrite, hint=hint)
    check_writable(path, "the model")
    return path


def _train(state: TrainingRun) -> Generator[TrainEvent, None, None]:
    """Optimiser steps until the budget is spent, a stop is requested or validation stops
    improving (``state.stopped_by`` says which); validates every ``validate_every`` steps."""
    while True:
        reason = state.budget_spent()
        if reason is not None:
            state.stopped_by = reason
            return
        loss, lr = optimiser_step(state)
        state.update_average()
        yield state.event("step", loss=loss, lr=lr)
        if state.regions and state.step % state.config.validate_every == 0:
            metrics = _validate(state)
            if metrics is not None:
                yield state.event("validation", metrics=metrics)
                if state.patience_spent():
                    state.stopped_by = "early_stopping"
                    return


def _validate(state: TrainingRun) -> dict[str, float] | None:
    """Validate the current weights (``validate``) and record them in the run's history
    and best model; None if stopped. The network is back in training mode."""
    metrics = validate(
        state.net,
        state.regions,
        state.device,
        instances=state.post,
        classes=state.start_model.classes,  # the cell score prediction will use
        stop=state.stop,
    )
    state.net.train()
    return None if metrics is None else state.record(metrics)


def _validate_start(state: TrainingRun) -> Generator[TrainEvent, None, None]:
    """Before the first step: validate the start model (step 0), so the curve shows
    where training started and, with enough validation cells to choose by, the start
    model competes too: a run that never beats it on validation returns it unchanged."""
    if state.regions and not stop_requested(state.stop):
        metrics = _validate(state)
        if metrics is not None:
            yield state.event("validation", metrics=metrics)


def _validate_last(state: TrainingRun) -> Generator[TrainEvent, None, None]:
    """A last validation, so that the final weights compete too (also after a stop).

    The final weights are the running average (``TrainConfig.average_from``) when more
    than one step was averaged.
    """
    if state.average is not None and state.average.count > 1:
        state.average.load_into(state.net)
        state.last_validated = -1  # new weights: validate them
    if state.regions and state.step > 0 and state.last_validated != state.step:
        metrics = _validate(state)
        if metrics is not None:
            yield state.event("validation", metrics=metrics)


def _load_best(state: TrainingRun) -> None:
    """Put the best validated weights into the network (the last ones if none was).

    With fewer validation cells than ``TrainConfig.min_val_cells`` the final (averaged)
    weights are kept, with their validation as the result's metrics.
    """
    if not state.choose_best:
        final = state.last_metrics if state.last_validated == state.step else None
        state.best = Best(metrics=final, step=state.step)
    elif state.best.state is not None:
        state.net.load_state_dict(state.best.state)
    else:
        state.best.step = state.step


# --------------------------------------------------------------------------------------
# post-processing tuning
# --------------------------------------------------------------------------------------


def _tune_for_validation(state: TrainingRun) -> Generator[TrainEvent, None, None]:
    """Before training: choose the post-processing validation uses (``state.post``).

    So that the best step is chosen for the network, not for how well the model's stored
    settings suit these cells. On a subsample of the validation regions
    (``TUNE_PIXELS``), within ``tuning_time_cap`` of the budget (it counts in it).
    """
    if not state.tunes_post_processing:
        return
    cap = tuning_time_cap(state.budget_s)
    yield state.event(
        "tuning", message=f"choosing the post-processing for validation (at most {cap:.0f} s)"
    )
    began = time.perf_counter()
    mcfg = state.start_model.config
    reach = dependency_reach(mcfg.depth, mcfg.padding)
    subset = tuning_regions(state.regions, TUNE_PIXELS, reach=reach, align=2**mcfg.depth)
    probabilities = region_probabilities(
        state.net, subset, state.device, classes=state.start_model.classes, stop=state.stop
    )
    state.net.train()
    if probabilities is None:
        return
    state.post = tune_instances(
        probabilities,
        [r.labels for r in subset],
        [r.ignore for r in subset],
        start=state.post,
        time_limit_s=max(0.0, cap - (time.perf_counter() - began)),
    )[0]
    state.tuned_before = True
    yield state.event(
        "tuning",
        message=f"post-processing for validation chosen in "
        f"{time.perf_counter() - began:.0f} s; training ...",
    )


def _tune_for_model(state: TrainingRun) -> Generator[TrainEvent, None, dict[str, Any] | None]:
    """After training (not after a Stop): the post-processing stored with the model.

    Returns the provenance of the search (``_search_post_processing``) or None; the best
    metrics' AP50 becomes the one with the settings kept.
    """
    if not state.tunes_post_processing:
        return None
    if state.stopped_by == "user" or state.step == 0:
        return None
    yield state.event(
        "tuning",
        message="choosing the post-processing on the validation data "
        f"(at most {TUNE_SECONDS:.0f} s)",
    )
    tuning = _search_post_processing(state)
    if tuning is not None and state.best.metrics is not None:
        state.best.metrics = {**state.best.metrics, "ap50": tuning["ap50"]}
    return tuning


def _search_post_processing(state: TrainingRun) -> dict[str, Any] | None:
    """Search the post-processing for the trained network on a subsample within
    TUNE_SECONDS, then score it on all validation regions (the AP50 the model reports).

    Returns {"data", "before", "ap50_before", "ap50", "chosen", "seconds", "timed_out"}
    (the settings as dicts), or None if stopped. The search result is kept only if it
    is not worse than ``state.post`` on all regions.
    """
    began = time.perf_counter()
    post = state.post
    probabilities = region_probabilities(
        state.net, state.regions, state.device, classes=state.start_model.classes, stop=state.stop
    )
    if probabilities is None:
        return None
    tuned, _, scores = tune_instances(
        *tuning_crops(probabilities, state.regions, 4 * TUNE_PIXELS),
        start=post,
        time_limit_s=max(0.0, TUNE_SECONDS - (time.perf_counter() - began)),
    )
    before, after = (pooled_ap50(probabilities, state.regions, c) for c in (post, tuned))
    if after < before:  # the subsample misled the search: keep what validation used
        tuned, after = post, before
    return {
        "data": "the validation regions",
        "before": dataclasses.asdict(post),  # the settings validation used
        "ap50_before": round(before, 4),
        "ap50": round(after, 4),
        "chosen": dataclasses.asdict(tuned),
        "seconds": round(time.perf_counter() - began, 2),
        "timed_out": bool(scores.get("timed_out")),
    }


# --------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------


def _result(state: TrainingRun, tuning: dict[str, Any] | None) -> TrainResult:
    """The TrainResult: the network (best weights, CPU, eval mode, plain dropout) with
    the post-processing validation chose (refined by ``tuning``) and the provenance."""
    extra = copy.deepcopy(state.start_model.extra)
    if state.tuned_before:  # what validation used
        extra["instances"] = dataclasses.asdict(state.post)
    if tuning is not None:
        extra["instances"] = tuning["chosen"]
    state.restore_network()
    state.net.eval()
    elapsed = state.elapsed()
    model = CellModel(
        net=state.net,
        normalization=state.start_model.normalization,
        classes=state.start_model.classes,
        provenance=provenance(state, tuning, elapsed),
        extra=extra,
    )
    return TrainResult(
        model=model,
        steps=state.step,
        best_step=state.best.step,
        best_metrics=state.best.metrics,
        stopped_by=state.stopped_by,
        elapsed_s=elapsed,
        history=state.history,
    )


def _save_or_keep(result: TrainResult, path: Path, overwrite: bool) -> None:
    """Save the trained model to ``path``; if that fails, keep it in ``result`` with
    ``save_error`` set instead of losing it to an exception.

    Saving fails when the folder turned read-only or the disk is full, or when a file
    named ``path`` appeared during training and ``overwrite`` was not requested: that
    file is never replaced (``checkpoint.create_new_file``).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite:
            result.saved_to = save_model(result.model, path)
        else:
            result.saved_to = create_new_file(path, lambda tmp: save_model(result.model, tmp))
    except ModelFileExistsError:
        result.save_error = (
            f"{path} was created by something else during training and was not replaced; "
            "save the model under another name"
        )
        logger.warning("the trained model was not saved (%s); it is kept in memory", path)
    except OSError as err:
        result.save_error = f"{path}: {err.strerror or err}"
        logger.warning("the trained model was not saved (%s); it is kept in memory", err)


def _release(state: TrainingRun) -> None:
    """Drop the optimiser's state and give the device's cached memory back."""
    state.optimizer.state.clear()
    release_memory(state.device)


def _summary(result: TrainResult) -> str:
    """The "done" event's line: steps, time, best validation, where the model went."""
    if not result.trained:
        return (
            f"no training step was made ({result.ended} before the first step): nothing "
            "saved, the start model is unchanged"
        )
    text = f"{result.steps} steps in {result.elapsed_s:.0f} s ({result.ended})"
    if result.best_metrics:
        m = result.best_metrics
        text += (
            f"; best at step {result.best_step}: validation AP50 {m['ap50']:.3f}, "
            f"foreground IoU {m['fg_iou']:.3f}, loss {m['loss']:.4f}"
        )
    start = result.start_metrics
    if start is not None and result.best_step != 0:
        text += f" (the start model: {start['ap50']:.3f})"
    elif start is not None:
        text += " (the start model: no step validated better, so it is kept unchanged)"
    tuning = result.model.provenance.get("instance_tuning")
    if tuning:  # the AP50 above is the one with these settings
        chosen = tuning["chosen"]
        text += (
            f" with the post-processing chosen for it (threshold {chosen['threshold']}, "
            f"seeds {chosen['seed_threshold'] or 'none'}, min size {chosen['min_size']} px)"
        )
    if result.saved_to is not None:
        text += f"; saved to {result.saved_to}"
    if result.save_error is not None:
        text += f"; NOT SAVED ({result.save_error}): the model is kept, save it elsewhere"
    return text


# --------------------------------------------------------------------------------------
# the one-call API
# --------------------------------------------------------------------------------------


def finetune(
    images,
    labels,
    ignore=None,
    model: CellModel | str | Path | ModelConfig | None = None,
    *,
    config: TrainConfig | None = None,
    steps: int | None = None,
    minutes: float | None = None,
    val_images=None,
    val_labels=None,
    val_ignore=None,
    device: str = "auto",
    output: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[TrainEvent], None] | None = None,
    stop: StopFlag = None,
) -> CellModel:
    """Fine-tune a U-Net on annotated images and return the best model (CPU, eval mode).

    Parameters
    ----------
    images, labels : a (Y, X) array or (Z, Y, X) stack, or lists of them, with integer
        instance labels of the same shapes (0 = background).
    ignore : masks of unannotated pixels (nonzero = ignore), per image, or None.
    model : a model file, a CellModel, a ModelConfig (from scratch), "scratch", or None
        (the bundled model, else scratch).
    config : a TrainConfig; ``steps`` / ``minutes`` override its budget (giving one alone
        makes it the only budget).
    val_images, val_labels, val_ignore : separate validation images (else a held-out
        strip of each image).
    device : "auto" | "cpu" | "cuda[:N]" | "mps".
    output : save the model there; an existing file is an error unless ``overwrite``;
        its folder must exist and be writable (checked before training). If saving still
        fails at the end (or a file of that name appeared meanwhile), the model is
        returned and the error logged, never lost.
    progress : called with every TrainEvent.
    stop : see ``train_iter``.

    Returns
    -------
    The fine-tuned CellModel.

    >>> import napari_unet_cells as uc
    >>> image, labels = uc.synthetic_cells((96, 96), seed=0)
    >>> small = uc.ModelConfig(base=4, depth=2, dropout=0.0)
    >>> model = uc.finetune(image, labels, model=small, steps=2)
    >>> model.provenance["training"]["steps"]
    2
    """
    config = config or TrainConfig()
    if steps is not None or minutes is not None:
        config = dataclasses.replace(config, steps=steps, minutes=minutes)
    if output is not None:
        hint = "choose another file name, or pass overwrite=True to replace it"
        output = check_new_output(Path(output), "the model", overwrite=overwrite, hint=hint)
    samples = as_samples(images, labels, ignore)
    val = as_samples(val_images, val_labels, val_ignore) if val_images is not None else None
    gen = train_iter(
        samples,
        model,
        config,
        val_samples=val,
        device=device,
        stop=stop,
        save_to=output,
        overwrite=overwrite,
    )
    result = run(gen, progress)
    if result.save_error is not None:
        logger.error(
            "The fine-tuned model was not saved (%s); it is returned: save it with "
            "napari_unet_cells.save_model(model, path).",
            result.save_error,
        )
    return result.model
