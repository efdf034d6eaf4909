"""Segmentation quality: object matching at IoU thresholds, foreground IoU, splits/merges.

All functions take 2D (or nD) instance label images, 0 = background, each positive
integer one object, and return plain Python numbers, so results go straight into JSON.

Object matching pairs ground-truth and predicted objects one-to-one (optimal assignment
on the IoU matrix, ``scipy.optimize.linear_sum_assignment``); a pair counts as a true
positive if its IoU is at least the threshold. For thresholds >= 0.5 the matching is
unique anyway, since an object can overlap at most one other with IoU > 0.5.
"AP" here is the object-detection score used for cell segmentation (DSB 2018,
Cellpose, StarDist "accuracy"): AP = TP / (TP + FP + FN).

>>> import numpy as np
>>> gt = np.zeros((8, 8), np.int32); gt[1:4, 1:4] = 1; gt[5:8, 5:8] = 2
>>> pred = np.zeros_like(gt); pred[1:4, 1:4] = 7
>>> round(average_precision(gt, pred, 0.5), 3)
0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import UNetCellsError
from .labels import check_labels, touching_pairs


@dataclass(frozen=True)
class MatchResult:
    """Object matching at one IoU threshold.

    tp: matched pairs with IoU >= threshold; fp: predicted objects left unmatched;
    fn: ground-truth objects left unmatched. mean_matched_iou: mean IoU of the TP pairs
    (0 if none).
    """

    threshold: float
    tp: int
    fp: int
    fn: int
    n_true: int
    n_pred: int
    mean_matched_iou: float

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 1.0

    @property
    def ap(self) -> float:
        """TP / (TP + FP + FN); 1.0 when both images are empty."""
        denom = self.tp + self.fp + self.fn
        return self.tp / denom if denom else 1.0


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map ids to 0..n (0 stays background); returns (dense labels, original ids)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    if ids.size and ids[0] == 0:
        return inverse, ids[1:]
    return inverse + 1, ids


def overlap_matrix(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of every pair (object of ``a``, object of ``b``): a contingency table.

    The one place that counts label overlaps: :func:`iou_matrix`,
    :func:`split_merge_counts` and the annotation check's prediction audit use it.

    Parameters
    ----------
    a, b : np.ndarray
        Integer label images of the same shape (any number of axes), 0 = background.

    Returns
    -------
    overlap : np.ndarray
        int64 (n_a + 1, n_b + 1): ``overlap[i, j]`` is the number of pixels in object i of
        ``a`` and object j of ``b``; row 0 and column 0 are the background (all 0 where an
        image has none).
    a_ids, b_ids : np.ndarray
        The object ids (n_a,) of ``a`` and (n_b,) of ``b``, increasing: row i >= 1 is
        object ``a_ids[i - 1]``, column j >= 1 object ``b_ids[j - 1]``.
    """
    a = check_labels(a, "labels")
    b = check_labels(b, "labels")
    if a.shape != b.shape:
        raise UNetCellsError(f"Label images {a.shape} and {b.shape} must have the same shape.")
    ta, a_ids = _relabel(a)
    tb, b_ids = _relabel(b)
    na, nb = a_ids.size + 1, b_ids.size + 1
    flat = (ta.astype(np.int64) * nb + tb).ravel()
    return np.bincount(flat, minlength=na * nb).reshape(na, nb), a_ids, b_ids


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every ground-truth object (rows) with every predicted object (columns).

    Parameters
    ----------
    true, pred : np.ndarray
        Integer label images of the same shape, 0 = background.

    Returns
    -------
    np.ndarray
        float64 (n_true, n_pred) in [0, 1], objects in increasing id order.
    """
    true = check_labels(true, "ground-truth labels")
    pred = check_labels(pred, "predicted labels")
    if true.shape != pred.shape:
        raise UNetCellsError(
            f"Ground truth {true.shape} and prediction {pred.shape} must have the same shape."
        )
    overlap = overlap_matrix(true, pred)[0]
    area_t = overlap.sum(axis=1, keepdims=True)
    area_p = overlap.sum(axis=0, keepdims=True)
    union = area_t + area_p - overlap
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, overlap / np.maximum(union, 1), 0.0)
    return iou[1:, 1:]


def drop_ignored(pred: np.ndarray, ignore: np.ndarray | None, fraction: float = 0.5) -> np.ndarray:
    """Remove predicted objects lying mostly (> ``fraction`` of their area) in ``ignore``.

    Used where only part of an image is annotated: objects found in the unannotated part
    are neither right nor wrong.

    Parameters
    ----------
    pred : np.ndarray
        Predicted integer labels, any shape.
    ignore : np.ndarray or None
        bool mask of unannotated pixels, ``pred``'s shape; None returns ``pred`` itself.
    fraction : float
        Share of an object's area (0..1) inside ``ignore`` above which it is removed.

    Returns
    -------
    np.ndarray
        A new label image (same dtype) without those objects.
    """
    if ignore is None:
        return pred
    ignore = np.asarray(ignore, bool)
    if ignore.shape != pred.shape:
        raise UNetCellsError(f"The ignore mask {ignore.shape} must match the labels {pred.shape}.")
    p, ids = _relabel(pred)
    area = np.bincount(p.ravel(), minlength=ids.size + 1)
    inside = np.bincount(p[ignore], minlength=ids.size + 1)
    drop = inside > fraction * np.maximum(area, 1)
    drop[0] = False
    out = pred.copy()
    out[drop[p]] = 0
    return out


def match(
    true: np.ndarray,
    pred: np.ndarray,
    thresholds: float | Sequence[float] = 0.5,
    ignore: np.ndarray | None = None,
) -> list[MatchResult]:
    """Match objects one-to-one at each IoU threshold (see the module docstring).

    Parameters
    ----------
    true, pred : np.ndarray
        Ground-truth and predicted integer labels of the same shape, 0 = background.
    thresholds : float or sequence of float
        IoU thresholds in [0, 1].
    ignore : np.ndarray, optional
        bool mask of unannotated pixels; predicted objects mostly inside it are dropped
        first and ignored pixels are cleared from ground truth.

    Returns
    -------
    list of MatchResult
        One per threshold, in the order given.
    """
    pred = drop_ignored(np.asarray(pred), ignore)
    true = np.asarray(true)
    if ignore is not None:
        true = np.where(np.asarray(ignore, bool), 0, true)
    iou = iou_matrix(true, pred)
    n_true, n_pred = iou.shape
    singles = [thresholds] if np.isscalar(thresholds) else list(thresholds)
    results = []
    for thr in singles:
        thr = float(thr)
        if n_true and n_pred:
            # maximise the summed IoU over pairs that pass the threshold
            score = np.where(iou >= thr, iou, 0.0)
            rows, cols = linear_sum_assignment(score, maximize=True)
            keep = score[rows, cols] >= thr
            keep &= score[rows, cols] > 0
            matched = iou[rows[keep], cols[keep]]
        else:
            matched = np.zeros(0)
        tp = int(matched.size)
        results.append(
            MatchResult(
                threshold=thr,
                tp=tp,
                fp=n_pred - tp,
                fn=n_true - tp,
                n_true=n_true,
                n_pred=n_pred,
                mean_matched_iou=float(matched.mean()) if tp else 0.0,
            )
        )
    return results


def average_precision(
    true: np.ndarray, pred: np.ndarray, threshold: float = 0.5, ignore: np.ndarray | None = None
) -> float:
    """AP = TP / (TP + FP + FN) at one IoU threshold (AP50 for 0.5).

    Parameters
    ----------
    true, pred, ignore
        As :func:`match`.
    threshold : float
        The IoU threshold in [0, 1].

    Returns
    -------
    float
        AP in [0, 1]; 1.0 when both images are empty.
    """
    return match(true, pred, threshold, ignore)[0].ap


def foreground_iou(true: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """IoU of the foreground masks (label > 0).

    Parameters
    ----------
    true, pred : np.ndarray
        Label images of the same shape.
    ignore : np.ndarray, optional
        bool mask of pixels left out of both masks.

    Returns
    -------
    float
        IoU in [0, 1]; 1.0 if both foregrounds are empty.
    """
    t = np.asarray(true) > 0
    p = np.asarray(pred) > 0
    if t.shape != p.shape:
        raise UNetCellsError(
            f"Ground truth {t.shape} and prediction {p.shape} must have the same shape."
        )
    if ignore is not None:
        keep = ~np.asarray(ignore, bool)
        t, p = t & keep, p & keep
    union = np.count_nonzero(t | p)
    return float(np.count_nonzero(t & p) / union) if union else 1.0


def pairs_separated(true: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """(separated, total) touching pairs of ``true`` (Y, X) labels whose two cells are both
    matched by some object of ``pred`` at IoU >= 0.5."""
    pairs = touching_pairs(true)
    if not pairs:
        return 0, 0
    ids = np.unique(true[true > 0])
    matched = dict(
        zip(ids.tolist(), (iou_matrix(true, pred) >= 0.5).any(axis=1).tolist(), strict=True)
    )
    return sum(matched[a] and matched[b] for a, b in pairs), len(pairs)


def split_merge_counts(
    true: np.ndarray, pred: np.ndarray, fraction: float = 0.5
) -> dict[str, int]:
    """Count merges and splits.

    Parameters
    ----------
    true, pred : np.ndarray
        Ground-truth and predicted integer labels of the same shape.
    fraction : float
        The share of an object's area (0..1) that counts as "most of it".

    Returns
    -------
    dict
        ``merges``: predicted objects that contain more than ``fraction`` of the area of
        two or more ground-truth objects (touching cells not separated); ``splits``:
        ground-truth objects that contain more than ``fraction`` of the area of two or more
        predicted objects (one cell cut into pieces).
    """
    overlap = overlap_matrix(
        check_labels(true, "ground-truth labels"), check_labels(pred, "predicted labels")
    )[0]
    area_t = overlap.sum(axis=1)
    area_p = overlap.sum(axis=0)
    core = overlap[1:, 1:]
    t_inside = core > fraction * area_t[1:, None]  # most of true i lies in pred j
    p_inside = core > fraction * area_p[None, 1:]  # most of pred j lies in true i
    return {
        "merges": int(np.count_nonzero(t_inside.sum(axis=0) >= 2)),
        "splits": int(np.count_nonzero(p_inside.sum(axis=1) >= 2)),
    }


def evaluate(
    true: np.ndarray,
    pred: np.ndarray,
    thresholds: Sequence[float] = (0.5, 0.75),
    ignore: np.ndarray | None = None,
) -> dict[str, float]:
    """A summary of the segmentation quality, ready for JSON.

    Parameters
    ----------
    true, pred, ignore
        As :func:`match`.
    thresholds : sequence of float
        IoU thresholds; the first one also gives precision and recall.

    Returns
    -------
    dict
        ``ap50``, ``ap75`` (one key per threshold), ``fg_iou``, ``n_true``, ``n_pred``,
        ``merges``, ``splits`` and precision/recall at the first threshold
        (``precision50``, ``recall50`` for the default thresholds).
    """
    pred = drop_ignored(np.asarray(pred), ignore)
    true = np.asarray(true)
    if ignore is not None:
        true = np.where(np.asarray(ignore, bool), 0, true)
    out: dict[str, float] = {}
    results = match(true, pred, thresholds)
    for result in results:
        out[f"ap{round(result.threshold * 100)}"] = result.ap
    first = results[0]
    out.update(
        fg_iou=foreground_iou(true, pred),
        n_true=first.n_true,
        n_pred=first.n_pred,
        **split_merge_counts(true, pred),
    )
    tag = round(first.threshold * 100)
    out[f"precision{tag}"] = first.precision
    out[f"recall{tag}"] = first.recall
    return out
