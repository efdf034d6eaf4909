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
held-out regions with core/predict.py's tile machinery, instances by
core/instances.py, then object AP at IoU 0.5 (``ap50``), foreground IoU (``fg_iou``)
and the weighted loss (``loss``). The best model is the one with the highest AP50 (ties:
lower validation loss); early stopping after ``patience`` validations without
improvement. Stopping (budget, early stop or request) returns the best model so far.

Determinism: with a step budget on the CPU, the same seed gives the same weights: all
randomness comes from one numpy Generator (tiles, augmentation) and, for dropout, a
torch Generator local to the run (the global torch RNG is never touched).

Memory: the network trains on a copy; the returned model lives on the CPU, in eval mode,
and the device's cached memory is released when the generator ends, is closed, or fails.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import logging
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import augment_batch, draw_params
from .checkpoint import CellModel, default_classes, save_model
from .config import InstanceConfig, ModelConfig, TrainConfig, config_to_dict
from .data import (
    TileSampler,
    TrainingSample,
    ValidationRegion,
    as_samples,
    choose_tile,
    split_validation,
)
from .device import autocast, inference_dtype, release_memory, resolve_device
from .errors import UNetCellsError
from .fileio import check_writable
from .instances import instance_defaults, probabilities_to_labels, tune_instances
from .metrics import match
from .predict import (
    TorchPredictor,
    auto_tile_and_batch,
    cell_score_weights,
    predict_tiles,
)
from .progress import StopFlag, run, stop_requested
from .registry import bundled_model_path, resolve_model
from .tiling import dependency_reach, plan_tiles

logger = logging.getLogger(__name__)

#: the network trained when starting from scratch without a config
SCRATCH_CONFIG = ModelConfig(base=16, depth=4, dropout=0.5)


@dataclass(frozen=True)
class TrainEvent:
    """One progress event.

    kind: "start" (set-up done), "step" (one optimiser step), "validation", "done".
    step: optimiser steps done; total_steps: the step budget (None: time budget only).
    elapsed_s: wall time since the start; progress: share of the budget used (0..1);
    eta_s: estimated seconds left (None until known).
    loss, lr: the step's training loss and learning rate ("step" events).
    metrics: validation results ("validation", "done"): loss, ap50, fg_iou, ...
    best_step / best_metrics: the best validation so far.
    message: a line for the user. result: the TrainResult (only on "done").
    """

    kind: Literal["start", "step", "validation", "done"]
    step: int
    total_steps: int | None
    elapsed_s: float
    progress: float
    eta_s: float | None = None
    loss: float | None = None
    lr: float | None = None
    metrics: dict[str, float] | None = None
    best_step: int | None = None
    best_metrics: dict[str, float] | None = None
    message: str = ""
    result: TrainResult | None = None


@dataclass
class TrainResult:
    """What training produced.

    model: the best model (CPU, eval mode) with provenance filled in.
    stopped_by: "steps", "time", "early_stopping" or "user".
    saved_to / save_error: where the model was saved, or why it could not be (nothing is
    saved when no step was made: ``trained`` is False).
    history: one dict per validation (step, elapsed_s, loss, ap50, fg_iou, ...).
    """

    model: CellModel
    steps: int
    best_step: int
    best_metrics: dict[str, float] | None
    stopped_by: str
    elapsed_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    saved_to: Path | None = None
    save_error: str | None = None  # why saving failed (the model is still here)

    @property
    def trained(self) -> bool:
        """False when no optimiser step was made: the model is the start model."""
        return self.steps > 0


# --------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------


