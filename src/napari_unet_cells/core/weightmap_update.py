"""Live updates of a weight map after a label edit, one (Y, X) plane at a time.

Only the windows that the changed cells can influence are recomputed: their old and new
bounding boxes grown by the distance margin, plus the neighbours whose carving changed.
The cell weight w_c (class frequencies) is refreshed everywhere when it changed. The
result equals the whole map computed afresh, up to float rounding.
"""

from __future__ import annotations

import numpy as np

from .config import WeightMapConfig
from .progress import run
from .weightmap_terms import (
    Box,
    PlaneStats,
    box_slices,
    box_union,
    cells_near,
    class_weights,
    compact,
    count_classes,
    distance_margin,
    fill_weights,
    grow_box,
    mask_box,
    needs_distances,
    shift_box,
    target_plane,
    two_nearest,
)


def update_plane(
    plane: PlaneStats,
    config: WeightMapConfig,
    old: np.ndarray,
    new: np.ndarray,
    ignore: np.ndarray | None,
    new_ignore: np.ndarray | None,
    weights: np.ndarray,
    target: np.ndarray,
    yx: tuple[slice, slice],
) -> None:
    """Update one plane in place: ``old`` (the state's labels copy) becomes ``new``.

    Parameters
    ----------
    plane : PlaneStats
        The plane's cell boxes and class counts, updated.
    config : WeightMapConfig
        The settings the map was computed with.
    old, new : np.ndarray
        Integer (Y, X) labels: the state's copy (updated to ``new``) and the edited ones.
    ignore, new_ignore : np.ndarray or None
        bool (Y, X): the state's ignore mask (updated) and the current one (None: kept).
    weights, target : np.ndarray
        The plane's float32 weights and uint8 target, updated.
    yx : (slice, slice)
        The (Y, X) region holding every changed pixel.
    """
    ry, rx = yx
    diff = old[ry, rx] != new[ry, rx]
    changed_box = mask_box(diff)
    ignore_box = None
    if new_ignore is not None and ignore is not None:
        ignore_box = mask_box(ignore[ry, rx] != new_ignore[ry, rx])
        if ignore_box is not None:
            ignore_box = shift_box(ignore_box, ry.start, rx.start)
    if changed_box is None and ignore_box is None:
        return
    width = int(config.border_width)
    margin = int(np.ceil(distance_margin(config))) if needs_distances(config) else 0
    touched: Box | None = None  # pixels whose target may change
    neighbours: set[int] = set()
    recompute: Box | None = ignore_box  # pixels whose weights must be recomputed
    if changed_box is not None:
        touched, neighbours, reach = _take_labels(
            plane, old, new, diff, shift_box(changed_box, ry.start, rx.start), yx, width, margin
        )
        recompute = box_union(recompute, reach)
    assert recompute is not None
    rsl = box_slices(recompute)
    before = count_classes(target[rsl], None if ignore is None else ignore[rsl])
    if ignore_box is not None:
        ignore[box_slices(ignore_box)] = new_ignore[box_slices(ignore_box)]
    if touched is not None:
        retarget(old, target, touched, neighbours, width)
    after = count_classes(target[rsl], None if ignore is None else ignore[rsl])
    _refill(plane, config, old, ignore, weights, target, recompute, margin, before, after)


