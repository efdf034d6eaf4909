"""Validation during training: predicting the held-out regions and scoring them.

A validation region (``core.data.ValidationRegion``) is a held-out part of an annotated
image with its real surrounding pixels; the network predicts it tile by tile with
the one tile loop (core/tile_loop.py ``predict_plane``, shared with prediction; the cell
score weighs the classes the model names, ``cell_score_weights``), core/instances.py
turns the cell scores into instances,
and core/metrics.py matches them with the annotation. The same predictions serve the
search for the post-processing (``core.instances.tune_instances``) before and after
training, on central crops of the regions (``tuning_regions``, ``tuning_crops``) so that
the search stays within a share of the time budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .checkpoint import default_classes
from .config import InstanceConfig
from .data import ValidationRegion
from .instances import probabilities_to_labels
from .metrics import match
from .predictor import TorchPredictor, auto_tile_and_batch, cell_score_weights
from .progress import StopFlag, run
from .tile_loop import predict_plane

TUNE_PIXELS = 512 * 512  # validation pixels the pre-training tuning looks at, at most
TUNE_SECONDS = 20.0  # the most it may take; 10 % of a shorter time budget

_IDEAL_SCORE = np.array([0.0, 1.0, 0.5], np.float32)  # by target class


def validate(
    net: nn.Module,
    regions: Sequence[ValidationRegion],
    device: torch.device,
    *,
    instances: InstanceConfig | None = None,
    classes: Sequence[str] | None = None,
    stop: StopFlag = None,
) -> dict[str, float] | None:
    """Predict the validation regions tile by tile and score them.

    Parameters
    ----------
    net : the U-Net being trained (left in eval mode).
    regions : the held-out regions (``core.data.split_validation``).
    device : where the network runs.
    instances : the post-processing that turns cell scores into instances (default:
        ``InstanceConfig()``).
    classes : the meaning of the network's output channels (the model's ``classes``;
        default ``default_classes``): they give the cell score's weights.
    stop : checked between tiles.

    Returns
    -------
    {"loss", "ap50", "fg_iou", "n_true", "n_pred"} pooled over the regions (AP at IoU 0.5
    from the summed TP/FP/FN; foreground IoU over the annotated pixels), or None if
    stopped. The loss is the weighted binary cross-entropy of the cell score
    (``cell_score_weights``) against its ideal value: 0 background, 1 cell, 0.5 boundary
    (3-class models).
    """
    instances = instances or InstanceConfig()
    probabilities = region_probabilities(net, regions, device, classes=classes, stop=stop)
    if probabilities is None:
        return None
    tp = fp = fn = 0
    inter = union = 0
    loss_sum = weight_sum = 0.0
    n_true = n_pred = 0
    for region, prob in zip(regions, probabilities, strict=True):
        ce_sum, w_sum = _score_loss(prob, region)
        loss_sum, weight_sum = loss_sum + ce_sum, weight_sum + w_sum
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


def _score_loss(prob: np.ndarray, region: ValidationRegion) -> tuple[float, float]:
    """(sum of weight * cross-entropy, sum of weights) of the cell score ``prob`` against
    the ideal score of each pixel's target class."""
    ideal = _IDEAL_SCORE[np.minimum(region.target, len(_IDEAL_SCORE) - 1)]
    q = np.clip(prob, 1e-7, 1.0 - 1e-7)
    ce = -(ideal * np.log(q) + (1.0 - ideal) * np.log(1.0 - q))
    return float((ce * region.weight).sum()), float(region.weight.sum())


