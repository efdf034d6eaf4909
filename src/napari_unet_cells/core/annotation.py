"""Annotation: label edits, the pre-training check, points to cells, the project folder.

Headless (numpy in, numpy out); the "Annotate" dock calls these functions and applies
the returned :class:`Edit` through napari's own undo history.

Label images follow the project convention: integer (..., Y, X), 0 = background, each
positive id one cell. Stacks (Z, Y, X) are annotated plane by plane: edits that need a
plane (split) take ``plane``, the leading indices of that plane; the check runs per
plane (the same id in two planes is two cells, as in training).

Edits are returned, not applied: an :class:`Edit` lists the changed pixels (a numpy
multi-index into the full array) and their new values, which is what
``napari.layers.Labels.data_setitem`` records for undo. :func:`apply_edit` applies one to
an array for scripts.

The project folder keeps annotations safe (see :class:`AnnotationProject`): label images
as TIFF, one small JSON index, every file written atomically (temporary file, fsync,
``os.replace``), so a crash during a save leaves the previous version intact.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .config import WeightMapConfig
from .errors import UNetCellsError
from .fileio import atomic_write
from .labels import check_labels, touching_pairs
from .progress import StopFlag, run, stop_requested

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------
# edits
# --------------------------------------------------------------------------------------


@dataclass
class Edit:
    """Changed pixels: ``indices`` (tuple of int arrays, one per axis of the full label
    array) and ``values`` (same length, the new ids). ``message`` says what was done."""

    indices: tuple[np.ndarray, ...]
    values: np.ndarray
    message: str = ""

    @property
    def size(self) -> int:
        return int(self.values.size)


def apply_edit(labels: np.ndarray, edit: Edit) -> np.ndarray:
    """Apply ``edit`` to ``labels`` in place and return it."""
    labels[edit.indices] = edit.values
    return labels


def _edit(labels: np.ndarray, mask: np.ndarray, values, message: str, plane=()) -> Edit:
    """An Edit setting ``mask`` (a boolean array of a plane or the full array) to values."""
    where = np.nonzero(mask)
    lead = tuple(np.full(where[0].shape, int(p), dtype=np.intp) for p in plane)
    values = np.broadcast_to(np.asarray(values, dtype=labels.dtype), where[0].shape).copy()
    return Edit(lead + where, values, message)


def _plane(labels: np.ndarray, plane: Sequence[int]) -> np.ndarray:
    labels = check_labels(labels, "annotation")
    plane = tuple(int(p) for p in plane)
    if labels.ndim - len(plane) != 2:
        raise UNetCellsError(
            f"The annotation has shape {labels.shape}; give the plane (leading indices) so "
            "that a 2D (Y, X) plane remains."
        )
    return labels[plane]


def next_free_label(labels: np.ndarray) -> int:
    """The next unused cell id: one more than the largest id (1 for an empty image)."""
    labels = check_labels(labels, "annotation")
    return int(labels.max(initial=0)) + 1


def paint_label(labels: np.ndarray, mask: np.ndarray, label: int | None = None) -> Edit:
    """Paint ``mask`` (bool, the labels' shape) with ``label`` (default: the next free id),
    as the brush does; pixels of other cells under the mask are taken over."""
    labels = check_labels(labels, "annotation")
    mask = np.asarray(mask, bool)
    if mask.shape != labels.shape:
        raise UNetCellsError(
            f"The mask {mask.shape} must have the annotation's shape {labels.shape}."
        )
    label = next_free_label(labels) if label is None else int(label)
    return _edit(labels, mask & (labels != label), label, f"painted cell {label}")


def merge_labels(labels: np.ndarray, ids: Sequence[int], into: int | None = None) -> Edit:
    """Merge the cells ``ids`` into one (``into``, default the smallest of them)."""
    labels = check_labels(labels, "annotation")
    ids = sorted({int(i) for i in ids if int(i) > 0})
    present = [i for i in ids if np.any(labels == i)]
    if len(present) < 2:
        raise UNetCellsError(
            f"Merging needs two cells that exist in the annotation; got {ids} "
            f"({len(present)} present). Pick both ids (the picker tool shows a cell's id)."
        )
    into = present[0] if into is None else int(into)
    mask = np.isin(labels, present) & (labels != into)
    return _edit(labels, mask, into, f"merged {present} into {into}")


def delete_label(labels: np.ndarray, label: int) -> Edit:
    """Erase cell ``label`` (its pixels become background)."""
    labels = check_labels(labels, "annotation")
    mask = labels == int(label)
    if label <= 0 or not mask.any():
        raise UNetCellsError(
            f"There is no cell {label} to delete: pick an existing cell number (the picker "
            "tool shows a cell's number)."
        )
    return _edit(labels, mask, 0, f"deleted cell {label}")


def fill_holes(labels: np.ndarray, label: int | None = None) -> Edit:
    """Fill background holes inside cells (all cells, or only ``label``), plane by plane.

    Only background pixels enclosed by one cell are filled; a cell inside another is kept.
    """
    labels = check_labels(labels, "annotation")
    new = np.zeros(labels.shape, dtype=labels.dtype)
    planes = labels.reshape((-1, *labels.shape[-2:])) if labels.ndim >= 2 else labels[None]
    out = new.reshape(planes.shape)
    for p, lab in enumerate(planes):
        ids = [int(label)] if label is not None else None
        for i, box in enumerate(ndi.find_objects(lab)):
            cell = i + 1
            if box is None or (ids is not None and cell not in ids):
                continue
            sub = lab[box]
            filled = ndi.binary_fill_holes(sub == cell)
            hole = filled & (sub == 0)
            out[p][box][hole] = cell
    mask = new > 0
    return _edit(labels, mask, new[mask], f"filled {int(mask.sum())} px of holes")


def line_mask(points: np.ndarray, shape: tuple[int, int], width: int) -> np.ndarray:
    """A polyline through ``points`` ((N, 2) (y, x) in pixels) as a bool (Y, X) mask."""
    from skimage.draw import line

    mask = np.zeros(shape, bool)
    pts = np.round(np.asarray(points, float)).astype(int)
    for (y0, x0), (y1, x1) in itertools.pairwise(pts):
        rr, cc = line(y0, x0, y1, x1)
        keep = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        mask[rr[keep], cc[keep]] = True
    if width > 1:
        mask = ndi.binary_dilation(mask, iterations=width // 2)
    return mask


def _relabel_parts(
    labels: np.ndarray, plane_lab: np.ndarray, label: int, parts: np.ndarray, plane, what: str
) -> Edit:
    """Give parts 2.. of ``label`` new ids (part 1, the largest, keeps ``label``)."""
    n = int(parts.max(initial=0))
    if n < 2:
        raise UNetCellsError(
            f"Cell {label} did not split ({what}); draw the line right across the cell."
        )
    sizes = np.bincount(parts.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable") + 1  # part ids, largest first
    first = next_free_label(labels)
    lut = np.zeros(n + 1, dtype=labels.dtype)
    lut[order[0]] = label
    lut[order[1:]] = np.arange(first, first + n - 1)
    changed = (parts > 0) & (lut[parts] != plane_lab)
    return _edit(
        labels,
        changed,
        lut[parts][changed],
        f"split cell {label} into {n} ({what}); new ids {first}..{first + n - 2}",
        plane,
    )


def split_label_by_line(
    labels: np.ndarray,
    label: int,
    line: np.ndarray,
    *,
    plane: Sequence[int] = (),
    width: int = 1,
) -> Edit:
    """Split cell ``label`` along a drawn line.

    line: (N, 2) polyline vertices (y, x) in pixels of the plane. The cell minus the line
    falls apart into pieces (4-connected); the largest keeps ``label``, the others get new
    ids; the line's pixels go to the nearest piece, so the new cells touch (the weight map
    then carves the separation border between them).
    """
    lab = _plane(labels, plane)
    cell = lab == int(label)
    if label <= 0 or not cell.any():
        raise UNetCellsError(
            f"There is no cell {label} in this plane to split: draw the line across a "
            "painted cell in the plane shown."
        )
    cut = line_mask(line, lab.shape, max(1, int(width))) & cell
    parts, n = ndi.label(cell & ~cut)
    if n >= 2:
        # line pixels (and any leftovers) join the nearest piece
        _, (iy, ix) = ndi.distance_transform_edt(parts == 0, return_indices=True)
        parts = np.where(cell, parts[iy, ix], 0)
    return _relabel_parts(labels, lab, int(label), parts, tuple(plane), "line")


def split_label_watershed(
    labels: np.ndarray,
    label: int,
    image: np.ndarray | None = None,
    *,
    plane: Sequence[int] = (),
    n: int = 2,
    markers: np.ndarray | None = None,
) -> Edit:
    """Split cell ``label`` by a watershed.

    image: the (Y, X) plane of the image (bright cells); None uses the cell's shape
    (distance to its edge). markers: optional (K, 2) (y, x) seed points inside the cell;
    otherwise the ``n`` strongest maxima of the distance to the cell's edge (smoothed,
    mixed with the image intensity when given) are the seeds.
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    lab = _plane(labels, plane)
    cell = lab == int(label)
    if label <= 0 or not cell.any():
        raise UNetCellsError(
            f"There is no cell {label} in this plane to split: set 'Cell' to the number of "
            "a cell in the plane shown (the picker tool shows a cell's number)."
        )
    dist = ndi.distance_transform_edt(cell)
    relief = ndi.gaussian_filter(dist, 1.0)
    if image is not None:
        img = np.asarray(image, float)
        if img.shape != lab.shape:
            raise UNetCellsError(f"The image plane {img.shape} must match the labels {lab.shape}.")
        inside = img[cell]
        span = float(inside.max() - inside.min()) or 1.0
        relief = relief / max(float(relief.max()), 1e-9) + 0.5 * (img - inside.min()) / span
    seeds = np.zeros(lab.shape, np.int32)
    if markers is not None and len(markers):
        pts = np.round(np.asarray(markers, float)).astype(int)
        for k, (y, x) in enumerate(pts, start=1):
            if 0 <= y < lab.shape[0] and 0 <= x < lab.shape[1] and cell[y, x]:
                seeds[y, x] = k
    else:
        peaks = peak_local_max(
            np.where(cell, relief, 0), min_distance=2, num_peaks=max(2, int(n)), labels=cell
        )
        for k, (y, x) in enumerate(peaks, start=1):
            seeds[y, x] = k
    if np.count_nonzero(seeds) < 2:
        raise UNetCellsError(
            f"Found fewer than two seeds in cell {label}; place seed points or split by line."
        )
    parts = watershed(-relief, seeds, mask=cell)
    return _relabel_parts(labels, lab, int(label), parts, tuple(plane), "watershed")