class SeededDropout(nn.Module):
    """Dropout drawing its masks from a given torch Generator (not the global RNG)."""

    def __init__(self, p: float, generator: torch.Generator):
        super().__init__()
        self.p = float(p)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.shape, device=x.device, dtype=torch.float32)
        keep.bernoulli_(1.0 - self.p, generator=self.generator)
        return x * (keep / (1.0 - self.p)).to(x.dtype)


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """sum(w * CE) / sum(w): logits (N, K, H, W), target (N, H, W) int64, weight (N, H, W)."""
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (ce * weight).sum() / weight.sum().clamp_min(1e-6)


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay over the budget's progress."""
    peak = config.peak_learning_rate
    warm = min(1.0, step / config.warmup_steps) if config.warmup_steps else 1.0
    floor = config.final_lr_fraction
    cosine = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return peak * warm * cosine


def make_optimizer(net: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam(W) or the paper's SGD with momentum (learning rate set per step)."""
    params = [p for p in net.parameters() if p.requires_grad]
    lr = config.peak_learning_rate
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)


def resolve_start_model(model: CellModel | str | Path | ModelConfig | None, seed: int) -> tuple:
    """(a private copy of the starting CellModel, a description for the provenance).

    model: a CellModel (copied, never changed), a model file / registered name, a
    ModelConfig (from scratch), "scratch", or None (the bundled model if the plugin ships
    one, else from scratch with SCRATCH_CONFIG).
    """
    if model is None or (isinstance(model, str) and model == "scratch"):
        path = bundled_model_path() if model is None else None
        model = SCRATCH_CONFIG if path is None else path
    if isinstance(model, ModelConfig):
        # building torch layers draws default inits from the global RNG: keep it untouched
        with torch.random.fork_rng(devices=[]):
            fresh = CellModel.new(model, seed=seed)
        return fresh, f"scratch ({_describe_config(model)})"
    base = resolve_model(model)
    described = str(model) if isinstance(model, str | Path) else "a model in memory"
    copied = CellModel(
        net=copy.deepcopy(base.net).cpu(),
        normalization=base.normalization,
        classes=tuple(base.classes),
        provenance={},
        extra=copy.deepcopy(base.extra),
    )
    return copied, described


def _describe_config(config: ModelConfig) -> str:
    return f"base {config.base}, depth {config.depth}, padding {config.padding}"


def validate(
    net: nn.Module,
    regions: Sequence[ValidationRegion],
    device: torch.device,
    *,
    instances: InstanceConfig | None = None,
    stop: StopFlag = None,
) -> dict[str, float] | None:
    """Predict the validation regions tile by tile and score them.

    Returns {"loss", "ap50", "fg_iou", "n_true", "n_pred"}, pooled over the regions (AP
    from the summed TP/FP/FN), or None if stopped. Leaves ``net`` in eval mode. The loss
    is the weighted binary cross-entropy of the cell score (``cell_score_weights``)
    against its ideal value: 0 background, 1 cell, 0.5 boundary (3-class models).
    """
    instances = instances or InstanceConfig()
    probabilities = region_probabilities(net, regions, device, stop=stop)
    if probabilities is None:
        return None
    tp = fp = fn = 0
    inter = union = 0
    loss_sum = weight_sum = 0.0
    n_true = n_pred = 0
    for region, prob in zip(regions, probabilities, strict=True):
        # cross-entropy of the cell score against its ideal value per class
        ideal = _IDEAL_SCORE[np.minimum(region.target, len(_IDEAL_SCORE) - 1)]
        q = np.clip(prob, 1e-7, 1.0 - 1e-7)
        ce = -(ideal * np.log(q) + (1.0 - ideal) * np.log(1.0 - q))
        loss_sum += float((ce * region.weight).sum())
        weight_sum += float(region.weight.sum())
        labels = probabilities_to_labels(prob, instances)
        [m] = match(region.labels, labels, 0.5, ignore=region.ignore)
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
        n_true, n_pred = n_true + m.n_true, n_pred + m.n_pred
        keep = np.ones(prob.shape, bool) if region.ignore is None else ~region.ignore
        t, p = (region.labels > 0) & keep, (labels > 0) & keep
        inter += int(np.count_nonzero(t & p))
        union += int(np.count_nonzero(t | p))
    denom = tp + fp + fn
    return {
        "loss": loss_sum / weight_sum if weight_sum > 0 else 0.0,
        "ap50": tp / denom if denom else 1.0,
        "fg_iou": inter / union if union else 1.0,
        "n_true": float(n_true),
        "n_pred": float(n_pred),
    }


