"""Cell probabilities -> instance labels, touching cells kept apart.

The network is trained with the separation border between touching cells as background
(paper section 3), so thresholding the cell class cuts touching cells apart. Steps, for
each (Y, X) plane:

1. seeds: pixels with cell probability > ``threshold``; their connected components
   (4-neighbourhood by default) are the cells. With hysteresis (``seed_threshold`` above
   ``threshold``) the seeds are the components above ``seed_threshold``, flooded by a
   watershed on the probability over the pixels above ``threshold``; regions above
   ``threshold`` that hold no seed are dropped.
2. grow back: each cell regains the thin separation border it lost. A pixel is given to
   a neighbouring cell (growing 1 px per step, ``border_width`` steps) when it lies
   within ``border_width`` px
   of at least two different cells (by geometry, the separation border) and is not
   confidently background: it belongs to a background structure thinner than
   2 * ``border_width`` px (it disappears under a morphological opening of the
   background with a 2w x 2w square). Thin borders between cells pass; the outer outline
   of a cell and wide background do not, so cells keep their size and nothing else grows.
   (A gap that thin between two cells that do not touch is indistinguishable from a
   border; the two cells then touch, but stay two labels.)
3. objects smaller than ``min_size`` px, or whose mean cell probability is below
   ``min_confidence``, are removed and the labels made sequential 1..N.

This step is cheap: change the threshold or the minimum size and re-run it on the same
probabilities, without running the network again.

For images larger than memory, ``labels_dask`` (in :mod:`core.instances_dask`, importable
from here) runs the same steps chunk by chunk with an overlap and joins cells cut by
chunk borders, so labels stay unique and sequential.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from .config import InstanceConfig
from .errors import UNetCellsError
from .instances_dask import HYSTERESIS_REACH, instance_reach, labels_dask

__all__ = [
    "HYSTERESIS_REACH",
    "filter_and_relabel",
    "flood_seeds",
    "grow_cells",
    "instance_defaults",
    "instance_reach",
    "labels_dask",
    "perfect_probabilities",
    "plane_labels",
    "probabilities_to_labels",
    "seed_components",
    "separation_border",
    "tune_instances",
]

_BIG = np.iinfo(np.int32).max
_NEIGHBOURS = ((-1, 0), (0, -1), (0, 1), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))


def separation_border(labels: np.ndarray) -> np.ndarray:
    """Cell pixels that touch a different cell in the 8-neighbourhood.

    Parameters
    ----------
    labels : np.ndarray
        (Y, X) integer instance labels, 0 = background.

    Returns
    -------
    np.ndarray
        bool (Y, X).
    """
    labels = np.asarray(labels)
    highest = ndi.maximum_filter(labels, size=3, mode="nearest")
    lowest = ndi.minimum_filter(np.where(labels > 0, labels, _BIG), size=3, mode="nearest")
    return (labels > 0) & ((highest != labels) | (lowest != labels))


def perfect_probabilities(labels: np.ndarray) -> np.ndarray:
    """The ideal cell probability for ``labels``: 1 on cells minus separation borders.

    Parameters
    ----------
    labels : np.ndarray
        (Y, X) integer instance labels, 0 = background.

    Returns
    -------
    np.ndarray
        float32 (Y, X) in {0, 1}; for tests and docs.
    """
    labels = np.asarray(labels)
    return ((labels > 0) & ~separation_border(labels)).astype(np.float32)


def probabilities_to_labels(
    probabilities: np.ndarray,
    config: InstanceConfig | None = None,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Instance labels from cell-class probabilities, plane by plane.

    Parameters
    ----------
    probabilities : np.ndarray
        float (..., Y, X) in [0, 1] (the cell score).
    config : InstanceConfig, optional
        The post-processing settings; default ``InstanceConfig()``.
    shape : (int, int), optional
        (Y0, X0) of the image the probabilities were predicted for, when the network saw
        it resampled (core/scale.py): the cells are found on the probabilities' grid,
        where the settings apply, and the labels resampled onto ``shape`` (no cell lost).

    Returns
    -------
    np.ndarray
        int32 (..., Y0, X0) (or (..., Y, X)): 0 = background, 1..N one per cell, unique
        over all planes, sequential.
    """
    from .scale import labels_to_shape

    config = config or InstanceConfig()
    probs = np.asarray(probabilities)
    if probs.ndim < 2:
        raise UNetCellsError(f"Probabilities must be (..., Y, X), got shape {probs.shape}.")
    shape = tuple(shape) if shape is not None else probs.shape[-2:]
    planes = probs.reshape(-1, *probs.shape[-2:])
    out = np.zeros((planes.shape[0], *shape), np.int32)
    offset = 0
    for index, plane in enumerate(planes):
        labels, count = plane_labels(plane, config)
        if labels.shape != shape:
            labels = labels_to_shape(labels, shape)
            count = int(labels.max(initial=0))
        out[index] = np.where(labels > 0, labels + offset, 0)
        offset += count
    return out.reshape(*probs.shape[:-2], *shape)