def points_to_disks(
    labels: np.ndarray,
    points: np.ndarray,
    radius: float = 4.0,
    *,
    overwrite: bool = False,
) -> Edit:
    """Small disk cells at ``points``: each point a new id, drawn in its own plane.

    points: (N, labels.ndim) pixel coordinates (plane indices first, then y, x).
    radius: disk radius in px. Disks are drawn on background only (existing cells are
    kept unless ``overwrite``); points on an existing cell are skipped.
    """
    labels = check_labels(labels, "annotation")
    pts = np.round(np.asarray(points, float)).astype(int).reshape(-1, labels.ndim)
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = yy**2 + xx**2 <= radius**2
    next_id = next_free_label(labels)
    changes: dict[tuple[int, ...], int] = {}
    skipped = 0
    for p in pts:
        lead, (y, x) = tuple(p[:-2]), p[-2:]
        if any(not 0 <= v < s for v, s in zip(p, labels.shape, strict=True)):
            skipped += 1
            continue
        if labels[tuple(p)] > 0 and not overwrite:
            skipped += 1
            continue
        for dy, dx in zip(yy[disk], xx[disk], strict=True):
            q = (*lead, int(y + dy), int(x + dx))
            if not (0 <= q[-2] < labels.shape[-2] and 0 <= q[-1] < labels.shape[-1]):
                continue
            if q in changes or (labels[q] > 0 and not overwrite):
                continue
            changes[q] = next_id
        next_id += 1
    if not changes:
        return Edit(tuple(np.zeros(0, np.intp) for _ in labels.shape), np.zeros(0, labels.dtype))
    keys = np.array(list(changes), dtype=np.intp).reshape(-1, labels.ndim)
    values = np.fromiter(changes.values(), dtype=labels.dtype, count=len(changes))
    n = len(pts) - skipped
    return Edit(tuple(keys.T), values, f"added {n} cell(s) from points ({skipped} skipped)")