_IDEAL_SCORE = np.array([0.0, 1.0, 0.5], np.float32)  # by target class


def region_probabilities(
    net: nn.Module,
    regions: Sequence[ValidationRegion],
    device: torch.device,
    *,
    stop: StopFlag = None,
) -> list[np.ndarray] | None:
    """Cell scores (float32, the evaluated core of each region, ``cell_score_weights``),
    predicted tile by tile with the regions' real context; None if stopped. Leaves
    ``net`` in eval mode."""
    predictor = TorchPredictor(net, device, channels_last=False)  # keep training's layout
    cfg = net.config  # type: ignore[attr-defined]
    cell_model = CellModel(net=net, classes=default_classes(cfg.n_classes))  # type: ignore[arg-type]
    weights = cell_score_weights(cell_model)
    tile, batch = auto_tile_and_batch(cell_model, predictor.device)
    probabilities = []
    for region in regions:
        grid = plan_tiles(region.image.shape, tile, cfg.depth, cfg.padding)
        out = np.empty(region.image.shape, np.float32)
        for _ in predict_tiles(
            region.image[..., None],
            grid,
            predictor,
            out,
            channel=weights,
            batch_size=batch,
            stop=stop,
        ):
            pass
        if stop_requested(stop):
            return None
        y0, y1, x0, x1 = region.core
        probabilities.append(out[y0:y1, x0:x1])
    return probabilities


def match_model_scale(
    samples: Sequence[TrainingSample],
    val_samples: Sequence[TrainingSample] | None,
    model: CellModel,
) -> tuple[list[TrainingSample], list[TrainingSample] | None, dict[str, Any] | None]:
    """Bring the annotated cells to the size the model works at (``extra["diameter"]``).

    The typical diameter of the training labels (``core.scale.typical_diameter``, px) is
    measured; when it is outside ``core.scale.TOLERANCE`` of the model's, every sample
    (image bilinear, labels and ignore mask nearest, no cell lost) is resampled by the
    same factor, so the network learns at its own scale and prediction with
    ``diameter="auto"`` brings the user's images there too. Returns (samples,
    val_samples, a provenance note or None when the model records no diameter).
    """
    from .scale import (
        factor_for,
        labels_to_shape,
        model_diameter,
        resize_plane,
        scaled_shape,
        typical_diameter,
    )

    reference = model_diameter(model)
    sizes = [typical_diameter(s.labels) for s in samples if np.asarray(s.labels).any()]
    sizes = [d for d in sizes if d is not None]
    if reference is None or not sizes:
        return list(samples), val_samples, None
    diameter = float(np.median(sizes))
    factor = factor_for(diameter, reference)
    note = {"labels_diameter_px": round(diameter, 2), "model_diameter_px": reference}
    note["factor"] = round(factor, 4)
    if factor == 1.0:
        return list(samples), val_samples, note

    def resample(sample: TrainingSample) -> TrainingSample:
        shape = scaled_shape(np.shape(sample.labels), factor)
        image = resize_plane(np.asarray(sample.image, np.float32), shape)
        ignore = None
        if sample.ignore is not None:
            ignore = labels_to_shape(np.asarray(sample.ignore, np.int32), shape) > 0
        labels = labels_to_shape(np.asarray(sample.labels), shape)
        return TrainingSample(image, labels, ignore, sample.name)

    logger.info(
        "training cells of %.1f px resampled x%.2f to the model's %g px",
        diameter,
        factor,
        reference,
    )
    val = [resample(s) for s in val_samples] if val_samples else val_samples
    return [resample(s) for s in samples], val, note


