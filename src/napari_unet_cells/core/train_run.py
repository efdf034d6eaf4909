"""One training run: its events, its result, and the state the steps share.

``prepare_run`` sets a run up (start model, data, tiles, optimiser, random streams);
``TrainingRun`` holds what the steps of ``core.train.train_iter`` change (step count,
best model, history) and makes the ``TrainEvent``s; ``optimiser_step`` is one step and
``provenance`` what the model file records about the run.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .augment import augment_batch, draw_params
from .checkpoint import CellModel
from .config import InstanceConfig, ModelConfig, TrainConfig, config_to_dict
from .data import (
    PreparedSample,
    TileSampler,
    TrainingSample,
    ValidationRegion,
    choose_tile,
    split_validation,
)
from .device import autocast, inference_dtype, resolve_device
from .errors import UNetCellsError
from .instances import instance_defaults
from .progress import StopFlag, stop_requested
from .train_setup import (
    SeededDropout,
    data_summary,
    learning_rate,
    make_optimizer,
    match_model_scale,
    resolve_start_model,
    scale_text,
    weighted_cross_entropy,
)
from .validation import is_better

#: what a TrainEvent reports
TrainEventKind = Literal["start", "tuning", "step", "validation", "done"]


@dataclass(frozen=True)
class TrainEvent:
    """One progress event.

    kind: "start" (set-up done), "tuning" (the post-processing search for the validation
    data begins or ends, before training; or begins, after it), "step" (one optimiser
    step), "validation", "done" (the last event).
    step: optimiser steps done; total_steps: the step budget (None: time budget only).
    elapsed_s: wall time since the start, s; progress: share of the budget used (0..1);
    eta_s: estimated seconds left (None until known).
    loss, lr: the step's training loss and learning rate ("step" events).
    metrics: validation results ("validation", "done"): loss, ap50, fg_iou, ...
    best_step / best_metrics: the best validation so far.
    message: a line for the user. result: the TrainResult (only on "done").
    """

    kind: TrainEventKind
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
    saved_to / save_error: where the model was saved, or why it was not (the folder
    turned read-only, the disk is full, or a file of that name appeared during training
    and ``overwrite`` was not requested); the model is kept here either way. Nothing is
    saved when no step was made (``trained`` is False).
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

    @property
    def start_metrics(self) -> dict[str, float] | None:
        """The start model's validation (step 0, before any training), or None."""
        return next((h for h in self.history if h.get("step") == 0), None)

    @property
    def ended(self) -> str:
        """Why training ended, in words for the user (from ``stopped_by``)."""
        return _ENDED.get(self.stopped_by, self.stopped_by.replace("_", " "))


_ENDED = {
    "steps": "the step budget was used",
    "time": "the time budget ran out",
    "early_stopping": "validation stopped improving",
    "user": "stopped by you",
}


@dataclass
class Best:
    """The best validation so far: its metrics, step and weights (CPU copies), and how
    many validations since did not beat it."""

    metrics: dict[str, float] | None = None
    step: int = 0
    state: dict[str, torch.Tensor] | None = None
    bad_validations: int = 0


class WeightAverage:
    """The running mean of a network's floating-point weights (stochastic weight
    averaging, Izmailov et al. 2018), kept on the network's device.

    Parameters
    ----------
    net : the network whose current weights start the average.
    """

    def __init__(self, net: nn.Module):
        self.count = 1
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def add(self, net: nn.Module) -> None:
        """Add ``net``'s current weights to the mean (other tensors keep the first)."""
        self.count += 1
        with torch.no_grad():
            for key, value in net.state_dict().items():
                mean = self.state[key]
                if mean.is_floating_point():
                    mean.add_(value.detach() - mean, alpha=1.0 / self.count)

    def load_into(self, net: nn.Module) -> None:
        """Put the averaged weights into ``net``."""
        net.load_state_dict(self.state)


