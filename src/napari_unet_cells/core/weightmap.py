"""The paper's loss weight map (Ronneberger et al. 2015, eq. 2) and its training target.

Definitions (one 2D plane; 3D or higher input is processed plane by plane, each plane
exactly as if it were a separate 2D image):

- Cells are the positive labels of the instance label image (0 = background).
- **Training target** (:func:`separation_target`): class 1 = cell, class 0 = background.
  A cell pixel becomes background ("carved") when a pixel of a *different* cell lies
  within ``border_width`` pixels of it in the chessboard metric (``border_width = 1``: the
  8-neighbourhood), so touching cells end up separated by a background ridge of
  ``2 * border_width`` pixels. A cell that would be carved away entirely keeps all its
  pixels (cells never vanish).
- **Distances**: d_k(x) is the Euclidean distance in pixels from x to the nearest pixel of
  cell k *as annotated* (before carving, as in the Fiji U-Net plugin by the paper's
  authors); d1(x) and d2(x) are the smallest and second-smallest d_k(x) over all cells.
  With fewer than two cells d2 is infinite and the border term is 0.
- **Weights**: w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)) where the
  target is background (class 0, *including the carved border pixels*), and
  w(x) = w_c(x) where the target is a cell. Pixels of the ignore mask get exactly 0.
- **w_c** (with ``class_balance``): paper mode (``background_weight=None``):
  w_c = 1 on background and n_background / n_cell on cells, where n_* count the pixels of
  each class of the *target* outside the ignore mask (inverse class frequency normalised
  so that background is 1; the rarer class gets the larger weight). If either class is
  absent, w_c = 1 everywhere. Fiji mode (``background_weight=v``): w_c = 1 on cells and
  v + (1 - v) * exp(-d1^2 / (2 balance_sigma^2)) on background (just v when
  ``balance_sigma`` is 0). Without ``class_balance``, w_c = 1 everywhere.

Algorithm: a full-image distance transform per cell would cost O(cells x pixels). A
distance term falls below ``tolerance`` times its amplitude beyond
R = sigma * sqrt(2 ln(1 / tolerance)) pixels, so each cell's distances are computed only
inside its bounding box grown by R (``scipy.ndimage.distance_transform_edt`` on that
window, in a few threads), keeping the two smallest per pixel. The result differs from
the brute-force definition by at most ``tolerance * w0`` (1e-6 for the defaults).
:func:`update_weight_map` recomputes only the windows a label edit can affect.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .config import WeightMapConfig
from .errors import UNetCellsError
from .labels import check_labels, mask_to_instances
from .progress import run

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), stop exclusive

_PARALLEL_MIN_CELLS = 48  # below this, threads cost more than they save


@dataclass(frozen=True)
class WeightMapProgress:
    """A progress event of :func:`iter_weight_map`: ``done`` of ``total`` steps."""

    done: int
    total: int
    message: str


@dataclass
class _Plane:
    boxes: dict[int, Box]  # label -> bounding box of its pixels in this plane
    n_background: int  # target == 0 outside the ignore mask
    n_cell: int  # target == 1 outside the ignore mask


@dataclass
class WeightMapState:
    """A computed weight map plus what :func:`update_weight_map` needs to update it.

    weights: float32, shape of the labels; updated in place by :func:`update_weight_map`.
    target: uint8 training target (0 background incl. carved borders, 1 cell), same shape,
        also kept up to date.
    labels: the state's own copy of the labels the map was computed from (never the
        caller's array). ignore: bool copy of the ignore mask, or None.
    """

    config: WeightMapConfig
    weights: np.ndarray
    target: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray | None
    _planes: list[_Plane] = field(repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.labels.shape


# -- public functions ----------------------------------------------------------------------


def separation_target(labels: np.ndarray, config: WeightMapConfig | None = None) -> np.ndarray:
    """The training target: uint8, 1 = cell, 0 = background and carved separation borders.

    labels: (..., Y, X) integer instance labels (0 = background), processed per 2D plane.
    Returns an array of the same shape. See the module docstring for the carving rule.
    """
    config = config or WeightMapConfig()
    labels = _check_input(labels)
    planes = labels.reshape((-1, *labels.shape[-2:]))
    target = np.empty(planes.shape, dtype=np.uint8)
    for i, plane in enumerate(planes):
        target[i] = _target_plane(_compact(plane)[0], int(config.border_width))
    return target.reshape(labels.shape)


def weight_map(
    labels: np.ndarray,
    ignore: np.ndarray | None = None,
    config: WeightMapConfig | None = None,
    *,
    planewise: bool = True,
) -> np.ndarray:
    """The paper's loss weight map (eq. 2) for an instance label image.

    labels: (Y, X) integer instance labels, 0 = background, k > 0 = cell k; or (Z, Y, X)
        (any leading axes), processed plane by plane (``planewise=False`` is refused: true
        3D weight maps are not supported).
    ignore: optional mask of the same shape (bool, or integers where nonzero = ignore);
        its pixels get weight 0 and are left out of the class frequencies.
    config: :class:`WeightMapConfig` (default: the paper's w0 = 10, sigma = 5 px).
    Returns float32 weights of the labels' shape:

    - the border term w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) is added on the pixels where
      :func:`separation_target` is 0 (background *including* the carved borders between
      touching cells), never on its cell pixels; d1, d2 are Euclidean distances in pixels
      to the nearest and second-nearest annotated cell (0 border term with < 2 cells);
    - w_c (paper): 1 on background, n_background / n_cell on cells, counted on the
      target outside the ignore mask (1 everywhere if a class is absent); fiji preset:
      1 on cells, v + (1 - v) exp(-d1^2 / (2 balance_sigma^2)) on background;
    - ignore-mask pixels are exactly 0.
    """
    return weight_map_state(labels, ignore, config, planewise=planewise).weights


def weight_map_state(
    labels: np.ndarray,
    ignore: np.ndarray | None = None,
    config: WeightMapConfig | None = None,
    *,
    planewise: bool = True,
) -> WeightMapState:
    """Like :func:`weight_map`, but returns the :class:`WeightMapState` for live updates."""
    return run(iter_weight_map(labels, ignore, config, planewise=planewise))


def iter_weight_map(
    labels: np.ndarray,
    ignore: np.ndarray | None = None,
    config: WeightMapConfig | None = None,
    *,
    planewise: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[WeightMapProgress, None, WeightMapState | None]:
    """The weight map as a generator of :class:`WeightMapProgress` events.

    Arguments as :func:`weight_map`. The generator's return value (``StopIteration.value``,
    napari's ``worker.returned``) is the :class:`WeightMapState`, or None when
    ``should_stop()`` became true between two steps. Closing the generator also stops it.
    """
    config = config or WeightMapConfig()
    labels = _check_input(_numbered(labels), planewise=planewise)
    ignore = _check_ignore(ignore, labels.shape)
    shape = labels.shape
    state = WeightMapState(
        config=config,
        weights=np.empty(shape, dtype=np.float32),
        target=np.empty(shape, dtype=np.uint8),
        labels=np.array(labels, copy=True),
        ignore=None if ignore is None else np.array(ignore, copy=True),
        _planes=[],
    )
    n_planes = int(np.prod(shape[:-2], dtype=np.int64))
    lab3 = state.labels.reshape((n_planes, *shape[-2:]))
    ign3 = None if state.ignore is None else state.ignore.reshape(lab3.shape)
    w3 = state.weights.reshape(lab3.shape)
    t3 = state.target.reshape(lab3.shape)
    yield WeightMapProgress(0, 1, "starting")  # inputs are checked and copied
    if should_stop is not None and should_stop():
        return None
    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="weightmap") as pool:
        for p in range(n_planes):
            plane_gen = _full_plane(
                lab3[p], None if ign3 is None else ign3[p], config, w3[p], t3[p], pool
            )
            while True:
                try:
                    done, total = next(plane_gen)
                except StopIteration as stop:
                    state._planes.append(stop.value)
                    break
                yield WeightMapProgress(
                    p * total + done, n_planes * total, _message(p, n_planes, done, total)
                )
                if should_stop is not None and should_stop():
                    plane_gen.close()
                    return None
    yield WeightMapProgress(1, 1, "weight map done")
    return state


def update_weight_map(
    state: WeightMapState,
    labels: np.ndarray,
    ignore: np.ndarray | None = None,
    *,
    region: tuple[slice, ...] | None = None,
) -> np.ndarray:
    """Bring ``state`` up to date with edited labels (and ignore mask); cheap for small edits.

    labels: the edited label image, same shape as the state's (e.g. a napari Labels layer's
        data after a brush stroke; it is compared with the state's own copy).
    ignore: the current ignore mask, or None to keep the state's one (a state made without
        an ignore mask cannot gain one here: recompute instead).
    region: optional slices (one per axis) that contain every changed pixel, to skip
        comparing the rest of the image; None compares everything (a few ms at 2048^2).
    Only the windows that the changed cells can influence (their old and new bounding boxes
    grown by the distance margin, plus the neighbours whose carving changed) are recomputed;
    the cell weight w_c (class frequencies) is refreshed everywhere when it changed.
    Returns ``state.weights``, updated in place; the result equals :func:`weight_map` of
    the new labels up to float rounding.
    """
    labels = _check_input(labels)
    if labels.shape != state.shape:
        raise UNetCellsError(
            f"The labels have shape {labels.shape} but the weight map was computed for "
            f"{state.shape}; recompute the weight map for the new image."
        )
    if labels.dtype != state.labels.dtype and labels.size:
        info = np.iinfo(state.labels.dtype)
        if labels.max() > info.max:
            raise UNetCellsError(
                f"The labels now hold values up to {labels.max()}, more than the "
                f"{state.labels.dtype} they had; recompute the weight map."
            )
    if ignore is not None:
        if state.ignore is None:
            raise UNetCellsError(
                "This weight map was computed without an ignore mask; recompute it with the "
                "mask instead of updating it."
            )
        ignore = _check_ignore(ignore, state.shape)
    shape = state.shape
    if region is None:
        region = tuple(slice(0, n) for n in shape)
    elif len(region) != len(shape):
        raise UNetCellsError(f"region needs one slice per axis ({len(shape)}), got {region}.")
    plane_shape = shape[-2:]
    lead = tuple(slice(*s.indices(n)[:2]) for s, n in zip(region[:-2], shape[:-2], strict=True))
    yx = tuple(slice(*s.indices(n)[:2]) for s, n in zip(region[-2:], plane_shape, strict=True))
    n_planes = len(state._planes)
    index = np.arange(n_planes).reshape(shape[:-2])[lead].ravel()
    lab3 = state.labels.reshape((n_planes, *plane_shape))
    new3 = labels.reshape(lab3.shape)
    ign3 = None if state.ignore is None else state.ignore.reshape(lab3.shape)
    newign3 = None if ignore is None else ignore.reshape(lab3.shape)
    for p in index.tolist():
        _update_plane(
            state._planes[p],
            state.config,
            lab3[p],
            new3[p],
            None if ign3 is None else ign3[p],
            None if newign3 is None else newign3[p],
            state.weights.reshape(lab3.shape)[p],
            state.target.reshape(lab3.shape)[p],
            yx,
        )
    return state.weights


def distance_margin(config: WeightMapConfig) -> float:
    """Pixels beyond which every distance term is below ``config.tolerance`` (0: none used)."""
    scale = np.sqrt(2.0 * np.log(1.0 / config.tolerance))
    radius = 0.0
    if config.w0 > 0:
        radius = config.sigma * scale
    if _balance_active(config):
        radius = max(radius, config.balance_sigma * scale)
    return float(radius)


# -- checks --------------------------------------------------------------------------------


def _numbered(labels: np.ndarray) -> np.ndarray:
    """Instance labels; a 0/1 or 0/255 mask is numbered by connected components (with a
    logged notice) instead of being weighted as one giant cell."""
    labels, notice = mask_to_instances(labels, "The labels")
    if notice:
        logger.warning(notice)
    return labels


def _check_input(labels: np.ndarray, planewise: bool = True) -> np.ndarray:
    labels = check_labels(labels)
    if labels.ndim < 2:
        raise UNetCellsError(
            f"The weight map needs a 2D label image (or a stack of them), got shape "
            f"{labels.shape}: give (Y, X) labels or a (Z, Y, X) stack."
        )
    if labels.ndim > 2 and not planewise:
        raise UNetCellsError(
            "True 3D weight maps are not supported; use planewise=True to process each 2D "
            "plane separately."
        )
    return labels


def _check_ignore(ignore: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if ignore is None:
        return None
    ignore = np.asarray(ignore)
    if ignore.shape != shape:
        raise UNetCellsError(
            f"The ignore mask has shape {ignore.shape} but the labels have shape {shape}; "
            "draw the mask on the same image as the labels."
        )
    if ignore.dtype != bool:
        if not (np.issubdtype(ignore.dtype, np.integer) or np.issubdtype(ignore.dtype, float)):
            raise UNetCellsError(
                f"The ignore mask must be boolean or numeric (nonzero = ignore), got dtype "
                f"{ignore.dtype}: use a Labels layer or an integer TIFF."
            )
        ignore = ignore != 0
    return ignore


def _compact(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The same partition with small label values (so bincount/find_objects stay cheap).

    Returns (labels, values): ``values[k]`` is the original value of compact label k, or
    None when the plane was small-valued already and is returned unchanged.
    """
    top = int(plane.max()) if plane.size else 0
    if top <= 4 * plane.size + 1024:
        return plane, None
    values, inverse = np.unique(plane, return_inverse=True)
    if values[0] != 0:
        values = np.concatenate([[0], values])
        inverse = inverse + 1
    return inverse.reshape(plane.shape).astype(np.int64), values


