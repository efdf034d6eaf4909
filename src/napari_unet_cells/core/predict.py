"""Batched overlap-tile inference: any image -> cell scores -> instance labels.

The pipeline for one image:

1. ``prepare_image`` (core/inputs.py): one place for input layouts: (Y, X) greyscale;
   (..., Y, X) stacks and time series, processed plane by plane; (..., Y, X, C)
   RGB/multichannel reduced or selected to the model's ``in_channels``; any dtype.
2. ``diameter="auto"``: the cell size is estimated (core/diameter.py) and each plane is
   resampled to the model's cell size (core/scale.py).
3. ``normalize`` (core/normalize.py, the function training uses) per plane.
4. The one tile loop (core/tile_loop.py ``predict_plane``): tiles of the plane
   (core/tiling.py) are batched and passed to a *predictor* (core/predictor.py: any
   callable ``(B, C, Ty, Tx) float32 -> (B, K, Oy, Ox) float32`` class probabilities;
   ``TorchPredictor`` runs the U-Net, tests pass fakes). The cell score
   (``cell_score_weights``) of each tile's write region is stitched into a preallocated
   CPU array, so peak memory does not grow with the number of tiles. On CUDA
   out-of-memory the cache is freed, the tile halved and the plane redone, down to the
   smallest valid tile; then the prediction falls back to the CPU, with a message.
5. ``core.instances.probabilities_to_labels`` turns scores into labels; it can be re-run
   with another threshold / minimum size without running the network again.

Long work is a generator (``predict_iter``, ``predict_probabilities_iter``) that yields a
``PredictProgress`` per tile and checks a stop flag between batches; its return value is
the result (None if stopped). ``predict`` runs it to completion.

Images larger than memory (zarr) and files go through ``core/predict_large.py``. The names
of the modules above are re-exported here, so ``from napari_unet_cells.core.predict import
prepare_image, TorchPredictor, auto_tile_and_batch, estimate_diameter, ...`` keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import InstanceConfig, PredictConfig
from .diameter import estimate_diameter, given_scale
from .inputs import (
    PreparedImage,
    channel_layout,
    describe_layout,
    guess_channel_axis,
    prepare_image,
)
from .normalize import MIN_SIGNAL_TO_NOISE, normalize, signal_to_noise
from .predictor import (
    BOUNDARY_SCORE,
    Predictor,
    TorchPredictor,
    auto_tile_and_batch,
    bytes_per_pixel,
    cell_class_index,
    cell_score_weights,
    is_out_of_memory,
    predictor_device,
)
from .progress import StopFlag, run, stop_requested
from .registry import resolve_model
from .scale import (
    ScaleChoice,
    model_diameter,
    parse_diameter,
    resize_plane,
    scaled_shape,
)
from .tile_loop import PlaneScores, PredictProgress, predict_plane, predict_tiles

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import CellModel

__all__ = [
    "BOUNDARY_SCORE",
    "PlaneScores",
    "PredictProgress",
    "PredictionResult",
    "Predictor",
    "PreparedImage",
    "TorchPredictor",
    "auto_tile_and_batch",
    "bytes_per_pixel",
    "cell_class_index",
    "cell_score_weights",
    "channel_layout",
    "describe_layout",
    "estimate_diameter",
    "guess_channel_axis",
    "is_out_of_memory",
    "predict",
    "predict_iter",
    "predict_plane",
    "predict_probabilities_iter",
    "predict_tiles",
    "prepare_image",
    "probabilities_on_image_grid",
    "resolve_model",
    "run",
    "tiny_image_message",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# cell scores
# --------------------------------------------------------------------------------------


def predict_probabilities_iter(
    image: Any,
    model: CellModel | str | Path | None = None,
    config: PredictConfig | None = None,
    *,
    predictor: Predictor | None = None,
    stop: StopFlag = None,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int | None = None,
    scale: float = 1.0,
) -> Generator[PredictProgress, None, np.ndarray | None]:
    """Cell scores of ``image`` (``cell_score_weights``), as a generator of progress events.

    Parameters
    ----------
    image : array-like
        (Y, X), stacks (..., Y, X), with channels: see ``prepare_image``.
    model : CellModel, str, Path or None
        A model, a model file, a session model's name, or None for the bundled model.
    config : PredictConfig, optional
        Device, input tile size (px), batch size, flip TTA.
    predictor : Predictor, optional
        Replaces the network call (tests, custom backends); it may have ``release()`` and
        ``on_cpu()`` (out-of-memory fallback). It is released, not closed, at the end.
    stop : StopFlag
        Checked between batches.
    rgb, channel_axis, channel : optional
        The channel layout (``prepare_image``).
    scale : float
        Resample each normalised plane by this factor first (core/scale.py).

    Yields
    ------
    PredictProgress
        One per tile over all planes, plus messages (channels, out-of-memory fallbacks).

    Returns
    -------
    numpy.ndarray or None
        float32 scores in [0, 1] of shape (..., Y', X'), Y' = round(Y * scale) (the
        generator's ``StopIteration.value``), or None if stopped.
    """
    config = config or PredictConfig()
    cell_model = resolve_model(model)
    net_config = cell_model.config
    prepared = prepare_image(
        image, net_config.in_channels, rgb=rgb, channel_axis=channel_axis, channel=channel
    )
    own = predictor is None
    if predictor is None:
        predictor = TorchPredictor(cell_model.net, config.device, tta=config.tta)
    device = predictor_device(predictor)
    tile, batch_size = auto_tile_and_batch(net_config, device, config.tile, config.batch_size)
    n_planes = prepared.planes.shape[0]
    logger.info(
        "predicting %d plane(s) of %s px on %s: input tiles of up to %d px, batch %d",
        n_planes,
        "x".join(map(str, prepared.plane_shape)),
        device,
        tile,
        batch_size,
    )
    if prepared.message:
        yield PredictProgress(0, 0, 0, n_planes, message=prepared.message)
    if net_config.padding != "valid":
        logger.warning(
            "This model uses 'same' padding: tiles overlap by the context margin, but tiled "
            "prediction is not exactly equal to whole-image prediction (small differences "
            "near tile edges); models with 'valid' padding, like the bundled one, have none."
        )
    was_training = cell_model.net.training
    created = [predictor] if own else []  # ours to close: own, and any CPU fallback
    try:
        out = yield from _score_planes(
            prepared, cell_model, predictor, tile, batch_size, scale, stop, created
        )
    finally:
        cell_model.net.train(was_training)
        for ours in created:
            ours.close()
        release = None if own else getattr(predictor, "release", None)
        if release is not None:
            release()
    if out is None:
        return None
    return out.reshape(*prepared.lead_shape, *out.shape[1:])


def _score_planes(
    prepared: PreparedImage,
    model: CellModel,
    predictor: Predictor,
    tile: int,
    batch_size: int,
    scale: float,
    stop: StopFlag,
    created: list,
) -> Generator[PredictProgress, None, np.ndarray | None]:
    """Every plane through the tile loop: float32 (N, Y', X'), or None if stopped.

    The input tile size and the predictor that fitted one plane (after out-of-memory
    retries) are kept for the next; CPU fallbacks are added to ``created`` and a GPU
    predictor of ours is closed as soon as it is replaced.
    """
    n_planes = prepared.planes.shape[0]
    grid_shape = scaled_shape(prepared.plane_shape, scale)
    out = np.empty((n_planes, *grid_shape), np.float32)
    weights = cell_score_weights(model)
    done = 0
    for index in range(n_planes):
        plane = normalize(prepared.planes[index], model.normalization)
        plane = resize_plane(plane, grid_shape)
        result = yield from predict_plane(
            predictor,
            plane,
            model.config,
            weights,
            tile=tile,
            batch_size=batch_size,
            out=out[index],
            stop=stop,
            plane_index=index,
            n_planes=n_planes,
            done_before=done,
        )
        if result is None:
            logger.info("prediction stopped")
            return None
        if result.predictor is not predictor:
            created.append(result.predictor)
            if any(p is predictor for p in created):
                predictor.close()  # type: ignore[attr-defined]  # our GPU copy is done
        predictor, tile, done = result.predictor, result.tile, done + result.n_tiles
    return out


# --------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------


@dataclass
class PredictionResult:
    """What a prediction produced.

    labels: int32 (..., Y, X) on the input's grid, 0 = background, 1..N one per cell
        (unique over the stack).
    probabilities: float32 (..., Y', X'), the cell score (``cell_score_weights``) on the
        grid the network saw: the input resampled by ``scale.factor`` (the input's own
        grid when 1). Re-label with ``probabilities_to_labels(probabilities, config,
        shape=image_shape)`` without running the network again.
    messages: notes for the user (channels, cell size, out-of-memory fallbacks).
    scale: how the input was resampled (core/scale.py ``ScaleChoice``).
    image_shape: (Y, X) of the input's planes.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    messages: tuple[str, ...] = ()
    scale: ScaleChoice = field(default_factory=ScaleChoice)
    image_shape: tuple[int, int] | None = None