@dataclass(eq=False)
class TrainingRun:
    """The state of one training run (made by ``prepare_run``).

    The network being trained is ``start_model.net`` (a private copy, on ``device``,
    with seeded dropout); ``train`` are the prepared training samples (Y, X) and
    ``regions`` the held-out validation regions; tiles are ``tile`` px in, ``out`` px
    out. ``post`` is the post-processing validation uses.
    """

    config: TrainConfig
    device: torch.device
    stop: StopFlag
    start_model: CellModel
    start_desc: str
    samples: list[TrainingSample]
    val_samples: list[TrainingSample] | None
    data_scale: dict[str, Any] | None
    train: list[PreparedSample]
    regions: list[ValidationRegion]
    tile: int
    out: int
    sampler: TileSampler
    rng: np.random.Generator
    original_dropout: nn.Module
    optimizer: torch.optim.Optimizer
    amp: torch.dtype | None
    post: InstanceConfig
    started: str
    start_wall: float
    tuned_before: bool = False  # ``post`` was chosen on the validation data
    val_cells: int = 0  # cells in the validation regions (ignored ones count too)
    average: WeightAverage | None = None  # the running average of the weights
    last_metrics: dict[str, float] | None = None  # the latest validation
    step: int = 0
    stopped_by: str = "steps"
    last_validated: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    best: Best = field(default_factory=Best)

    @property
    def net(self) -> nn.Module:
        return self.start_model.net

    @property
    def budget_s(self) -> float | None:
        """The time budget in seconds (None: steps only)."""
        return None if self.config.minutes is None else 60.0 * self.config.minutes

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.start_wall

    def progress(self) -> float:
        """The share of the budget used, 0..1: steps or time, whichever is further."""
        parts = [0.0]
        if self.config.steps is not None:
            parts.append(self.step / self.config.steps)
        if self.budget_s is not None:
            parts.append(self.elapsed() / self.budget_s)
        return min(1.0, max(parts))

    def event(self, kind: TrainEventKind, **kw: Any) -> TrainEvent:
        """A TrainEvent of ``kind`` with the run's progress and best validation."""
        elapsed = self.elapsed()
        frac = self.progress()
        eta = elapsed * (1 - frac) / frac if frac > 0 and self.step > 0 else None
        return TrainEvent(
            kind=kind,
            step=self.step,
            total_steps=self.config.steps,
            elapsed_s=elapsed,
            progress=frac,
            eta_s=eta,
            best_step=self.best.step if self.best.metrics is not None else None,
            best_metrics=self.best.metrics,
            **kw,
        )

    def start_message(self) -> str:
        """The "start" event's line: what is trained on what, how."""
        cfg = self.config
        snapped = ""
        if cfg.tile is not None and cfg.tile != self.tile:
            snapped = f", the nearest valid size to the {cfg.tile} px asked"
        return (
            f"training {self.start_desc} on {len(self.train)} image(s) ({len(self.regions)} "
            f"validation region(s)), {self.tile} px tiles ({self.out} px output{snapped}), batch "
            f"{cfg.batch_size}, {cfg.optimizer}, device {self.device}"
            f"{scale_text(self.data_scale)}"
        )

    def budget_spent(self) -> str | None:
        """Why training ends before the next step ("user", "steps", "time"), or None."""
        if stop_requested(self.stop):
            return "user"
        if self.config.steps is not None and self.step >= self.config.steps:
            return "steps"
        budget_s = self.budget_s
        if budget_s and self.step and self.elapsed() >= budget_s:  # at least 1 step
            return "time"
        return None

    def record(self, metrics: dict[str, float]) -> dict[str, float]:
        """Add a validation of the current weights to the history; keep them if best.

        Returns the metrics with "step" added.
        """
        self.last_validated = self.step
        metrics = {**metrics, "step": float(self.step)}
        self.last_metrics = metrics
        self.history.append({**metrics, "elapsed_s": self.elapsed()})
        if is_better(metrics, self.best.metrics):
            state = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}
            self.best = Best(metrics=metrics, step=self.step, state=state)
        else:
            self.best.bad_validations += 1
        return metrics

    @property
    def choose_best(self) -> bool:
        """Whether the best validated weights are kept (and early stopping applies):
        only with at least ``config.min_val_cells`` validation cells."""
        return bool(self.regions) and self.val_cells >= self.config.min_val_cells

    @property
    def tunes_post_processing(self) -> bool:
        """Whether the post-processing is chosen on the validation data: asked for
        (``config.tune_post_processing``) and, as for the best step, at least
        ``config.min_val_cells`` validation cells; with fewer, the start model's own
        settings are kept (chosen on 6-11 cells they were never better on unseen cells
        in 32 benchmark runs, and 0.09-0.12 AP50 worse in 2, docs/finetune.md)."""
        return self.config.tune_post_processing and self.choose_best

    def patience_spent(self) -> bool:
        """True when early stopping is due (``config.patience`` validations not better,
        and validation has enough cells to choose by)."""
        patience = self.config.patience
        return self.choose_best and patience is not None and self.best.bad_validations >= patience

    def update_average(self) -> None:
        """Add the current weights to the running average, from ``config.average_from``
        of the budget on (a no-op without it)."""
        start = self.config.average_from
        if start is None or self.progress() < start:
            return
        if self.average is None:
            self.average = WeightAverage(self.net)
        else:
            self.average.add(self.net)

    def restore_network(self) -> None:
        """Put the plain dropout layer back and move the network to the CPU."""
        self.net.dropout = self.original_dropout
        self.net.to("cpu")