def plane_labels(probability: np.ndarray, config: InstanceConfig) -> tuple[np.ndarray, int]:
    """Instance labels of one plane (see the module docstring).

    Parameters
    ----------
    probability : np.ndarray
        float (Y, X) cell probability in [0, 1].
    config : InstanceConfig
        The post-processing settings.

    Returns
    -------
    (np.ndarray, int)
        int32 (Y, X) labels 1..N, sequential, and N.
    """
    grown = grow_cells(probability, config)
    return filter_and_relabel(grown, config.min_size, probability, config.min_confidence)


def seed_components(probability: np.ndarray, config: InstanceConfig) -> tuple[np.ndarray, int]:
    """Connected components of ``probability > threshold`` (``> seed_threshold`` with
    hysteresis).

    Parameters
    ----------
    probability : np.ndarray
        float (Y, X) cell probability in [0, 1].
    config : InstanceConfig
        threshold, seed_threshold, hysteresis and connectivity are used.

    Returns
    -------
    (np.ndarray, int)
        int32 (Y, X) components 1..count (0 = none), and count.
    """
    level = config.seed_threshold if config.hysteresis else config.threshold
    seeds = np.asarray(probability) > level
    structure = ndi.generate_binary_structure(2, config.connectivity)
    components, count = ndi.label(seeds, structure=structure, output=np.int32)
    return components, int(count)


def flood_seeds(probability: np.ndarray, seeds: np.ndarray, config: InstanceConfig) -> np.ndarray:
    """Hysteresis: seeds flooded by a watershed on ``-probability`` over the pixels above
    ``config.threshold``; regions there without a seed become 0.

    Equal to one ``skimage.segmentation.watershed`` over the whole plane (up to how pixels
    of exactly equal probability are ordered on plateaus), but faster: a region above the
    threshold holding one seed simply becomes that cell, so the watershed runs only in
    the bounding boxes of regions holding several seeds.

    Parameters
    ----------
    probability : np.ndarray
        float (Y, X) cell probability in [0, 1].
    seeds : np.ndarray
        Integer (Y, X) seed components (0 = none), lying above ``config.threshold``.
    config : InstanceConfig
        threshold and connectivity are used.

    Returns
    -------
    np.ndarray
        (Y, X), the dtype of ``seeds``: each seed's flooded region.
    """
    from skimage.segmentation import watershed

    mask = probability > config.threshold
    structure = ndi.generate_binary_structure(2, config.connectivity)
    regions, n_regions = ndi.label(mask, structure=structure)
    out = np.zeros_like(seeds)
    seeded = seeds > 0
    if n_regions == 0 or not seeded.any():
        return out
    # seeds lie inside the mask (seed_threshold > threshold): per region, its seed ids
    region_of_seed = regions[seeded]
    seed_ids = seeds[seeded]
    lowest = ndi.minimum(seed_ids, region_of_seed, index=np.arange(1, n_regions + 1))
    highest = ndi.maximum(seed_ids, region_of_seed, index=np.arange(1, n_regions + 1))
    lowest = np.nan_to_num(np.asarray(lowest, float), nan=0.0).astype(np.int64)
    highest = np.nan_to_num(np.asarray(highest, float), nan=0.0).astype(np.int64)
    single = np.zeros(n_regions + 1, seeds.dtype)  # region -> its only seed id (else 0)
    one = (lowest == highest) & (lowest > 0)
    single[1:][one] = lowest[one]
    out[...] = single[regions]
    several = np.flatnonzero(lowest != highest) + 1
    boxes = ndi.find_objects(regions)
    for region in several:
        box = boxes[region - 1]
        inside = regions[box] == region
        flooded = watershed(
            -probability[box],
            markers=np.where(inside, seeds[box], 0),
            mask=inside,
            connectivity=config.connectivity,
        )
        out[box][inside] = flooded[inside]
    return out


