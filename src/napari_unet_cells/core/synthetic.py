"""Synthetic fluorescence images of nuclei with exact instance labels.

Cells are smoothly deformed ellipses. Most are placed in clusters where they overlap
and are then pressed against each other: each pixel belongs to the cell whose
normalised radial coordinate is smallest there, which gives the flattened shared
borders of crowded nuclei. The image is rendered from the final labels, then passes
through optics and camera: dimmer borders between pressed cells, out-of-focus blobs
that are not cells, uneven illumination and background, blur, Poisson (shot) noise,
Gaussian read noise, a camera offset, and saturation of the output range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from .errors import UNetCellsError


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic generator. Ranges (lo, hi) are sampled per image/cell.

    diameter: nucleus diameter range in pixels (mean of the two axes).
    coverage: fraction of the image area covered by cells (sets the number of cells).
    cluster_fraction: fraction of cells placed touching a neighbour.
    aspect: ratio of the long to the short axis.
    irregularity: amplitude of the smooth radial deformation (0 = perfect ellipses).
    dim_fraction / bright_fraction: cells much dimmer / brighter (saturating) than typical.
    border_dip: intensity factor range on the shared border of pressed cells (1 = none).
    blur_sigma: Gaussian optical blur, pixels.
    background: background level relative to a typical cell.
    gradient: strength of the uneven illumination (0 = flat).
    photons: detected photons of a typical cell pixel (lower = noisier).
    read_noise: camera read noise, in photons.
    saturation: camera full scale relative to a typical cell (the brightest cells clip).
    out_of_focus: number of unlabelled out-of-focus blobs per 256x256 area.
    condensed_fraction: cells with condensed, very bright and coarse chromatin (mitotic).
    debris: unlabelled in-focus specks and fibres (dust, autofluorescent debris) per
        256x256 area; some are as bright as cells.
    background_texture: amplitude of structured background fluorescence (medium, haze)
        relative to a typical cell.
    hot_pixels: fraction of camera pixels stuck bright.
    pattern_noise: row/column fixed-pattern noise, in units of the read noise.
    outlier_fraction: cells many times brighter than typical (5-20x: mitotic or
        apoptotic nuclei) that saturate the camera; with enough of them, percentile
        normalisation leaves the ordinary nuclei dim.
    edge_softness: (lo, hi) share of the radius over which a nucleus fades to its
        outline (0 = sharp edge), drawn per image; soft, low-contrast outlines.
    nucleoli: mean number of dark nucleoli per nucleus (intensity x 0.3-0.7).
    chromocenters: mean number of bright chromatin spots per nucleus.
    brightness_spread: log-normal sigma of the cell-to-cell brightness (dim next to
        bright nuclei).
    overlap: share of the touching neighbours that lie partly on top of the nucleus they
        touch (as in a widefield image of cells in culture) instead of pressing against it:
        the upper nucleus keeps its whole outline, the lower one shows a crescent, and
        their light adds up where they overlap (a brighter lens, not a dark seam).
    glow: (lo, hi) share of each object's light that the optics spread into a wide halo
        (the out-of-focus tail of a widefield microscope's point spread function), drawn
        per image; the halo's width is 0.15-0.5 of the mean diameter. Around a bright
        nucleus the halo is as bright as an ordinary nucleus and is background.
    dtype: "uint16" (camera counts over a 100 offset), "uint8", "float32", or
        "uint16_8bit" (8-bit values, 0-255, stored in a 16-bit file).
    """

    diameter: tuple[float, float] = (10.0, 28.0)
    coverage: float = 0.35
    cluster_fraction: float = 0.75
    aspect: tuple[float, float] = (1.0, 1.7)
    irregularity: float = 0.06
    dim_fraction: float = 0.12
    bright_fraction: float = 0.05
    border_dip: tuple[float, float] = (0.55, 1.0)
    blur_sigma: tuple[float, float] = (0.6, 1.8)
    background: tuple[float, float] = (0.01, 0.08)
    gradient: tuple[float, float] = (0.0, 0.5)
    photons: tuple[float, float] = (40.0, 600.0)
    read_noise: tuple[float, float] = (1.0, 4.0)
    saturation: tuple[float, float] = (2.5, 8.0)
    out_of_focus: float = 1.0
    condensed_fraction: float = 0.0
    debris: float = 0.0
    background_texture: float = 0.0
    hot_pixels: float = 0.0
    pattern_noise: float = 0.0
    outlier_fraction: float = 0.0
    edge_softness: tuple[float, float] = (0.0, 0.0)
    nucleoli: float = 0.0
    chromocenters: float = 0.0
    brightness_spread: float = 0.3
    glow: tuple[float, float] = (0.0, 0.0)
    overlap: float = 0.0
    dtype: Literal["uint16", "uint8", "float32", "uint16_8bit"] = "uint16"

    def __post_init__(self) -> None:
        lo, hi = self.diameter
        if not 3 <= lo <= hi:
            raise UNetCellsError(
                f"diameter must be a range (lo, hi) with 3 <= lo <= hi, got {self.diameter}."
            )
        if not 0 < self.coverage <= 0.8:
            raise UNetCellsError(f"coverage must be in (0, 0.8], got {self.coverage}.")
        if self.dtype not in ("uint16", "uint8", "float32", "uint16_8bit"):
            raise UNetCellsError(
                f"dtype must be 'uint16', 'uint8', 'float32' or 'uint16_8bit', got {self.dtype!r}."
            )


