"""Checks and small utilities for instance label images (0 = background, k > 0 = cell k)."""

from __future__ import annotations

import numpy as np

from .errors import UNetCellsError


def check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Validate an instance label image and return it (any shape, integer dtype, >= 0)."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        raise UNetCellsError(
            f"{name} is a binary mask; give an instance label image (0 = background, each "
            "cell its own positive integer): paint the cells in a napari Labels layer, or "
            "number the mask's objects (e.g. skimage.measure.label)."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise UNetCellsError(
            f"{name} must be an integer label image, got dtype {labels.dtype}; use a napari "
            "Labels layer, not an Image layer (or save the labels as an integer TIFF, e.g. "
            "uint16)."
        )
    if labels.size and labels.min() < 0:
        raise UNetCellsError(
            f"{name} contains negative values (down to {labels.min()}); labels must be 0 "
            "(background) or a positive cell number: set the negative pixels to 0."
        )
    return labels


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs (a, b), a < b, of cells that touch in the 8-neighbourhood of a 2D label image."""
    labels = check_labels(labels)
    if labels.ndim != 2:
        raise UNetCellsError(f"touching_pairs expects a 2D label image, got shape {labels.shape}.")
    pairs: set[tuple[int, int]] = set()
    h, w = labels.shape
    # right, down, down-right, down-left neighbours cover the 8-neighbourhood once
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = labels[: h - dy, max(0, -dx) : w - max(0, dx)]
        b = labels[dy:, max(0, dx) : w + min(0, dx)]
        differ = (a != b) & (a > 0) & (b > 0)
        if differ.any():
            lo = np.minimum(a[differ], b[differ])
            hi = np.maximum(a[differ], b[differ])
            pairs.update(zip(lo.tolist(), hi.tolist(), strict=True))
    return pairs