def _message(p: int, n_planes: int, done: int, total: int) -> str:
    where = f"plane {p + 1}/{n_planes}: " if n_planes > 1 else ""
    return f"{where}cell {done}/{total}"


# -- carving -------------------------------------------------------------------------------


def _contact_mask(lab: np.ndarray, width: int) -> np.ndarray:
    """True on cell pixels with a different cell within ``width`` px (chessboard metric)."""
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


def _target_plane(lab: np.ndarray, width: int) -> np.ndarray:
    """uint8 target of one (compacted) plane; cells that would vanish keep all pixels."""
    pos = lab > 0
    mark = _contact_mask(lab, width)
    if mark.any():
        n = int(lab.max()) + 1
        kept = np.bincount(lab[pos & ~mark], minlength=n)
        carved = np.bincount(lab[mark], minlength=n)
        vanished = (kept == 0) & (carved > 0)
        if vanished.any():
            mark &= ~vanished[lab]
    return (pos & ~mark).view(np.uint8)


# -- distances -----------------------------------------------------------------------------


def _balance_active(config: WeightMapConfig) -> bool:
    return (
        config.class_balance and config.background_weight is not None and config.balance_sigma > 0
    )


def _class_weights(config: WeightMapConfig, plane: _Plane) -> tuple[float, float]:
    """(w_c on background, w_c on cells) of one plane."""
    if not config.class_balance:
        return 1.0, 1.0
    if config.background_weight is not None:
        return float(config.background_weight), 1.0
    if plane.n_cell == 0 or plane.n_background == 0:
        return 1.0, 1.0
    return 1.0, plane.n_background / plane.n_cell