def _scale_text(note: dict[str, Any] | None) -> str:
    if not note or note["factor"] == 1.0:
        return ""
    return (
        f"; cells of {note['labels_diameter_px']:.0f} px resampled x{note['factor']:.2f} to "
        f"the model's {note['model_diameter_px']:g} px"
    )


def _better(new: dict[str, float], best: dict[str, float] | None) -> bool:
    if best is None:
        return True
    if new["ap50"] > best["ap50"] + 1e-9:
        return True
    return abs(new["ap50"] - best["ap50"]) <= 1e-9 and new["loss"] < best["loss"]


def _data_summary(samples: Sequence[TrainingSample]) -> list[dict[str, Any]]:
    out = []
    for s in samples:
        annotated = 1.0 if s.ignore is None else float(1.0 - np.mean(s.ignore))
        out.append(
            {
                "name": s.name,
                "shape": list(s.image.shape),
                "dtype": str(s.image.dtype),
                "cells": len(np.unique(s.labels[s.labels > 0])),
                "annotated_fraction": round(annotated, 4),
            }
        )
    return out


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

    samples / val_samples: from ``core.data.as_samples``. model: see
    ``resolve_start_model``. device: "auto" | "cpu" | "cuda[:N]" | "mps". stop: checked
    between steps (and between validation tiles); when set, training ends with the best
    model so far. The caller's model is never modified. save_to: write the best model
    there (atomically) before the "done" event; an existing file is an error unless
    ``overwrite``; missing folders are created.
    """
    config = config or TrainConfig()
    samples = list(samples)
    if not samples:
        raise UNetCellsError("No training samples: add at least one image with labels.")
    if save_to is not None:
        save_to = Path(save_to)
        if save_to.exists() and not overwrite:
            raise UNetCellsError(
                f"{save_to} already exists; choose another file name (models are never "
                "overwritten without asking)."
            )
        if save_to.is_dir():
            raise UNetCellsError(f"{save_to} is a folder; give a file name for the model.")
        check_writable(save_to, "the model")  # before any work: never lose a trained model
    start_wall = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    torch_device = resolve_device(device)
    start_model, start_desc = resolve_start_model(model, config.seed)
    mcfg = start_model.config
    if mcfg.in_channels != 1:
        raise UNetCellsError(
            f"Training reads greyscale planes, but this model expects {mcfg.in_channels} "
            "channels: start from a 1-channel model (e.g. the bundled one) or from scratch."
        )
    samples, val_samples, data_scale = match_model_scale(samples, val_samples, start_model)
    train, regions = split_validation(
        samples, val_samples, config, mcfg, start_model.normalization
    )
    tile, out = choose_tile(mcfg, [p.shape for p in train], config.tile)
    off = (tile - out) // 2
    sampler = TileSampler(train, tile, out, config.cell_bias)
    aug_config = config.augment.scaled(config.augment_strength)
    rng = np.random.default_rng(config.seed)
    dropout_gen = torch.Generator(device=torch_device).manual_seed(config.seed)

    post = instance_defaults(start_model)  # the model's recommended post-processing
    tuned_before = False  # post chosen on the validation data before training
    net = start_model.net
    original_dropout = net.dropout
    net.dropout = SeededDropout(original_dropout.p, dropout_gen)
    # (a network used for prediction may be channels-last: slow to train on a CPU)
    net.to(torch_device, memory_format=torch.contiguous_format).train()
    optimizer = make_optimizer(net, config)
    amp = inference_dtype(torch_device)  # bf16 autocast on CUDA, fp32 elsewhere

    budget_s = None if config.minutes is None else 60.0 * config.minutes
    history: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_metrics: dict[str, float] | None = None
    best_step = 0
    bad_validations = 0
    stopped_by = "steps"
    step = 0
    last_validated = -1

    def progress_now() -> float:
        parts = [0.0]
        if config.steps is not None:
            parts.append(step / config.steps)
        if budget_s is not None:
            parts.append((time.perf_counter() - start_wall) / budget_s)
        return min(1.0, max(parts))

    def event(kind, **kw) -> TrainEvent:
        elapsed = time.perf_counter() - start_wall
        frac = progress_now()
        eta = elapsed * (1 - frac) / frac if frac > 0 and step > 0 else None
        return TrainEvent(
            kind=kind,
            step=step,
            total_steps=config.steps,
            elapsed_s=elapsed,
            progress=frac,
            eta_s=eta,
            best_step=best_step if best_metrics is not None else None,
            best_metrics=best_metrics,
            **kw,
        )

    def run_validation():
        nonlocal best_state, best_metrics, best_step, bad_validations, last_validated
        metrics = validate(net, regions, torch_device, instances=post, stop=stop)
        net.train()
        if metrics is None:
            return None
        last_validated = step
        metrics = {**metrics, "step": float(step)}
        history.append({**metrics, "elapsed_s": time.perf_counter() - start_wall})
        if _better(metrics, best_metrics):
            best_metrics, best_step, bad_validations = metrics, step, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        else:
            bad_validations += 1
        return metrics

    finished = False
    try:
        yield event(
            "start",
            message=(
                f"training {start_desc} on {len(train)} image(s) ({len(regions)} validation "
                f"region(s)), {tile} px tiles ({out} px output), batch {config.batch_size}, "
                f"{config.optimizer}, device {torch_device}{_scale_text(data_scale)}"
            ),
        )
        if regions and config.tune_post_processing:
            # validate with post-processing that suits these cells, so that the best step
            # is chosen for the network, not for how well the model's settings fit them;
            # on a subsample and within a share of the budget (it counts in the budget)
            cap = tuning_time_cap(budget_s)
            yield event(
                "tuning",
                message=f"choosing the post-processing for validation (at most {cap:.0f} s)",
            )
            began = time.perf_counter()
            reach = dependency_reach(mcfg.depth, mcfg.padding)
            subset = tuning_regions(regions, reach=reach, align=2**mcfg.depth)
            probabilities = region_probabilities(net, subset, torch_device, stop=stop)
            net.train()
            if probabilities is not None:
                post = tune_instances(
                    probabilities,
                    [r.labels for r in subset],
                    [r.ignore for r in subset],
                    start=post,
                    time_limit_s=max(0.0, cap - (time.perf_counter() - began)),
                )[0]
                tuned_before = True
                yield event(
                    "tuning",
                    message=f"post-processing for validation chosen in "
                    f"{time.perf_counter() - began:.0f} s; training ...",
                )
        while True:
            if stop_requested(stop):
                stopped_by = "user"
                break
            if config.steps is not None and step >= config.steps:
                stopped_by = "steps"
                break
            if budget_s and step and time.perf_counter() - start_wall >= budget_s:  # 1 step
                stopped_by = "time"
                break
            batch = sampler.sample(rng, config.batch_size)
            params = draw_params(rng, aug_config, config.batch_size)
            aug = augment_batch(
                params, batch.image, batch.weight, batch.target, device=torch_device
            )
            target = aug.target[:, off : off + out, off : off + out]
            weight = aug.weight[:, off : off + out, off : off + out]
            lr = learning_rate(config, step + 1, progress_now())
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(torch_device, amp):
                logits = net(aug.image)
            loss = weighted_cross_entropy(logits, target, weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise UNetCellsError(
                    f"The training loss became {loss_value} at step {step}: lower the "
                    "learning rate (e.g. 10 times) and train again."
                )
            yield event("step", loss=loss_value, lr=lr)
            if regions and step % config.validate_every == 0:
                metrics = run_validation()
                if metrics is not None:
                    yield event("validation", metrics=metrics)
                    if config.patience is not None and bad_validations >= config.patience:
                        stopped_by = "early_stopping"
                        break
        # a last validation so the final weights compete too (also after a stop request)
        final_metrics = None
        if regions and step > 0 and last_validated != step:
            final_metrics = run_validation()
            if final_metrics is not None:
                yield event("validation", metrics=final_metrics)
        if best_state is not None:
            net.load_state_dict(best_state)
        else:
            best_step = step
        extra = copy.deepcopy(start_model.extra)
        if tuned_before:  # what validation used; refined below unless stopped
            extra["instances"] = dataclasses.asdict(post)
        tuning = None
        if regions and config.tune_post_processing and stopped_by != "user" and step > 0:
            yield event(
                "tuning",
                message="choosing the post-processing on the validation data "
                f"(at most {TUNE_SECONDS:.0f} s)",
            )
            tuning = _final_tuning(net, regions, torch_device, post, stop)
            if tuning is not None:
                extra["instances"] = tuning["chosen"]
                if best_metrics is not None:  # one number: AP50 with the settings kept
                    best_metrics = {**best_metrics, "ap50": tuning["ap50"]}
        net.dropout = original_dropout
        net.to("cpu").eval()
        elapsed = time.perf_counter() - start_wall
        provenance = {
            "trained_from": start_desc,
            "training": {
                "started": started,
                "steps": step,
                "best_step": best_step,
                "stopped_by": stopped_by,
                "elapsed_s": round(elapsed, 2),
                "device": str(torch_device),
                "tile": tile,
                "output_tile": out,
                "config": config_to_dict(config),
                "data": _data_summary(samples),
                "validation_data": _data_summary(val_samples) if val_samples else "held out",
            },
            "validation": best_metrics,
            "instance_tuning": tuning,
            "data_scale": data_scale,
            "history": [{k: round(float(v), 5) for k, v in h.items()} for h in history[-200:]],
        }
        result_model = CellModel(
            net=net,
            normalization=start_model.normalization,
            classes=start_model.classes,
            provenance=provenance,
            extra=extra,
        )
        result = TrainResult(
            model=result_model,
            steps=step,
            best_step=best_step,
            best_metrics=best_metrics,
            stopped_by=stopped_by,
            elapsed_s=elapsed,
            history=history,
        )
        finished = True
        _release(optimizer, torch_device)
        if save_to is not None and result.trained:
            _save_or_keep(result, save_to)
        yield event(
            "done",
            metrics=best_metrics,
            result=result,
            message=_summary(result),
        )
        return result
    finally:
        if not finished:  # error or closed early: leave nothing on the device
            net.dropout = original_dropout
            net.to("cpu")
            _release(optimizer, torch_device)


def _final_tuning(net, regions, device, post: InstanceConfig, stop: StopFlag):
    """The post-processing for the trained network: searched on a subsample within
    TUNE_SECONDS, then scored on all validation regions (the AP50 the model reports).
    Returns the provenance dict, or None if stopped."""
    began = time.perf_counter()
    probabilities = region_probabilities(net, regions, device, stop=stop)
    if probabilities is None:
        return None
    tuned, _, scores = tune_instances(
        *tuning_crops(probabilities, regions, 4 * TUNE_PIXELS),
        start=post,
        time_limit_s=max(0.0, TUNE_SECONDS - (time.perf_counter() - began)),
    )
    before, after = (_pooled_ap50(probabilities, regions, c) for c in (post, tuned))
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


def _pooled_ap50(probabilities, regions, config: InstanceConfig) -> float:
    """AP at IoU 0.5 pooled over the validation regions with ``config``."""
    tp = fp = fn = 0
    for prob, region in zip(probabilities, regions, strict=True):
        labels = probabilities_to_labels(prob, config)
        [m] = match(region.labels, labels, 0.5, ignore=region.ignore)
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    return tp / max(1, tp + fp + fn)


TUNE_PIXELS = 512 * 512  # validation pixels the pre-training tuning looks at, at most
TUNE_SECONDS = 20.0  # the most it may take; 10 % of a shorter time budget


def tuning_time_cap(budget_s: float | None) -> float:
    """Seconds the post-processing search before training may take (part of the budget)."""
    return TUNE_SECONDS if budget_s is None else min(TUNE_SECONDS, max(1.0, 0.1 * budget_s))


def tuning_crops(
    probabilities: Sequence[np.ndarray],
    regions: Sequence[ValidationRegion],
    max_pixels: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray | None]]:
    """(probabilities, labels, ignore masks): central crops of the validation regions,
    ``max_pixels`` (default TUNE_PIXELS) in all at most, the same share of each region
    (whole below that)."""
    max_pixels = TUNE_PIXELS if max_pixels is None else max_pixels
    total = sum(p.size for p in probabilities)
    share = min(1.0, math.sqrt(max_pixels / total)) if total else 1.0
    out: tuple[list, list, list] = ([], [], [])
    for prob, region in zip(probabilities, regions, strict=True):
        h, w = prob.shape
        ch, cw = max(1, round(h * share)), max(1, round(w * share))
        box = np.s_[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]
        out[0].append(prob[box])
        out[1].append(region.labels[box])
        out[2].append(None if region.ignore is None else region.ignore[box])
    return out


def tuning_regions(
    regions: Sequence[ValidationRegion],
    max_pixels: int | None = None,
    *,
    reach: int,
    align: int = 1,
) -> list[ValidationRegion]:
    """Central crops of the validation regions' evaluated cores, ``max_pixels`` (default
    TUNE_PIXELS) in all at most, the same share of each. Each crop keeps up to ``reach``
    px (``tiling.dependency_reach``) of the region's real pixels around it, so the
    network predicts it as it predicts that part of the whole region, at the cost of
    about its own size; crops start on multiples of ``align`` px (2**depth: the pooling
    grid of the region)."""
    max_pixels = TUNE_PIXELS if max_pixels is None else max_pixels
    total = sum(r.labels.size for r in regions)
    share = min(1.0, math.sqrt(max_pixels / total)) if total else 1.0
    if share >= 1.0:
        return list(regions)
    return [_crop_region(r, share, reach, align) for r in regions]


def _crop_region(
    region: ValidationRegion, share: float, reach: int, align: int
) -> ValidationRegion:
    y0, y1, x0, x1 = region.core
    height, width = region.image.shape
    ch, cw = max(1, int((y1 - y0) * share)), max(1, int((x1 - x0) * share))
    oy, ox = (y1 - y0 - ch) // 2, (x1 - x0 - cw) // 2  # the crop inside the core
    cy, cx = y0 + oy, x0 + ox  # ... and inside the region's image
    iy0, ix0 = (max(0, c - reach) // align * align for c in (cy, cx))
    iy1, ix1 = min(height, cy + ch + reach), min(width, cx + cw + reach)
    box = np.s_[oy : oy + ch, ox : ox + cw]
    return ValidationRegion(
        image=region.image[iy0:iy1, ix0:ix1],
        core=(cy - iy0, cy - iy0 + ch, cx - ix0, cx - ix0 + cw),
        labels=region.labels[box],
        target=region.target[box],
        weight=region.weight[box],
        ignore=None if region.ignore is None else region.ignore[box],
        name=region.name,
    )


def _save_or_keep(result: TrainResult, path: Path) -> None:
    """Save the trained model; if that fails (a share turned read-only, a full disk),
    keep it in ``result`` with ``save_error`` set instead of losing it to an exception."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        result.saved_to = save_model(result.model, path)
    except OSError as err:
        result.save_error = f"{path}: {err.strerror or err}"
        logger.warning("the trained model was not saved (%s); it is kept in memory", err)