def prepare_run(
    samples: Sequence[TrainingSample],
    model: CellModel | str | Path | ModelConfig | None,
    config: TrainConfig,
    val_samples: Sequence[TrainingSample] | None,
    device: str | torch.device,
    stop: StopFlag,
) -> TrainingRun:
    """Set up a training run: data at the model's scale, tiles, network, optimiser.

    Parameters
    ----------
    samples, val_samples : from ``core.data.as_samples`` (2-D planes).
    model : see ``train_setup.resolve_start_model``; never modified.
    config : the training settings; ``config.seed`` seeds the tile draws and the
        augmentation (one numpy Generator) and dropout (a torch Generator on the device).
    device : "auto" | "cpu" | "cuda[:N]" | "mps" or a torch.device.
    stop : the stop request the run checks.

    Raises UNetCellsError for no samples, a multi-channel model, or unusable data.
    """
    samples = list(samples)
    if not samples:
        raise UNetCellsError("No training samples: add at least one image with labels.")
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
    sampler = TileSampler(train, tile, out, config.cell_bias)
    rng = np.random.default_rng(config.seed)
    dropout_gen = torch.Generator(device=torch_device).manual_seed(config.seed)
    post = instance_defaults(start_model)  # the model's recommended post-processing
    val_cells = sum(len(np.unique(r.labels[r.labels > 0])) for r in regions)
    net = start_model.net
    original_dropout = net.dropout
    net.dropout = SeededDropout(original_dropout.p, dropout_gen)
    # channels-last, as prediction runs it: a CPU training step is 1.2x faster in fp32 and
    # 2.3x faster with bf16 autocast than in the default layout (benchmarks/bench_train.py)
    net.to(torch_device, memory_format=torch.channels_last).train()
    return TrainingRun(
        config=config,
        device=torch_device,
        stop=stop,
        start_model=start_model,
        start_desc=start_desc,
        samples=samples,
        val_samples=None if val_samples is None else list(val_samples),
        data_scale=data_scale,
        train=train,
        regions=regions,
        tile=tile,
        out=out,
        sampler=sampler,
        rng=rng,
        original_dropout=original_dropout,
        optimizer=make_optimizer(net, config),
        amp=inference_dtype(torch_device),  # bf16 where the hardware has it (device.py)
        post=post,
        started=started,
        start_wall=start_wall,
        val_cells=val_cells,
    )


def optimiser_step(state: TrainingRun) -> tuple[float, float]:
    """One optimiser step: draw ``batch_size`` tiles, augment each, minimise the weighted
    cross-entropy over the tiles' output windows.

    Returns
    -------
    (the step's loss, its learning rate); ``state.step`` is counted up.

    Raises UNetCellsError when the loss is not finite (learning rate too high).
    """
    config, off, out = state.config, (state.tile - state.out) // 2, state.out
    batch = state.sampler.sample(state.rng, config.batch_size)
    params = draw_params(
        state.rng, config.augment.scaled(config.augment_strength), config.batch_size
    )
    aug = augment_batch(params, batch.image, batch.weight, batch.target, device=state.device)
    target = aug.target[:, off : off + out, off : off + out]
    weight = aug.weight[:, off : off + out, off : off + out]
    lr = learning_rate(config, state.step + 1, state.progress())
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    with autocast(state.device, state.amp):
        logits = state.net(aug.image)
    loss = weighted_cross_entropy(logits, target, weight)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.step += 1
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise UNetCellsError(
            f"The training loss became {loss_value} at step {state.step}: lower the "
            "learning rate (e.g. 10 times) and train again."
        )
    return loss_value, lr


def provenance(
    state: TrainingRun, tuning: dict[str, Any] | None, elapsed_s: float
) -> dict[str, Any]:
    """What the model file records about the run (JSON-serialisable).

    Parameters
    ----------
    state : the finished run (best weights chosen).
    tuning : the post-processing search after training (``_search_post_processing`` in
        core/train.py), or None.
    elapsed_s : the run's wall time, s.

    Returns
    -------
    {"trained_from", "training" (dates, steps, device, tile sizes in px, the settings,
    the data), "validation" (the best metrics), "instance_tuning", "data_scale",
    "history" (the last 200 validations, rounded)}.
    """
    return {
        "trained_from": state.start_desc,
        "training": {
            "started": state.started,
            "steps": state.step,
            "best_step": state.best.step,
            "stopped_by": state.stopped_by,
            "selection": "best validation" if state.choose_best else "final weights",
            "averaged_steps": 0 if state.average is None else state.average.count,
            "validation_cells": state.val_cells,
            "elapsed_s": round(elapsed_s, 2),
            "device": str(state.device),
            "tile": state.tile,
            "output_tile": state.out,
            "config": config_to_dict(state.config),
            "data": data_summary(state.samples),
            "validation_data": data_summary(state.val_samples)
            if state.val_samples
            else "held out",
        },
        "validation": state.best.metrics,
        "instance_tuning": tuning,
        "data_scale": state.data_scale,
        "history": [{k: round(float(v), 5) for k, v in h.items()} for h in state.history[-200:]],
    }
