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

For images larger than memory, ``labels_dask`` runs the same steps chunk by chunk with
an overlap and joins cells cut by chunk borders, so labels stay unique and sequential.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from .config import InstanceConfig
from .errors import UNetCellsError

if TYPE_CHECKING:  # pragma: no cover
    import dask.array

logger = logging.getLogger(__name__)

_BIG = np.iinfo(np.int32).max
_NEIGHBOURS = ((-1, 0), (0, -1), (0, 1), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))


def separation_border(labels: np.ndarray) -> np.ndarray:
    """Cell pixels that touch a different cell in the 8-neighbourhood: bool (Y, X).

    labels: (Y, X) integer instance labels, 0 = background.
    """
    labels = np.asarray(labels)
    highest = ndi.maximum_filter(labels, size=3, mode="nearest")
    lowest = ndi.minimum_filter(np.where(labels > 0, labels, _BIG), size=3, mode="nearest")
    return (labels > 0) & ((highest != labels) | (lowest != labels))


def perfect_probabilities(labels: np.ndarray) -> np.ndarray:
    """The ideal cell probability for ``labels``: 1 on cells minus separation borders.

    labels: (Y, X) instance labels. Returns float32 (Y, X) in {0, 1}; for tests and docs.
    """
    labels = np.asarray(labels)
    return ((labels > 0) & ~separation_border(labels)).astype(np.float32)