def _grow(box: Box, margin: int, shape: tuple[int, int]) -> Box:
    y0, y1, x0, x1 = box
    return (
        max(0, y0 - margin),
        min(shape[0], y1 + margin),
        max(0, x0 - margin),
        min(shape[1], x1 + margin),
    )


def _edt_window(lab: np.ndarray, label: int, window: Box) -> np.ndarray:
    y0, y1, x0, x1 = window
    return ndi.distance_transform_edt(lab[y0:y1, x0:x1] != label).astype(np.float32)


def _two_nearest(
    lab: np.ndarray,
    cells: list[tuple[int, Box]],
    region: Box,
    margin: int,
    pool: ThreadPoolExecutor | None,
) -> Generator[tuple[int, int], None, tuple[np.ndarray, np.ndarray]]:
    """Yield (cells done, cells); return (d1, d2) over ``region`` (float32, inf = far).

    Each cell's distance is computed on its bounding box grown by ``margin`` (clipped to
    the plane); pixels outside every window keep inf.
    """
    ry0, ry1, rx0, rx1 = region
    d1 = np.full((ry1 - ry0, rx1 - rx0), np.inf, dtype=np.float32)
    d2 = np.full_like(d1, np.inf)
    jobs = []
    for label, box in cells:
        grown = _grow(box, margin, lab.shape)
        # the distance transform needs the cell and the pixels of `region` it reaches
        seen = (max(grown[0], ry0), min(grown[1], ry1), max(grown[2], rx0), min(grown[3], rx1))
        if seen[0] < seen[1] and seen[2] < seen[3]:
            jobs.append((label, _union(box, seen)))
    total = len(jobs)
    step = max(1, total // 20)

    def accumulate(window: Box, dist: np.ndarray) -> None:
        wy0, wy1, wx0, wx1 = window
        y0, y1 = max(wy0, ry0), min(wy1, ry1)
        x0, x1 = max(wx0, rx0), min(wx1, rx1)
        if y0 >= y1 or x0 >= x1:
            return
        d = dist[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
        a = d1[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]
        b = d2[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]
        np.minimum(b, np.maximum(a, d), out=b, casting="same_kind")
        np.minimum(a, d, out=a, casting="same_kind")

    if pool is None or total < _PARALLEL_MIN_CELLS:
        for i, (label, window) in enumerate(jobs, start=1):
            accumulate(window, _edt_window(lab, label, window))
            if i % step == 0:
                yield i, total
    else:
        # the distance transforms release the GIL: run them ahead in threads, in order
        ahead = 16  # distance transforms in flight
        pending: deque = deque()
        it = iter(jobs)
        try:
            for label, window in it:
                pending.append((window, pool.submit(_edt_window, lab, label, window)))
                if len(pending) >= ahead:
                    break
            done = 0
            while pending:
                window, future = pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt[1], pool.submit(_edt_window, lab, *nxt)))
                accumulate(window, future.result())
                done += 1
                if done % step == 0:
                    yield done, total
        finally:
            for _, future in pending:
                future.cancel()
    return d1, d2