def synthetic_cells(
    shape: tuple[int, int] = (256, 256),
    *,
    seed: int | np.random.Generator = 0,
    config: SyntheticConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic fluorescence image of nuclei and its exact instance labels.

    Parameters
    ----------
    shape : (int, int)
        (Y, X) in pixels, both at least 8.
    seed : int or numpy.random.Generator
        Same seed, same output.
    config : SyntheticConfig, optional
        How the cells and the microscope look; default ``SyntheticConfig()``.

    Returns
    -------
    image : np.ndarray
        (Y, X) of ``config.dtype``.
    labels : np.ndarray
        int32 (Y, X): 0 = background, 1..N one per cell, each cell a single connected
        region.
    """
    config = config or SyntheticConfig()
    if len(shape) != 2 or min(shape) < 8:
        raise UNetCellsError(
            f"The synthetic image shape must be (Y, X) with both at least 8 px, got {shape}."
        )
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    cells = _place_cells(shape, config, rng)
    labels, radial, stacked = _rasterise(shape, cells)
    labels, radial = _clean(labels, radial, min_area=max(8, int(0.15 * config.diameter[0] ** 2)))
    signal = _render_cells(labels, radial, config, rng, stacked)
    image = _optics_and_camera(signal, labels, config, rng)
    return image, labels


# --------------------------------------------------------------------------------------


@dataclass
class _Cell:
    y: float
    x: float
    a: float  # semi-axis along the cell's own first axis, px
    b: float  # semi-axis along the second axis, px
    angle: float
    harmonics: np.ndarray  # (K, 3): order, amplitude, phase
    on_top: bool = False  # lies partly on a neighbour: keeps its whole outline

    @property
    def radius(self) -> float:
        return max(self.a, self.b)


def _draw_cell(y: float, x: float, config: SyntheticConfig, rng: np.random.Generator) -> _Cell:
    lo, hi = config.diameter
    # log-uniform diameters: small and large nuclei both common
    diameter = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    aspect = rng.uniform(*config.aspect)
    a = 0.5 * diameter * np.sqrt(aspect)
    b = 0.5 * diameter / np.sqrt(aspect)
    orders = np.arange(2, 6)
    amplitudes = config.irregularity * rng.uniform(0, 1, orders.size) / orders * 2
    phases = rng.uniform(0, 2 * np.pi, orders.size)
    harmonics = np.stack([orders, amplitudes, phases], axis=1)
    return _Cell(y, x, a, b, rng.uniform(0, np.pi), harmonics)


def _place_cells(
    shape: tuple[int, int], config: SyntheticConfig, rng: np.random.Generator
) -> list[_Cell]:
    h, w = shape
    mean_d = 0.5 * sum(config.diameter)
    n_target = max(1, round(config.coverage * h * w / (np.pi * (mean_d / 2) ** 2)))
    cells: list[_Cell] = []
    centres = np.empty((0, 2))
    radii = np.empty(0)
    attempts = 0
    while len(cells) < n_target and attempts < 30 * n_target:
        attempts += 1
        clustered = len(cells) > 0 and rng.random() < config.cluster_fraction
        if clustered:
            anchor = cells[rng.integers(len(cells))]
            cell = _draw_cell(0.0, 0.0, config, rng)
            theta = rng.uniform(0, 2 * np.pi)
            reach = rng.uniform(0.78, 0.95)
            min_gap = 0.7  # pressed cells may overlap before assignment, but not too much
            # (random draws only when enabled: same old looks)
            if config.overlap > 0 and rng.random() < config.overlap:
                cell.on_top, reach, min_gap = True, rng.uniform(0.6, 0.85), 0.55
            dist = (_mean_radius(anchor) + _mean_radius(cell)) * reach
            cell.y = anchor.y + dist * np.sin(theta)
            cell.x = anchor.x + dist * np.cos(theta)
        else:
            cell = _draw_cell(rng.uniform(0, h), rng.uniform(0, w), config, rng)
            min_gap = 1.15  # isolated cells keep clear of others
        if not (-0.3 * cell.radius <= cell.y < h + 0.3 * cell.radius):
            continue
        if not (-0.3 * cell.radius <= cell.x < w + 0.3 * cell.radius):
            continue
        if len(cells):
            d = np.hypot(centres[:, 0] - cell.y, centres[:, 1] - cell.x)
            r = _mean_radius(cell) + radii
            if np.any(d < min_gap * r):
                continue
        cells.append(cell)
        centres = np.vstack([centres, [cell.y, cell.x]])
        radii = np.append(radii, _mean_radius(cell))
    return cells


def _mean_radius(cell: _Cell) -> float:
    return 0.5 * (cell.a + cell.b)


def _rasterise(
    shape: tuple[int, int], cells: list[_Cell]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign each pixel to the cell with the smallest normalised radius f (f <= 1 inside);
    a cell ``on_top`` takes every pixel of its own outline. Returns labels, f, and where
    an upper cell covers another one."""
    h, w = shape
    best = np.full(shape, np.inf, dtype=np.float32)
    owner = np.zeros(shape, dtype=np.int32)
    stacked = np.zeros(shape, dtype=bool)
    order = sorted(range(len(cells)), key=lambda i: cells[i].on_top)  # upper cells last
    for index in (i + 1 for i in order):
        cell = cells[index - 1]
        reach = cell.radius * 1.3 + 2
        y0, y1 = max(0, int(cell.y - reach)), min(h, int(cell.y + reach) + 1)
        x0, x1 = max(0, int(cell.x - reach)), min(w, int(cell.x + reach) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cell.y, xx - cell.x
        cos, sin = np.cos(cell.angle), np.sin(cell.angle)
        u = (dx * cos + dy * sin) / cell.a
        v = (-dx * sin + dy * cos) / cell.b
        theta = np.arctan2(v, u)
        wobble = 1.0 + sum(
            amp * np.cos(order * theta + phase) for order, amp, phase in cell.harmonics
        )
        f = np.hypot(u, v) / wobble
        window = best[y0:y1, x0:x1]
        closer = f < window
        if cell.on_top:
            stacked[y0:y1, x0:x1] |= (f <= 1.0) & (window <= 1.0)
            closer |= f <= 1.0
        window[closer] = f[closer]
        owner[y0:y1, x0:x1][closer] = index
    labels = np.where(best <= 1.0, owner, 0).astype(np.int32)
    return labels, np.where(labels > 0, best, 1.0).astype(np.float32), stacked


def _clean(labels: np.ndarray, radial: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep each cell's largest connected piece, drop tiny cells, relabel 1..N."""
    out = np.zeros_like(labels)
    next_id = 1
    for index, region in enumerate(ndi.find_objects(labels), start=1):
        if region is None:
            continue
        mask = labels[region] == index
        pieces, n = ndi.label(mask)
        if n > 1:
            sizes = np.bincount(pieces.ravel())[1:]
            mask = pieces == (np.argmax(sizes) + 1)
        if mask.sum() < min_area:
            continue
        out[region][mask] = next_id
        next_id += 1
    return out, np.where(out > 0, radial, 1.0).astype(np.float32)


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma`` px.

    Long correlation lengths are made on a coarse grid and upsampled (cubic), which is
    much faster than a wide Gaussian filter and looks the same.
    """
    factor = max(1.0, sigma / 4.0)
    coarse_shape = tuple(max(4, int(np.ceil(n / factor)) + 1) for n in shape)
    field = ndi.gaussian_filter(
        rng.standard_normal(coarse_shape).astype(np.float32), sigma / factor, mode="wrap"
    )
    if factor > 1.0:
        zoom = [n / c for n, c in zip(shape, coarse_shape, strict=True)]
        field = ndi.zoom(field, zoom, order=3, grid_mode=True, mode="grid-wrap")[
            : shape[0], : shape[1]
        ]
    else:
        field = field[: shape[0], : shape[1]]
    std = field.std()
    return (field - field.mean()) / std if std > 0 else field


def _add_gaussian_spot(
    image: np.ndarray, y: float, x: float, sigma: float, amplitude: float
) -> None:
    """Add amplitude * exp(-d^2 / 2 sigma^2) around (y, x), within 4 sigma, in place."""
    h, w = image.shape
    reach = 4 * sigma
    y0, y1 = max(0, int(y - reach)), min(h, int(y + reach) + 1)
    x0, x1 = max(0, int(x - reach)), min(w, int(x + reach) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    image[y0:y1, x0:x1] += amplitude * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))


def _debris(shape: tuple[int, int], density: float, rng: np.random.Generator) -> np.ndarray:
    """Unlabelled in-focus specks (0.5-3 px) and thin fibres, some as bright as cells."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    for _ in range(rng.poisson(density * h * w / 256**2)):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        amplitude = float(rng.lognormal(-0.7, 0.8))
        if rng.random() < 0.75:
            _add_gaussian_spot(out, y, x, rng.uniform(0.5, 3.0), amplitude)
            continue
        length, angle = rng.uniform(10, 50), rng.uniform(0, np.pi)
        t = np.linspace(0, length, int(2 * length))
        bend = rng.normal(0, 0.02)
        ys = np.round(y + t * np.sin(angle + bend * t)).astype(int)
        xs = np.round(x + t * np.cos(angle + bend * t)).astype(int)
        keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        out[ys[keep], xs[keep]] = np.maximum(out[ys[keep], xs[keep]], 0.5 * amplitude)
    return out


def _render_cells(
    labels: np.ndarray,
    radial: np.ndarray,
    config: SyntheticConfig,
    rng: np.random.Generator,
    stacked: np.ndarray,
) -> np.ndarray:
    """Noise-free fluorescence (typical cell ~ 1) from the final labels; ``stacked``
    marks where an upper nucleus lies on another (bool, same shape)."""
    n = int(labels.max())
    brightness = rng.lognormal(0.0, config.brightness_spread, n + 1).astype(np.float32)
    kind = rng.random(n + 1)
    brightness[kind < config.dim_fraction] *= rng.uniform(0.3, 0.5)
    brightness[kind > 1 - config.bright_fraction] *= rng.uniform(2.5, 4.0)
    texture_amp = rng.uniform(0.05, 0.25, n + 1).astype(np.float32)
    condensed = rng.random(n + 1) < config.condensed_fraction
    brightness[condensed] *= rng.uniform(2.0, 4.0)
    texture_amp[condensed] = 0.5
    if config.outlier_fraction > 0:  # (random draws only when enabled: same old looks)
        outliers = rng.random(n + 1) < config.outlier_fraction
        brightness[outliers] *= rng.uniform(5.0, 20.0, int(outliers.sum()))
    brightness[0] = 0.0
    texture = _smooth_noise(labels.shape, rng.uniform(1.0, 2.5), rng)
    # brighter centre, darker rim; chromatin texture
    profile = (1.0 - 0.3 * radial**2) * (1.0 + texture_amp[labels] * texture)
    softness = rng.uniform(*config.edge_softness) if config.edge_softness[1] > 0 else 0.0
    if softness > 0:  # the nucleus fades out over the outer share of its radius
        profile *= np.clip((1.0 - radial) / softness, 0.15, 1.0) ** 0.7
    signal = brightness[labels] * np.clip(profile, 0.15, None)
    spots = _nuclear_spots(labels, config, rng)
    if spots is not None:
        signal *= spots
    # pressed neighbours: their shared border is often darker
    dip = rng.uniform(*config.border_dip)
    if dip < 1.0:
        highest = ndi.maximum_filter(labels, size=3)
        lowest = ndi.minimum_filter(np.where(labels > 0, labels, n + 1), size=3)
        shared = (labels > 0) & ((highest != labels) | (lowest != labels)) & ~stacked
        signal[shared] *= dip
    if config.overlap > 0:  # where two nuclei lie on each other their light adds up
        signal[stacked & (labels > 0)] *= rng.uniform(1.3, 1.9)
    return np.where(labels > 0, signal, 0.0).astype(np.float32)


def _nuclear_spots(
    labels: np.ndarray, config: SyntheticConfig, rng: np.random.Generator
) -> np.ndarray | None:
    """A multiplicative map of dark nucleoli and bright chromocentres inside nuclei, or
    None when the config has neither. Spots are placed inside each nucleus's box."""
    if config.nucleoli <= 0 and config.chromocenters <= 0:
        return None
    factor = np.ones(labels.shape, np.float32)
    for index, region in enumerate(ndi.find_objects(labels), start=1):
        if region is None:
            continue
        mask = labels[region] == index
        ys, xs = np.nonzero(mask)
        size = np.sqrt(ys.size)
        n_dark = rng.poisson(config.nucleoli)
        n_bright = rng.poisson(config.chromocenters)
        if n_dark + n_bright == 0 or ys.size < 30:
            continue
        local = np.zeros(mask.shape, np.float32)
        for k in range(n_dark + n_bright):
            i = rng.integers(ys.size)
            sigma = size * (rng.uniform(0.06, 0.13) if k < n_dark else rng.uniform(0.03, 0.07))
            amplitude = -rng.uniform(0.3, 0.7) if k < n_dark else rng.uniform(0.5, 1.5)
            _add_gaussian_spot(local, float(ys[i]), float(xs[i]), max(sigma, 0.7), amplitude)
        window = factor[region]
        window[mask] = np.clip(1.0 + local[mask], 0.25, None)
    return factor


def _optics_and_camera(
    signal: np.ndarray, labels: np.ndarray, config: SyntheticConfig, rng: np.random.Generator
) -> np.ndarray:
    h, w = signal.shape
    # unlabelled out-of-focus blobs (cells above/below the focal plane)
    blobs = np.zeros_like(signal)
    for _ in range(rng.poisson(config.out_of_focus * h * w / 256**2)):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(*config.diameter) * rng.uniform(0.5, 1.2)
        _add_gaussian_spot(blobs, y, x, r, rng.uniform(0.03, 0.12))
    signal = signal + _debris((h, w), config.debris, rng)
    image = ndi.gaussian_filter(signal, rng.uniform(*config.blur_sigma))
    if config.glow[1] > 0:  # (random draws only when enabled: same old looks)
        share = rng.uniform(*config.glow)
        width = rng.uniform(0.15, 0.5) * float(np.mean(config.diameter))
        image = (1.0 - share) * image + share * ndi.gaussian_filter(signal, width)
    image = image + blobs
    # uneven illumination (multiplies everything) and background (adds)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * (xx / w - 0.5) + np.sin(direction) * (yy / h - 0.5)).astype(
        np.float32
    )
    slow = _smooth_noise((h, w), max(h, w) / 6, rng)
    strength = rng.uniform(*config.gradient)
    illumination = np.clip(1.0 + strength * (0.6 * ramp + 0.15 * slow), 0.3, None)
    image = image * illumination + rng.uniform(*config.background) * (1.0 + 0.3 * slow)
    if config.background_texture > 0:
        haze = _smooth_noise((h, w), rng.uniform(3.0, 15.0), rng)
        image += config.background_texture * rng.uniform(0.3, 1.0) * np.clip(haze + 0.5, 0, None)
    # camera: shot noise, read noise
    photons = rng.uniform(*config.photons)
    counts = rng.poisson(np.clip(image, 0, None) * photons).astype(np.float32)
    read_noise = rng.uniform(*config.read_noise)
    counts += rng.normal(0.0, read_noise, counts.shape).astype(np.float32)
    if config.pattern_noise > 0:
        amplitude = config.pattern_noise * read_noise
        counts += rng.normal(0.0, amplitude, (h, 1)).astype(np.float32)
        counts += rng.normal(0.0, amplitude, (1, w)).astype(np.float32)
    full_scale = rng.uniform(*config.saturation) * photons
    if config.hot_pixels > 0:
        hot = rng.random((h, w)) < config.hot_pixels
        counts[hot] += rng.uniform(0.5, 1.0, int(hot.sum())) * full_scale
    np.clip(counts, None, full_scale, out=counts)
    if config.dtype == "float32":
        return (counts / photons).astype(np.float32)
    if config.dtype in ("uint8", "uint16_8bit"):
        # 8-bit range: full scale at 255, the brightest cells saturate
        scaled = counts / full_scale * 250.0 + 5.0
        if config.dtype == "uint8":
            # typical cells at ~150 of 255, as on many 8-bit cameras
            scaled = counts / photons * 150.0 + 5.0
        out = np.clip(np.rint(scaled), 0, 255)
        return out.astype(np.uint8 if config.dtype == "uint8" else np.uint16)
    gain = rng.uniform(1.0, 4.0)  # counts per photon
    scaled = counts * gain + 100.0
    return np.clip(np.rint(scaled), 0, 65535).astype(np.uint16)


def random_config(
    rng: np.random.Generator,
    dtype: str | None = None,
    diameter: tuple[float, float] | None = None,
) -> SyntheticConfig:
    """A SyntheticConfig drawn from a wide range of looks, for training general models.

    Sparse to crowded (5-70 % of the area covered), round to elongated, bright to barely
    above noise, sharp to soft outlines, smooth to textured chromatin (dark nucleoli,
    bright chromocentres, which must not split a nucleus), faint to no seams between
    touching nuclei, dim nuclei beside bright ones and a few saturated outliers that leave
    ordinary nuclei dim after percentile normalisation, sharp optics or a wide
    out-of-focus halo around every nucleus (half of the looks), touching nuclei pressed
    together or lying partly on each other (half of the looks), clean to dusty,
    8-bit/16-bit/float and 8-bit values in a 16-bit file.

    Parameters
    ----------
    rng : numpy.random.Generator
        The source of randomness.
    dtype : str, optional
        Fixes the output type ("uint16", "uint8", "float32", "uint16_8bit"); default drawn.
    diameter : (float, float), optional
        (lo, hi) px: each image's typical nucleus diameter is drawn log-uniformly from
        this range and its nuclei vary by +-25 % around it. None: the wide range ~8-60 px
        of general models.

    Returns
    -------
    SyntheticConfig
    """
    if diameter is None:
        low = float(np.exp(rng.uniform(np.log(8), np.log(40))))
        high = min(60.0, low * rng.uniform(1.2, 2.0))
    else:
        centre = float(np.exp(rng.uniform(np.log(diameter[0]), np.log(diameter[1]))))
        low, high = centre / 1.25, centre * 1.25
    outliers = rng.random() < 0.35
    return SyntheticConfig(
        diameter=(max(3.0, low), max(3.0, high)),
        coverage=float(rng.uniform(0.05, 0.7)),
        cluster_fraction=float(rng.uniform(0.2, 0.95)),
        aspect=(1.0, float(rng.uniform(1.2, 2.6))),
        irregularity=float(rng.uniform(0.0, 0.15)),
        dim_fraction=float(rng.uniform(0.0, 0.3)),
        bright_fraction=float(rng.uniform(0.0, 0.15)),
        border_dip=(float(rng.uniform(0.4, 1.0)), 1.0),
        blur_sigma=(0.5, float(rng.uniform(0.8, 3.0))),
        background=(0.0, float(rng.uniform(0.02, 0.35))),
        gradient=(0.0, float(rng.uniform(0.0, 0.8))),
        photons=(float(rng.uniform(8, 100)), float(rng.uniform(150, 1500))),
        read_noise=(0.5, float(rng.uniform(1.0, 8.0))),
        saturation=(float(rng.uniform(2.0, 4.0)), 10.0),
        out_of_focus=float(rng.uniform(0.0, 4.0)),
        condensed_fraction=float(rng.uniform(0.0, 0.1)),
        debris=float(rng.uniform(0.0, 12.0)),
        background_texture=float(rng.uniform(0.0, 0.15)),
        hot_pixels=float(rng.choice([0.0, 1e-4, 1e-3])),
        pattern_noise=float(rng.uniform(0.0, 1.5)),
        outlier_fraction=float(rng.uniform(0.01, 0.08)) if outliers else 0.0,
        edge_softness=(0.0, float(rng.uniform(0.0, 0.6))),
        nucleoli=float(rng.uniform(0.5, 3.0)) if rng.random() < 0.4 else 0.0,
        chromocenters=float(rng.uniform(1.0, 6.0)) if rng.random() < 0.3 else 0.0,
        brightness_spread=float(rng.uniform(0.15, 0.6)),
        dtype=dtype or str(rng.choice(["uint16", "uint16", "uint8", "float32", "uint16_8bit"])),
        # drawn last, so that every other field is drawn as before the halo existed
        glow=(0.0, float(rng.uniform(0.1, 0.45))) if rng.random() < 0.5 else (0.0, 0.0),
        overlap=float(rng.uniform(0.1, 0.6)) if rng.random() < 0.5 else 0.0,
    )