def probabilities_to_labels(
    probabilities: np.ndarray,
    config: InstanceConfig | None = None,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Instance labels from cell-class probabilities, plane by plane.

    probabilities: float (..., Y, X) in [0, 1] (the cell score). shape: (Y0, X0) of the
    image the probabilities were predicted for, when the network saw it resampled
    (core/scale.py): the cells are found on the probabilities' grid, where the settings
    apply, and the labels resampled onto ``shape`` (no cell lost). Returns int32
    (..., Y0, X0) (or (..., Y, X)): 0 = background, 1..N one per cell, unique over all
    planes, sequential.
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
    """One (Y, X) plane: (int32 labels 1..N sequential, N). See the module docstring."""
    grown = grow_cells(probability, config)
    return filter_and_relabel(grown, config.min_size, probability, config.min_confidence)


def seed_components(probability: np.ndarray, config: InstanceConfig) -> tuple[np.ndarray, int]:
    """Connected components of ``probability > threshold`` (``> seed_threshold`` with
    hysteresis): (int32 (Y, X), count)."""
    level = config.seed_threshold if config.hysteresis else config.threshold
    seeds = np.asarray(probability) > level
    structure = ndi.generate_binary_structure(2, config.connectivity)
    components, count = ndi.label(seeds, structure=structure, output=np.int32)
    return components, int(count)


def flood_seeds(probability: np.ndarray, seeds: np.ndarray, config: InstanceConfig) -> np.ndarray:
    """Hysteresis: seeds flooded by a watershed on ``-probability`` over the pixels above
    ``config.threshold``; regions there without a seed become 0. Same dtype as ``seeds``.

    Equal to one ``skimage.segmentation.watershed`` over the whole plane (up to how pixels
    of exactly equal probability are ordered on plateaus), but faster: a region above the
    threshold holding one seed simply becomes that cell, so the watershed runs only in
    the bounding boxes of regions holding several seeds.
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
    """Seed components grown back over their separation borders: int32 (Y, X), not relabelled.

    components: the seed components if already known (int32 (Y, X), 0 = none), e.g. with
    image-wide ids in a chunk; by default ``seed_components(probability)``.
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
    wide = ndi.binary_opening(
        background, structure=np.ones((2 * width, 2 * width), bool), border_value=1
    )
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


def filter_and_relabel(
    labels: np.ndarray,
    min_size: int,
    probability: np.ndarray | None = None,
    min_confidence: float = 0.0,
) -> tuple[np.ndarray, int]:
    """Remove small or faint objects, relabel 1..N in order: (int32 labels, N).

    Objects under ``min_size`` px go; with ``probability`` (float (Y, X)), so do objects
    whose mean probability is below ``min_confidence``.
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
    """The InstanceConfig a model file recommends (``extra["instances"]``), else defaults."""
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

    probabilities: (Y, X) float32 cell probabilities per image; labels: their instance
    labels; ignore: bool masks of unannotated pixels (or None). Searches threshold, seed
    threshold, minimum size (including a quarter of the median annotated cell area) and
    minimum confidence, re-using the probabilities (the network is not run). ``start``
    (default: InstanceConfig()) is kept unless a setting scores higher. Returns
    (config, its AP50, AP50 by setting name). ``time_limit_s``: stop searching after
    this many seconds and keep the best setting found so far (``scores["timed_out"]`` 1).
    ``max_min_size``: try no minimum size above this many px (``start``'s must obey it).
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


# --------------------------------------------------------------------------------------
# images larger than memory
# --------------------------------------------------------------------------------------


HYSTERESIS_REACH = 64  # px a watershed may flood from its seed across a chunk border


def instance_reach(config: InstanceConfig) -> int:
    """Overlap (px) a chunk needs so its labels match the whole-image computation.

    With hysteresis, exact for cells that extend less than ``HYSTERESIS_REACH`` px from
    their seed (nuclei up to ~120 px across).
    """
    reach = 3 * config.border_width + 2
    return reach + HYSTERESIS_REACH if config.hysteresis else reach


def labels_dask(
    probabilities: dask.array.Array, config: InstanceConfig, workdir: str | Path
) -> dask.array.Array:
    """Instance labels of a large (Y, X) probability map, chunk by chunk, in bounded memory.

    1. Seeds (probability > threshold) are labelled within each chunk and written to a
       zarr array in ``workdir`` (a folder that must exist until the result is computed).
       Seed pixels facing each other across a chunk border (4-neighbours, or 8 with
       connectivity 2) belong to the same component: joining them (connected components of
       the equivalence graph) gives image-wide component ids, as ``ndi.label`` would.
    2. Each chunk, with ``instance_reach`` px of overlap, grows its components (with their
       image-wide ids) over the separation borders (``grow_cells``), written to zarr.
    3. Sizes are summed per cell over the chunks, cells under ``min_size`` px removed and
       the rest numbered 1..N.

    Returns a lazy int32 (Y, X) dask array with the chunks of ``probabilities`` (chunks
    smaller than the overlap merged into a neighbour): the same
    cells as ``probabilities_to_labels`` (numbered in chunk order), unique across chunks.
    """
    import dask
    import dask.array as da
    import zarr
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if probabilities.ndim != 2:
        raise UNetCellsError(f"labels_dask needs (Y, X) probabilities, got {probabilities.shape}.")
    workdir = Path(workdir)
    halo = instance_reach(config)
    merged = tuple(_merge_small_chunks(c, halo) for c in probabilities.chunks)
    if merged != probabilities.chunks:
        probabilities = probabilities.rechunk(merged)
    chunks = probabilities.chunks
    numblocks = probabilities.numblocks
    meta = np.empty((0, 0), np.int32)

    # 1. seed components per chunk, then joined across chunk borders
    local = probabilities.map_blocks(
        lambda block: seed_components(block, config)[0], dtype=np.int32, meta=meta
    )
    seeds_path = workdir / "seeds.zarr"
    regular = tuple(max(c) for c in chunks)  # zarr stores regular chunks
    local.rechunk(regular).to_zarr(str(seeds_path), overwrite=True)
    local = da.from_zarr(str(seeds_path)).rechunk(chunks)
    counts = np.array(
        dask.compute(*[dask.delayed(np.max)(b) for row in local.to_delayed() for b in row]),
        np.int64,
    ).reshape(numblocks)
    offsets = np.concatenate([[0], np.cumsum(counts.ravel())[:-1]]).reshape(numblocks)
    total = int(counts.sum())
    stored = zarr.open_array(str(seeds_path), mode="r")
    y_block = np.repeat(np.arange(numblocks[0]), chunks[0])
    x_block = np.repeat(np.arange(numblocks[1]), chunks[1])

    def global_ids(strip, rows, cols):
        ids = strip.astype(np.int64) + offsets[y_block[rows][:, None], x_block[cols][None, :]]
        return np.where(strip > 0, ids, 0)

    height, width = probabilities.shape
    pairs = [np.empty((0, 2), np.int64)]
    for y in np.cumsum(chunks[0])[:-1]:
        strip = global_ids(stored[y - 1 : y + 1, :], np.arange(y - 1, y + 1), np.arange(width))
        pairs.append(_facing_pairs(strip, config.connectivity))
    for x in np.cumsum(chunks[1])[:-1]:
        strip = global_ids(stored[:, x - 1 : x + 1], np.arange(height), np.arange(x - 1, x + 1))
        pairs.append(_facing_pairs(strip.T, config.connectivity))
    edges = np.concatenate(pairs)
    graph = coo_matrix(
        (np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(total + 1,) * 2
    )
    _, group = connected_components(graph, directed=False)
    # component ids 1..M in order of first appearance; 0 stays background
    first = np.full(group.max() + 1, total + 1, np.int64)
    np.minimum.at(first, group, np.arange(total + 1))
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    component_lut = rank[group].astype(np.int32)  # group of id 0 has the smallest first: 0

    def to_global(block, lut=None, block_id=None):
        ids = np.where(block > 0, block.astype(np.int64) + offsets[block_id], 0)
        return lut[ids]

    components = local.map_blocks(
        to_global, lut=dask.delayed(component_lut, pure=True), dtype=np.int32, meta=meta
    )

    # 2. growth with image-wide ids, in overlapping chunks

    def grow_block(prob, comp, block_id=None):
        pads = [
            (halo if block_id[a] > 0 else 0, halo if block_id[a] < numblocks[a] - 1 else 0)
            for a in range(2)
        ]
        grown = grow_cells(prob, config, comp)
        return grown[
            pads[0][0] : grown.shape[0] - pads[0][1], pads[1][0] : grown.shape[1] - pads[1][1]
        ]

    grown = da.map_overlap(
        grow_block,
        probabilities,
        components,
        depth={0: halo, 1: halo},
        boundary="none",
        trim=False,
        dtype=np.int32,
        chunks=chunks,
        meta=meta,
    )
    grown_path = workdir / "grown.zarr"
    grown.rechunk(regular).to_zarr(str(grown_path), overwrite=True)
    grown = da.from_zarr(str(grown_path)).rechunk(chunks)

    # 3. sizes, minimum size, sequential numbers
    n_ids = int(component_lut.max()) + 1
    size = np.zeros(n_ids, np.int64)
    mass = np.zeros(n_ids, np.float64)  # summed probability per cell
    rows = zip(grown.to_delayed(), probabilities.to_delayed(), strict=True)
    for row, prob_row in rows:  # one row of chunks at a time: bounded memory
        stats = [dask.delayed(_counts)(b, p) for b, p in zip(row, prob_row, strict=True)]
        for ids, counts, sums in dask.compute(*stats):
            size[ids] += counts
            mass[ids] += sums
    keep = size >= max(config.min_size, 1)
    if config.min_confidence > 0:
        keep &= mass >= config.min_confidence * size
    keep[0] = False
    final = np.zeros(n_ids, np.int32)
    final[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    logger.info("labels_dask: %d components -> %d cells", n_ids - 1, int(keep.sum()))
    return grown.map_blocks(
        lambda block, lut=None: lut[block],
        lut=dask.delayed(final, pure=True),
        dtype=np.int32,
        meta=meta,
    )


def _merge_small_chunks(sizes: tuple[int, ...], minimum: int) -> tuple[int, ...]:
    """Chunk sizes along one axis with chunks under ``minimum`` px merged into a neighbour."""
    out: list[int] = []
    for size in sizes:
        if out and (size < minimum or out[-1] < minimum):
            out[-1] += size
        else:
            out.append(size)
    return tuple(out)


def _counts(
    block: np.ndarray, probability: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, pixel counts, summed probabilities) of the labels in a block, sparse."""
    ids, inverse, counts = np.unique(block, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse.ravel(), weights=np.asarray(probability, np.float64).ravel())
    return ids, counts, sums


def _facing_pairs(strip: np.ndarray, connectivity: int) -> np.ndarray:
    """(n, 2) id pairs of nonzero pixels facing across the middle of a (2, W) strip."""
    a, b = strip[0], strip[1]
    found = [np.stack([a, b], axis=1)]
    if connectivity == 2:
        found.append(np.stack([a[:-1], b[1:]], axis=1))
        found.append(np.stack([a[1:], b[:-1]], axis=1))
    pairs = np.concatenate(found)
    pairs = pairs[(pairs[:, 0] > 0) & (pairs[:, 1] > 0)]
    return np.unique(pairs, axis=0) if pairs.size else np.empty((0, 2), np.int64)
