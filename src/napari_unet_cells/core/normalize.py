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
