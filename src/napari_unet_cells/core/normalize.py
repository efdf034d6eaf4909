"""Input normalisation shared by training and prediction.

``normalize(plane)`` is two steps that can also be taken apart:
``normalization_params(plane)`` measures the percentiles (and the fill values for NaN /
Inf) once, ``apply_normalization(values, params)`` maps any values with them. Chunked
prediction (core/predict_large.py) measures a subsample of a large image once and applies
the same parameters to every chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import NormalizationConfig

# percentiles of planes larger than this are estimated from a regular subsample
_MAX_PERCENTILE_SAMPLES = 1 << 20


@dataclass(frozen=True)
class NormalizationParams:
    """The intensity mapping of one plane: ``out = (x - low) / scale`` (float32).

    Attributes
    ----------
    low : float
        The intensity mapped to 0 (the ``p_low`` percentile), in input units.
    scale : float
        Intensity span mapped to 1 (``p_high - p_low`` percentiles, or the full range when
        they coincide); 0 means "constant plane": every output is 0.
    fill_low, fill_high : float
        The plane's finite minimum and maximum: NaN and -Inf become ``fill_low``, +Inf
        becomes ``fill_high`` before the mapping.
    clip : bool
        Clip the output to [0, 1].
    """

    low: float = 0.0
    scale: float = 0.0
    fill_low: float = 0.0
    fill_high: float = 0.0
    clip: bool = False


def normalization_params(
    image: np.ndarray, config: NormalizationConfig | None = None
) -> NormalizationParams:
    """Measure the normalisation of one plane without applying it.

    Parameters
    ----------
    image : array (Y, X) or (Y, X, C), any real dtype
        The plane (or a regular subsample of it: only the value distribution matters).
        Planes of more than 2**20 values are measured on a regular subsample.
    config : NormalizationConfig, optional
        Percentiles and clipping (default ``NormalizationConfig()``).

    Returns
    -------
    NormalizationParams
        ``scale == 0`` for a constant plane or one without finite values.
    """
    config = config or NormalizationConfig()
    plane = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(plane)
    if not finite.any():
        return NormalizationParams(clip=config.clip)
    fill_low = fill_high = 0.0
    if not finite.all():
        values = plane[finite]
        fill_low, fill_high = float(values.min()), float(values.max())
        plane = _fill(plane, fill_low, fill_high)
    flat = plane.reshape(-1)
    step = max(1, flat.size // _MAX_PERCENTILE_SAMPLES)
    low, high = np.percentile(flat[::step], [config.p_low, config.p_high])
    low, scale = float(low), float(high - low)
    if scale <= 0:
        scale = float(flat.max() - flat.min())
        low = float(flat.min())
    if finite.all():
        fill_low, fill_high = float(flat.min()), float(flat.max())
    return NormalizationParams(low, max(scale, 0.0), fill_low, fill_high, config.clip)


def apply_normalization(image: np.ndarray, params: NormalizationParams) -> np.ndarray:
    """Map values with measured parameters: any real dtype -> float32 of the same shape.

    Parameters
    ----------
    image : array, any shape and real dtype
        Values in input units (a plane, a chunk of one, a tile).
    params : NormalizationParams
        From ``normalization_params``.

    Returns
    -------
    numpy.ndarray
        float32, ``(x - low) / scale`` (clipped to [0, 1] if ``params.clip``); all zeros
        when ``params.scale`` is 0. NaN / Inf are replaced first (see NormalizationParams).
    """
    plane = np.asarray(image, dtype=np.float32)
    if params.scale <= 0:
        return np.zeros(plane.shape, np.float32)
    if not np.isfinite(plane).all():
        plane = _fill(plane, params.fill_low, params.fill_high)
    out = (plane - np.float32(params.low)) / np.float32(params.scale)
    if params.clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out.astype(np.float32, copy=False)


def normalize(image: np.ndarray, config: NormalizationConfig | None = None) -> np.ndarray:
    """Percentile-normalise one plane: (Y, X) or (Y, X, C), any real dtype -> float32.

    The ``p_low`` percentile maps to 0 and ``p_high`` to 1 (over all channels). NaN and
    +-Inf are replaced by the plane's finite minimum/maximum first. A constant plane
    becomes all zeros. Equal to ``apply_normalization(image, normalization_params(image,
    config))``.

    Parameters
    ----------
    image : array_like
        (Y, X) or (Y, X, C), any real dtype, in input units.
    config : NormalizationConfig, optional
        Percentiles and clipping (default ``NormalizationConfig()``).

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``image`` (in [0, 1] when ``config.clip``).
    """
    return apply_normalization(image, normalization_params(image, config))


def _fill(plane: np.ndarray, low: float, high: float) -> np.ndarray:
    """NaN and -Inf -> ``low``, +Inf -> ``high`` (a new float32 array)."""
    return np.nan_to_num(plane, nan=low, posinf=high, neginf=low)


#: planes whose signal/noise (``signal_to_noise``) is below this hold no cells worth
#: segmenting: pure camera noise reaches about 3.7-4, a few dim nuclei 5 and more
MIN_SIGNAL_TO_NOISE = 5.0


def signal_to_noise(image: np.ndarray) -> float:
    """How far the brightest structures of a (Y, X) plane rise above its noise.

    (99.99th percentile - median) / sigma, where sigma is the pixel noise estimated from
    the median absolute deviation of neighbouring-pixel differences (insensitive to
    cells, gradients and background). Pure noise gives about 3.7; images with cells give
    tens to hundreds (see ``MIN_SIGNAL_TO_NOISE``).

    Parameters
    ----------
    image : array_like
        A (Y, X) plane, any real dtype; non-finite values count as 0.

    Returns
    -------
    float
        The ratio (dimensionless); inf for a noiseless plane with structure and for
        anything that is not a (Y, X) plane of at least 2 x 2 px, 0 for a constant one.
    """
    plane = np.asarray(image, dtype=np.float32)
    plane = np.where(np.isfinite(plane), plane, 0.0) if plane.dtype.kind == "f" else plane
    if plane.ndim != 2 or min(plane.shape) < 2:
        return float("inf")
    step = max(1, plane.shape[0] // 1024)  # rows enough for a robust estimate
    diffs = np.diff(plane[::step], axis=1).ravel()
    sigma = float(np.median(np.abs(diffs - np.median(diffs)))) * 1.4826 / np.sqrt(2.0)
    flat = plane.reshape(-1)
    flat = flat[:: max(1, flat.size // _MAX_PERCENTILE_SAMPLES)]
    median, high = np.percentile(flat, [50.0, 99.99])
    span = float(high - median)
    if sigma <= 0:
        return float("inf") if span > 0 else 0.0
    return span / sigma
