"""Images larger than memory, and files: chunked prediction with dask, TIFF/zarr in and out.

``predict_probabilities_dask`` runs the network chunk by chunk with
``dask.array.map_overlap``, each chunk with the network's reach of real neighbouring
pixels as overlap, through the same tile loop as the in-memory path
(``core/tile_loop.py``: batches, out-of-memory retry, CPU fallback), so the result equals
the in-memory prediction (``core/predict.py``).
``predict_file`` reads a TIFF or zarr (OME-Zarr) image, segments it (in memory or with
dask) and writes the labels atomically, never over an existing file; it is what
``unet-cells predict`` runs, on the current dask scheduler (e.g. a dask.distributed
Client). Reading and writing the files is core/image_files.py (``file_kind``,
``open_image``, ``write_array``, ``check_output``, re-exported here).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import InstanceConfig, PredictConfig
from .diameter import estimate_diameter
from .errors import UNetCellsError
from .fileio import remove_quietly
from .image_files import TIFF_SUFFIXES as TIFF_SUFFIXES
from .image_files import ZARR_SUFFIXES as ZARR_SUFFIXES
from .image_files import check_output, open_image, write_array
from .image_files import file_kind as file_kind
from .normalize import NormalizationParams, apply_normalization, normalization_params, normalize
from .predict import predict_iter, probabilities_on_image_grid
from .predictor import (
    Predictor,
    TorchPredictor,
    auto_tile_and_batch,
    cell_score_weights,
    predictor_device,
)
from .progress import StopFlag, run
from .registry import resolve_model
from .tile_loop import PredictProgress, predict_plane

if TYPE_CHECKING:  # pragma: no cover
    import dask.array

    from .checkpoint import CellModel

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# images larger than memory: dask
# --------------------------------------------------------------------------------------


def plane_sample(array: Any, max_values: int = 1 << 20) -> np.ndarray:
    """A regular subsample of a (Y, X) array-like with at most ``max_values`` values.

    The same step is taken along Y and X; a dask array is computed (only the sampled
    pixels are read).

    Parameters
    ----------
    array : array_like
        (..., Y, X) numpy, dask or zarr array.
    max_values : int
        Upper bound on the sampled (Y, X) pixels.

    Returns
    -------
    numpy.ndarray
        (..., ceil(Y / s), ceil(X / s)) with step s >= 1, the input's dtype.
    """
    height, width = array.shape[-2:]
    step = max(1, math.ceil(math.sqrt(height * width / max_values)))
    sample = array[..., ::step, ::step]
    if hasattr(sample, "compute"):
        sample = sample.compute()
    return np.asarray(sample)


def _predict_block(
    block: np.ndarray,
    model: CellModel,
    params: NormalizationParams,
    config: PredictConfig,
    pads: tuple[tuple[int, int], tuple[int, int]],
) -> np.ndarray:
    """One dask block (with ``pads`` px of overlap before/after per axis) -> cell scores.

    Context inside the image comes from the overlap (real pixels); at the image's edges,
    where dask adds no overlap, the tile reader mirrors. Runs the shared tile loop (with
    its out-of-memory retry and CPU fallback, remembered for the next blocks). Returns
    float32 scores of the block's core, without the overlap.
    """
    (top, bottom), (left, right) = pads
    plane = apply_normalization(block, params)
    core = (top, plane.shape[0] - bottom, left, plane.shape[1] - right)
    cached = _cached_predictor(model, config)
    predictor, wanted = cached.predictor, cached.tile or config.tile
    tile, batch_size = auto_tile_and_batch(
        model.config, predictor_device(predictor), wanted, config.batch_size
    )
    done = run(
        predict_plane(
            predictor,
            plane,
            model.config,
            cell_score_weights(model),
            tile=tile,
            batch_size=batch_size,
            core=core,
        )
    )
    if done.predictor is not predictor or done.tile != tile:  # out of memory: remember
        with _PREDICTOR_LOCK:
            cached.predictor, cached.tile = done.predictor, done.tile
    return done.scores


@dataclass
class _CachedRun:
    """A predictor kept for the blocks of one model, and the input tile that fitted after
    an out-of-memory retry (None: not needed yet)."""

    model: CellModel
    predictor: Predictor
    tile: int | None = None


_PREDICTOR_CACHE: dict[tuple, _CachedRun] = {}
_PREDICTOR_LOCK = threading.Lock()


def _cached_predictor(model: CellModel, config: PredictConfig) -> _CachedRun:
    """One TorchPredictor per model object, device and TTA setting (dask workers reuse it).

    The cache holds the model itself, so its id cannot be recycled by another model. A
    predictor for another model replaces the cached one, which is closed (its copy of
    the weights and its cached device memory freed).
    """
    key = (id(model), id(model.net), config.device, config.tta)
    evicted: list[_CachedRun] = []
    with _PREDICTOR_LOCK:
        cached = _PREDICTOR_CACHE.get(key)
        if cached is None or cached.model is not model:
            evicted = list(_PREDICTOR_CACHE.values())
            _PREDICTOR_CACHE.clear()
            cached = _CachedRun(model, TorchPredictor(model.net, config.device, tta=config.tta))
            _PREDICTOR_CACHE[key] = cached
    for old in evicted:
        old.predictor.close()  # type: ignore[attr-defined]
    return cached


def release_cached_predictors() -> None:
    """Forget the cached predictors of this process and free their device memory."""
    with _PREDICTOR_LOCK:
        cached = list(_PREDICTOR_CACHE.values())
        _PREDICTOR_CACHE.clear()
    for entry in cached:
        entry.predictor.close()  # type: ignore[attr-defined]


def predict_probabilities_dask(
    image: dask.array.Array,
    model: CellModel | str | Path | None = None,
    config: PredictConfig | None = None,
    *,
    chunk: int | None = None,
) -> dask.array.Array:
    """Lazy cell scores of a large (Y, X) greyscale dask array, chunk by chunk.

    Each chunk is predicted by ``dask.array.map_overlap`` with the network's reach
    (``tiling.dependency_reach``: context margin + 2**depth px) of real neighbouring
    pixels as overlap, mirrored only at the image edges, so the result equals the
    in-memory prediction. Chunks are realigned to multiples of 2**depth px (``chunk`` px
    if given) so that every tile keeps the pooling grid of the whole image. Memory per
    task: one chunk with its overlap, its output and one batch of tiles. The
    normalisation (``normalization_params``) is measured once on a regular subsample of
    at most 2**20 pixels and applied to every chunk.

    Parameters
    ----------
    image : dask.array.Array
        (Y, X), any real dtype.
    model : CellModel, str, Path or None
        A 1-channel model, a model file, a session model's name, or None (bundled).
    config : PredictConfig, optional
        Device, input tile size (px), batch size, TTA.
    chunk : int, optional
        Chunk size in px (rounded up to the pooling grid); default: the array's chunks.

    Returns
    -------
    dask.array.Array
        float32 (Y, X) cell scores (``cell_score_weights``) with the realigned chunks.

    Raises
    ------
    UNetCellsError
        For a stack or RGB image, a multi-channel model, an empty or non-numeric array.
    """
    import dask
    import dask.array as da

    from .tiling import dependency_reach

    config = config or PredictConfig()
    cell_model = resolve_model(model)
    cfg = cell_model.config
    if image.ndim != 2:
        raise UNetCellsError(
            f"Chunked (zarr) prediction needs a 2D (Y, X) greyscale image, got shape "
            f"{image.shape}; for stacks or RGB use a TIFF file or the Python API."
        )
    if cfg.in_channels != 1:
        raise UNetCellsError(
            f"Chunked (zarr) prediction supports 1-channel models only; this one reads "
            f"{cfg.in_channels} channels: use a TIFF file or the Python API."
        )
    if 0 in image.shape:
        raise UNetCellsError(
            f"The image is empty (shape {image.shape}): it has no pixels; check the zarr array."
        )
    if image.dtype.kind not in "uifb":
        raise UNetCellsError(
            f"Cannot segment an image of dtype {image.dtype}: give a numeric (integer or "
            "float) image."
        )
    reach = dependency_reach(cfg.depth, cfg.padding)
    image = align_chunks(image, 2**cfg.depth, reach, chunk)
    params = normalization_params(plane_sample(image), cell_model.normalization)
    numblocks = image.numblocks

    def block_fn(block, model=None, block_id=None):
        pads = tuple(
            (reach if block_id[a] > 0 else 0, reach if block_id[a] < numblocks[a] - 1 else 0)
            for a in range(2)
        )
        return _predict_block(block, model, params, config, pads)

    return da.map_overlap(
        block_fn,
        image,
        model=dask.delayed(cell_model, pure=True),
        depth={0: reach, 1: reach},
        boundary="none",
        trim=False,
        dtype=np.float32,
        chunks=image.chunks,
        meta=np.empty((0, 0), np.float32),
    )


def align_chunks(image, step: int, reach: int, chunk: int | None = None):
    """Rechunk a 2D dask array: regular chunks, multiples of ``step``, all > ``reach`` px.

    Parameters
    ----------
    image : dask.array.Array
        (Y, X), any chunks.
    step : int
        Chunk sizes are multiples of this, px (``2**depth``: chunks start on the pooling
        grid).
    reach : int
        Every chunk, the last included, is larger than this, px (the overlap).
    chunk : int, optional
        Wanted chunk size, px; default: the array's largest chunk.

    Returns
    -------
    dask.array.Array
        ``image`` itself if its chunks already qualify, else a rechunked view.
    """
    new_chunks = []
    for axis, length in enumerate(image.shape):
        current = image.chunks[axis]
        starts_ok = all(c % step == 0 and c == current[0] for c in current[:-1])
        sizes_ok = len(current) == 1 or (min(current) > reach and current[-1] <= current[0])
        if chunk is None and starts_ok and sizes_ok:
            new_chunks.append(current)
            continue
        target = chunk or max(current)
        target = max(math.ceil(target / step) * step, math.ceil((reach + 1) / step) * step)
        # regular chunks (zarr needs them); a last chunk, if shorter, still exceeds the reach
        while target < length and 0 < length % target <= reach:
            target += step
        if target >= length:
            new_chunks.append((length,))
            continue
        sizes = [target] * (length // target)
        if length % target:
            sizes.append(length % target)
        new_chunks.append(tuple(sizes))
    new_chunks = tuple(new_chunks)
    return image if new_chunks == image.chunks else image.rechunk(new_chunks)


def predict_file(
    source: str | Path,
    output: str | Path,
    model: CellModel | str | Path | None = None,
    config: PredictConfig | None = None,
    instances: InstanceConfig | None = None,
    *,
    probabilities: str | Path | None = None,
    chunk: int | None = None,
    progress: Callable[[PredictProgress], None] | None = None,
    diameter: float | str | None = "auto",
    channel_axis: int | None = None,
    channel: int | None = None,
) -> dict[str, Any]:
    """Segment the image in ``source`` and write labels (int32) to ``output``.

    TIFF in: in memory, any layout ``predict`` accepts, resampled to the model's cell
    size. zarr in: chunk by chunk with ``dask.array.map_overlap``
    (``predict_probabilities_dask`` and ``core.instances.labels_dask``), in bounded
    memory, at the image's own scale. Outputs are TIFF or zarr by suffix, written under a
    temporary name and renamed when complete (``core.fileio``), never over an existing
    file, so a failure leaves nothing partial. Runs on the current dask scheduler (e.g. a
    dask.distributed Client).

    Parameters
    ----------
    source : str or Path
        A TIFF (.tif, .tiff) or zarr / OME-Zarr (.zarr) image.
    output : str or Path
        Where the int32 (Y, X) labels go (.tif, .tiff or .zarr); must not exist.
    model : CellModel, str, Path or None
        A model, a model file, a session model's name, or None (bundled).
    config : PredictConfig, optional
        Device, input tile size (px), batch size, TTA.
    instances : InstanceConfig, optional
        The instance step (default: the model's recommendation).
    probabilities : str or Path, optional
        Also write the float32 cell scores (on the input's grid) there.
    chunk : int, optional
        Chunk size in px for zarr input.
    progress : callable, optional
        Receives a PredictProgress per tile (TIFF input).
    diameter : float, "auto" or None
        Typical cell diameter in px (see ``core.predict.predict``). Chunked zarr
        prediction does not resample yet: a given diameter that needs it is an error, and
        an estimated one that would need it is reported in the summary's "messages".
    channel_axis, channel : int, optional
        Which axis of a TIFF holds channels and which channel to segment
        (``core.axes.file_layout`` reads them from the file's metadata).

    Returns
    -------
    dict
        {"input", "output", "cells", "messages"}.
    """
    return run(
        predict_file_iter(
            source,
            output,
            model,
            config,
            instances,
            probabilities=probabilities,
            chunk=chunk,
            diameter=diameter,
            channel_axis=channel_axis,
            channel=channel,
        ),
        progress,
    )


def predict_file_iter(
    source: str | Path,
    output: str | Path,
    model: CellModel | str | Path | None = None,
    config: PredictConfig | None = None,
    instances: InstanceConfig | None = None,
    *,
    probabilities: str | Path | None = None,
    chunk: int | None = None,
    diameter: float | str | None = "auto",
    channel_axis: int | None = None,
    channel: int | None = None,
    stop: StopFlag = None,
) -> Generator[PredictProgress, None, dict[str, Any] | None]:
    """``predict_file`` as a generator of per-tile ``PredictProgress`` events.

    TIFF input yields an event per tile and checks ``stop`` between tiles; chunked zarr
    input yields none. Outputs are checked before any work and never overwritten.

    Parameters
    ----------
    source, output, model, config, instances, probabilities, chunk, diameter
        As for :func:`predict_file`.
    channel_axis, channel : int, optional
        As for :func:`predict_file`.
    stop : StopFlag
        Checked between tiles (TIFF input).

    Returns
    -------
    dict of str to Any, or None
        The generator's value: the same summary as ``predict_file``, or None when stopped
        (then nothing is written).

    Raises
    ------
    UNetCellsError
        As :func:`predict_file`.
    """
    source, output = Path(source), Path(output)
    from .instances import instance_defaults

    config = config or PredictConfig()
    check_output(output)
    prob_path = Path(probabilities) if probabilities is not None else None
    if prob_path is not None:
        check_output(prob_path)
    image = open_image(source)
    cell_model = resolve_model(model)
    instances = instances or instance_defaults(cell_model)
    messages: list[str] = []
    if hasattr(image, "compute"):
        messages = _chunked_scale_messages(image, cell_model, instances, config, diameter)
        n_cells = _predict_chunked(image, cell_model, config, instances, chunk, output, prob_path)
    else:
        result = yield from predict_iter(
            image,
            cell_model,
            config,
            instances,
            diameter=diameter,
            channel_axis=channel_axis,
            channel=channel,
            stop=stop,
        )
        if result is None:  # stopped: nothing written
            return None
        messages = list(dict.fromkeys(result.messages))  # size, signal, tiny-image notes
        probs = probabilities_on_image_grid(result) if prob_path is not None else None
        n_cells = _write_results(result.labels, output, probs, prob_path)
    logger.info("%s -> %s: %d cells", source, output, n_cells)
    return {"input": str(source), "output": str(output), "cells": n_cells, "messages": messages}


def _predict_chunked(
    image: dask.array.Array,
    model: CellModel,
    config: PredictConfig,
    instances: InstanceConfig,
    chunk: int | None,
    output: Path,
    prob_path: Path | None,
) -> int:
    """Scores and labels of a (Y, X) dask image through zarr files in a temporary folder
    next to ``output``; writes the results; returns the number of cells."""
    import tempfile

    import dask.array as da

    with tempfile.TemporaryDirectory(prefix=".unet-cells-", dir=output.parent) as work:
        work = Path(work)
        probs = predict_probabilities_dask(image, model, config, chunk=chunk)
        try:
            probs.to_zarr(str(work / "probabilities.zarr"))
        finally:
            release_cached_predictors()
        probs = da.from_zarr(str(work / "probabilities.zarr"))
        labels = labels_dask_from(probs, instances, work)
        return _write_results(labels, output, probs, prob_path)


def _chunked_scale_messages(image, model, instances, config, diameter) -> list[str]:
    """Chunked prediction runs at the image's own scale: refuse a given diameter that would
    need resampling; estimate on a central 1024 px crop and report if it would."""
    from .scale import factor_for, model_diameter, parse_diameter

    wanted, reference = parse_diameter(diameter), model_diameter(model)
    if wanted is None or reference is None:
        return []
    if isinstance(wanted, float):
        if factor_for(wanted, reference) != 1.0:
            raise UNetCellsError(
                f"Cells of {wanted:g} px need resampling to the model's {reference:g} px, which "
                "chunked (zarr) prediction does not do yet: resample the image by "
                f"{reference / wanted:.2f} first, or save it as TIFF, or give --diameter none."
            )
        return []
    plane = image[tuple(n // 2 for n in image.shape[:-2])]  # the middle plane of a stack
    h, w = plane.shape[-2:]
    y0, x0 = max(0, h // 2 - 512), max(0, w // 2 - 512)
    crop = np.asarray(plane[y0 : y0 + 1024, x0 : x0 + 1024])
    predictor = TorchPredictor(model.net, config.device)
    try:
        choice, _, _ = estimate_diameter(
            normalize(crop, model.normalization), model, predictor, instances
        )
    finally:
        predictor.close()
    if choice.factor == 1.0:
        return [choice.message] if choice.message else []
    return [
        f"{choice.message} Chunked (zarr) prediction does not resample yet, so this image "
        f"was predicted at its own scale: for better results resample it by "
        f"{choice.factor:.2f} first, or save it as TIFF."
    ]


def labels_dask_from(probs, instances: InstanceConfig, workdir: Path):
    """``core.instances.labels_dask`` (kept here so the file path reads top-down).

    Parameters
    ----------
    probs : dask.array.Array
        float (Y, X) cell probabilities in [0, 1].
    instances : InstanceConfig
        The post-processing settings.
    workdir : Path
        A folder that must exist until the result is computed.

    Returns
    -------
    dask.array.Array
        int32 (Y, X) instance labels, lazy.
    """
    from .instances import labels_dask

    return labels_dask(probs, instances, workdir)


def _write_results(labels, output: Path, probs, prob_path: Path | None) -> int:
    written = []
    try:
        if prob_path is not None:
            write_array(probs, prob_path)
            written.append(prob_path)
        write_array(labels, output)
    except BaseException:
        for path in written:  # all or nothing
            remove_quietly(path)
        raise
    top = labels.max()
    return int(top.compute() if hasattr(top, "compute") else top)
