"""The one tile loop: a normalised plane -> one score per pixel, tile by tile, in batches.

``predict_plane`` is shared by in-memory prediction (core/predict.py, plane by plane),
chunked prediction (core/predict_large.py, one dask chunk with its overlap at a time) and
validation during training (core/train.py, regions with their real context). It

- plans the overlap tiles of the plane, or of a ``core`` region of it whose surroundings
  are real context (core/tiling.py),
- reads them (mirroring outside the plane) into one reused batch buffer and calls the
  predictor once per batch,
- stitches the weighted sum of the class probabilities (``cell_score_weights``, or one
  class index) of each tile's write region into a preallocated float32 array,
- yields a ``PredictProgress`` per tile and checks the stop flag between batches,
- on an out-of-memory error frees the cache, halves the input tile and redoes the plane,
  down to the smallest valid tile; then continues on the CPU (``predictor.on_cpu()``),
  with a message in the progress event.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UNetCellsError
from .predictor import Predictor, is_out_of_memory
from .progress import StopFlag, stop_requested
from .tiling import TileGrid, plan_tiles, read_tile, shift_reads, smallest_tile, snap_tile

if TYPE_CHECKING:  # pragma: no cover
    from .config import ModelConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictProgress:
    """One progress event: ``done`` of ``total`` tiles over all planes.

    plane / n_planes: the plane being processed (stacks, time series).
    tile_shape: the input tile size in use, px; message: news for the user (OOM fallback,
    channel handling), else "".
    """

    done: int
    total: int
    plane: int = 0
    n_planes: int = 1
    tile_shape: tuple[int, int] = (0, 0)
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class PlaneScores:
    """What ``predict_plane`` returns.

    scores: float32 (Y', X'), the score of every pixel of the predicted region.
    predictor: the predictor that finished the plane: the one given, or its CPU fallback
        after an out-of-memory error (use it for the next planes).
    tile: the input tile size that fitted, px (smaller than asked after out-of-memory).
    n_tiles: tiles predicted in the last (successful) pass.
    """

    scores: np.ndarray
    predictor: Predictor
    tile: int
    n_tiles: int


def predict_tiles(
    plane: np.ndarray,
    grid: TileGrid,
    predictor: Predictor,
    out: np.ndarray,
    *,
    channel: int | np.ndarray = 1,
    batch_size: int = 1,
    stop: StopFlag = None,
) -> Generator[int, None, bool]:
    """Run ``predictor`` over the tiles of ``grid`` and stitch the score into ``out``.

    Parameters
    ----------
    plane : numpy.ndarray
        (Y, X, C) float32, normalised; the tiles' read regions index it.
    grid : TileGrid
        The tiles (``plan_tiles``, possibly ``shift_reads``).
    predictor : Predictor
        (B, C, Ty, Tx) -> (B, K, Oy, Ox) class probabilities.
    out : numpy.ndarray
        (Y', X') float32, preallocated (on the CPU): the write regions index it.
    channel : int or numpy.ndarray
        A class index, or class weights (K,) (``cell_score_weights``): then the weighted
        sum of the K class probabilities is stitched.
    batch_size : int
        Tiles per predictor call.
    stop : StopFlag
        Checked before every batch.

    Yields the index of each finished tile; returns False if stopped (``out`` is then
    incomplete), True when every write region has been filled.
    """
    ty, tx = grid.tile_shape
    n_channels = plane.shape[-1]
    buffer = np.empty((max(1, batch_size), n_channels, ty, tx), np.float32)
    tiles = grid.tiles
    for first in range(0, len(tiles), batch_size):
        if stop_requested(stop):
            return False
        batch = tiles[first : first + batch_size]
        for i, tile in enumerate(batch):
            buffer[i] = read_tile(plane, tile).transpose(2, 0, 1)
        probs = predictor(buffer[: len(batch)])
        expected = (len(batch), grid.out_shape[0], grid.out_shape[1])
        if probs.ndim != 4 or (probs.shape[0], *probs.shape[2:]) != expected:
            raise UNetCellsError(
                f"The predictor returned shape {probs.shape} for {len(batch)} tiles of "
                f"{ty}x{tx} px; expected ({expected[0]}, K, {expected[1]}, {expected[2]})."
            )
        for i, tile in enumerate(batch):
            y0, y1, x0, x1 = tile.write
            cy0, cy1, cx0, cx1 = tile.crop
            if np.ndim(channel) == 0:
                out[y0:y1, x0:x1] = probs[i, channel, cy0:cy1, cx0:cx1]
            else:
                crop = probs[i, :, cy0:cy1, cx0:cx1]
                out[y0:y1, x0:x1] = np.tensordot(channel, crop, axes=1)
            yield tile.index
    return True


def predict_plane(
    predictor: Predictor,
    plane: np.ndarray,
    config: ModelConfig | Any,
    weights: int | np.ndarray = 1,
    *,
    tile: int,
    batch_size: int = 1,
    core: tuple[int, int, int, int] | None = None,
    out: np.ndarray | None = None,
    stop: StopFlag = None,
    plane_index: int = 0,
    n_planes: int = 1,
    done_before: int = 0,
) -> Generator[PredictProgress, None, PlaneScores | None]:
    """Score every pixel of one normalised plane (or of a region of it), tile by tile.

    Parameters
    ----------
    predictor : Predictor
        (B, C, Ty, Tx) float32 -> (B, K, Oy, Ox) float32 class probabilities, e.g. a
        ``TorchPredictor``. Its ``release()`` and ``on_cpu()`` are used after an
        out-of-memory error when it has them.
    plane : numpy.ndarray
        (Y, X) or (Y, X, C) float32, normalised (``core.normalize``).
    config : ModelConfig
        The network's ``depth`` and ``padding`` (anything with these attributes).
    weights : int or numpy.ndarray
        A class index, or float32 (K,) class weights (``cell_score_weights``).
    tile : int
        Input tile size, px (snapped to a valid size; ``auto_tile_and_batch``).
    batch_size : int
        Tiles per predictor call.
    core : (y0, y1, x0, x1), optional
        Predict only this region of ``plane``; the pixels around it are real context. The
        result then equals prediction of the whole image exactly when the region starts on
        the image's 2**depth px pooling grid and ``plane`` carries at least
        ``tiling.dependency_reach`` px of context around it (or ends at the image's edge,
        where context is mirrored). None: the whole plane, mirrored at its edges.
    out : numpy.ndarray, optional
        float32 (y1 - y0, x1 - x0) to write into (e.g. a plane of a preallocated stack).
    stop : StopFlag
        Checked between batches; no tile event follows a stop request.
    plane_index, n_planes, done_before : int
        Where this plane sits in a longer run, for the events' ``done`` / ``total``
        (tiles of earlier planes, and this plane's tile count for the planes left).

    Yields
    ------
    PredictProgress
        One per finished tile, and one with a message after each out-of-memory retry.

    Returns
    -------
    PlaneScores or None
        The scores (float32 (Y', X'), in ``out`` if given) with the predictor and input
        tile size that finished; None if stopped.
    """
    plane = plane[..., None] if plane.ndim == 2 else plane
    y0, y1, x0, x1 = core if core is not None else (0, plane.shape[0], 0, plane.shape[1])
    shape = (y1 - y0, x1 - x0)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape:
        raise UNetCellsError(f"out has shape {out.shape}, the region {shape}.")
    while True:
        grid = plan_tiles(shape, tile, config.depth, config.padding)
        if (y0, x0) != (0, 0):
            grid = shift_reads(grid, y0, x0)
        total = done_before + len(grid) * (n_planes - plane_index)
        count = 0
        try:
            tiles = predict_tiles(
                plane, grid, predictor, out, channel=weights, batch_size=batch_size, stop=stop
            )
            for _ in tiles:
                count += 1
                yield PredictProgress(
                    done_before + count, total, plane_index, n_planes, grid.tile_shape
                )
                if stop_requested(stop):
                    return None
        except Exception as err:  # only out-of-memory is handled here
            if not is_out_of_memory(err):
                raise
            predictor, tile, message = shrink_after_oom(
                predictor, grid, config.depth, config.padding
            )
            logger.warning(message)
            yield PredictProgress(
                done_before, total, plane_index, n_planes, grid.tile_shape, message
            )
            continue
        if stop_requested(stop):
            return None
        return PlaneScores(out, predictor, tile, count)


def shrink_after_oom(
    predictor: Predictor, grid: TileGrid, depth: int, padding: str
) -> tuple[Predictor, int, str]:
    """After an out-of-memory error: the predictor, tile size and message for the next try.

    Frees the predictor's cached memory (its ``release``, if any), then halves the tile;
    at the smallest tile, switches to ``predictor.on_cpu()`` with the same tile.

    Parameters
    ----------
    predictor : Predictor
        The predictor that ran out of memory.
    grid : TileGrid
        The grid being run (its largest tile side is the current size).
    depth : int
        The network's number of poolings.
    padding : {"valid", "same"}
        The network's padding.

    Returns
    -------
    predictor : Predictor
        The same predictor, or its CPU copy.
    tile : int
        Input tile size for the next try, px (a valid size).
    message : str
        What was done, for the user.

    Raises
    ------
    UNetCellsError
        Out of memory at the smallest tile and no ``on_cpu`` fallback (None or missing).
    """
    release = getattr(predictor, "release", None)
    if release is not None:
        release()
    current = max(grid.tile_shape)
    smallest = smallest_tile(depth, padding)  # type: ignore[arg-type]
    if current > smallest:
        tile = snap_tile(current // 2, depth, padding)  # type: ignore[arg-type]
        return (
            predictor,
            tile,
            f"Out of memory with {current} px tiles: freed the cache, retrying with {tile} px.",
        )
    on_cpu = getattr(predictor, "on_cpu", None)
    fallback = on_cpu() if on_cpu is not None else None
    if fallback is None:
        raise UNetCellsError(
            f"Out of memory even with the smallest tile ({smallest} px) on this device: "
            "close other programs that use a lot of memory, or predict a smaller (cropped) "
            "image or a smaller model."
        )
    return (
        fallback,
        current,
        f"Out of memory on the GPU even with {current} px tiles: continuing on the CPU (slower).",
    )
