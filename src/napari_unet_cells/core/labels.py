"""Checks and small utilities for instance label images (0 = background, k > 0 = cell k)."""

from __future__ import annotations

import numpy as np

from .errors import UNetCellsError


def check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Validate an instance label image.

    Parameters
    ----------
    labels : array_like
        Any shape; must be integer (not bool) and >= 0.
    name : str
        What the labels are, for the message.

    Returns
    -------
    np.ndarray
        ``labels`` as an array (not copied). Raises UNetCellsError saying how to fix a
        binary mask, a non-integer image or negative values.
    """
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
    """Pairs of cells that touch in the 8-neighbourhood.

    Parameters
    ----------
    labels : np.ndarray
        Integer (Y, X) labels, 0 = background.

    Returns
    -------
    set of (int, int)
        Pairs (a, b), a < b.
    """
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


def binary_mask_values(labels: np.ndarray) -> tuple[int, int] | None:
    """(0, v) if ``labels`` is a binary mask rather than instance labels, else None.

    A mask: bool, or integers whose only positive value ``v`` (0/1, Fiji's 0/255) covers
    two or more separate (8-connected) objects in some (Y, X) plane, which instance labels
    would number 1, 2, ... An image with a single cell is not a mask.

    Parameters
    ----------
    labels : array_like
        (..., Y, X).

    Returns
    -------
    (int, int) or None
        (0, v) for a mask, else None.
    """
    from scipy import ndimage as ndi

    array = np.asarray(labels)
    if array.dtype == bool:
        return (0, 1)
    if not np.issubdtype(array.dtype, np.integer) or array.ndim < 2 or not array.any():
        return None
    top = int(array.max())
    if int(array.min()) < 0 or np.any((array != 0) & (array != top)):
        return None
    planes = array.reshape((-1, *array.shape[-2:]))
    eight = np.ones((3, 3), bool)
    if any(ndi.label(plane == top, structure=eight)[1] > 1 for plane in planes):
        return (0, top)
    return None


def refuse_binary_mask(labels: np.ndarray, name: str = "labels") -> None:
    """Raise UNetCellsError when ``labels`` is a 0/1 or 0/255 mask (:func:`binary_mask_values`),
    where one number per cell is needed (a mask would be weighted as one giant cell)."""
    values = binary_mask_values(labels)
    if values is not None:
        raise UNetCellsError(
            f"'{name}' is a binary mask (values {values[0]} and {values[1]}), not one number "
            "per cell: number its objects first (e.g. skimage.measure.label; `unet-cells "
            "weightmap` and Fine-tune do it for you), or paint each cell its own number."
        )


def mask_to_instances(labels: np.ndarray, name: str = "labels") -> tuple[np.ndarray, str]:
    """Instance labels from a binary mask, with a notice; other labels pass unchanged.

    labels: (..., Y, X). If :func:`binary_mask_values` finds a mask, its separate
    (8-connected) objects become cells 1..N (int32, numbered across the planes) and the
    notice says so. Touching cells are one object in a mask, so they stay merged: the
    notice says that too.

    Parameters
    ----------
    labels : array_like
        (..., Y, X) labels or mask.
    name : str
        What the labels are, for the notice.

    Returns
    -------
    (np.ndarray, str)
        The instance labels (``labels`` itself when not a mask) and the notice ("" when
        not a mask).
    """
    from scipy import ndimage as ndi

    values = binary_mask_values(labels)
    if values is None:
        return labels, ""
    array = np.asarray(labels)
    out = np.zeros(array.shape, np.int32)
    planes, flat = array.reshape((-1, *array.shape[-2:])), out.reshape((-1, *array.shape[-2:]))
    n = 0
    for plane, target in zip(planes, flat, strict=True):
        objects, k = ndi.label(plane != 0, structure=np.ones((3, 3), bool))
        target[...] = np.where(objects > 0, objects + n, 0)
        n += k
    notice = (
        f"{name}: a binary mask (values {values[0]} and {values[1]}), not instance labels: "
        f"its {n} separate objects are used as {n} cells; touching cells stay merged into one "
        "unless each is painted with its own number."
    )
    return out, notice
