from __future__ import annotations

import numpy as np
import pytest

from napari_unet_cells.core import metrics
from napari_unet_cells.core.errors import UNetCellsError


def _two_cells():
    gt = np.zeros((20, 20), np.int32)
    gt[2:8, 2:8] = 1
    gt[2:8, 8:14] = 2  # touching cell 1
    gt[12:18, 12:18] = 3
    return gt


def test_perfect_prediction_with_other_ids_scores_one():
    gt = _two_cells()
    pred = np.where(gt > 0, gt * 10 + 5, 0)
    [result] = metrics.match(gt, pred, 0.5)
    assert (result.tp, result.fp, result.fn) == (3, 0, 0)
    assert result.ap == 1.0 and result.mean_matched_iou == 1.0
    assert metrics.foreground_iou(gt, pred) == 1.0


def test_merged_touching_cells_count_as_one_fp_two_fn_and_a_merge():
    gt = _two_cells()
    pred = (gt > 0).astype(np.int32)
    pred[gt == 3] = 2
    [result] = metrics.match(gt, pred, 0.5)
    # the merged object has IoU 0.5 with each cell: matches at most one
    assert result.tp + result.fn == 3 and result.n_pred == 2
    assert metrics.split_merge_counts(gt, pred) == {"merges": 1, "splits": 0}
    summary = metrics.evaluate(gt, pred, thresholds=(0.5, 0.75))
    assert summary["ap75"] == pytest.approx(1 / 4)  # only cell 3 matches at 0.75
    assert summary["merges"] == 1 and summary["fg_iou"] == 1.0


def test_split_cell_is_counted():
    gt = _two_cells()
    pred = gt.copy()
    pred[12:18, 14:16] = 9
    pred[12:18, 16:18] = 8  # cell 3 cut into three pieces of IoU 1/3
    assert metrics.split_merge_counts(gt, pred) == {"merges": 0, "splits": 1}
    [r] = metrics.match(gt, pred, 0.5)
    assert (r.tp, r.fp, r.fn) == (2, 3, 1)
    assert r.ap == pytest.approx(2 / 6)


def test_thresholds_and_iou_matrix():
    gt = np.zeros((10, 10), np.int32)
    gt[0:4, 0:4] = 1  # 16 px
    pred = np.zeros_like(gt)
    pred[0:4, 0:3] = 4  # 12 px inside: IoU 0.75
    iou = metrics.iou_matrix(gt, pred)
    assert iou.shape == (1, 1) and iou[0, 0] == pytest.approx(0.75)
    low, high = metrics.match(gt, pred, [0.7, 0.8])
    assert low.tp == 1 and high.tp == 0 and high.ap == 0.0


def test_empty_images_and_shape_mismatch():
    empty = np.zeros((5, 5), np.int32)
    assert metrics.average_precision(empty, empty) == 1.0
    one = empty.copy()
    one[1:3, 1:3] = 1
    assert metrics.average_precision(one, empty) == 0.0
    assert metrics.average_precision(empty, one) == 0.0
    with pytest.raises(UNetCellsError):
        metrics.iou_matrix(empty, np.zeros((4, 5), np.int32))


def test_ignore_mask_drops_unannotated_predictions():
    gt = _two_cells()
    gt[12:18, 12:18] = 0  # cell 3 not annotated ...
    ignore = np.zeros(gt.shape, bool)
    ignore[10:, 10:] = True  # ... because that corner is unannotated
    pred = _two_cells()
    assert metrics.average_precision(gt, pred) == pytest.approx(2 / 3)
    assert metrics.average_precision(gt, pred, ignore=ignore) == 1.0
