"""The pieces of the weight map of one (Y, X) plane: carving, distances, weights.

:mod:`core.weightmap` (the whole map) and :mod:`core.weightmap_update` (live updates after
a label edit) both build on these; the definitions are in :mod:`core.weightmap`'s
docstring. Boxes are ``(y0, y1, x0, x1)`` in pixels, stop exclusive.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .config import WeightMapConfig

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), stop exclusive

_PARALLEL_MIN_CELLS = 48  # below this, threads cost more than they save
_AHEAD = 16  # distance transforms in flight when running in threads


@dataclass
class PlaneStats:
    """What an update of one plane needs: each cell's bounding box and the class counts."""

    boxes: dict[int, Box]  # label -> bounding box of its pixels in this plane
    n_background: int  # target == 0 outside the ignore mask
    n_cell: int  # target == 1 outside the ignore mask


# -- boxes ---------------------------------------------------------------------------------


def grow_box(box: Box, margin: int, shape: tuple[int, int]) -> Box:
    """``box`` grown by ``margin`` px on every side, clipped to a plane of ``shape``.

    Parameters
    ----------
    box : Box
        (y0, y1, x0, x1), px, stop exclusive.
    margin : int
        Growth per side, px.
    shape : tuple of int
        (Y, X) of the plane.

    Returns
    -------
    Box
        The grown box, inside the plane.
    """
    y0, y1, x0, x1 = box
    return (
        max(0, y0 - margin),
        min(shape[0], y1 + margin),
        max(0, x0 - margin),
        min(shape[1], x1 + margin),
    )


def box_union(a: Box | None, b: Box | None) -> Box | None:
    """The smallest box holding ``a`` and ``b`` (None stands for an empty box).

    Parameters
    ----------
    a, b : Box or None
        (y0, y1, x0, x1), px, stop exclusive.

    Returns
    -------
    Box or None
        None only when both are None.
    """
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def shift_box(box: Box, y: int, x: int) -> Box:
    """``box`` moved by (y, x) px.

    Parameters
    ----------
    box : Box
        (y0, y1, x0, x1), px, stop exclusive.
    y, x : int
        Shift, px (may be negative; not clipped).

    Returns
    -------
    Box
        The moved box.
    """
    return box[0] + y, box[1] + y, box[2] + x, box[3] + x


def box_slices(box: Box) -> tuple[slice, slice]:
    """``box`` as (Y, X) slices.

    Parameters
    ----------
    box : Box
        (y0, y1, x0, x1), px, stop exclusive.

    Returns
    -------
    tuple of slice
        ``(slice(y0, y1), slice(x0, x1))``.
    """
    return slice(box[0], box[1]), slice(box[2], box[3])


