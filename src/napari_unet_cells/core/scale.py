"""Cell size: the typical nucleus diameter of an image, and rescaling to a model's.

Microscopes differ (10x to 100x objectives), so nuclei may be 8 or 150 px across. A model
file records the nucleus diameter it was trained around (``extra["diameter"]``, px;
``model_diameter``). Prediction rescales each image by ``factor = model diameter /
image diameter`` so that its nuclei appear at the model's size, runs the network and the
instance step on that grid, and maps the labels back onto the input's exact grid
(``labels_to_shape``: nearest neighbour, no cell lost, labels 1..N).

The image diameter is given by the user (px) or estimated ("auto",
``core.predict.estimate_diameter``): the network runs on a crop, the typical diameter of
the objects it finds is measured (``typical_diameter``) and, if that is far from the
model's, the crop is rescaled and measured again (at most ``MAX_PASSES`` times), so that
the final measurement is made where the network sees nuclei at its own size. Images
whose nuclei are up to ``TOLERANCE`` times larger or ``ENLARGE_TOLERANCE`` times smaller
than the model's are not resampled (``within_tolerance``).

This module is numpy/scipy/scikit-image only; the passes live in core/predict.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .errors import UNetCellsError

#: no shrinking when the image's diameter is at most this factor above the model's
TOLERANCE = 1.3
#: no enlarging when the image's diameter is at most this factor below the model's. Wider
#: than ``TOLERANCE``: the bundled model trains on nuclei from 1/1.5 to 1.5 times its
#: diameter, and enlarging nuclei it already sees well made it split textured or dim
#: nuclei (stress suite, 2026-12-03: enlarging 14-15 px nuclei 1.3-1.4x for a 20 px
#: model lost 0.01-0.12 AP50 on the dense and low-contrast sets)
ENLARGE_TOLERANCE = 1.5
#: the largest rescale either way (nuclei from D / 8 to 8 D px are brought to D)
MAX_FACTOR = 8.0
#: estimation passes (the first at the image's own scale)
MAX_PASSES = 3
#: side of the estimation crop on the model's grid, px
ESTIMATE_CROP = 1024
#: at least this many objects (not touching the crop's edge) for an estimate
MIN_OBJECTS = 3


@dataclass(frozen=True)
class ScaleChoice:
    """How an image is resampled for a model.

    factor: model grid px per image px (> 1: the image is enlarged; 1: not resampled).
    diameter: the image's typical nucleus diameter in image px (given or estimated),
        None when unknown (the model records no diameter, or nothing was found).
    model_diameter: the diameter the model was trained around, px (None: not recorded).
    estimated: True when ``diameter`` was estimated ("auto").
    message: a line for the user ("" when nothing is worth saying).
    """

    factor: float = 1.0
    diameter: float | None = None
    model_diameter: float | None = None
    estimated: bool = False
    message: str = ""


def model_diameter(model) -> float | None:
    """The nucleus diameter (px) a model was trained around, or None if not recorded.

    Parameters
    ----------
    model : CellModel
        Anything with an ``extra`` dict; its ``"diameter"`` entry is read.

    Returns
    -------
    float or None
        Diameter in the model's px; None when missing or 0.
    """
    value = getattr(model, "extra", {}).get("diameter")
    return float(value) if value else None


def parse_diameter(value) -> float | str | None:
    """A user's diameter: "auto" (estimate), None/0/"none" (no rescaling) or a number of px.

    Strings such as "30" are accepted (CLI, widgets); "", "none", "off" and "0" mean no
    rescaling. Case and surrounding spaces are ignored.

    Parameters
    ----------
    value : str, float, int or None
        What the user gave.

    Returns
    -------
    float, "auto" or None
        A diameter in image px (> 0), "auto", or None for no rescaling.

    Raises
    ------
    UNetCellsError
        Text that is no number, a negative number, NaN or infinity.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text in ("", "none", "0", "off"):
            return None
        try:
            value = float(text)
        except ValueError:
            raise UNetCellsError(
                f"The cell diameter must be 'auto', a number of pixels (e.g. 30) or 'none', "
                f"got {value!r}."
            ) from None
    value = float(value)
    if value == 0:
        return None
    if not np.isfinite(value) or value < 0:
        raise UNetCellsError(
            f"The cell diameter must be a positive number of pixels, 'auto' (estimate it) "
            f"or 'none' (never resample), got {value}."
        )
    return value


def factor_for(diameter: float, reference: float) -> float:
    """Resampling factor that brings nuclei of ``diameter`` px to ``reference`` px.

    Parameters
    ----------
    diameter : float
        The image's nucleus diameter, image px (> 0).
    reference : float
        The model's nucleus diameter, px (> 0).

    Returns
    -------
    float
        1.0 when ``within_tolerance``, else ``reference / diameter`` clipped to
        [1 / ``MAX_FACTOR``, ``MAX_FACTOR``] (model grid px per image px).
    """
    if within_tolerance(diameter, reference):
        return 1.0
    return float(np.clip(reference / diameter, 1 / MAX_FACTOR, MAX_FACTOR))


def within_tolerance(diameter: float, reference: float) -> bool:
    """True if nuclei of ``diameter`` px need no resampling for a model of ``reference``
    px: at most ``TOLERANCE`` times larger and ``ENLARGE_TOLERANCE`` times smaller."""
    return reference / ENLARGE_TOLERANCE <= diameter <= reference * TOLERANCE


