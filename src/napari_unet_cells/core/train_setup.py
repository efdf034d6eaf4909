"""The parts training is made of: the start model, the data at the model's scale, the
loss, the learning-rate schedule, the optimiser and seeded dropout.

``core/train.py`` assembles them into the training loop; ``preview_augmentation`` shows
the tiles exactly as that loop teaches them.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import augment_batch, draw_params
from .checkpoint import CellModel
from .config import ModelConfig, TrainConfig
from .data import TileSampler, TrainingSample, choose_tile, split_validation
from .registry import bundled_model_path, resolve_model

logger = logging.getLogger(__name__)

#: the network trained when starting from scratch without a config
SCRATCH_CONFIG = ModelConfig(base=16, depth=4, dropout=0.5)


class SeededDropout(nn.Module):
    """Dropout drawing its masks from a given torch Generator (not the global RNG).

    Parameters
    ----------
    p : the probability of zeroing an element (0 <= p < 1).
    generator : the torch Generator the masks are drawn from (on the input's device).
    """

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
    """The paper's loss: sum(w * CE) / sum(w), pixels with w = 0 not counting.

    Parameters
    ----------
    logits : (N, K, H, W) class scores (any float dtype; computed in float32).
    target : (N, H, W) int64 class per pixel.
    weight : (N, H, W) float loss weights (the weight map, 0 outside the output window).

    Returns
    -------
    A scalar tensor.
    """
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (ce * weight).sum() / weight.sum().clamp_min(1e-6)


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """The learning rate of one optimiser step.

    Linear warm-up over ``config.warmup_steps``, then a cosine decay over the budget's
    progress from the peak (``config.peak_learning_rate``) down to
    ``config.final_lr_fraction`` of it.

    Parameters
    ----------
    config : the training settings.
    step : the step, 1-based.
    progress : the share of the budget (steps or time) used, 0..1.

    Returns
    -------
    The learning rate.
    """
    peak = config.peak_learning_rate
    warm = min(1.0, step / config.warmup_steps) if config.warmup_steps else 1.0
    floor = config.final_lr_fraction
    cosine = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return peak * warm * cosine


def make_optimizer(net: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser for ``net``'s trainable parameters.

    Parameters
    ----------
    net : the network.
    config : ``optimizer`` ("adam": AdamW; "sgd": the paper's SGD with ``momentum``),
        ``weight_decay``; the learning rate is set before every step (``learning_rate``).

    Returns
    -------
    A torch optimiser.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    lr = config.peak_learning_rate
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)


def resolve_start_model(
    model: CellModel | str | Path | ModelConfig | None, seed: int
) -> tuple[CellModel, str]:
    """A private copy of the model training starts from.

    Parameters
    ----------
    model : a CellModel (copied, never changed), a model file or registered name, a
        ModelConfig (from scratch), "scratch", or None (the bundled model if the plugin
        ships one, else from scratch with ``SCRATCH_CONFIG``).
    seed : seeds the initialisation of a new network (the global torch RNG is untouched).

    Returns
    -------
    (the CellModel on the CPU with empty provenance, a description for the provenance).
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


def match_model_scale(
    samples: Sequence[TrainingSample],
    val_samples: Sequence[TrainingSample] | None,
    model: CellModel,
) -> tuple[list[TrainingSample], list[TrainingSample] | None, dict[str, Any] | None]:
    """Bring the annotated cells to the size the model works at (``extra["diameter"]``).

    The typical diameter of the training labels (``core.scale.typical_diameter``, px) is
    measured; when it needs resampling (``core.scale.within_tolerance``), every sample
    (image bilinear, labels and ignore mask nearest, no cell lost) is resampled by the
    same factor, so the network learns at its own scale and prediction with
    ``diameter="auto"`` brings the user's images there too.

    Returns
    -------
    (samples, val_samples, a provenance note {"labels_diameter_px", "model_diameter_px",
    "factor"}, or None when the model records no diameter or no sample has cells).
    """
    from .scale import factor_for, model_diameter, typical_diameter

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
    logger.info(
        "training cells of %.1f px resampled x%.2f to the model's %g px",
        diameter,
        factor,
        reference,
    )
    val = [_resample(s, factor) for s in val_samples] if val_samples else val_samples
    return [_resample(s, factor) for s in samples], val, note


def _resample(sample: TrainingSample, factor: float) -> TrainingSample:
    """``sample`` scaled by ``factor``: the image as ``predict`` resamples it (cubic when
    enlarging), labels and ignore mask nearest."""
    from .scale import labels_to_shape, resize_plane, scaled_shape

    shape = scaled_shape(np.shape(sample.labels), factor)
    image = resize_plane(np.asarray(sample.image, np.float32), shape)
    ignore = None
    if sample.ignore is not None:
        ignore = labels_to_shape(np.asarray(sample.ignore, np.int32), shape) > 0
    labels = labels_to_shape(np.asarray(sample.labels), shape)
    return TrainingSample(image, labels, ignore, sample.name)


def scale_text(note: dict[str, Any] | None) -> str:
    """The part of the start message telling how the cells were resampled.

    Parameters
    ----------
    note : the provenance note of ``match_model_scale`` (or None).

    Returns
    -------
    "; cells of D px resampled xF to the model's R px", or "" when nothing was resampled.
    """
    if not note or note["factor"] == 1.0:
        return ""
    return (
        f"; cells of {note['labels_diameter_px']:.0f} px resampled x{note['factor']:.2f} to "
        f"the model's {note['model_diameter_px']:g} px"
    )


def data_summary(samples: Sequence[TrainingSample]) -> list[dict[str, Any]]:
    """What the provenance records about the training data.

    Parameters
    ----------
    samples : the training (or validation) samples.

    Returns
    -------
    One dict per sample: "name", "shape" (px), "dtype", "cells" (labelled instances) and
    "annotated_fraction" (1 minus the ignore mask's share of the pixels).
    """
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


def preview_augmentation(
    samples: Sequence[TrainingSample],
    config: TrainConfig | None = None,
    model_config: ModelConfig | None = None,
    n: int = 4,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``n`` training tiles exactly as the network is taught (drawn, then augmented).

    Parameters
    ----------
    samples : the training samples (``core.data.as_samples``).
    config : the training settings (tile size, cell bias, augmentation).
    model_config : the network (default ``SCRATCH_CONFIG``): sets the tile sizes.
    n : how many tiles.
    seed : seeds the tile draw and the augmentation.

    Returns
    -------
    {"image": float32 (n, S, S) normalised input tiles, "labels": int32 (n, S, S)
    instance ids, "target": uint8 (n, S, S), "weight": float32 (n, S, S) loss weights,
    0 outside each tile's output window (the pixels the loss sees)}; S is the training
    input tile size in px.
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