def _release(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    optimizer.state.clear()
    release_memory(device)


def _summary(result: TrainResult) -> str:
    text = f"{result.steps} steps in {result.elapsed_s:.0f} s ({result.stopped_by})"
    if result.best_metrics:
        m = result.best_metrics
        text += (
            f"; best at step {result.best_step}: validation AP50 {m['ap50']:.3f}, "
            f"foreground IoU {m['fg_iou']:.3f}, loss {m['loss']:.4f}"
        )
    tuning = result.model.provenance.get("instance_tuning")
    if tuning:  # the AP50 above is the one with these settings
        chosen = tuning["chosen"]
        text += (
            f" with the post-processing chosen for it (threshold {chosen['threshold']}, "
            f"seeds {chosen['seed_threshold'] or 'none'}, min size {chosen['min_size']} px)"
        )
    if not result.trained:
        return (
            f"no training step was made ({result.stopped_by.replace('_', ' ')} before the "
            "first step): nothing saved, the start model is unchanged"
        )
    if result.saved_to is not None:
        text += f"; saved to {result.saved_to}"
    if result.save_error is not None:
        text += f"; NOT SAVED ({result.save_error}): the model is kept, save it elsewhere"
    return text


def preview_augmentation(
    samples: Sequence[TrainingSample],
    config: TrainConfig | None = None,
    model_config: ModelConfig | None = None,
    n: int = 4,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``n`` training tiles exactly as the network is taught (drawn, then augmented).

    Returns {"image": float32 (n, S, S) normalised input tiles, "labels": int32 (n, S, S)
    instance ids, "target": uint8 (n, S, S), "weight": float32 (n, S, S) loss weights,
    0 outside each tile's output window (the pixels the loss sees)}. S is the training
    input tile size for ``model_config`` (default: SCRATCH_CONFIG).
    """
    config = config or TrainConfig()
    model_config = model_config or SCRATCH_CONFIG
    train, _ = split_validation(list(samples), None, config, model_config)
    tile, out = choose_tile(model_config, [p.shape for p in train], config.tile)
    off = (tile - out) // 2
    rng = np.random.default_rng(seed)
    batch = TileSampler(train, tile, out, config.cell_bias).sample(rng, n)
    params = draw_params(rng, config.augment.scaled(config.augment_strength), n)
    aug = augment_batch(params, batch.image, batch.weight, batch.target, batch.labels)
    window = torch.zeros(tile, tile)
    window[off : off + out, off : off + out] = 1.0
    return {
        "image": aug.image[:, 0].numpy(),
        "labels": aug.labels.numpy().astype(np.int32),
        "target": aug.target.numpy().astype(np.uint8),
        "weight": (aug.weight * window).numpy(),
    }


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

    images / labels: a (Y, X) array or (Z, Y, X) stack, or lists of them, with integer
    instance labels of the same shapes (0 = background). ignore: masks of unannotated
    pixels (nonzero = ignore), per image or None. model: a model file, a CellModel, a
    ModelConfig (from scratch), "scratch", or None (bundled model, else scratch).
    config: a TrainConfig; ``steps`` / ``minutes`` override its budget (giving one alone
    makes it the only budget). val_*: separate validation images (else a held-out strip
    of each image). output: save the model there; an existing file is an error unless
    ``overwrite`` (its folder must be writable: checked before training; if saving still
    fails at the end, the model is returned and the error logged, never lost).
    progress: called with every TrainEvent. stop: see ``train_iter``.

    >>> import napari_unet_cells as uc
    >>> image, labels = uc.synthetic_cells((96, 96), seed=0)
    >>> small = uc.ModelConfig(base=4, depth=2, dropout=0.0)
    >>> model = uc.finetune(image, labels, model=small, steps=2)
    >>> model.provenance["training"]["steps"]
    2
    """
    import dataclasses

    config = config or TrainConfig()
    if steps is not None or minutes is not None:
        config = dataclasses.replace(config, steps=steps, minutes=minutes)
    if output is not None:
        output = Path(output)
        if output.exists() and not overwrite:
            raise UNetCellsError(
                f"{output} already exists; choose another file name, or pass overwrite=True "
                "to replace it."
            )
        if not output.parent.is_dir():
            raise UNetCellsError(f"The folder {output.parent} does not exist; create it first.")
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
