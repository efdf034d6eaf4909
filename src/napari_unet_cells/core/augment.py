"""Training-time augmentation: the paper's elastic deformation, flips, rotations, intensity.

The U-Net paper (section 3.1) deforms each training tile with "random displacement
vectors on a coarse 3 by 3 grid", drawn from a Gaussian with 10 px standard deviation and
turned into per-pixel displacements by bicubic interpolation. Here the coarse grid spans
the network input tile (its corners are the tile's corner pixels); the per-pixel field
is ``torch.nn.functional.interpolate(mode="bicubic", align_corners=True)`` of the grid,
and the tile is resampled with ``grid_sample``: the image and the loss weight map
bilinearly, the class target and the instance labels by nearest neighbour (so ids stay
exact and no new ids appear). Pixels pulled from outside the tile are mirrored
("reflection" padding), as prediction mirrors context beyond the image.

Drawing the random parameters (``draw_params``, numpy ``Generator``) is separate from
applying them (``augment_batch``, torch on the training device), so one drawn
deformation is applied to image, weight map, target and labels alike, and the same seed
gives the same batch on any device.

The weight map is deformed *with* the image (bilinearly), not recomputed from the
deformed labels. This is what the authors' Caffe implementation did, it lets the weight
map be computed once per training image (whole-image distances, so cells at a tile's
edge see their real neighbours), and it costs nothing per step; the 3x3-grid deformation
is so smooth (~10 px over a whole tile) that the distances d1 + d2 it would change by
are a few percent. ``benchmarks/bench_finetune.py`` measures the alternative's cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import AugmentConfig


@dataclass(frozen=True)
class AugmentParams:
    """One drawn augmentation of one square tile.

    displacement: (2, G, G) float32, displacement in pixels (dy, dx) at the coarse grid
        points; the tile pixel at p is taken from p + displacement(p).
    rot90: number of counter-clockwise quarter turns (0..3), applied after the flips.
    flip_y, flip_x: flips of the rows / columns.
    gain, offset: image -> image * gain + offset (normalised intensities).
    noise_std: std of added Gaussian noise; noise_seed seeds its torch generator.
    zoom: magnification about the tile centre (> 1 enlarges cells, < 1 shrinks them).
    """

    displacement: np.ndarray
    zoom: float = 1.0
    rot90: int = 0
    flip_y: bool = False
    flip_x: bool = False
    gain: float = 1.0
    offset: float = 0.0
    noise_std: float = 0.0
    noise_seed: int = 0

    @classmethod
    def identity(cls, grid: int = 3) -> AugmentParams:
        """No change at all (zero displacement, no flips, unit gain)."""
        return cls(displacement=np.zeros((2, grid, grid), np.float32))


def draw_params(
    rng: np.random.Generator, config: AugmentConfig | None = None, n: int = 1
) -> list[AugmentParams]:
    """Draw ``n`` independent augmentations.

    Parameters
    ----------
    rng : the only source of randomness.
    config : the recipe (default AugmentConfig(): the paper's 3x3 grid, 10 px).
    n : how many (one per tile).

    Returns
    -------
    ``n`` AugmentParams."""
    config = config or AugmentConfig()
    g = config.elastic_grid
    out = []
    for _ in range(n):
        displacement = rng.normal(0.0, 1.0, (2, g, g)).astype(np.float32)
        displacement *= np.float32(config.elastic_sigma)
        rot = int(rng.integers(4))
        flips = rng.random(2) < 0.5
        gain = 1.0 + rng.uniform(-config.gain, config.gain)
        offset = rng.uniform(-config.offset, config.offset)
        noise = rng.uniform(0.0, config.noise)
        seed = int(rng.integers(2**62))
        zoom = 1.0
        if config.scale > 0:  # (drawn only when enabled: the same streams as before)
            reach = np.log1p(config.scale)
            zoom = float(np.exp(rng.uniform(-reach, reach)))
        out.append(
            AugmentParams(
                displacement=displacement,
                zoom=zoom,
                rot90=rot if config.rotate90 else 0,
                flip_y=bool(flips[0]) and config.flip,
                flip_x=bool(flips[1]) and config.flip,
                gain=float(gain),
                offset=float(offset),
                noise_std=float(noise),
                noise_seed=seed,
            )
        )
    return out


def displacement_field(displacement: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Per-pixel displacements from coarse-grid ones by bicubic interpolation.

    Parameters
    ----------
    displacement : (N, 2, G, G) float, px (dy, dx) at the grid points.
    shape : (H, W), px.

    Returns
    -------
    (N, 2, H, W) float32, px; the grid's corner points sit on the corner pixels
    (``align_corners=True``).
    """
    return F.interpolate(displacement, size=shape, mode="bicubic", align_corners=True)


def sampling_grid(field: torch.Tensor) -> torch.Tensor:
    """The ``grid_sample`` grid for per-pixel displacements.

    Parameters
    ----------
    field : (N, 2, H, W) displacement (dy, dx), px.

    Returns
    -------
    (N, H, W, 2) in [-1, 1], (x, y) order.
    """
    n, _, h, w = field.shape
    theta = torch.eye(2, 3, dtype=field.dtype, device=field.device).expand(n, 2, 3)
    identity = F.affine_grid(theta, [n, 1, h, w], align_corners=True)  # (N, H, W, 2) x, y
    scale = torch.tensor(
        [2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=field.dtype, device=field.device
    )
    return identity + field.flip(1).permute(0, 2, 3, 1) * scale


def elastic_deform(
    displacement: torch.Tensor,
    smooth: torch.Tensor | None = None,
    nearest: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Apply one deformation per sample to smooth and nearest-neighbour channels.

    Parameters
    ----------
    displacement : (N, 2, G, G) coarse-grid displacements, px.
    smooth : (N, C, H, W) float (image, weight map): interpolated bilinearly.
    nearest : (N, K, H, W) float holding integers (labels, class target): nearest
        neighbour, so every output value is one of the input values.

    Returns
    -------
    The deformed (smooth, nearest), same shapes (None where not given). Pixels from
    outside the tile are mirrored.
    """
    ref = smooth if smooth is not None else nearest
    assert ref is not None
    field = displacement_field(displacement.to(ref.device, torch.float32), ref.shape[-2:])
    grid = sampling_grid(field)
    out_s = out_n = None
    if smooth is not None:
        out_s = F.grid_sample(
            smooth, grid, mode="bilinear", padding_mode="reflection", align_corners=True
        )
    if nearest is not None:
        out_n = F.grid_sample(
            nearest,
            grid.to(nearest.dtype),
            mode="nearest",
            padding_mode="reflection",
            align_corners=True,
        )
    return out_s, out_n


def _orient(x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """Flips then quarter turns of one (C, H, W) tensor."""
    dims = [d for d, f in ((-2, p.flip_y), (-1, p.flip_x)) if f]
    if dims:
        x = torch.flip(x, dims)
    if p.rot90:
        x = torch.rot90(x, p.rot90, dims=(-2, -1))
    return x


@dataclass
class AugmentedBatch:
    """Augmented tiles as torch tensors on the training device.

    image: (N, 1, S, S) float32 input tiles.
    weight: (N, S, S) float32 loss weights (0 = not supervised).
    target: (N, S, S) int64 classes (0 background, 1 cell).
    labels: (N, S, S) int64 instance ids, or None if not asked for.
    """

    image: torch.Tensor
    weight: torch.Tensor
    target: torch.Tensor
    labels: torch.Tensor | None = None


def _orient_np(a: np.ndarray, p: AugmentParams) -> np.ndarray:
    """The flips and quarter turns of ``_orient`` on the last two axes of a numpy array."""
    if p.flip_y:
        a = a[..., ::-1, :]
    if p.flip_x:
        a = a[..., ::-1]
    return np.rot90(a, p.rot90, axes=(-2, -1)) if p.rot90 else a


def _orientation_theta(p: AugmentParams) -> np.ndarray:
    """(2, 3) affine map for ``affine_grid``: output (x, y) -> input (x, y), normalised.

    Read off the orientation applied to a 3x3 probe of normalised coordinates, so it is
    the exact inverse of ``_orient`` whatever the combination of flips and turns.
    """
    ys, xs = np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], indexing="ij")
    oriented = _orient_np(np.stack([xs, ys]), p)  # oriented[:, q] = coordinates of r(q)
    # r(q) is linear in q: its columns are r at (x=1, y=0) and (x=0, y=1)
    theta = np.zeros((2, 3), np.float32)
    theta[:, 0] = oriented[:, 1, 2]
    theta[:, 1] = oriented[:, 2, 1]
    return theta


def augment_batch(
    params: Sequence[AugmentParams],
    image: np.ndarray,
    weight: np.ndarray,
    target: np.ndarray,
    labels: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> AugmentedBatch:
    """Apply ``params[i]`` to tile i of each array; runs in torch on ``device``.

    Parameters
    ----------
    params : one AugmentParams per tile (``draw_params``).
    image, weight : (N, S, S) float32; S the same on both axes (quarter turns keep the
        shape), px.
    target : (N, S, S) small integers (the class per pixel).
    labels : optional (N, S, S) integer instance ids (< 2**24).
    device : where the work runs.

    Returns
    -------
    An AugmentedBatch on ``device``: image (N, 1, S, S) float32, weight, target, labels.

    Flips and quarter turns are folded into the deformation's sampling grid, so the whole
    batch is resampled by one ``grid_sample`` call per interpolation mode (few, large
    operations: fast on GPUs and on busy CPUs alike). Without displacement the tiles are
    only flipped/turned, exactly.
    """
    device = torch.device(device)
    n, h, w = image.shape
    smooth = torch.from_numpy(np.stack([image, weight], axis=1).astype(np.float32, copy=False))
    nearest_np = [target] if labels is None else [target, labels]
    if labels is not None and labels.size and int(labels.max()) >= 2**24:
        ntype = np.float64  # float32 holds integers exactly only below 2**24
    else:
        ntype = np.float32
    nearest = torch.from_numpy(np.stack(nearest_np, axis=1).astype(ntype, copy=False))
    smooth, nearest = smooth.to(device), nearest.to(device)
    if any(p.displacement.any() or p.zoom != 1.0 for p in params):
        coarse = np.stack([_orient_np(p.displacement, p) for p in params]).astype(np.float32)
        field = displacement_field(torch.from_numpy(coarse).to(device), (h, w))
        thetas = [_orientation_theta(p) / np.float32(p.zoom) for p in params]
        theta = torch.from_numpy(np.stack(thetas)).to(device)
        base = F.affine_grid(theta, [n, 1, h, w], align_corners=True)  # (N, H, W, 2) x, y
        scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=device)
        grid = base + field.flip(1).permute(0, 2, 3, 1) * scale
        smooth = F.grid_sample(
            smooth, grid, mode="bilinear", padding_mode="reflection", align_corners=True
        )
        nearest = F.grid_sample(
            nearest,
            grid.to(nearest.dtype),
            mode="nearest",
            padding_mode="reflection",
            align_corners=True,
        )
    else:
        smooth = torch.stack([_orient(smooth[i], p) for i, p in enumerate(params)])
        nearest = torch.stack([_orient(nearest[i], p) for i, p in enumerate(params)])
    gain = torch.tensor([p.gain for p in params], device=device).view(n, 1, 1)
    offset = torch.tensor([p.offset for p in params], device=device).view(n, 1, 1)
    img = smooth[:, 0] * gain + offset
    if any(p.noise_std > 0 for p in params):
        noise = torch.stack(
            [
                p.noise_std
                * torch.randn((h, w), generator=torch.Generator().manual_seed(p.noise_seed))
                for p in params
            ]
        )
        img = img + noise.to(device)
    return AugmentedBatch(
        image=img.unsqueeze(1),
        weight=smooth[:, 1].clamp_min(0.0),
        target=nearest[:, 0].round().long(),
        labels=nearest[:, 1].round().long() if labels is not None else None,
    )