def equivalent_diameters(labels: np.ndarray, exclude_edge: bool = False) -> np.ndarray:
    """Equivalent diameters 2 sqrt(area / pi) of the objects of a (Y, X) label plane.

    Parameters
    ----------
    labels : numpy.ndarray
        (Y, X) non-negative integer labels, 0 background; ids need not be sequential.
    exclude_edge : bool
        Leave out objects touching the plane's edge (their area is cut).

    Returns
    -------
    numpy.ndarray
        float64 (N,), px, one per present object in id order.
    """
    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel())[1:].astype(np.float64)
    keep = areas > 0
    if exclude_edge and labels.ndim == 2 and labels.size:
        edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        touching = np.unique(edge[edge > 0]) - 1
        keep[touching] = False
    return 2.0 * np.sqrt(areas[keep] / np.pi)


def typical_diameter(labels: np.ndarray) -> float | None:
    """The median equivalent diameter (px) of the objects in a (Y, X) label plane.

    Objects touching the edge count only when fewer than ``MIN_OBJECTS`` others exist.

    Parameters
    ----------
    labels : numpy.ndarray
        (Y, X) non-negative integer labels, 0 background.

    Returns
    -------
    float or None
        The median diameter, px; None without objects.
    """
    inner = equivalent_diameters(labels, exclude_edge=True)
    if inner.size < MIN_OBJECTS:
        inner = equivalent_diameters(labels)
    return float(np.median(inner)) if inner.size else None


def scaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """(Y, X) of a plane of ``shape`` resampled by ``factor`` (at least 1 px).

    Parameters
    ----------
    shape : tuple of int
        (Y, X) of the plane, px.
    factor : float
        Model grid px per image px (> 0).

    Returns
    -------
    tuple of int
        Each side ``round(n * factor)``, at least 1.
    """
    return tuple(max(1, round(n * factor)) for n in shape)  # type: ignore[return-value]


def resize_plane(
    plane: np.ndarray, shape: tuple[int, int], order: int | None = None
) -> np.ndarray:
    """Resample a (Y, X) or (Y, X, C) float plane to ``shape``.

    By default cubic when enlarging (small nuclei brought up to the model's size keep
    more of the faint seams between them than bilinear gives: AP50 +0.01 on 5-14 px
    nuclei, scripts/evaluate_model.py) and bilinear with Gaussian anti-aliasing when
    shrinking (scikit-image ``resize``, values' range preserved).

    Parameters
    ----------
    plane : array_like
        (Y, X) or (Y, X, C), any real dtype (converted to float32).
    shape : tuple of int
        Target (Y, X), px; channels are kept.
    order : int, optional
        Spline order (1: bilinear, 3: cubic) instead of the default; scores and
        probabilities use 1, which keeps them within their range.

    Returns
    -------
    numpy.ndarray
        float32 ``(*shape, C)`` or ``shape``; the float32 input itself when it already has
        that shape.
    """
    from skimage.transform import resize

    plane = np.asarray(plane, np.float32)
    if plane.shape[:2] == tuple(shape):
        return plane
    target = (*shape, *plane.shape[2:])
    shrinking = shape[0] < plane.shape[0] or shape[1] < plane.shape[1]
    if order is None:
        order = 1 if shrinking else 3
    out = resize(plane, target, order=order, anti_aliasing=shrinking, preserve_range=True)
    return out.astype(np.float32, copy=False)


def labels_to_shape(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (Y, X) label plane resampled to ``shape`` by nearest neighbour, no cell lost.

    A cell that no target pixel samples (possible when shrinking) takes the pixel under
    its centroid if that pixel is background.

    Parameters
    ----------
    labels : numpy.ndarray
        (Y, X) non-negative integer labels, 0 background.
    shape : tuple of int
        Target (Y, X), px.

    Returns
    -------
    numpy.ndarray
        int32 ``shape``, 0 = background, labels 1..N in the order of the input ids (also
        renumbered when ``shape`` is already the labels' shape).
    """
    labels = np.asarray(labels)
    if labels.shape == tuple(shape):
        return _sequential(labels)
    ys = _nearest_index(labels.shape[0], shape[0])
    xs = _nearest_index(labels.shape[1], shape[1])
    out = labels[np.ix_(ys, xs)].astype(np.int32)
    ids = np.flatnonzero(np.bincount(labels.ravel()))
    kept = np.flatnonzero(np.bincount(out.ravel(), minlength=ids.max(initial=0) + 1))
    lost = np.setdiff1d(ids[ids > 0], kept)
    if lost.size:
        centres = ndi.center_of_mass(np.ones(labels.shape), labels, lost)
        for cell, (cy, cx) in zip(lost.tolist(), centres, strict=True):
            y = min(shape[0] - 1, int((cy + 0.5) * shape[0] / labels.shape[0]))
            x = min(shape[1] - 1, int((cx + 0.5) * shape[1] / labels.shape[1]))
            if out[y, x] == 0:
                out[y, x] = cell
    return _sequential(out)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each target pixel centre (pixel-area alignment, as skimage)."""
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    return np.clip(np.round(centres).astype(np.int64), 0, n_in - 1)


def _sequential(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..N in the order of their ids (0 stays 0), int32; O(pixels)."""
    present = np.flatnonzero(np.bincount(labels.ravel()))
    present = present[present > 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return lut[labels]