def mask_box(mask: np.ndarray) -> Box | None:
    """The bounding box of the True pixels of a bool (Y, X) ``mask``.

    Parameters
    ----------
    mask : numpy.ndarray
        bool (Y, X).

    Returns
    -------
    Box or None
        (y0, y1, x0, x1), px, stop exclusive; None if no pixel is True.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def cell_boxes(lab: np.ndarray, values: np.ndarray | None = None) -> dict[int, Box]:
    """label -> bounding box of every cell of a (compacted) (Y, X) plane.

    Parameters
    ----------
    lab : numpy.ndarray
        (Y, X) integer labels, 0 background (compact labels 1..N from :func:`compact`).
    values : numpy.ndarray, optional
        The original label of each compact label, or None to key the boxes by the labels
        of ``lab`` itself.

    Returns
    -------
    dict of int to Box
        One box per present label, px, stop exclusive.
    """
    out: dict[int, Box] = {}
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is not None:
            key = i if values is None else int(values[i])
            out[key] = (sl[0].start, sl[0].stop, sl[1].start, sl[1].stop)
    return out


def cells_near(boxes: dict[int, Box], region: Box, margin: int) -> list[tuple[int, Box]]:
    """The (label, box) of the cells whose box grown by ``margin`` px overlaps ``region``.

    Parameters
    ----------
    boxes : dict of int to Box
        label -> bounding box (:class:`PlaneStats`'s ``boxes``).
    region : Box
        The region of interest, px.
    margin : int
        Growth of each cell's box, px (not clipped to the plane).

    Returns
    -------
    list of (int, Box)
        In the order of ``boxes``.
    """
    keys = np.fromiter(boxes.keys(), dtype=np.int64, count=len(boxes))
    arr = np.array(list(boxes.values()), dtype=np.int64).reshape(-1, 4)
    y0, y1, x0, x1 = region
    hit = (
        (arr[:, 0] - margin < y1)
        & (arr[:, 1] + margin > y0)
        & (arr[:, 2] - margin < x1)
        & (arr[:, 3] + margin > x0)
    )
    return [
        (int(k), (int(b[0]), int(b[1]), int(b[2]), int(b[3])))
        for k, b in zip(keys[hit], arr[hit], strict=True)
    ]


# -- carving -------------------------------------------------------------------------------


def compact(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The same partition with small label values (so bincount/find_objects stay cheap).

    Parameters
    ----------
    plane : np.ndarray
        Integer (Y, X) labels.

    Returns
    -------
    labels : np.ndarray
        The plane itself when its values are small already, else int64 labels 0..K.
    values : np.ndarray or None
        ``values[k]``: the original value of compact label k; None when unchanged.
    """
    top = int(plane.max()) if plane.size else 0
    if top <= 4 * plane.size + 1024:
        return plane, None
    values, inverse = np.unique(plane, return_inverse=True)
    if values[0] != 0:
        values = np.concatenate([[0], values])
        inverse = inverse + 1
    return inverse.reshape(plane.shape).astype(np.int64), values


def contact_mask(lab: np.ndarray, width: int) -> np.ndarray:
    """True on cell pixels with a different cell within ``width`` px (chessboard metric).

    Parameters
    ----------
    lab : np.ndarray
        Integer (Y, X) labels, 0 = background.
    width : int
        The border width in pixels (0: no contact).

    Returns
    -------
    np.ndarray
        bool (Y, X).
    """
    h, w = lab.shape
    mark = np.zeros(lab.shape, dtype=bool)
    if width == 0:
        return mark
    pos = lab > 0
    for dy in range(0, width + 1):
        for dx in range(-width, width + 1):
            if (dy == 0 and dx <= 0) or dy >= h or abs(dx) >= w:
                continue  # each offset once (its opposite is the same pair)
            a = (slice(0, h - dy), slice(max(0, -dx), w - max(0, dx)))
            b = (slice(dy, h), slice(max(0, dx), w + min(0, dx)))
            differ = lab[a] != lab[b]
            differ &= pos[a]
            differ &= pos[b]
            mark[a] |= differ
            mark[b] |= differ
    return mark


def target_plane(lab: np.ndarray, width: int) -> np.ndarray:
    """The training target of one plane: cells minus the carved separation borders.

    Parameters
    ----------
    lab : np.ndarray
        Integer (Y, X) labels (compacted, see :func:`compact`), 0 = background.
    width : int
        The border width in pixels.

    Returns
    -------
    np.ndarray
        uint8 (Y, X): 1 = cell, 0 = background and carved borders. A cell that would be
        carved away entirely keeps all its pixels.
    """
    pos = lab > 0
    mark = contact_mask(lab, width)
    if mark.any():
        n = int(lab.max()) + 1
        kept = np.bincount(lab[pos & ~mark], minlength=n)
        carved = np.bincount(lab[mark], minlength=n)
        vanished = (kept == 0) & (carved > 0)
        if vanished.any():
            mark &= ~vanished[lab]
    return (pos & ~mark).view(np.uint8)


# -- distances -----------------------------------------------------------------------------


def balance_active(config: WeightMapConfig) -> bool:
    """Whether w_c uses the Fiji preset's distance term on the background.

    Parameters
    ----------
    config : WeightMapConfig
        The weight map settings.

    Returns
    -------
    bool
        True with class balance on, a ``background_weight`` and ``balance_sigma`` > 0.
    """
    return (
        config.class_balance and config.background_weight is not None and config.balance_sigma > 0
    )


def needs_distances(config: WeightMapConfig) -> bool:
    """Whether any weight term uses the distances d1, d2.

    Parameters
    ----------
    config : WeightMapConfig
        The weight map settings.

    Returns
    -------
    bool
        True when ``w0`` > 0 or :func:`balance_active`.
    """
    return config.w0 > 0 or balance_active(config)


def distance_margin(config: WeightMapConfig) -> float:
    """Pixels beyond which every distance term is below ``config.tolerance``.

    Parameters
    ----------
    config : WeightMapConfig
        sigma, balance_sigma (px), w0 and tolerance are used.

    Returns
    -------
    float
        R = sigma * sqrt(2 ln(1 / tolerance)) px (the larger of the border and balance
        terms' R); 0 when no distance term is used.
    """
    scale = np.sqrt(2.0 * np.log(1.0 / config.tolerance))
    radius = 0.0
    if config.w0 > 0:
        radius = config.sigma * scale
    if balance_active(config):
        radius = max(radius, config.balance_sigma * scale)
    return float(radius)


def _edt_window(lab: np.ndarray, label: int, window: Box) -> np.ndarray:
    y0, y1, x0, x1 = window
    return ndi.distance_transform_edt(lab[y0:y1, x0:x1] != label).astype(np.float32)


def _distance_jobs(cells, region: Box, margin: int, shape) -> list[tuple[int, Box]]:
    """(label, window) per cell whose grown box reaches ``region``: the window holds the
    cell and the pixels of ``region`` it reaches."""
    ry0, ry1, rx0, rx1 = region
    jobs = []
    for label, box in cells:
        grown = grow_box(box, margin, shape)
        seen = (max(grown[0], ry0), min(grown[1], ry1), max(grown[2], rx0), min(grown[3], rx1))
        if seen[0] < seen[1] and seen[2] < seen[3]:
            jobs.append((label, box_union(box, seen)))
    return jobs


def _distances_in_threads(lab, jobs, pool: ThreadPoolExecutor):
    """(window, distances) per job in order, the transforms run ahead in ``pool``."""
    # the distance transforms release the GIL: run them ahead in threads, in order
    pending: deque = deque()
    it = iter(jobs)
    try:
        for label, window in it:
            pending.append((window, pool.submit(_edt_window, lab, label, window)))
            if len(pending) >= _AHEAD:
                break
        while pending:
            window, future = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt[1], pool.submit(_edt_window, lab, *nxt)))
            yield window, future.result()
    finally:
        for _, future in pending:
            future.cancel()


