"""Input normalisation shared by training and prediction."""

from __future__ import annotations

import numpy as np

from .config import NormalizationConfig

# percentiles of planes larger than this are estimated from a regular subsample
_MAX_PERCENTILE_SAMPLES = 1 << 20


def normalize(image: np.ndarray, config: NormalizationConfig | None = None) -> np.ndarray:
    """Percentile-normalise one plane: (Y, X) or (Y, X, C), any real dtype -> float32.

    The ``p_low`` percentile maps to 0 and ``p_high`` to 1 (over all channels). NaN and
    +-Inf are replaced by the plane's finite minimum/maximum first. A constant plane
    becomes all zeros.
    """
    config = config or NormalizationConfig()
    plane = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(plane)
    if not finite.all():
        if not finite.any():
            return np.zeros(plane.shape, np.float32)
        values = plane[finite]
        plane = np.nan_to_num(
            plane,
            nan=float(values.min()),
            posinf=float(values.max()),
            neginf=float(values.min()),
        )
    flat = plane.reshape(-1)
    step = max(1, flat.size // _MAX_PERCENTILE_SAMPLES)
    low, high = np.percentile(flat[::step], [config.p_low, config.p_high])
    scale = high - low
    if scale <= 0:
        scale = float(flat.max() - flat.min())
        low = float(flat.min())
    if scale <= 0:
        return np.zeros(plane.shape, np.float32)
    out = (plane - np.float32(low)) / np.float32(scale)
    if config.clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out.astype(np.float32, copy=False)


#: planes whose signal/noise (``signal_to_noise``) is below this hold no cells worth
#: segmenting: pure camera noise reaches about 3.7-4, a few dim nuclei 5 and more
MIN_SIGNAL_TO_NOISE = 5.0


def signal_to_noise(image: np.ndarray) -> float:
    """How far the brightest structures of a (Y, X) plane rise above its noise.

    (99.99th percentile - median) / sigma, where sigma is the pixel noise estimated from
    the median absolute deviation of neighbouring-pixel differences (insensitive to
    cells, gradients and background). Pure noise gives about 3.7; images with cells give
    tens to hundreds. inf for a noiseless plane with structure, 0 for a constant one.
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