def region_probabilities(
    net: nn.Module,
    regions: Sequence[ValidationRegion],
    device: torch.device,
    *,
    classes: Sequence[str] | None = None,
    stop: StopFlag = None,
) -> list[np.ndarray] | None:
    """Cell scores of the validation regions, predicted tile by tile with their context.

    Each region's whole ``image`` is predicted with the one tile loop
    (``tile_loop.predict_plane``: batches, out-of-memory fallback, stop between batches)
    and its evaluated core is cut out, so the core is predicted as it would be with the
    region's real pixels around it.

    Parameters
    ----------
    net : the U-Net (its ``config`` gives depth, padding and classes); used in place (it
        is on ``device``, in training's memory layout) and left in eval mode.
    regions : the regions; each ``image`` (H, W) float32 holds the evaluated core plus
        the real pixels around it.
    device : where the network runs.
    classes : the meaning of the network's output channels (the model's ``classes``;
        default ``default_classes(n_classes)``): the cell score's weights
        (``cell_score_weights``).
    stop : checked between batches of tiles.

    Returns
    -------
    One float32 (h, w) array per region: the cell score (0..1) of the region's evaluated
    core ``region.core``; None if stopped.
    """
    config = net.config  # type: ignore[attr-defined]
    predictor = TorchPredictor(net, device)  # training's layout: no copy
    weights = cell_score_weights(classes or default_classes(config.n_classes))
    tile, batch = auto_tile_and_batch(config, predictor.device)
    probabilities = []
    try:
        for region in regions:
            done = run(
                predict_plane(
                    predictor,
                    region.image,
                    config,
                    weights,
                    tile=tile,
                    batch_size=batch,
                    stop=stop,
                )
            )
            if done is None:
                return None
            predictor, tile = done.predictor, done.tile  # after out-of-memory: what fitted
            y0, y1, x0, x1 = region.core
            probabilities.append(done.scores[y0:y1, x0:x1])
    finally:
        if predictor.owns_copy:  # the CPU fallback's copy of the weights
            predictor.close()
    return probabilities


def is_better(new: dict[str, float], best: dict[str, float] | None) -> bool:
    """Whether a validation beats the best so far.

    Parameters
    ----------
    new, best : validation metrics ("ap50", "loss"); ``best`` None: nothing yet.

    Returns
    -------
    True for a higher AP50 (beyond 1e-9), or an equal AP50 with a lower loss.
    """
    if best is None:
        return True
    if new["ap50"] > best["ap50"] + 1e-9:
        return True
    return abs(new["ap50"] - best["ap50"]) <= 1e-9 and new["loss"] < best["loss"]


def pooled_ap50(
    probabilities: Sequence[np.ndarray],
    regions: Sequence[ValidationRegion],
    config: InstanceConfig,
) -> float:
    """AP at IoU 0.5 over the validation regions with one post-processing.

    Parameters
    ----------
    probabilities : the cell scores, one float32 (h, w) array per region core.
    regions : the regions (labels and ignore masks of their cores).
    config : the post-processing that makes instances of the scores.

    Returns
    -------
    TP / (TP + FP + FN) from the matches summed over the regions (0 if all are empty).
    """
    tp = fp = fn = 0
    for prob, region in zip(probabilities, regions, strict=True):
        labels = probabilities_to_labels(prob, config)
        [m] = match(region.labels, labels, 0.5, ignore=region.ignore)
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    return tp / max(1, tp + fp + fn)


def tuning_time_cap(budget_s: float | None) -> float:
    """The seconds the post-processing search before training may take.

    Parameters
    ----------
    budget_s : the training's time budget, s (None: a step budget only).

    Returns
    -------
    ``TUNE_SECONDS``, or 10 % of a shorter time budget, at least 1 s (it counts in it).
    """
    return TUNE_SECONDS if budget_s is None else min(TUNE_SECONDS, max(1.0, 0.1 * budget_s))


def tuning_crops(
    probabilities: Sequence[np.ndarray],
    regions: Sequence[ValidationRegion],
    max_pixels: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray | None]]:
    """Central crops of predicted validation regions, for the post-processing search.

    Parameters
    ----------
    probabilities : one cell-score array (h, w) per region core.
    regions : the regions they belong to (labels and ignore masks of the cores).
    max_pixels : the most pixels in all crops together (default ``TUNE_PIXELS``); the same
        share of each region, whole regions below it.

    Returns
    -------
    (cell scores, labels, ignore masks or None): one crop of each per region.
    """
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
    """Central crops of the validation regions' evaluated cores, predicted like the whole.

    Parameters
    ----------
    regions : the validation regions.
    max_pixels : the most core pixels in all crops together (default ``TUNE_PIXELS``), the
        same share of each region; the regions themselves when they are smaller.
    reach : px of the region's real pixels kept around each crop
        (``tiling.dependency_reach``), so the network predicts the crop as it predicts
        that part of the whole region, at the cost of about the crop's own size.
    align : crops start on multiples of ``align`` px (2**depth: the region's pooling
        grid).

    Returns
    -------
    One ValidationRegion per region.
    """
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