def _take_labels(
    plane: PlaneStats,
    old: np.ndarray,
    new: np.ndarray,
    diff: np.ndarray,
    changed_box: Box,
    yx: tuple[slice, slice],
    width: int,
    margin: int,
) -> tuple[Box, set[int], Box]:
    """Copy the edit into ``old`` and the changed cells' new boxes into ``plane``.

    ``diff``: bool, True where the labels differ inside the region ``yx``; ``changed_box``
    holds those pixels (plane coordinates). Returns (touched, neighbours, reach): the box
    whose target may change (pixels within ``width`` of the edit and the whole box of every
    cell there), those cells, and the box whose weights must be recomputed (touched plus
    the changed cells' old and new boxes grown by ``margin``).
    """
    ry, rx = yx
    shape = old.shape
    sl = box_slices(changed_box)
    local = diff[box_slices(shift_box(changed_box, -ry.start, -rx.start))]
    changed = set(np.unique(old[sl][local]).tolist()) | set(np.unique(new[sl][local]).tolist())
    changed.discard(0)
    old_boxes = {c: plane.boxes.get(c) for c in changed}
    old[sl] = new[sl]
    # new bounding boxes of the changed cells (they lie in old box U changed box)
    for c in changed:
        search = box_union(old_boxes[c], changed_box)
        found = mask_box(old[box_slices(search)] == c)
        if found is None:
            plane.boxes.pop(c, None)
        else:
            plane.boxes[c] = shift_box(found, search[0], search[2])
    # carving: pixels within `width` of a change, and every cell touching them
    touched = grow_box(changed_box, width, shape)
    neighbours = set(np.unique(old[box_slices(touched)]).tolist()) - {0}
    for c in neighbours:
        touched = box_union(touched, plane.boxes[c])
    reach = touched
    # distances of the changed cells changed within `margin` of their old/new pixels
    if margin:
        for c in changed:
            for box in (old_boxes[c], plane.boxes.get(c)):
                if box is not None:
                    reach = box_union(reach, grow_box(box, margin, shape))
    return touched, neighbours, reach


def _refill(
    plane: PlaneStats,
    config: WeightMapConfig,
    lab: np.ndarray,
    ignore: np.ndarray | None,
    weights: np.ndarray,
    target: np.ndarray,
    recompute: Box,
    margin: int,
    before: tuple[int, int],
    after: tuple[int, int],
) -> None:
    """Recount the classes (``before`` -> ``after`` in ``recompute``), recompute the
    weights there, and w_c on every cell pixel when it changed."""
    w_cell_before = class_weights(config, plane)[1]
    plane.n_background += after[0] - before[0]
    plane.n_cell += after[1] - before[1]
    w_bg, w_cell = class_weights(config, plane)
    rsl = box_slices(recompute)
    d1 = d2 = None
    if margin and plane.boxes:
        cells = cells_near(plane.boxes, recompute, margin)
        d1, d2 = run(two_nearest(lab, cells, recompute, margin, None))
    weights[rsl] = fill_weights(
        config, w_bg, w_cell, target[rsl], None if ignore is None else ignore[rsl], d1, d2
    )
    if np.float32(w_cell) != np.float32(w_cell_before):
        is_cell = target == 1
        if ignore is not None:
            is_cell &= ~ignore
        np.putmask(weights, is_cell, np.float32(w_cell))


def retarget(
    lab: np.ndarray, target: np.ndarray, touched: Box, cells: set[int], width: int
) -> None:
    """Recompute the target of background and of ``cells`` inside ``touched``, in place.

    ``touched`` contains the whole bounding box of every cell in ``cells`` (so the rule
    that cells never vanish sees all their pixels); other cells in it did not change.

    Parameters
    ----------
    lab : np.ndarray
        Integer (Y, X) labels, already edited.
    target : np.ndarray
        uint8 (Y, X) training target, updated.
    touched : Box
        The pixels whose target may change.
    cells : set of int
        The cells in ``touched`` whose target is recomputed.
    width : int
        The border width in pixels.
    """
    context = grow_box(touched, width, lab.shape)
    crop, _ = compact(lab[box_slices(context)])
    fresh = target_plane(crop, width)[box_slices(shift_box(touched, -context[0], -context[2]))]
    sub = lab[box_slices(touched)]
    write = sub == 0
    if cells:
        write |= np.isin(sub, np.fromiter(cells, dtype=np.int64, count=len(cells)))
    target[box_slices(touched)][write] = fresh[write]