def predict_iter(
    image: Any,
    model: CellModel | str | Path | None = None,
    config: PredictConfig | None = None,
    instances: InstanceConfig | None = None,
    *,
    predictor: Predictor | None = None,
    stop: StopFlag = None,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int | None = None,
    diameter: float | str | None = "auto",
) -> Generator[PredictProgress, None, PredictionResult | None]:
    """Cell scores and instance labels, as a generator of per-tile progress events.

    Stages: the cell size (given, estimated or none: ``_choose_scale``), the scores
    (``predict_probabilities_iter``, skipped when the estimate's pass already covered the
    image), planes without signal blanked, the instance step.

    Parameters
    ----------
    image, model, config, predictor, stop, rgb, channel_axis, channel
        As for ``predict_probabilities_iter``.
    instances : InstanceConfig, optional
        The instance step (default: the model's stored recommendation).
    diameter : float, "auto" or None
        The typical nucleus diameter in px, "auto" (estimated, ``estimate_diameter``) or
        None (no rescaling); used only with models that record their own diameter.

    Returns
    -------
    PredictionResult or None
        (``StopIteration.value``) None if stopped.
    """
    from .instances import instance_defaults, probabilities_to_labels

    model = resolve_model(model)
    config = config or PredictConfig()
    instances = instances or instance_defaults(model)
    messages: list[str] = []
    wanted = parse_diameter(diameter)
    prepared = prepare_image(
        image, model.config.in_channels, rgb=rgb, channel_axis=channel_axis, channel=channel
    )
    own = None
    if predictor is None and wanted == "auto" and model_diameter(model) is not None:
        predictor = own = TorchPredictor(model.net, config.device, tta=config.tta)
    try:
        choice, probs, reused = yield from _choose_scale(
            prepared, model, instances, wanted, predictor, config.tile, stop
        )
        if stop_requested(stop):
            return None
        if choice.message:
            messages.append(choice.message)
            yield PredictProgress(0, 0, 0, len(prepared.planes), message=choice.message)
        if probs is None:
            probs = yield from _collect_messages(
                predict_probabilities_iter(
                    image,
                    model,
                    config,
                    predictor=predictor,
                    stop=stop,
                    rgb=rgb,
                    channel_axis=channel_axis,
                    channel=channel,
                    scale=choice.factor,
                ),
                messages,
            )
    finally:
        if own is not None:
            own.close()
    if probs is None or stop_requested(stop):
        return None
    probs, blanked = yield from _blank_planes_without_signal(probs, prepared, messages)
    tiny = tiny_image_message(prepared.plane_shape, model_diameter(model))
    if tiny:
        messages.append(tiny)
        yield PredictProgress(0, 0, 0, len(prepared.planes), message=tiny)
    if reused is not None and not blanked and reused.shape == tuple(prepared.plane_shape):
        labels = reused.reshape(*prepared.lead_shape, *reused.shape)  # the estimate's cells
    else:
        labels = probabilities_to_labels(probs, instances, shape=prepared.plane_shape)
    return PredictionResult(
        labels=labels,
        probabilities=probs,
        messages=tuple(messages),
        scale=choice,
        image_shape=prepared.plane_shape,
    )