# --------------------------------------------------------------------------------------
# the check
# --------------------------------------------------------------------------------------


@dataclass
class Problem:
    """One finding of :func:`check_annotation`: ``kind`` (a key of CHECK_CODES or
    "unannotated"), the cell ids concerned, the plane (leading indices), a (y, x)
    position to look at, and a message for the user."""

    kind: str
    ids: tuple[int, ...]
    plane: tuple[int, ...]
    position: tuple[float, float]
    message: str


#: kinds that are information, not mistakes: listed in ``CheckReport.notes``
NOTE_KINDS = ("border",)


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
        return sum(p.kind == kind for p in (*self.problems, *self.notes))

    def summary(self) -> str:
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
        return self.done / self.total if self.total else 1.0


def prediction_audit(
    labels: np.ndarray, prediction: np.ndarray, fraction: float = 0.5
) -> tuple[list[tuple[int, int]], list[int]]:
    """Where a prediction disagrees with an annotation about touching cells (2D planes).

    Returns (merged, split): ``merged`` are touching annotated pairs (a, b) whose larger
    part (> ``fraction`` of each cell's area) falls in one and the same predicted object;
    ``split`` are annotated cells of which two or more predicted objects lie mostly
    (> ``fraction`` of their own area) inside.
    """
    lab = check_labels(labels, "annotation")
    pred = check_labels(prediction, "prediction")
    if lab.shape != pred.shape or lab.ndim != 2:
        raise UNetCellsError(
            f"The prediction {pred.shape} must be a 2D plane of the annotation's shape "
            f"{lab.shape}."
        )
    t_ids, t = np.unique(lab, return_inverse=True)
    p_ids, p = np.unique(pred, return_inverse=True)
    t, p = t.reshape(lab.shape), p.reshape(lab.shape)
    nt, np_ = t_ids.size, p_ids.size
    overlap = np.bincount((t * np_ + p).ravel(), minlength=nt * np_).reshape(nt, np_)
    p_has_bg = p_ids[0] == 0
    area_t = overlap.sum(axis=1)
    area_p = overlap.sum(axis=0)
    # for each annotated cell, the predicted object holding most of it (if > fraction)
    owner: dict[int, int] = {}
    for i, tid in enumerate(t_ids):
        if tid == 0:
            continue
        row = overlap[i].copy()
        if p_has_bg:
            row[0] = 0
        j = int(row.argmax())
        if row[j] > fraction * area_t[i]:
            owner[int(tid)] = j
    merged = [
        (a, b) for a, b in sorted(touching_pairs(lab)) if a in owner and owner.get(b) == owner[a]
    ]
    split = []
    inside = overlap > fraction * area_p[None, :]
    for i, tid in enumerate(t_ids):
        if tid == 0:
            continue
        cols = inside[i].copy()
        if p_has_bg:
            cols[0] = False
        if np.count_nonzero(cols) >= 2:
            split.append(int(tid))
    return merged, split


