"""Instance labels of images larger than memory: the steps of :mod:`core.instances`
chunk by chunk, with an overlap, joining cells cut by chunk borders so that labels stay
unique and sequential (the same cells as ``probabilities_to_labels``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .config import InstanceConfig
from .errors import UNetCellsError

if TYPE_CHECKING:  # pragma: no cover
    import dask.array

logger = logging.getLogger(__name__)

HYSTERESIS_REACH = 64  # px a watershed may flood from its seed across a chunk border


def instance_reach(config: InstanceConfig) -> int:
    """The overlap a chunk needs so its labels match the whole-image computation.

    With hysteresis, exact for cells that extend less than ``HYSTERESIS_REACH`` px from
    their seed (nuclei up to ~120 px across).

    Parameters
    ----------
    config : InstanceConfig
        border_width and hysteresis are used.

    Returns
    -------
    int
        The overlap in pixels.
    """
    reach = 3 * config.border_width + 2
    return reach + HYSTERESIS_REACH if config.hysteresis else reach


def labels_dask(
    probabilities: dask.array.Array, config: InstanceConfig, workdir: str | Path
) -> dask.array.Array:
    """Instance labels of a large (Y, X) probability map, chunk by chunk, in bounded memory.

    1. Seeds (probability > threshold) are labelled within each chunk and written to a
       zarr array in ``workdir``. Seed pixels facing each other across a chunk border
       (4-neighbours, or 8 with connectivity 2) belong to the same component: joining them
       (connected components of the equivalence graph) gives image-wide component ids, as
       ``ndi.label`` would.
    2. Each chunk, with ``instance_reach`` px of overlap, grows its components (with their
       image-wide ids) over the separation borders (``grow_cells``), written to zarr.
    3. Sizes are summed per cell over the chunks, cells under ``min_size`` px removed and
       the rest numbered 1..N.

    Parameters
    ----------
    probabilities : dask.array.Array
        float (Y, X) cell probabilities in [0, 1], any chunks.
    config : InstanceConfig
        The post-processing settings.
    workdir : str or Path
        A folder that must exist until the result is computed (two zarr arrays).

    Returns
    -------
    dask.array.Array
        Lazy int32 (Y, X) labels with the chunks of ``probabilities`` (chunks smaller than
        the overlap merged into a neighbour): the same cells as
        ``probabilities_to_labels`` (numbered in chunk order), unique across chunks.
    """
    import dask

    if probabilities.ndim != 2:
        raise UNetCellsError(f"labels_dask needs (Y, X) probabilities, got {probabilities.shape}.")
    workdir = Path(workdir)
    halo = instance_reach(config)
    merged = tuple(_merge_small_chunks(c, halo) for c in probabilities.chunks)
    if merged != probabilities.chunks:
        probabilities = probabilities.rechunk(merged)
    components, n_ids = _joined_seeds(probabilities, config, workdir / "seeds.zarr")
    grown = _grown_chunks(probabilities, components, config, halo, workdir / "grown.zarr")
    final = _size_filter(grown, probabilities, config, n_ids)
    logger.info("labels_dask: %d components -> %d cells", n_ids - 1, int(final.max()))
    return grown.map_blocks(
        lambda block, lut=None: lut[block],
        lut=dask.delayed(final, pure=True),
        dtype=np.int32,
        meta=np.empty((0, 0), np.int32),
    )


def _via_zarr(array: dask.array.Array, path: Path) -> dask.array.Array:
    """``array`` computed into a zarr array at ``path`` and read back with its chunks."""
    import dask.array as da

    regular = tuple(max(c) for c in array.chunks)  # zarr stores regular chunks
    array.rechunk(regular).to_zarr(str(path), overwrite=True)
    return da.from_zarr(str(path)).rechunk(array.chunks)


def _joined_seeds(
    probabilities: dask.array.Array, config: InstanceConfig, path: Path
) -> tuple[dask.array.Array, int]:
    """Step 1: seed components with image-wide ids (int32 dask (Y, X)) and their number
    plus one (ids 0..M)."""
    import dask
    import zarr

    from .instances import seed_components

    meta = np.empty((0, 0), np.int32)
    local = probabilities.map_blocks(
        lambda block: seed_components(block, config)[0], dtype=np.int32, meta=meta
    )
    local = _via_zarr(local, path)
    counts = np.array(
        dask.compute(*[dask.delayed(np.max)(b) for row in local.to_delayed() for b in row]),
        np.int64,
    ).reshape(local.numblocks)
    offsets = np.concatenate([[0], np.cumsum(counts.ravel())[:-1]]).reshape(local.numblocks)
    stored = zarr.open_array(str(path), mode="r")
    lut = _component_lut(stored, local.chunks, offsets, int(counts.sum()), config.connectivity)

    def to_global(block, lut=None, block_id=None):
        ids = np.where(block > 0, block.astype(np.int64) + offsets[block_id], 0)
        return lut[ids]

    components = local.map_blocks(
        to_global, lut=dask.delayed(lut, pure=True), dtype=np.int32, meta=meta
    )
    return components, int(lut.max()) + 1


def _component_lut(stored, chunks, offsets: np.ndarray, total: int, connectivity: int):
    """int32 (total + 1,): chunk-wise seed id (plus its chunk's offset) -> image-wide
    component id 1..M in order of first appearance; 0 stays background."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    y_block = np.repeat(np.arange(len(chunks[0])), chunks[0])
    x_block = np.repeat(np.arange(len(chunks[1])), chunks[1])

    def global_ids(strip, rows, cols):
        ids = strip.astype(np.int64) + offsets[y_block[rows][:, None], x_block[cols][None, :]]
        return np.where(strip > 0, ids, 0)

    height, width = stored.shape
    pairs = [np.empty((0, 2), np.int64)]
    for y in np.cumsum(chunks[0])[:-1]:
        strip = global_ids(stored[y - 1 : y + 1, :], np.arange(y - 1, y + 1), np.arange(width))
        pairs.append(_facing_pairs(strip, connectivity))
    for x in np.cumsum(chunks[1])[:-1]:
        strip = global_ids(stored[:, x - 1 : x + 1], np.arange(height), np.arange(x - 1, x + 1))
        pairs.append(_facing_pairs(strip.T, connectivity))
    edges = np.concatenate(pairs)
    graph = coo_matrix(
        (np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(total + 1,) * 2
    )
    _, group = connected_components(graph, directed=False)
    first = np.full(group.max() + 1, total + 1, np.int64)
    np.minimum.at(first, group, np.arange(total + 1))
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[group].astype(np.int32)  # group of id 0 has the smallest first: 0


def _grown_chunks(probabilities, components, config: InstanceConfig, halo: int, path: Path):
    """Step 2: components grown over their separation borders in chunks overlapping by
    ``halo`` px, stored in zarr at ``path``; int32 dask (Y, X)."""
    import dask.array as da

    from .instances import grow_cells

    numblocks = probabilities.numblocks

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
        chunks=probabilities.chunks,
        meta=np.empty((0, 0), np.int32),
    )
    return _via_zarr(grown, path)


def _size_filter(grown, probabilities, config: InstanceConfig, n_ids: int) -> np.ndarray:
    """Step 3: int32 (n_ids,) lookup table, component id -> final label 1..N, 0 for the
    components under ``min_size`` px or ``min_confidence``."""
    import dask

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
    return final


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