def _choose_scale(
    prepared: PreparedImage,
    model: CellModel,
    instances: InstanceConfig,
    wanted: float | str | None,
    predictor: Predictor | None,
    tile: int | None,
    stop: StopFlag,
) -> Generator[PredictProgress, None, tuple[ScaleChoice, np.ndarray | None, Any]]:
    """(ScaleChoice, scores, labels): how to resample, and the estimate's scores (..., Y,
    X) and labels when its pass covered the single plane (to be re-used), else None."""
    reference = model_diameter(model)
    if reference is None or wanted is None:
        return ScaleChoice(model_diameter=reference), None, None
    if isinstance(wanted, float):
        return given_scale(wanted, reference), None, None
    plane = normalize(prepared.planes[len(prepared.planes) // 2], model.normalization)
    choice, scores, reused = estimate_diameter(
        plane, model, predictor, instances, tile=tile, stop=stop
    )
    if scores is None or len(prepared.planes) != 1:
        return choice, None, None
    yield PredictProgress(1, 1, 0, 1)  # the estimate's pass was the whole image
    return choice, scores.reshape(*prepared.lead_shape, *scores.shape), reused


def _blank_planes_without_signal(
    probs: np.ndarray, prepared: PreparedImage, messages: list[str]
) -> Generator[PredictProgress, None, tuple[np.ndarray, bool]]:
    """Zero the scores of planes that are camera noise only; (scores, any blanked)."""
    empty = _planes_without_signal(prepared.planes)
    if not empty:
        return probs, False
    probs = probs.copy()
    flat = probs.reshape(-1, *probs.shape[-2:])
    flat[[k for k, _ in empty]] = 0.0
    message = _no_signal_message(empty, len(prepared.planes))
    messages.append(message)
    yield PredictProgress(0, 0, 0, len(prepared.planes), message=message)
    return probs, True


TINY_IMAGE_PX = 32  # planes narrower than this hold at most a cell or two


def tiny_image_message(shape: tuple[int, int], diameter: float | None = None) -> str:
    """A hint when a (Y, X) plane is too small to find cells in, else "".

    Too small: narrower than ``TINY_IMAGE_PX`` or than two cell diameters.

    Parameters
    ----------
    shape : tuple of int
        (Y, X) of the plane, px.
    diameter : float, optional
        The model's cell diameter, px (None: only ``TINY_IMAGE_PX`` counts).

    Returns
    -------
    str
        One sentence for the user, or "" when the plane is large enough.
    """
    limit = max(TINY_IMAGE_PX, round(2 * diameter) if diameter else 0)
    if min(shape) >= limit:
        return ""
    return (
        f"The image is only {shape[0]}x{shape[1]} px, less than {limit} px across (about "
        "two cells): too small to find cells reliably, so the count says little; give a "
        "larger image."
    )


def _planes_without_signal(planes: np.ndarray) -> list[tuple[int, float]]:
    """(index, signal/noise) of the planes whose signal/noise is below
    ``MIN_SIGNAL_TO_NOISE`` (camera noise only: no cells to find)."""
    out = []
    for index, plane in enumerate(planes):
        ratio = signal_to_noise(np.asarray(plane).mean(axis=-1))
        if ratio < MIN_SIGNAL_TO_NOISE:
            out.append((index, ratio))
    return out


def _no_signal_message(empty: list[tuple[int, float]], n_planes: int) -> str:
    ratio = max(r for _, r in empty)
    where = "The image" if n_planes == 1 else f"{len(empty)} of {n_planes} planes"
    return (
        f"{where} shows almost no signal above the camera noise (signal/noise {ratio:.1f}, "
        f"below {MIN_SIGNAL_TO_NOISE:g}): no cells kept there. Check the channel, focus and "
        "exposure."
    )


def _collect_messages(gen, messages: list[str]):
    result = None
    try:
        while True:
            event = next(gen)
            if event.message:
                messages.append(event.message)
            yield event
    except StopIteration as done:
        result = done.value
    finally:
        gen.close()
    return result


def predict(
    image: Any,
    model: CellModel | str | Path | None = None,
    *,
    device: str = "auto",
    tile: int | None = None,
    batch_size: int | None = None,
    tta: bool = False,
    threshold: float | None = None,
    seed_threshold: float | None = None,
    min_size: int | None = None,
    min_confidence: float | None = None,
    return_probabilities: bool = False,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int | None = None,
    diameter: float | str | None = "auto",
    progress: Callable[[PredictProgress], None] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Segment cells: ``image`` (..., Y, X[, C]) -> int32 labels (..., Y, X), one per cell.

    Parameters
    ----------
    image : array-like
        (Y, X), stacks (..., Y, X), channels last or ``channel_axis`` (``prepare_image``).
    model : CellModel, str, Path or None
        A CellModel, a model file, the name of a model registered in this session, or
        None for the bundled model.
    device : str
        "auto" | "cpu" | "cuda[:N]" | "mps".
    tile, batch_size : int, optional
        Network input tile size in px and tiles per call (None: by memory).
    tta : bool
        Flip test-time augmentation (4x slower).
    threshold, seed_threshold, min_size, min_confidence : optional
        The instance step (``InstanceConfig``): cell score (0..1) above which a pixel can
        belong to a cell; cells grow from cores above ``seed_threshold`` (separates
        touching cells; 0: no seeds); smallest object kept, px; smallest mean score of an
        object. Each left at None takes the model's stored recommendation
        (``instance_defaults``; the bundled model: 0.4, 0.8, 30 px, 0).
    return_probabilities : bool
        Also return the float32 cell scores on the input's grid.
    rgb, channel_axis, channel : optional
        The channel layout (``prepare_image``).
    diameter : float, "auto" or None
        Typical nucleus diameter in px, estimated, or no rescaling.
    progress : callable, optional
        Receives a PredictProgress per tile.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        int32 labels (..., Y, X), 0 = background; with ``return_probabilities``
        (labels, float32 scores (..., Y, X)).
    """
    import dataclasses

    from .instances import instance_defaults

    model = resolve_model(model)
    chosen = {"threshold": threshold, "min_size": min_size, "min_confidence": min_confidence}
    chosen = {k: v for k, v in chosen.items() if v is not None}
    if seed_threshold is not None:
        chosen["seed_threshold"] = seed_threshold or None  # 0: no seeds
    instances = dataclasses.replace(instance_defaults(model), **chosen)
    result = run(
        predict_iter(
            image,
            model,
            PredictConfig(device=device, tile=tile, batch_size=batch_size, tta=tta),
            instances,
            rgb=rgb,
            channel_axis=channel_axis,
            channel=channel,
            diameter=diameter,
        ),
        progress,
    )
    if return_probabilities:
        return result.labels, probabilities_on_image_grid(result)
    return result.labels


def probabilities_on_image_grid(result: PredictionResult) -> np.ndarray:
    """``result.probabilities`` resampled (bilinear) onto the input's grid.

    Parameters
    ----------
    result : PredictionResult
        A prediction; its probabilities are on the network's grid when the image was
        resampled (``result.scale.factor`` != 1).

    Returns
    -------
    numpy.ndarray
        float32 (..., Y, X) with (Y, X) = ``result.image_shape``; the array itself (no
        copy) when it is already on that grid or the shape is unknown.
    """
    probs = result.probabilities
    if result.image_shape is None or probs.shape[-2:] == tuple(result.image_shape):
        return probs
    planes = probs.reshape(-1, *probs.shape[-2:])
    out = np.stack([resize_plane(p, result.image_shape, order=1) for p in planes])
    return out.reshape(*probs.shape[:-2], *result.image_shape)