def _centre(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return (float(ys.mean()), float(xs.mean())) if ys.size else (0.0, 0.0)


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


def _check_cells(report, lab, out, plane, min_size: int) -> None:
    """Split ids and specks: each cell inside its own bounding box (linear overall)."""
    code = CHECK_CODES
    for i, box in enumerate(ndi.find_objects(lab)):
        if box is None:
            continue
        cell = i + 1
        sub = lab[box] == cell
        report.n_cells += 1
        comps, n = ndi.label(sub, structure=_EIGHT)
        if n > 1:
            sizes = np.bincount(comps.ravel())[1:]
            stray = (comps > 0) & (comps != int(sizes.argmax()) + 1)
            out[box][stray] = code["split_id"]
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
        area = int(sub.sum())
        if area < min_size:
            out[box][sub & (out[box] == 0)] = code["speck"]
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
    from .weightmap import separation_target

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
    merged, split = prediction_audit(lab, pred)
    if not merged and not split:
        return
    area, sy, sx = _cell_centres(lab)
    code = CHECK_CODES
    for kind, groups in (("merged_by_prediction", merged), ("split_by_prediction", split)):
        ids = np.zeros(area.size, bool)
        for group in groups:
            ids[np.atleast_1d(group)] = True
        out[ids[lab] & (out == 0)] = code[kind]
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


def _check_inputs(labels, ignore, prediction):
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


def iter_check_annotation(
    labels: np.ndarray,
    ignore: np.ndarray | None = None,
    *,
    min_size: int = 20,
    prediction: np.ndarray | None = None,
    weight_map: WeightMapConfig | None = None,
    stop: StopFlag = None,
) -> Generator[CheckProgress, None, CheckReport | None]:
    """:func:`check_annotation` as a generator: yields a CheckProgress after each stage of
    each plane and checks ``stop`` between them; returns the CheckReport (None if stopped).

    Linear in the number of pixels: each cell is checked inside its bounding box, and all
    touching pairs come from one pass over the neighbouring pixels (2048 x 2048 px with
    5,000 cells: about a second, ``benchmarks/bench_check.py``).
    """
    labels, ign, pred = _check_inputs(labels, ignore, prediction)
    report = CheckReport(mask=np.zeros(labels.shape, np.uint8))
    planes = list(np.ndindex(*labels.shape[:-2]))
    stages = (
        ("cells", lambda lab, out, p: _check_cells(report, lab, out, p, min_size)),
        ("edges", lambda lab, out, p: _check_edges(report, lab, out, p, _at(ign, p))),
        ("borders", lambda lab, out, p: _check_borders(report, lab, out, p, weight_map)),
        ("prediction", lambda lab, out, p: _audit(report, lab, out, p, _at(pred, p))),
    )
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


def _at(array: np.ndarray | None, plane: tuple[int, ...]) -> np.ndarray | None:
    return None if array is None else array[plane]


def _audit(report, lab, out, plane, pred) -> None:
    if pred is not None:
        _check_prediction(report, lab, out, plane, pred)


def check_annotation(
    labels: np.ndarray,
    ignore: np.ndarray | None = None,
    *,
    min_size: int = 20,
    prediction: np.ndarray | None = None,
    weight_map: WeightMapConfig | None = None,
) -> CheckReport:
    """Problems to fix before training, per (Y, X) plane of ``labels`` (..., Y, X).

    Finds ids used for two or more separate blobs (8-connected), specks smaller than
    ``min_size`` px, cells cut by the edge of the annotated region (touching the ignore
    mask), the unannotated fraction, and, as notes, touching pairs with the separation
    border that :func:`core.weightmap.separation_target` carves (code "border" in the
    mask). With a ``prediction`` of the same image it adds the touching-pair audit of
    :func:`prediction_audit`. Cells touching the image border are not problems (the
    network sees mirrored context there, as in the paper). Linear in the number of
    pixels; :func:`iter_check_annotation` is the same with progress and a stop flag.
    """
    return run(
        iter_check_annotation(
            labels, ignore, min_size=min_size, prediction=prediction, weight_map=weight_map
        )
    )


def _shift(point: tuple[float, float], box: tuple[slice, ...]) -> tuple[float, float]:
    return (point[0] + box[0].start, point[1] + box[1].start)


def training_counts(labels_list: Sequence[np.ndarray]) -> dict[str, int]:
    """Counts for a training set: images, cells, touching pairs (per 2D plane)."""
    cells = pairs = 0
    for labels in labels_list:
        labels = check_labels(labels, "labels")
        for plane in np.ndindex(*labels.shape[:-2]):
            lab = labels[plane]
            cells += int(np.count_nonzero(np.bincount(lab.ravel())[1:]))
            pairs += len(touching_pairs(lab))
    return {"images": len(labels_list), "cells": cells, "touching_pairs": pairs}


# --------------------------------------------------------------------------------------
# the project folder
# --------------------------------------------------------------------------------------

INDEX_NAME = "annotations.json"
INDEX_VERSION = 1


def default_project_folder() -> Path:
    """Where annotations are autosaved until the user chooses a project folder:
    ``$NAPARI_UNET_CELLS_HOME/annotations`` (default ``~/napari-unet-cells/annotations``).
    One project holds any number of images (each by name and content hash)."""
    import os

    root = os.environ.get("NAPARI_UNET_CELLS_HOME") or Path.home() / "napari-unet-cells"
    return Path(root).expanduser() / "annotations"


def image_identity(name: str, image: np.ndarray) -> dict[str, Any]:
    """A stable identity of an image: its name, shape, dtype and a content hash (blake2b)."""
    array = np.ascontiguousarray(np.asarray(image))
    digest = hashlib.blake2b(array.view(np.uint8).ravel(), digest_size=16)
    digest.update(f"{array.shape}{array.dtype.str}".encode())
    return {
        "name": str(name),
        "shape": [int(s) for s in array.shape],
        "dtype": array.dtype.str,
        "hash": digest.hexdigest(),
    }


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return slug[:60] or "image"


def _write_tiff(path: Path, array: np.ndarray) -> None:
    import tifffile

    atomic_write(path, lambda fh: tifffile.imwrite(fh, np.asarray(array), compression="zlib"))


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path)