def grow_cells(
    probability: np.ndarray, config: InstanceConfig, components: np.ndarray | None = None
) -> np.ndarray:
    """Seed components grown back over their separation borders (see the module docstring).

    Parameters
    ----------
    probability : np.ndarray
        float (Y, X) cell probability in [0, 1] (NaN counts as 0).
    config : InstanceConfig
        The post-processing settings.
    components : np.ndarray, optional
        The seed components if already known (int32 (Y, X), 0 = none), e.g. with
        image-wide ids in a chunk; by default ``seed_components(probability)``.

    Returns
    -------
    np.ndarray
        (Y, X), the dtype of ``components`` (int32 by default): grown, not relabelled.
    """
    probability = np.nan_to_num(np.asarray(probability, np.float32), nan=0.0)
    if components is None:
        components = seed_components(probability, config)[0]
    components = np.asarray(components)
    if config.hysteresis:
        components = flood_seeds(probability, components, config)
    out_dtype = components.dtype
    if components.max(initial=0) < np.iinfo(np.uint16).max:
        components = components.astype(np.uint16)  # faster filters
    width = config.border_width
    if width == 0 or components.max(initial=0) == 0:
        return components.astype(out_dtype, copy=False)
    size = 2 * width + 1
    big = np.iinfo(components.dtype).max
    highest = ndi.maximum_filter(components, size=size, mode="constant", cval=0)
    lowest = ndi.minimum_filter(
        np.where(components > 0, components, big), size=size, mode="constant", cval=big
    )
    between = (lowest < big) & (highest != lowest) & (components == 0)
    if not between.any():
        return components.astype(out_dtype, copy=False)
    # confidently background: background regions at least 2 * width px across (they
    # survive an opening with a 2w x 2w square); thinner ones are separation borders
    background = probability <= config.threshold
    wide = square_opening(background, 2 * width)
    grow = between & background & ~wide
    # grow one pixel per step, inside the allowed pixels only; a pixel next to several
    # cells takes the first in a fixed direction order (independent of label numbers)
    labels = components.copy()
    h, w = labels.shape
    for _ in range(width):
        todo = grow & (labels == 0)
        if not todo.any():
            break
        padded = np.pad(labels, 1)
        new = labels.copy()
        for dy, dx in _NEIGHBOURS:
            source = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            take = todo & (source > 0)
            new[take] = source[take]
            todo &= ~take
        labels = new
    return labels.astype(out_dtype, copy=False)


def square_opening(mask: np.ndarray, side: int) -> np.ndarray:
    """Binary opening of a bool (Y, X) mask with a ``side`` x ``side`` square, outside the
    plane counting as True: ``ndi.binary_opening(mask, np.ones((side, side)),
    border_value=1)``, as separable min/max filters (about 2x faster at side 4)."""
    eroded = ndi.minimum_filter(mask, size=side, mode="constant", cval=1)
    return ndi.maximum_filter(eroded, size=side, mode="constant", cval=1, origin=-(side % 2 == 0))


def filter_and_relabel(
    labels: np.ndarray,
    min_size: int,
    probability: np.ndarray | None = None,
    min_confidence: float = 0.0,
) -> tuple[np.ndarray, int]:
    """Remove small or faint objects and relabel the rest 1..N in order.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels, any shape, 0 = background.
    min_size : int
        Objects under this many pixels are removed.
    probability : np.ndarray, optional
        float cell probability of the labels' shape; with it, objects whose mean
        probability is below ``min_confidence`` are removed too.
    min_confidence : float
        In [0, 1]; 0 keeps every object.

    Returns
    -------
    (np.ndarray, int)
        int32 labels 1..N of the labels' shape, and N.
    """
    labels = np.asarray(labels)
    if labels.max(initial=0) == 0:
        return np.zeros(labels.shape, np.int32), 0
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_size, 1)
    if probability is not None and min_confidence > 0:
        sums = np.bincount(labels.ravel(), weights=np.asarray(probability, np.float64).ravel())
        keep &= sums >= min_confidence * sizes
    keep[0] = False
    lut = np.zeros(sizes.size, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels], int(keep.sum())