def _boxes(lab: np.ndarray, values: np.ndarray | None = None) -> dict[int, Box]:
    """label -> bounding box for every cell of a (compacted) plane."""
    out: dict[int, Box] = {}
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is not None:
            key = i if values is None else int(values[i])
            out[key] = (sl[0].start, sl[0].stop, sl[1].start, sl[1].stop)
    return out


def _fill(
    config: WeightMapConfig,
    w_bg: float,
    w_cell: float,
    target: np.ndarray,
    ignore: np.ndarray | None,
    d1: np.ndarray | None,
    d2: np.ndarray | None,
) -> np.ndarray:
    """Weights of a region from its target, ignore mask and distances (float32).

    d1, d2 are inf where no cell window reaches, which makes the terms exactly 0 there.
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
    if _balance_active(config) and d1 is not None:
        s = d1 * d1
        s *= np.float32(-1.0 / (2.0 * config.balance_sigma**2))
        np.exp(s, out=s)
        s *= np.float32(1.0 - float(config.background_weight))
        np.add(out, s, out=out, where=background)
    if ignore is not None:
        out[ignore] = 0.0
    return out


def _needs_distances(config: WeightMapConfig) -> bool:
    return config.w0 > 0 or _balance_active(config)


def _count(target: np.ndarray, ignore: np.ndarray | None) -> tuple[int, int]:
    """(n background, n cell) outside the ignore mask."""
    if ignore is None:
        n_cell = int(np.count_nonzero(target))
        return target.size - n_cell, n_cell
    valid = ~ignore
    n_valid = int(np.count_nonzero(valid))
    n_cell = int(np.count_nonzero(target[valid]))
    return n_valid - n_cell, n_cell


def _full_plane(
    lab: np.ndarray,
    ignore: np.ndarray | None,
    config: WeightMapConfig,
    weights_out: np.ndarray,
    target_out: np.ndarray,
    pool: ThreadPoolExecutor | None,
) -> Generator[tuple[int, int], None, _Plane]:
    compact, values = _compact(lab)
    width = int(config.border_width)
    # the carving (numpy, releases the GIL) overlaps with the distance transforms
    carving = None if pool is None else pool.submit(_target_plane, compact, width)
    boxes_c = _boxes(compact)
    total = len(boxes_c)
    d1 = d2 = None
    try:
        if _needs_distances(config) and total:
            margin = int(np.ceil(distance_margin(config)))
            region = (0, lab.shape[0], 0, lab.shape[1])
            cells = list(boxes_c.items())
            d1, d2 = yield from _two_nearest(compact, cells, region, margin, pool)
        target_out[...] = _target_plane(compact, width) if carving is None else carving.result()
    finally:
        if carving is not None:
            carving.cancel()
    n_bg, n_cell = _count(target_out, ignore)
    plane = _Plane(
        boxes={k if values is None else int(values[k]): b for k, b in boxes_c.items()},
        n_background=n_bg,
        n_cell=n_cell,
    )
    w_bg, w_cell = _class_weights(config, plane)
    weights_out[...] = _fill(config, w_bg, w_cell, target_out, ignore, d1, d2)
    yield max(total, 1), max(total, 1)
    return plane


# -- incremental update --------------------------------------------------------------------


def _bbox(mask: np.ndarray) -> Box | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _union(a: Box | None, b: Box | None) -> Box | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def _shift(box: Box, y: int, x: int) -> Box:
    return box[0] + y, box[1] + y, box[2] + x, box[3] + x


def _sl(box: Box) -> tuple[slice, slice]:
    return slice(box[0], box[1]), slice(box[2], box[3])


def _update_plane(
    plane: _Plane,
    config: WeightMapConfig,
    old: np.ndarray,
    new: np.ndarray,
    ignore: np.ndarray | None,
    new_ignore: np.ndarray | None,
    weights: np.ndarray,
    target: np.ndarray,
    yx: tuple[slice, slice],
) -> None:
    """Update one plane in place: ``old`` (the state's labels copy) becomes ``new``."""
    shape = old.shape
    ry, rx = yx
    diff = old[ry, rx] != new[ry, rx]
    changed_box = _bbox(diff)
    ignore_box = None
    if new_ignore is not None and ignore is not None:
        ignore_box = _bbox(ignore[ry, rx] != new_ignore[ry, rx])
        if ignore_box is not None:
            ignore_box = _shift(ignore_box, ry.start, rx.start)
    if changed_box is None and ignore_box is None:
        return
    width = int(config.border_width)
    margin = int(np.ceil(distance_margin(config))) if _needs_distances(config) else 0
    touched: Box | None = None  # pixels whose target may change
    recompute: Box | None = ignore_box  # pixels whose weights must be recomputed
    if changed_box is not None:
        changed_box = _shift(changed_box, ry.start, rx.start)
        sl = _sl(changed_box)
        local = diff[_sl(_shift(changed_box, -ry.start, -rx.start))]
        changed = set(np.unique(old[sl][local]).tolist()) | set(np.unique(new[sl][local]).tolist())
        changed.discard(0)
        old_boxes = {c: plane.boxes.get(c) for c in changed}
        old[sl] = new[sl]
        # new bounding boxes of the changed cells (they lie in old box U changed box)
        for c in changed:
            search = _union(old_boxes[c], changed_box)
            found = _bbox(old[_sl(search)] == c)
            if found is None:
                plane.boxes.pop(c, None)
            else:
                plane.boxes[c] = _shift(found, search[0], search[2])
        # carving: pixels within `width` of a change, and every cell touching them
        touched = _grow(changed_box, width, shape)
        neighbours = set(np.unique(old[_sl(touched)]).tolist()) - {0}
        for c in neighbours:
            touched = _union(touched, plane.boxes[c])
        recompute = _union(recompute, touched)
        # distances of the changed cells changed within `margin` of their old/new pixels
        if margin:
            for c in changed:
                for box in (old_boxes[c], plane.boxes.get(c)):
                    if box is not None:
                        recompute = _union(recompute, _grow(box, margin, shape))
    assert recompute is not None
    rsl = _sl(recompute)
    before = _count(target[rsl], None if ignore is None else ignore[rsl])
    if ignore_box is not None:
        ignore[_sl(ignore_box)] = new_ignore[_sl(ignore_box)]
    if touched is not None:
        _retarget(old, target, touched, neighbours, width)
    after = _count(target[rsl], None if ignore is None else ignore[rsl])
    w_cell_before = _class_weights(config, plane)[1]
    plane.n_background += after[0] - before[0]
    plane.n_cell += after[1] - before[1]
    w_bg, w_cell = _class_weights(config, plane)
    d1 = d2 = None
    if margin and plane.boxes:
        cells = _cells_near(plane.boxes, recompute, margin)
        d1, d2 = run(_two_nearest(old, cells, recompute, margin, None))
    weights[rsl] = _fill(
        config, w_bg, w_cell, target[rsl], None if ignore is None else ignore[rsl], d1, d2
    )
    if np.float32(w_cell) != np.float32(w_cell_before):
        is_cell = target == 1
        if ignore is not None:
            is_cell &= ~ignore
        np.putmask(weights, is_cell, np.float32(w_cell))


def _retarget(
    lab: np.ndarray, target: np.ndarray, touched: Box, cells: set[int], width: int
) -> None:
    """Recompute the target of background and of ``cells`` inside ``touched``.

    ``touched`` contains the whole bounding box of every cell in ``cells`` (so the rule
    that cells never vanish sees all their pixels); other cells in it did not change.
    """
    context = _grow(touched, width, lab.shape)
    crop, _ = _compact(lab[_sl(context)])
    fresh = _target_plane(crop, width)[_sl(_shift(touched, -context[0], -context[2]))]
    sub = lab[_sl(touched)]
    write = sub == 0
    if cells:
        write |= np.isin(sub, np.fromiter(cells, dtype=np.int64, count=len(cells)))
    target[_sl(touched)][write] = fresh[write]


def _cells_near(boxes: dict[int, Box], region: Box, margin: int) -> list[tuple[int, Box]]:
    """The cells whose box grown by ``margin`` overlaps ``region``."""
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
