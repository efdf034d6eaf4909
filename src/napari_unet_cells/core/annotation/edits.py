"""Label edits: paint, merge, delete, fill holes, split (by a line or a watershed), points
to disk cells.

Every function returns an :class:`Edit` (the changed pixels and their new ids) and leaves
the labels untouched: the "Annotate" dock applies it through napari's undo history,
scripts with :func:`apply_edit`. Labels are integer (..., Y, X), 0 = background; edits
that need a plane (split) take ``plane``, the leading indices of that (Y, X) plane.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..errors import UNetCellsError
from ..labels import check_labels


@dataclass
class Edit:
    """Changed pixels: ``indices`` (tuple of int arrays, one per axis of the full label
    array) and ``values`` (same length, the new ids). ``message`` says what was done."""

    indices: tuple[np.ndarray, ...]
    values: np.ndarray
    message: str = ""

    @property
    def size(self) -> int:
        """The number of changed pixels."""
        return int(self.values.size)


def apply_edit(labels: np.ndarray, edit: Edit) -> np.ndarray:
    """Apply ``edit`` to ``labels`` in place and return it.

    Parameters
    ----------
    labels : np.ndarray
        The integer label array (..., Y, X) the edit was made for.
    edit : Edit
        The changed pixels and their new ids.

    Returns
    -------
    np.ndarray
        ``labels`` itself, edited.
    """
    labels[edit.indices] = edit.values
    return labels


def _edit(labels: np.ndarray, mask: np.ndarray, values, message: str, plane=()) -> Edit:
    """An Edit setting ``mask`` (a boolean array of a plane or the full array) to values."""
    where = np.nonzero(mask)
    lead = tuple(np.full(where[0].shape, int(p), dtype=np.intp) for p in plane)
    values = np.broadcast_to(np.asarray(values, dtype=labels.dtype), where[0].shape).copy()
    return Edit(lead + where, values, message)


def _plane(labels: np.ndarray, plane: Sequence[int]) -> np.ndarray:
    """The (Y, X) plane of ``labels`` at the leading indices ``plane`` (a view)."""
    labels = check_labels(labels, "annotation")
    plane = tuple(int(p) for p in plane)
    if labels.ndim - len(plane) != 2:
        raise UNetCellsError(
            f"The annotation has shape {labels.shape}; give the plane (leading indices) so "
            "that a 2D (Y, X) plane remains."
        )
    return labels[plane]


def next_free_label(labels: np.ndarray) -> int:
    """The next unused cell id.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels of any shape, 0 = background.

    Returns
    -------
    int
        One more than the largest id (1 for an empty image).
    """
    labels = check_labels(labels, "annotation")
    return int(labels.max(initial=0)) + 1


def paint_label(labels: np.ndarray, mask: np.ndarray, label: int | None = None) -> Edit:
    """Paint ``mask`` with one cell id, as the brush does.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels (..., Y, X).
    mask : np.ndarray
        bool, the labels' shape: the pixels to paint. Pixels of other cells under it are
        taken over.
    label : int, optional
        The id to paint; default the next free id.

    Returns
    -------
    Edit
        The pixels that change.
    """
    labels = check_labels(labels, "annotation")
    mask = np.asarray(mask, bool)
    if mask.shape != labels.shape:
        raise UNetCellsError(
            f"The mask {mask.shape} must have the annotation's shape {labels.shape}."
        )
    label = next_free_label(labels) if label is None else int(label)
    return _edit(labels, mask & (labels != label), label, f"painted cell {label}")


def merge_labels(labels: np.ndarray, ids: Sequence[int], into: int | None = None) -> Edit:
    """Merge several cells into one.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels (..., Y, X).
    ids : sequence of int
        The cells to merge; at least two of them must exist.
    into : int, optional
        The id of the merged cell; default the smallest of ``ids`` present.

    Returns
    -------
    Edit
        The pixels that change.
    """
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
    """Erase one cell: its pixels become background.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels (..., Y, X).
    label : int
        The id of an existing cell.

    Returns
    -------
    Edit
        The cell's pixels, set to 0.
    """
    labels = check_labels(labels, "annotation")
    mask = labels == int(label)
    if label <= 0 or not mask.any():
        raise UNetCellsError(
            f"There is no cell {label} to delete: pick an existing cell number (the picker "
            "tool shows a cell's number)."
        )
    return _edit(labels, mask, 0, f"deleted cell {label}")


def fill_holes(labels: np.ndarray, label: int | None = None) -> Edit:
    """Fill background holes inside cells, plane by plane.

    Only background pixels enclosed by one cell are filled; a cell inside another is kept.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels (..., Y, X).
    label : int, optional
        Fill only this cell's holes; default all cells.

    Returns
    -------
    Edit
        The filled pixels with the id of the cell around them.
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
    """A drawn polyline as a mask.

    Parameters
    ----------
    points : np.ndarray
        (N, 2) vertices (y, x) in pixels; parts outside the plane are clipped.
    shape : tuple of int
        (Y, X) of the plane.
    width : int
        Line width in pixels (dilated by ``width // 2`` beyond 1).

    Returns
    -------
    np.ndarray
        bool (Y, X), True on the line.
    """
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
    """Split a cell along a drawn line.

    The cell minus the line falls apart into pieces (4-connected); the largest keeps
    ``label``, the others get new ids; the line's pixels go to the nearest piece, so the
    new cells touch (the weight map then carves the separation border between them).

    Parameters
    ----------
    labels : np.ndarray
        Integer labels (..., Y, X).
    label : int
        The cell to split.
    line : np.ndarray
        (N, 2) polyline vertices (y, x) in pixels of the plane.
    plane : sequence of int
        Leading indices of the (Y, X) plane; () for 2D labels.
    width : int
        Line width in pixels.

    Returns
    -------
    Edit
        The pixels of the new cells.
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


def _watershed_relief(cell: np.ndarray, image: np.ndarray | None) -> np.ndarray:
    """The smoothed distance to the cell's edge, mixed with the image when given."""
    dist = ndi.distance_transform_edt(cell)
    relief = ndi.gaussian_filter(dist, 1.0)
    if image is not None:
        img = np.asarray(image, float)
        if img.shape != cell.shape:
            raise UNetCellsError(
                f"The image plane {img.shape} must match the labels {cell.shape}."
            )
        inside = img[cell]
        span = float(inside.max() - inside.min()) or 1.0
        relief = relief / max(float(relief.max()), 1e-9) + 0.5 * (img - inside.min()) / span
    return relief