@dataclass
class ProjectEntry:
    """One annotated image in a project: ``key`` (file stem), the image identity, file
    names relative to the folder, layer placement (scale, translate), whether it is in
    the training set, and the arrays once loaded (``labels``, ``ignore``, ``image``)."""

    key: str
    image: dict[str, Any]
    labels_file: str
    ignore_file: str | None = None
    image_file: str | None = None
    scale: list[float] | None = None
    translate: list[float] | None = None
    in_training: bool = False
    labels_name: str | None = None
    ignore_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "key"}


class AnnotationProject:
    """A folder that keeps annotations and the training-set list safe.

    Layout: ``annotations.json`` (the index), ``labels/<key>.tif`` (uint32 or the layer's
    dtype), ``labels/<key>.ignore.tif`` (uint8), ``images/<key>.tif`` (a copy of the image,
    written once, so the project restores without the original file). ``key`` is the image
    name, shape and content hash: saving an annotation for a different image (same name,
    other pixels) gets a different key, so it never overwrites another image's work.
    Every file is written atomically (:func:`atomic_write`), the index last.
    """

    def __init__(self, folder: str | Path, *, create: bool = True):
        self.folder = Path(folder).expanduser()
        if create:
            (self.folder / "labels").mkdir(parents=True, exist_ok=True)
            (self.folder / "images").mkdir(parents=True, exist_ok=True)
        elif not (self.folder / INDEX_NAME).is_file():
            raise UNetCellsError(
                f"{self.folder} is not an annotation project (no {INDEX_NAME}): choose the "
                "folder that holds it, or an empty folder to start a new project."
            )
        self.entries: dict[str, ProjectEntry] = {}
        if (self.folder / INDEX_NAME).is_file():
            self._read_index()

    # -- index ---------------------------------------------------------------------------

    def _read_index(self) -> None:
        try:
            data = json.loads((self.folder / INDEX_NAME).read_text())
            entries = data["entries"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UNetCellsError(
                f"The project index {self.folder / INDEX_NAME} is unreadable ({err}); the "
                "annotation files in its labels/ folder are untouched: restore the index from "
                "a backup, or choose another folder."
            ) from None
        self.entries = {key: ProjectEntry(key=key, **value) for key, value in entries.items()}

    def _write_index(self) -> None:
        data = {
            "version": INDEX_VERSION,
            "entries": {k: e.to_json() for k, e in self.entries.items()},
            "training": [k for k, e in self.entries.items() if e.in_training],
        }
        text = json.dumps(data, indent=1, sort_keys=True).encode()
        atomic_write(self.folder / INDEX_NAME, lambda fh: fh.write(text))

    # -- keys ----------------------------------------------------------------------------

    def key_for(self, identity: dict[str, Any]) -> str:
        """The key of the image with ``identity``: its existing key, or a new free one."""
        for key, entry in self.entries.items():
            if entry.image.get("hash") == identity["hash"] and entry.image.get(
                "name"
            ) == identity.get("name"):
                return key
        stem = f"{_slug(identity['name'])}_{'x'.join(map(str, identity['shape']))}"
        stem += f"_{identity['hash'][:10]}"
        key, n = stem, 1
        while key in self.entries or (self.folder / "labels" / f"{key}.tif").exists():
            n += 1
            key = f"{stem}-{n}"
        return key

    # -- saving --------------------------------------------------------------------------

    def save(
        self,
        identity: dict[str, Any],
        labels: np.ndarray,
        ignore: np.ndarray | None = None,
        *,
        image: np.ndarray | None = None,
        scale: Sequence[float] | None = None,
        translate: Sequence[float] | None = None,
        in_training: bool | None = None,
        labels_name: str | None = None,
        ignore_name: str | None = None,
    ) -> ProjectEntry:
        """Save (or update) the annotation of the image with ``identity``; returns its entry.

        labels / ignore: arrays of the image's shape. image: the image itself, copied into
        the project once. The label files are written before the index, each atomically.
        """
        labels = check_labels(labels, "annotation")
        shape = tuple(identity["shape"])
        if image is not None and np.asarray(image).ndim == labels.ndim + 1:
            shape = shape[:-1]  # RGB(A) images: labels cover (Y, X)
        if tuple(labels.shape) != shape:
            raise UNetCellsError(
                f"The annotation {labels.shape} does not match its image {shape}; it is not saved."
            )
        key = self.key_for(identity)
        entry = self.entries.get(key)
        if entry is not None and entry.image.get("hash") != identity["hash"]:
            raise UNetCellsError(
                f"Refusing to overwrite the annotation of another image ({key}) in "
                f"{self.folder}: use another project folder for this image."
            )
        if entry is None:
            entry = ProjectEntry(key=key, image=dict(identity), labels_file=f"labels/{key}.tif")
        _write_tiff(self.folder / entry.labels_file, labels)
        if ignore is not None:
            entry.ignore_file = f"labels/{key}.ignore.tif"
            _write_tiff(
                self.folder / entry.ignore_file, (np.asarray(ignore) != 0).astype(np.uint8)
            )
        if image is not None and entry.image_file is None:
            entry.image_file = f"images/{key}.tif"
            if not (self.folder / entry.image_file).exists():
                _write_tiff(self.folder / entry.image_file, np.asarray(image))
        if scale is not None:
            entry.scale = [float(s) for s in scale]
        if translate is not None:
            entry.translate = [float(t) for t in translate]
        if in_training is not None:
            entry.in_training = bool(in_training)
        entry.labels_name = labels_name or entry.labels_name
        entry.ignore_name = ignore_name or entry.ignore_name
        self.entries[key] = entry
        self._write_index()
        return entry

    def set_training(self, key: str, in_training: bool = True) -> None:
        """Mark an entry as part of the training set (or not) and save the index."""
        if key not in self.entries:
            raise UNetCellsError(
                f"{key} is not in the project {self.folder}; save its annotation first."
            )
        self.entries[key].in_training = bool(in_training)
        self._write_index()

    # -- loading -------------------------------------------------------------------------

    def load(self, key: str) -> dict[str, np.ndarray | None]:
        """The arrays of one entry: ``labels``, ``ignore`` (bool or None), ``image`` (or None)."""
        entry = self.entries[key]
        out: dict[str, np.ndarray | None] = {"labels": _read_tiff(self.folder / entry.labels_file)}
        out["ignore"] = (
            _read_tiff(self.folder / entry.ignore_file).astype(bool) if entry.ignore_file else None
        )
        image_path = self.folder / entry.image_file if entry.image_file else None
        out["image"] = _read_tiff(image_path) if image_path and image_path.exists() else None
        return out

    def training_keys(self) -> list[str]:
        return [k for k, e in self.entries.items() if e.in_training]
