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

Modules: this one holds the public functions and the whole-image computation;
:mod:`core.weightmap_terms` the carving, distances and weights of one plane;
:mod:`core.weightmap_update` the live update after a label edit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .config import WeightMapConfig
from .errors import UNetCellsError
from .labels import check_labels, mask_to_instances
from .progress import run
from .weightmap_terms import (
    PlaneStats,
    cell_boxes,
    class_weights,
    compact,
    count_classes,
    distance_margin,
    fill_weights,
    needs_distances,
    target_plane,
    two_nearest,
)
from .weightmap_update import update_plane

logger = logging.getLogger(__name__)

__all__ = [
    "WeightMapProgress",
    "WeightMapState",
    "distance_margin",
    "iter_weight_map",
    "separation_target",
    "update_weight_map",
    "weight_map",
    "weight_map_state",
]


@dataclass(frozen=True)
class WeightMapProgress:
    """A progress event of :func:`iter_weight_map`: ``done`` of ``total`` steps."""

    done: int
    total: int
    message: str


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
    _planes: list[PlaneStats] = field(repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """The labels' shape (..., Y, X)."""
        return self.labels.shape


# -- public functions ----------------------------------------------------------------------


def separation_target(labels: np.ndarray, config: WeightMapConfig | None = None) -> np.ndarray:
    """The training target: cells minus the carved separation borders.

    See the module docstring for the carving rule.

    Parameters
    ----------
    labels : np.ndarray
        (..., Y, X) integer instance labels (0 = background), processed per 2D plane.
    config : WeightMapConfig, optional
        ``border_width`` (px) is used; default the paper's settings.

    Returns
    -------
    np.ndarray
        uint8, the labels' shape: 1 = cell, 0 = background and carved separation borders.
    """
    config = config or WeightMapConfig()
    labels = _check_input(labels)
    planes = labels.reshape((-1, *labels.shape[-2:]))
    target = np.empty(planes.shape, dtype=np.uint8)
    for i, plane in enumerate(planes):
        target[i] = target_plane(compact(plane)[0], int(config.border_width))
    return target.reshape(labels.shape)


def weight_map(
    labels: np.ndarray,
    ignore: np.ndarray | None = None,
    config: WeightMapConfig | None = None,
    *,
    planewise: bool = True,
) -> np.ndarray:
    """The paper's loss weight map (eq. 2) for an instance label image.

    - the border term w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) is added on the pixels where
      :func:`separation_target` is 0 (background *including* the carved borders between
      touching cells), never on its cell pixels; d1, d2 are Euclidean distances in pixels
      to the nearest and second-nearest annotated cell (0 border term with < 2 cells);
    - w_c (paper): 1 on background, n_background / n_cell on cells, counted on the
      target outside the ignore mask (1 everywhere if a class is absent); fiji preset:
      1 on cells, v + (1 - v) exp(-d1^2 / (2 balance_sigma^2)) on background;
    - ignore-mask pixels are exactly 0.

    Parameters
    ----------
    labels : np.ndarray
        (Y, X) integer instance labels, 0 = background, k > 0 = cell k; or (Z, Y, X)
        (any leading axes), processed plane by plane. A 0/1 or 0/255 mask is numbered by
        connected components first (with a logged notice).
    ignore : np.ndarray, optional
        Mask of the same shape (bool, or integers where nonzero = ignore); its pixels get
        weight 0 and are left out of the class frequencies.
    config : WeightMapConfig, optional
        Default: the paper's w0 = 10, sigma = 5 px.
    planewise : bool
        False (true 3D weight maps) is refused.

    Returns
    -------
    np.ndarray
        float32 weights of the labels' shape.
    """
    return weight_map_state(labels, ignore, config, planewise=planewise).weights


def weight_map_state(
    labels: np.ndarray,
    ignore: np.ndarray | None = None,
    config: WeightMapConfig | None = None,
    *,
    planewise: bool = True,
) -> WeightMapState:
    """Like :func:`weight_map`, but returns the state for live updates.

    Parameters
    ----------
    labels, ignore, config, planewise
        As :func:`weight_map`.

    Returns
    -------
    WeightMapState
        The weights, the target and copies of the inputs, for :func:`update_weight_map`.
    """
    return run(iter_weight_map(labels, ignore, config, planewise=planewise))


def _new_state(labels, ignore, config: WeightMapConfig) -> WeightMapState:
    """An empty state holding copies of the (checked) inputs."""
    shape = labels.shape
    return WeightMapState(
        config=config,
        weights=np.empty(shape, dtype=np.float32),
        target=np.empty(shape, dtype=np.uint8),
        labels=np.array(labels, copy=True),
        ignore=None if ignore is None else np.array(ignore, copy=True),
        _planes=[],
    )


def _stack(array: np.ndarray | None, n_planes: int) -> np.ndarray | None:
    """``array`` (..., Y, X) as a (planes, Y, X) view (None stays None)."""
    return None if array is None else array.reshape((n_planes, *array.shape[-2:]))


def iter_weight_map(
    labels: np.ndarray,
    ignore: np.ndarray | None = None,
    config: WeightMapConfig | None = None,
    *,
    planewise: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[WeightMapProgress, None, WeightMapState | None]:
    """The weight map as a generator of progress events.

    Closing the generator also stops it.

    Parameters
    ----------
    labels, ignore, config, planewise
        As :func:`weight_map`.
    should_stop : callable, optional
        Checked between steps; when it returns True the generator returns None.

    Yields
    ------
    WeightMapProgress
        After the inputs are checked, every few cells of each plane, and at the end.

    Returns
    -------
    WeightMapState or None
        The generator's return value (``StopIteration.value``, napari's
        ``worker.returned``); None when stopped.
    """
    config = config or WeightMapConfig()
    labels = _check_input(_numbered(labels), planewise=planewise)
    ignore = _check_ignore(ignore, labels.shape)
    state = _new_state(labels, ignore, config)
    n_planes = int(np.prod(labels.shape[:-2], dtype=np.int64))
    lab3, ign3 = _stack(state.labels, n_planes), _stack(state.ignore, n_planes)
    w3, t3 = _stack(state.weights, n_planes), _stack(state.target, n_planes)
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

    Only the windows that the changed cells can influence (their old and new bounding boxes
    grown by the distance margin, plus the neighbours whose carving changed) are recomputed;
    the cell weight w_c (class frequencies) is refreshed everywhere when it changed.

    Parameters
    ----------
    state : WeightMapState
        From :func:`weight_map_state` or :func:`iter_weight_map`; updated in place.
    labels : np.ndarray
        The edited label image, same shape as the state's (e.g. a napari Labels layer's
        data after a brush stroke; it is compared with the state's own copy).
    ignore : np.ndarray, optional
        The current ignore mask, or None to keep the state's one (a state made without an
        ignore mask cannot gain one here: recompute instead).
    region : tuple of slice, optional
        Slices (one per axis) that contain every changed pixel, to skip comparing the rest
        of the image; None compares everything (a few ms at 2048^2).

    Returns
    -------
    np.ndarray
        ``state.weights``, updated in place; equal to :func:`weight_map` of the new labels
        up to float rounding.
    """
    labels, ignore = _check_update(state, labels, ignore)
    shape = state.shape
    if region is None:
        region = tuple(slice(0, n) for n in shape)
    elif len(region) != len(shape):
        raise UNetCellsError(f"region needs one slice per axis ({len(shape)}), got {region}.")
    lead = tuple(slice(*s.indices(n)[:2]) for s, n in zip(region[:-2], shape[:-2], strict=True))
    yx = tuple(slice(*s.indices(n)[:2]) for s, n in zip(region[-2:], shape[-2:], strict=True))
    n_planes = len(state._planes)
    index = np.arange(n_planes).reshape(shape[:-2])[lead].ravel()
    lab3, new3 = _stack(state.labels, n_planes), _stack(labels, n_planes)
    ign3, newign3 = _stack(state.ignore, n_planes), _stack(ignore, n_planes)
    w3, t3 = _stack(state.weights, n_planes), _stack(state.target, n_planes)
    for p in index.tolist():
        update_plane(
            state._planes[p],
            state.config,
            lab3[p],
            new3[p],
            None if ign3 is None else ign3[p],
            None if newign3 is None else newign3[p],
            w3[p],
            t3[p],
            yx,
        )
    return state.weights


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


def _check_update(state: WeightMapState, labels, ignore):
    """(labels, bool ignore or None) checked against the state they update."""
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
    return labels, ignore


def _message(p: int, n_planes: int, done: int, total: int) -> str:
    where = f"plane {p + 1}/{n_planes}: " if n_planes > 1 else ""
    return f"{where}cell {done}/{total}"


# -- one whole plane -----------------------------------------------------------------------


def _full_plane(
    lab: np.ndarray,
    ignore: np.ndarray | None,
    config: WeightMapConfig,
    weights_out: np.ndarray,
    target_out: np.ndarray,
    pool: ThreadPoolExecutor | None,
) -> Generator[tuple[int, int], None, PlaneStats]:
    """Weights and target of one (Y, X) plane, written into ``weights_out`` and
    ``target_out``; yields (cells done, cells), returns the plane's :class:`PlaneStats`."""
    small, values = compact(lab)
    width = int(config.border_width)
    # the carving (numpy, releases the GIL) overlaps with the distance transforms
    carving = None if pool is None else pool.submit(target_plane, small, width)
    boxes = cell_boxes(small)
    total = len(boxes)
    d1 = d2 = None
    try:
        if needs_distances(config) and total:
            margin = int(np.ceil(distance_margin(config)))
            region = (0, lab.shape[0], 0, lab.shape[1])
            d1, d2 = yield from two_nearest(small, list(boxes.items()), region, margin, pool)
        target_out[...] = target_plane(small, width) if carving is None else carving.result()
    finally:
        if carving is not None:
            carving.cancel()
    n_bg, n_cell = count_classes(target_out, ignore)
    plane = PlaneStats(
        boxes={k if values is None else int(values[k]): b for k, b in boxes.items()},
        n_background=n_bg,
        n_cell=n_cell,
    )
    w_bg, w_cell = class_weights(config, plane)
    weights_out[...] = fill_weights(config, w_bg, w_cell, target_out, ignore, d1, d2)
    yield max(total, 1), max(total, 1)
    return plane