class _TwoSmallest:
    """d1 <= d2: the two smallest distances seen per pixel of ``region`` (inf: none)."""

    def __init__(self, region: Box):
        self.region = region
        ry0, ry1, rx0, rx1 = region
        self.d1 = np.full((ry1 - ry0, rx1 - rx0), np.inf, dtype=np.float32)
        self.d2 = np.full_like(self.d1, np.inf)

    def add(self, window: Box, dist: np.ndarray) -> None:
        """Fold in the distances ``dist`` computed on ``window``."""
        ry0, ry1, rx0, rx1 = self.region
        wy0, wy1, wx0, wx1 = window
        y0, y1 = max(wy0, ry0), min(wy1, ry1)
        x0, x1 = max(wx0, rx0), min(wx1, rx1)
        if y0 >= y1 or x0 >= x1:
            return
        d = dist[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
        a = self.d1[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]
        b = self.d2[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]
        np.minimum(b, np.maximum(a, d), out=b, casting="same_kind")
        np.minimum(a, d, out=a, casting="same_kind")


def two_nearest(
    lab: np.ndarray,
    cells: list[tuple[int, Box]],
    region: Box,
    margin: int,
    pool: ThreadPoolExecutor | None,
) -> Generator[tuple[int, int], None, tuple[np.ndarray, np.ndarray]]:
    """The distances to the nearest and second-nearest cell, cell by cell.

    Each cell's distance is computed on its bounding box grown by ``margin`` (clipped to
    the plane); pixels outside every window keep inf.

    Parameters
    ----------
    lab : np.ndarray
        Integer (Y, X) labels.
    cells : list of (int, Box)
        The cells to measure and their bounding boxes.
    region : Box
        The pixels to return distances for.
    margin : int
        Pixels beyond which a cell's distance is not needed.
    pool : ThreadPoolExecutor or None
        Runs the distance transforms ahead when there are many cells.

    Yields
    ------
    (int, int)
        Cells done, cells to do.

    Returns
    -------
    (np.ndarray, np.ndarray)
        d1, d2: float32 of the region's shape, in pixels (inf: no cell within reach).
    """
    jobs = _distance_jobs(cells, region, margin, lab.shape)
    total = len(jobs)
    step = max(1, total // 20)
    nearest = _TwoSmallest(region)
    if pool is None or total < _PARALLEL_MIN_CELLS:
        results = ((window, _edt_window(lab, label, window)) for label, window in jobs)
    else:
        results = _distances_in_threads(lab, jobs, pool)
    try:
        for done, (window, dist) in enumerate(results, start=1):
            nearest.add(window, dist)
            if done % step == 0:
                yield done, total
    finally:
        results.close()  # a stopped map cancels the transforms still queued
    return nearest.d1, nearest.d2


# -- weights -------------------------------------------------------------------------------


def class_weights(config: WeightMapConfig, plane: PlaneStats) -> tuple[float, float]:
    """(w_c on background, w_c on cells) of one plane (see :mod:`core.weightmap`).

    Parameters
    ----------
    config : WeightMapConfig
        The weight map settings.
    plane : PlaneStats
        The plane's class counts.

    Returns
    -------
    tuple of float
        (1, 1) without class balance or when a class is absent; (background_weight, 1)
        when one is set; else (1, n_background / n_cell).
    """
    if not config.class_balance:
        return 1.0, 1.0
    if config.background_weight is not None:
        return float(config.background_weight), 1.0
    if plane.n_cell == 0 or plane.n_background == 0:
        return 1.0, 1.0
    return 1.0, plane.n_background / plane.n_cell


def count_classes(target: np.ndarray, ignore: np.ndarray | None) -> tuple[int, int]:
    """(n background, n cell) pixels of ``target`` outside the ``ignore`` mask.

    Parameters
    ----------
    target : numpy.ndarray
        (Y, X) 0/1 (or bool) target: non-zero is cell.
    ignore : numpy.ndarray or None
        bool (Y, X), True where pixels do not count; None: all count.

    Returns
    -------
    tuple of int
        Pixel counts (background, cell).
    """
    if ignore is None:
        n_cell = int(np.count_nonzero(target))
        return target.size - n_cell, n_cell
    valid = ~ignore
    n_valid = int(np.count_nonzero(valid))
    n_cell = int(np.count_nonzero(target[valid]))
    return n_valid - n_cell, n_cell


def fill_weights(
    config: WeightMapConfig,
    w_bg: float,
    w_cell: float,
    target: np.ndarray,
    ignore: np.ndarray | None,
    d1: np.ndarray | None,
    d2: np.ndarray | None,
) -> np.ndarray:
    """The weights of a region from its target, ignore mask and distances.

    Parameters
    ----------
    config : WeightMapConfig
        w0, sigma (px), and the Fiji preset's background_weight and balance_sigma (px).
    w_bg, w_cell : float
        w_c on background and on cells (:func:`class_weights`).
    target : np.ndarray
        uint8 (Y, X) training target of the region.
    ignore : np.ndarray or None
        bool (Y, X): pixels that get weight 0.
    d1, d2 : np.ndarray or None
        float32 (Y, X) distances in pixels (:func:`two_nearest`); inf where no cell
        window reaches, which makes the terms exactly 0 there.

    Returns
    -------
    np.ndarray
        float32 (Y, X) weights.
    """
    background = target == 0
    out = np.where(background, np.float32(w_bg), np.float32(w_cell))
    if config.w0 > 0 and d2 is not None:
        s = d1 + d2
        np.multiply(s, s, out=s)
        s *= np.float32(-1.0 / (2.0 * config.sigma**2))
        np.exp(s, out=s)
        s *= np.float32(config.w0)
        np.add(out, s, out=out, where=background)
    if balance_active(config) and d1 is not None:
        s = d1 * d1
        s *= np.float32(-1.0 / (2.0 * config.balance_sigma**2))
        np.exp(s, out=s)
        s *= np.float32(1.0 - float(config.background_weight))
        np.add(out, s, out=out, where=background)
    if ignore is not None:
        out[ignore] = 0.0
    return out
