"""Cell probabilities -> instance labels, touching cells kept apart.

The network is trained with the separation border between touching cells as background
(paper section 3), so thresholding the cell class cuts touching cells apart. Steps, for
each (Y, X) plane:

1. seeds: pixels with cell probability > ``threshold``; their connected components
   (4-neighbourhood by default) are the cells.
2. grow back: each cell regains the thin separation border it lost. A pixel is given to
   its nearest cell (within ``border_width`` px) when it lies within ``border_width`` px
   of at least two different cells (that is the separation border, by geometry) and is
   not confidently background: the mean cell probability over its
   (2 * border_width + 1)^2 neighbourhood is at least 0.5. A thin border between two
   cells passes (mostly cell around it); the outer outline of a cell and wider gaps
   between neighbours do not, so cells keep their size and nothing else grows.
3. objects smaller than ``min_size`` px are removed and the labels made sequential 1..N.

This step is cheap: change the threshold or the minimum size and re-run it on the same
probabilities, without running the network again.

For images larger than memory, ``labels_dask`` runs the same steps chunk by chunk with
an overlap and joins cells cut by chunk borders, so labels stay unique and sequential.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from .config import InstanceConfig
from .errors import UNetCellsError

if TYPE_CHECKING:  # pragma: no cover
    pass

logger = logging.getLogger(__name__)

_BIG = np.iinfo(np.int32).max


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
    probabilities: np.ndarray, config: InstanceConfig | None = None
) -> np.ndarray:
    """Instance labels from cell-class probabilities, plane by plane.

    probabilities: float (..., Y, X) in [0, 1] (the cell class). Returns int32 (..., Y, X):
    0 = background, 1..N one per cell, unique over all planes, sequential.
    """
    config = config or InstanceConfig()
    probs = np.asarray(probabilities)
    if probs.ndim < 2:
        raise UNetCellsError(f"Probabilities must be (..., Y, X), got shape {probs.shape}.")
    planes = probs.reshape(-1, *probs.shape[-2:])
    out = np.zeros(planes.shape, np.int32)
    offset = 0
    for index, plane in enumerate(planes):
        labels, count = plane_labels(plane, config)
        out[index] = np.where(labels > 0, labels + offset, 0)
        offset += count
    return out.reshape(probs.shape)


def plane_labels(probability: np.ndarray, config: InstanceConfig) -> tuple[np.ndarray, int]:
    """One (Y, X) plane: (int32 labels 1..N sequential, N). See the module docstring."""
    grown = grow_cells(probability, config)
    return filter_and_relabel(grown, config.min_size)


def seed_components(probability: np.ndarray, config: InstanceConfig) -> tuple[np.ndarray, int]:
    """Connected components of ``probability > threshold``: (int32 (Y, X), count)."""
    seeds = np.asarray(probability) > config.threshold
    structure = ndi.generate_binary_structure(2, config.connectivity)
    components, count = ndi.label(seeds, structure=structure, output=np.int32)
    return components, int(count)


def grow_cells(probability: np.ndarray, config: InstanceConfig) -> np.ndarray:
    """Seed components grown back over their separation borders: int32 (Y, X), not relabelled."""
    from skimage.segmentation import expand_labels

    probability = np.nan_to_num(np.asarray(probability, np.float32), nan=0.0)
    components, count = seed_components(probability, config)
    width = config.border_width
    if count < 2 or width == 0:
        return components
    size = 2 * width + 1
    highest = ndi.maximum_filter(components, size=size, mode="constant", cval=0)
    lowest = ndi.minimum_filter(
        np.where(components > 0, components, _BIG), size=size, mode="constant", cval=_BIG
    )
    between = (lowest < _BIG) & (highest != lowest) & (components == 0)
    if not between.any():
        return components
    mostly_cell = ndi.uniform_filter(probability, size=size, mode="reflect") >= 0.5
    grow = between & mostly_cell
    expanded = expand_labels(components, distance=width)
    return np.where(grow, expanded, components).astype(np.int32, copy=False)


def filter_and_relabel(labels: np.ndarray, min_size: int) -> tuple[np.ndarray, int]:
    """Remove objects under ``min_size`` px, relabel 1..N in order: (int32 labels, N)."""
    labels = np.asarray(labels)
    if labels.max(initial=0) == 0:
        return np.zeros(labels.shape, np.int32), 0
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    lut = np.zeros(sizes.size, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels], int(keep.sum())