def _watershed_seeds(
    cell: np.ndarray, relief: np.ndarray, n: int, markers: np.ndarray | None
) -> np.ndarray:
    """int32 (Y, X) seeds 1..K: the ``markers`` inside the cell, else ``n`` relief maxima,
    else (a relief with one maximum, e.g. two cells merged into one smooth blob) the
    centres of ``n`` compact parts of the cell (k-means of its pixel positions)."""
    from scipy.cluster.vq import kmeans2
    from skimage.feature import peak_local_max

    seeds = np.zeros(cell.shape, np.int32)
    if markers is not None and len(markers):
        pts = np.round(np.asarray(markers, float)).astype(int)
        for k, (y, x) in enumerate(pts, start=1):
            if 0 <= y < cell.shape[0] and 0 <= x < cell.shape[1] and cell[y, x]:
                seeds[y, x] = k
    else:
        peaks = peak_local_max(
            np.where(cell, relief, 0), min_distance=2, num_peaks=max(2, int(n)), labels=cell
        )
        if len(peaks) < 2 and np.count_nonzero(cell) >= 2 * max(2, int(n)):
            pixels = np.argwhere(cell).astype(float)
            centres, _ = kmeans2(pixels, max(2, int(n)), minit="++", seed=0)
            nearest = ((pixels[:, None, :] - centres[None]) ** 2).sum(-1).argmin(axis=0)
            peaks = pixels[np.unique(nearest)].astype(int)
        for k, (y, x) in enumerate(peaks, start=1):
            seeds[y, x] = k
    return seeds


def split_label_watershed(
    labels: np.ndarray,
    label: int,
    image: np.ndarray | None = None,
    *,
    plane: Sequence[int] = (),
    n: int = 2,
    markers: np.ndarray | None = None,
) -> Edit:
    """Split a cell by a watershed.

    The relief is the smoothed distance to the cell's edge, mixed with the image
    intensity when an image is given; its ``n`` strongest maxima are the seeds unless
    ``markers`` are given. The largest piece keeps ``label``, the others get new ids.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels (..., Y, X).
    label : int
        The cell to split.
    image : np.ndarray, optional
        The (Y, X) plane of the image (bright cells); None uses the cell's shape only.
    plane : sequence of int
        Leading indices of the (Y, X) plane; () for 2D labels.
    n : int
        The number of seeds found automatically (at least 2).
    markers : np.ndarray, optional
        (K, 2) seed points (y, x) in pixels inside the cell.

    Returns
    -------
    Edit
        The pixels of the new cells.
    """
    from skimage.segmentation import watershed

    lab = _plane(labels, plane)
    cell = lab == int(label)
    if label <= 0 or not cell.any():
        raise UNetCellsError(
            f"There is no cell {label} in this plane to split: set 'Cell' to the number of "
            "a cell in the plane shown (the picker tool shows a cell's number)."
        )
    relief = _watershed_relief(cell, image)
    seeds = _watershed_seeds(cell, relief, n, markers)
    if np.count_nonzero(seeds) < 2:
        raise UNetCellsError(
            f"Found fewer than two seeds in cell {label}: draw a line across it in a Shapes "
            "layer and use Split by line."
        )
    parts = watershed(-relief, seeds, mask=cell)
    return _relabel_parts(labels, lab, int(label), parts, tuple(plane), "watershed")


def _disk_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) offsets in pixels of the pixels of a disk of ``radius`` px."""
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = yy**2 + xx**2 <= radius**2
    return yy[disk], xx[disk]


def points_to_disks(
    labels: np.ndarray,
    points: np.ndarray,
    radius: float = 4.0,
    *,
    overwrite: bool = False,
) -> Edit:
    """Small disk cells at points: each point a new id, drawn in its own plane.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels (..., Y, X).
    points : np.ndarray
        (N, labels.ndim) pixel coordinates (plane indices first, then y, x).
    radius : float
        Disk radius in pixels.
    overwrite : bool
        Draw over existing cells too; by default disks cover background only, and points
        on an existing cell (or outside the image) are skipped.

    Returns
    -------
    Edit
        The disks' pixels with their new ids.
    """
    labels = check_labels(labels, "annotation")
    pts = np.round(np.asarray(points, float)).astype(int).reshape(-1, labels.ndim)
    dys, dxs = _disk_offsets(radius)
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
        for dy, dx in zip(dys, dxs, strict=True):
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