def instance_defaults(model) -> InstanceConfig:
    """The post-processing settings a model file recommends.

    Parameters
    ----------
    model : object
        A loaded model file (anything with an ``extra`` dict).

    Returns
    -------
    InstanceConfig
        From ``model.extra["instances"]``, else ``InstanceConfig()``.
    """
    from .config import config_from_dict

    stored = getattr(model, "extra", {}).get("instances")
    return config_from_dict(InstanceConfig, stored) if stored else InstanceConfig()


def tune_instances(
    probabilities: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    ignore: Sequence[np.ndarray | None] | None = None,
    start: InstanceConfig | None = None,
    time_limit_s: float | None = None,
    max_min_size: int | None = None,
) -> tuple[InstanceConfig, float, dict[str, float]]:
    """The post-processing with the best pooled AP50 on annotated images.

    Searches threshold, seed threshold, minimum size (including a quarter of the median
    annotated cell area) and minimum confidence, re-using the probabilities (the network
    is not run).

    Parameters
    ----------
    probabilities : sequence of np.ndarray
        float32 (Y, X) cell probabilities per image.
    labels : sequence of np.ndarray
        Their integer (Y, X) instance labels.
    ignore : sequence of (np.ndarray or None), optional
        bool (Y, X) masks of unannotated pixels per image.
    start : InstanceConfig, optional
        Kept unless a setting scores higher; default ``InstanceConfig()``.
    time_limit_s : float, optional
        Stop searching after this many seconds and keep the best setting found so far
        (``scores["timed_out"]`` is then 1).
    max_min_size : int, optional
        Try no minimum size above this many px (``start``'s must obey it).

    Returns
    -------
    (InstanceConfig, float, dict)
        The best settings, their pooled AP50, and the AP50 by setting name.
    """
    import dataclasses
    import itertools
    import time

    deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s

    from .metrics import match

    ignore = list(ignore) if ignore is not None else [None] * len(labels)
    start = start or InstanceConfig()
    areas = np.concatenate(
        [np.bincount(np.asarray(lab).ravel())[1:] for lab in labels if np.asarray(lab).max()]
        or [np.zeros(0, np.int64)]
    )
    areas = areas[areas > 0]
    sizes = {10, 20, 30, start.min_size}
    if areas.size:
        sizes.add(round(0.25 * float(np.median(areas))))
    if max_min_size is not None:
        sizes = {size for size in sizes if size <= max_min_size}

    def pooled_ap(config: InstanceConfig) -> float:
        tp = fp = fn = 0
        for probs, truth, mask in zip(probabilities, labels, ignore, strict=True):
            [m] = match(truth, probabilities_to_labels(probs, config), 0.5, ignore=mask)
            tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
        return tp / max(1, tp + fp + fn)

    best, best_ap = start, pooled_ap(start)
    scores = {"start": round(best_ap, 4)}
    grid = itertools.product(
        (0.4, 0.5, 0.6), (None, 0.7, 0.8, 0.9), sorted(sizes), (0.0, 0.7, 0.8)
    )
    for threshold, seed_threshold, min_size, min_confidence in grid:
        if seed_threshold is not None and seed_threshold <= threshold:
            continue
        if min_confidence and min_confidence <= threshold:
            continue
        if deadline is not None and time.perf_counter() > deadline:
            scores["timed_out"] = 1.0
            break
        config = dataclasses.replace(
            start,
            threshold=threshold,
            seed_threshold=seed_threshold,
            min_size=min_size,
            min_confidence=min_confidence,
        )
        ap = pooled_ap(config)
        scores[f"t{threshold}_seed{seed_threshold}_s{min_size}_c{min_confidence}"] = round(ap, 4)
        if ap > best_ap + 1e-9:
            best, best_ap = config, ap
    return best, best_ap, scores
