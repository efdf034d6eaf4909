"""The pre-training check of an annotation, and the counts of a training set.

:func:`check_annotation` runs one small check per kind of problem on each (Y, X) plane
(the same id in two planes is two cells, as in training):

- :func:`_check_split_ids`: one id used for two or more separate blobs;
- :func:`_check_specks`: objects smaller than the minimum size;
- :func:`_check_edges`: cells cut by the edge of the annotated region (the ignore mask);
- :func:`_check_borders`: touching pairs and the separation border carved between them
  (notes, not problems);
- :func:`_check_prediction`: where a prediction of the same image merges touching cells
  or cuts one cell into several (:func:`prediction_audit`).

Each check adds :class:`Problem` findings to a :class:`CheckReport` and marks their pixels
in its mask with a :data:`CHECK_CODES` code (a pixel keeps the first code it gets).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..config import WeightMapConfig
from ..errors import UNetCellsError
from ..labels import check_labels, touching_pairs
from ..metrics import overlap_matrix
from ..progress import StopFlag, run, stop_requested

_EIGHT = np.ones((3, 3), bool)

# codes of the "check" label image (one colour per kind of problem)
CHECK_CODES: dict[str, int] = {
    "split_id": 1,  # one id used for two or more separate blobs
    "speck": 2,  # object smaller than the minimum size
    "edge": 3,  # cell cut by the edge of the annotated region
    "border": 4,  # separation border the weight map carves between touching cells
    "merged_by_prediction": 5,  # touching annotated cells the prediction merges
    "split_by_prediction": 6,  # one annotated cell the prediction cuts into several
}
# the order in which the check lists problems: the most urgent first
_URGENCY = (
    "split_id",
    "speck",
    "merged_by_prediction",
    "split_by_prediction",
    "edge",
    "border",
)

#: kinds that are information, not mistakes: listed in ``CheckReport.notes``
NOTE_KINDS = ("border",)


@dataclass
class Problem:
    """One finding of :func:`check_annotation`: ``kind`` (a key of CHECK_CODES or
    "unannotated"), the cell ids concerned, the plane (leading indices), a (y, x)
    position in pixels to look at, and a message for the user."""

    kind: str
    ids: tuple[int, ...]
    plane: tuple[int, ...]
    position: tuple[float, float]
    message: str


@dataclass
class CheckReport:
    """What :func:`check_annotation` found.

    problems: the mistakes to fix, most urgent kinds first. notes: information that needs
    no fix (each touching pair and the border carved between them), listed apart so that
    thousands of them never hide a real problem. mask: uint8 (same shape as the labels)
    with CHECK_CODES where each finding lies (the carved border included). Counts:
    n_cells, n_touching_pairs, unannotated_fraction (share of pixels in the ignore mask).
    """

    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    mask: np.ndarray | None = None
    n_cells: int = 0
    n_touching_pairs: int = 0
    unannotated_fraction: float = 0.0

    def add(self, problem: Problem) -> None:
        """File ``problem`` under ``notes`` or ``problems`` by its kind."""
        (self.notes if problem.kind in NOTE_KINDS else self.problems).append(problem)

    def count(self, kind: str) -> int:
        """The number of findings (problems and notes) of ``kind``."""
        return sum(p.kind == kind for p in (*self.problems, *self.notes))

    def summary(self) -> str:
        """One line: cells, touching pairs, unannotated share and problems by kind."""
        kinds = {k: self.count(k) for k in CHECK_CODES if k not in NOTE_KINDS and self.count(k)}
        found = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in kinds.items()) or "none"
        return (
            f"{self.n_cells} cells, {self.n_touching_pairs} touching pairs, "
            f"{100 * self.unannotated_fraction:.0f}% unannotated; problems: {found}"
        )

    def notes_summary(self) -> str:
        """The notes folded into one line ("" when there are none)."""
        if not self.notes:
            return ""
        return (
            f"{len(self.notes)} touching pair(s): the network is taught the border carved "
            "between them (information, nothing to fix)"
        )


@dataclass(frozen=True)
class CheckProgress:
    """A step of :func:`iter_check_annotation`: ``done`` of ``total`` stages, what runs."""

    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        """``done / total`` (1.0 when there is nothing to do)."""
        return self.done / self.total if self.total else 1.0


# --------------------------------------------------------------------------------------
# the audit against a prediction
# --------------------------------------------------------------------------------------


def prediction_audit(
    labels: np.ndarray, prediction: np.ndarray, fraction: float = 0.5
) -> tuple[list[tuple[int, int]], list[int]]:
    """Where a prediction disagrees with an annotation about touching cells.

    Parameters
    ----------
    labels : np.ndarray
        The annotation: integer (Y, X) labels, 0 = background.
    prediction : np.ndarray
        Predicted integer (Y, X) labels of the same image.
    fraction : float
        The share of an object's area (0..1) that counts as "most of it".

    Returns
    -------
    merged : list of (int, int)
        Touching annotated pairs (a, b), a < b, whose larger part (> ``fraction`` of each
        cell's area) falls in one and the same predicted object.
    split : list of int
        Annotated cells inside which two or more predicted objects lie mostly
        (> ``fraction`` of their own area).
    """
    lab = check_labels(labels, "annotation")
    pred = check_labels(prediction, "prediction")
    if lab.shape != pred.shape or lab.ndim != 2:
        raise UNetCellsError(
            f"The prediction {pred.shape} must be a 2D plane of the annotation's shape "
            f"{lab.shape}."
        )
    overlap, t_ids, _ = overlap_matrix(lab, pred)
    area_t = overlap.sum(axis=1)
    area_p = overlap.sum(axis=0)
    cells = overlap[1:, 1:]  # annotated cells (rows) x predicted objects (columns)
    # for each annotated cell, the predicted object holding most of it (if > fraction)
    best = np.zeros(t_ids.size, np.intp)
    held = np.zeros(t_ids.size, bool)
    if cells.shape[1]:
        best = cells.argmax(axis=1)
        held = cells[np.arange(t_ids.size), best] > fraction * area_t[1:]
    owner = {int(t): int(j) for t, j, ok in zip(t_ids, best, held, strict=True) if ok}
    merged = [
        (a, b) for a, b in sorted(touching_pairs(lab)) if a in owner and owner.get(b) == owner[a]
    ]
    inside = cells > fraction * area_p[None, 1:]
    split = [int(t) for t, n in zip(t_ids, inside.sum(axis=1), strict=True) if n >= 2]
    return merged, split


# --------------------------------------------------------------------------------------
# the checks, one per kind of problem, on one (Y, X) plane
# --------------------------------------------------------------------------------------


def _centre(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return (float(ys.mean()), float(xs.mean())) if ys.size else (0.0, 0.0)


def _shift(point: tuple[float, float], box: tuple[slice, ...]) -> tuple[float, float]:
    return (point[0] + box[0].start, point[1] + box[1].start)


def _group_centres(keys: np.ndarray, ys: np.ndarray, xs: np.ndarray):
    """Unique ``keys`` (int64, one per pixel) and the mean (y, x) of each one's pixels."""
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    cy = np.bincount(inverse, weights=ys, minlength=uniq.size) / counts
    cx = np.bincount(inverse, weights=xs, minlength=uniq.size) / counts
    return uniq, cy, cx


def _cell_centres(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per id of a (Y, X) plane: pixel count, summed y, summed x (index = id); one pass."""
    n = int(lab.max(initial=0)) + 1
    flat = lab.ravel()
    ys, xs = np.divmod(np.arange(flat.size), lab.shape[1])
    area = np.bincount(flat, minlength=n).astype(float)
    return area, np.bincount(flat, ys, minlength=n), np.bincount(flat, xs, minlength=n)


def _check_split_ids(report, lab, out, plane, boxes) -> None:
    """Ids used for two or more separate (8-connected) blobs; all but the largest marked."""
    for i, box in enumerate(boxes):
        if box is None:
            continue
        cell = i + 1
        comps, n = ndi.label(lab[box] == cell, structure=_EIGHT)
        if n < 2:
            continue
        sizes = np.bincount(comps.ravel())[1:]
        stray = (comps > 0) & (comps != int(sizes.argmax()) + 1)
        out[box][stray] = CHECK_CODES["split_id"]
        report.add(
            Problem(
                "split_id",
                (cell,),
                plane,
                _shift(_centre(stray), box),
                f"id {cell} is used for {n} separate blobs: give each its own id "
                "(or delete the stray pieces)",
            )
        )


def _check_specks(report, lab, out, plane, boxes, min_size: int) -> None:
    """Cells smaller than ``min_size`` px."""
    for i, box in enumerate(boxes):
        if box is None:
            continue
        cell = i + 1
        sub = lab[box] == cell
        area = int(sub.sum())
        if area >= min_size:
            continue
        out[box][sub & (out[box] == 0)] = CHECK_CODES["speck"]
        report.add(
            Problem(
                "speck",
                (cell,),
                plane,
                _shift(_centre(sub), box),
                f"cell {cell} has only {area} px (< {min_size}): a stray brush "
                "stroke? delete it or paint the whole cell",
            )
        )


def _check_edges(report, lab, out, plane, ig) -> None:
    """Cells touching the ignore mask (cut by the edge of the annotated region)."""
    if ig is None or not ig.any():
        return
    touch = ndi.binary_dilation(ig, structure=_EIGHT) & (lab > 0)
    out[touch & (out == 0)] = CHECK_CODES["edge"]
    ys, xs = np.nonzero(touch)
    cells, cy, cx = _group_centres(lab[ys, xs].astype(np.int64), ys, xs)
    for cell, y, x in zip(cells.tolist(), cy.tolist(), cx.tolist(), strict=True):
        report.add(
            Problem(
                "edge",
                (cell,),
                plane,
                (y, x),
                f"cell {cell} is cut by the edge of the annotated region: extend "
                "the annotation over the whole cell or mark all of it as ignore",
            )
        )


def _contact_pixels(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every touching pair's contacts in one pass: (pair keys a * K + b, flat index of the
    pixel of b, the larger id, next to a), one entry per distinct (pair, pixel)."""
    h, w = lab.shape
    top = int(lab.max(initial=0)) + 1
    index = np.arange(lab.size).reshape(h, w)
    keys, pixels = [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = lab[: h - dy, max(0, -dx) : w - max(0, dx)]
        b = lab[dy:, max(0, dx) : w + min(0, dx)]
        ia = index[: h - dy, max(0, -dx) : w - max(0, dx)]
        ib = index[dy:, max(0, dx) : w + min(0, dx)]
        differ = (a != b) & (a > 0) & (b > 0)
        va, vb = a[differ].astype(np.int64), b[differ].astype(np.int64)
        keys.append(np.minimum(va, vb) * top + np.maximum(va, vb))
        pixels.append(np.where(va > vb, ia[differ], ib[differ]))
    pairs = np.unique(np.stack([np.concatenate(keys), np.concatenate(pixels)]), axis=1)
    return pairs[0], pairs[1]


def _check_borders(report, lab, out, plane, weight_map) -> None:
    """Touching pairs and the separation border carved between them (notes)."""
    from ..weightmap import separation_target

    keys, pixels = _contact_pixels(lab)
    if not keys.size:
        return
    top = int(lab.max(initial=0)) + 1
    ys, xs = np.divmod(pixels, lab.shape[1])
    pairs, cy, cx = _group_centres(keys, ys, xs)
    report.n_touching_pairs += int(pairs.size)
    carved = (lab > 0) & (separation_target(lab, weight_map) == 0)
    out[carved & (out == 0)] = CHECK_CODES["border"]
    for key, y, x in zip(pairs.tolist(), cy.tolist(), cx.tolist(), strict=True):
        a, b = divmod(key, top)
        report.add(
            Problem(
                "border",
                (a, b),
                plane,
                (y, x),
                f"cells {a} and {b} touch: the network is taught the carved border between them",
            )
        )


def _check_prediction(report, lab, out, plane, pred) -> None:
    """The touching-pair audit against a prediction (:func:`prediction_audit`)."""
    if pred is None:
        return
    merged, split = prediction_audit(lab, pred)
    if not merged and not split:
        return
    area, sy, sx = _cell_centres(lab)
    for kind, groups in (("merged_by_prediction", merged), ("split_by_prediction", split)):
        ids = np.zeros(area.size, bool)
        for group in groups:
            ids[np.atleast_1d(group)] = True
        out[ids[lab] & (out == 0)] = CHECK_CODES[kind]
    for a, b in merged:
        n = area[a] + area[b]
        report.add(
            Problem(
                "merged_by_prediction",
                (a, b),
                plane,
                ((sy[a] + sy[b]) / n, (sx[a] + sx[b]) / n),
                f"the prediction merges touching cells {a} and {b}: check the "
                "annotation there first",
            )
        )
    for cell in split:
        report.add(
            Problem(
                "split_by_prediction",
                (cell,),
                plane,
                (sy[cell] / area[cell], sx[cell] / area[cell]),
                f"the prediction cuts cell {cell} into several objects: if these are "
                "really separate cells, split it; if not, keep it (training teaches "
                "the model)",
            )
        )


# --------------------------------------------------------------------------------------
# running the checks
# --------------------------------------------------------------------------------------


def _check_inputs(labels, ignore, prediction):
    """(labels, bool ignore or None, prediction or None), all of the labels' shape."""
    labels = check_labels(labels, "annotation")
    if labels.ndim < 2:
        raise UNetCellsError(f"The annotation must be (..., Y, X); got shape {labels.shape}.")
    ign = None if ignore is None else np.asarray(ignore) != 0
    if ign is not None and ign.shape != labels.shape:
        raise UNetCellsError(
            f"The ignore mask {ign.shape} must have the annotation's shape {labels.shape}."
        )
    pred = None if prediction is None else check_labels(prediction, "prediction")
    if pred is not None and pred.shape != labels.shape:
        raise UNetCellsError(
            f"The prediction {pred.shape} must have the annotation's shape {labels.shape}."
        )
    return labels, ign, pred


Stage = Callable[[np.ndarray, np.ndarray, tuple[int, ...]], None]


def _stages(report, ign, pred, min_size: int, weight_map) -> list[tuple[str, Stage]]:
    """The check's stages in order, each ``stage(plane labels, plane mask, plane)``."""

    def cells(lab, out, plane):
        boxes = ndi.find_objects(lab)
        report.n_cells += sum(box is not None for box in boxes)
        _check_split_ids(report, lab, out, plane, boxes)
        _check_specks(report, lab, out, plane, boxes, min_size)

    def at(array):
        return lambda plane: None if array is None else array[plane]

    ign_at, pred_at = at(ign), at(pred)
    return [
        ("cells", cells),
        ("edges", lambda lab, out, p: _check_edges(report, lab, out, p, ign_at(p))),
        ("borders", lambda lab, out, p: _check_borders(report, lab, out, p, weight_map)),
        ("prediction", lambda lab, out, p: _check_prediction(report, lab, out, p, pred_at(p))),
    ]


def iter_check_annotation(
    labels: np.ndarray,
    ignore: np.ndarray | None = None,
    *,
    min_size: int = 20,
    prediction: np.ndarray | None = None,
    weight_map: WeightMapConfig | None = None,
    stop: StopFlag = None,
) -> Generator[CheckProgress, None, CheckReport | None]:
    """:func:`check_annotation` as a generator, with progress and a stop flag.

    Linear in the number of pixels: each cell is checked inside its bounding box, and all
    touching pairs come from one pass over the neighbouring pixels (2048 x 2048 px with
    5,000 cells: about a second, ``benchmarks/bench_check.py``).

    Parameters
    ----------
    labels, ignore, min_size, prediction, weight_map
        As :func:`check_annotation`.
    stop : StopFlag
        Checked between stages; when set, the generator returns None.

    Yields
    ------
    CheckProgress
        After each stage (cells, edges, borders, prediction) of each plane.

    Returns
    -------
    CheckReport or None
        The generator's return value; None when stopped.
    """
    labels, ign, pred = _check_inputs(labels, ignore, prediction)
    report = CheckReport(mask=np.zeros(labels.shape, np.uint8))
    planes = list(np.ndindex(*labels.shape[:-2]))
    stages = _stages(report, ign, pred, min_size, weight_map)
    total, done = len(planes) * len(stages), 0
    for plane in planes:
        lab, out = labels[plane], report.mask[plane]
        for name, stage in stages:
            if stop_requested(stop):
                return None
            if lab.any():
                stage(lab, out, plane)
            done += 1
            where = f"plane {plane}: " if plane else ""
            yield CheckProgress(done, total, f"{where}{name} checked")
    if ign is not None and ign.size:
        report.unannotated_fraction = float(np.count_nonzero(ign) / ign.size)
    key = lambda p: (_URGENCY.index(p.kind), p.plane, p.ids)  # noqa: E731
    report.problems.sort(key=key)
    report.notes.sort(key=key)
    return report


def check_annotation(
    labels: np.ndarray,
    ignore: np.ndarray | None = None,
    *,
    min_size: int = 20,
    prediction: np.ndarray | None = None,
    weight_map: WeightMapConfig | None = None,
) -> CheckReport:
    """Problems to fix before training, per (Y, X) plane.

    Finds ids used for two or more separate blobs (8-connected), specks smaller than
    ``min_size`` px, cells cut by the edge of the annotated region (touching the ignore
    mask), the unannotated fraction, and, as notes, touching pairs with the separation
    border that :func:`core.weightmap.separation_target` carves (code "border" in the
    mask). With a ``prediction`` of the same image it adds the touching-pair audit of
    :func:`prediction_audit`. Cells touching the image border are not problems (the
    network sees mirrored context there, as in the paper). Linear in the number of
    pixels; :func:`iter_check_annotation` is the same with progress and a stop flag.

    Parameters
    ----------
    labels : np.ndarray
        The annotation: integer (..., Y, X), 0 = background.
    ignore : np.ndarray, optional
        The unannotated region, same shape (nonzero = ignore).
    min_size : int
        Cells smaller than this many pixels are specks.
    prediction : np.ndarray, optional
        Predicted integer labels of the same image, same shape.
    weight_map : WeightMapConfig, optional
        The settings whose separation border is shown (default: the defaults).

    Returns
    -------
    CheckReport
        Problems (most urgent first), notes, counts, and a uint8 mask of the labels'
        shape with :data:`CHECK_CODES`.
    """
    return run(
        iter_check_annotation(
            labels, ignore, min_size=min_size, prediction=prediction, weight_map=weight_map
        )
    )


def training_counts(labels_list: Sequence[np.ndarray]) -> dict[str, int]:
    """Counts for a training set, per 2D plane.

    Parameters
    ----------
    labels_list : sequence of np.ndarray
        Integer label images (..., Y, X).

    Returns
    -------
    dict
        ``images`` (len(labels_list)), ``cells`` and ``touching_pairs`` summed over the
        planes.
    """
    cells = pairs = 0
    for labels in labels_list:
        labels = check_labels(labels, "labels")
        for plane in np.ndindex(*labels.shape[:-2]):
            lab = labels[plane]
            cells += int(np.count_nonzero(np.bincount(lab.ravel())[1:]))
            pairs += len(touching_pairs(lab))
    return {"images": len(labels_list), "cells": cells, "touching_pairs": pairs}
