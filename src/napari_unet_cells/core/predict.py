"""Batched overlap-tile inference: any image -> cell probabilities -> instance labels.

The pipeline for one image:

1. ``prepare_image``: one place for input layouts: (Y, X) greyscale; (..., Y, X) stacks and
   time series, processed plane by plane; (..., Y, X, C) RGB/multichannel reduced or
   selected to the model's ``in_channels``; any integer/float dtype; NaN/Inf replaced.
2. ``normalize`` (core/normalize.py, the function training uses) per plane.
3. Tiles of the plane (core/tiling.py) are batched and passed to a *predictor*: any
   callable ``(B, C, Ty, Tx) float32 -> (B, K, Oy, Ox) float32`` class probabilities
   (``TorchPredictor`` runs the U-Net; tests pass fakes). The chosen class channel of
   each tile's write region is stitched into a preallocated CPU array, so peak memory
   does not grow with the number of tiles.
4. ``core.instances.probabilities_to_labels`` turns probabilities into labels; it can be
   re-run with another threshold / minimum size without running the network again.

Long work is a generator (``predict_iter``, ``predict_probabilities_iter``) that yields a
``PredictProgress`` per tile and checks a stop flag between tiles; its return value is the
result (None if stopped). ``predict`` runs it to completion.

On CUDA out-of-memory the cache is freed, the tile halved and the plane redone, down to
the smallest valid tile; then the prediction falls back to the CPU, with a message.

Images larger than memory (zarr) and files go through ``core/predict_large.py``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import InstanceConfig, PredictConfig
from .errors import UNetCellsError
from .normalize import MIN_SIGNAL_TO_NOISE, normalize, signal_to_noise
from .progress import StopFlag, run, stop_requested
from .registry import (  # noqa: F401  (re-exported: predict(model=name) resolves through it)
    bundled_model_path,
    register_model,
    registered_models,
    resolve_model,
    unregister_model,
)
from .scale import (
    ESTIMATE_CROP,
    MAX_FACTOR,
    MAX_PASSES,
    TOLERANCE,
    ScaleChoice,
    factor_for,
    model_diameter,
    parse_diameter,
    resize_plane,
    scaled_shape,
    typical_diameter,
)
from .tiling import TileGrid, plan_tiles, read_tile, smallest_tile, snap_tile

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .checkpoint import CellModel

logger = logging.getLogger(__name__)

#: a predictor: (B, C, Ty, Tx) float32 normalised tiles -> (B, K, Oy, Ox) float32 probabilities
Predictor = Callable[[np.ndarray], np.ndarray]

_CPU_BUDGET = 1 << 30  # bytes of activations per network call on the CPU
_MAX_AUTO_TILE = 2048


def cell_class_index(model: CellModel) -> int:
    """Index of the "cell" class among the model's output classes (1 if not named)."""
    return model.classes.index("cell") if "cell" in model.classes else 1


#: share of the "boundary" class's probability counted in the cell score
BOUNDARY_SCORE = 0.5


def cell_score_weights(model: CellModel) -> np.ndarray:
    """float32 (K,): the cell score is ``sum_k weights[k] * p_k`` over the K classes.

    Two classes (the paper: background, cell): the cell probability. Three classes
    (background, cell, boundary: each cell's 1 px outline and the seams between touching
    cells): p_cell + 0.5 p_boundary, about 1 inside cells, 0.5 on outlines and seams, 0
    on background. The instance step (core/instances.py) then seeds cells in the
    interiors (above the seed threshold) and floods them over outlines (above the
    threshold), splitting touching cells along the seams.
    """
    weights = np.zeros(len(model.classes), np.float32)
    weights[cell_class_index(model)] = 1.0
    if "boundary" in model.classes:
        weights[model.classes.index("boundary")] = BOUNDARY_SCORE
    return weights


# --------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedImage:
    """An input image as a stack of planes.

    planes: (N, Y, X, C) view or array of the original values (not yet normalised).
    lead_shape: the original leading axes (stack/time); N = prod(lead_shape).
    message: what was done to the channels, for the user ("" if nothing).
    """

    planes: np.ndarray
    lead_shape: tuple[int, ...]
    message: str = ""

    @property
    def plane_shape(self) -> tuple[int, int]:
        return int(self.planes.shape[1]), int(self.planes.shape[2])

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (*self.lead_shape, *self.plane_shape)


def guess_channel_axis(
    shape: tuple[int, ...],
    in_channels: int,
    rgb: bool | None,
    channel_axis: int | None,
    channel: int | None,
) -> int | None:
    """The channel axis of an image of ``shape`` (None: no channels, all planes).

    Given ``channel_axis`` or ``rgb`` win. Otherwise a last axis of at most 4 next to a
    larger one is channels (RGB(A), or 2 stains: a plane 2 px wide is no image), as is a
    last axis of ``in_channels`` > 1; and ``channel`` with a (C, Y, X) shape means axis 0.
    Leading axes are otherwise planes (Z, T): (2, Y, X) is two planes unless told.
    """
    if channel_axis is not None:
        return channel_axis
    if rgb is not None:
        return -1 if rgb else None
    ndim = len(shape)
    if ndim >= 3 and (
        (shape[-1] <= 4 and shape[-2] > 4 * shape[-1])
        or (in_channels > 1 and shape[-1] == in_channels)
    ):
        return -1
    if channel is None or ndim < 3:
        return None
    if ndim == 3:
        return 0
    raise UNetCellsError(
        f"channel={channel} was given, but which axis of the image {tuple(shape)} holds the "
        "channels? Give channel_axis too (e.g. 1 for (Z, C, Y, X))."
    )


def channel_layout(
    shape: tuple[int, ...],
    in_channels: int = 1,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int | None = None,
) -> int | None:
    """``guess_channel_axis``, and a refusal (UNetCellsError naming the choices) when a
    1-channel model would get the mean of channels that are not RGB(A). Needs only the
    shape, so a dock can check before starting a worker."""
    axis = guess_channel_axis(tuple(shape), in_channels, rgb, channel_axis, channel)
    n = 1 if axis is None else int(shape[axis])
    if in_channels == 1 and channel is None and n not in (1, 3, 4):
        raise UNetCellsError(
            f"The image {tuple(shape)} has {n} channels and the model reads 1: choose one, "
            f"0 to {n - 1} (channel=N in Python, --channel N for unet-cells predict, "
            "'Channel' in the Predict dock)."
        )
    return axis


def describe_layout(shape: tuple[int, ...], channel_axis: int | None, channel: int | None) -> str:
    """What an image of ``shape`` is read as, e.g. "5 planes of 512x512, channel 1 of 2"."""
    shape = tuple(int(s) for s in shape)
    if len(shape) - (channel_axis is not None) < 2:
        return f"shape {shape}"
    n_channels = 1
    if channel_axis is not None:
        n_channels = shape[channel_axis]
        shape = shape[: channel_axis % len(shape)] + shape[channel_axis % len(shape) + 1 :]
    planes = math.prod(shape[:-2])
    text = f"{planes} plane{'s' if planes != 1 else ''} of {shape[-2]}x{shape[-1]}"
    if n_channels > 1:
        which = f"channel {channel}" if channel is not None else "the mean of the channels"
        text += f", {which} of {n_channels}"
    return text


def prepare_image(
    image: Any,
    in_channels: int = 1,
    *,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int | None = None,
) -> PreparedImage:
    """Bring any image to (N, Y, X, C) planes with C == ``in_channels``.

    image: (Y, X), (..., Y, X) stacks/time series, or with channels: last axis if ``rgb``,
    or ``channel_axis``; if neither, see ``_channel_axis`` (a last axis of <= 4 is
    channels; (C, Y, X) only with ``channel``).
    channel: with more channels than the model reads, use this one; by default a
    1-channel model gets the mean of RGB(A) channels, and other channel counts are
    refused with the choices (a mean of stains is no nucleus image). Integer, float and
    bool dtypes are accepted; complex and object arrays are refused. Raises UNetCellsError when the
    shape cannot fit the model.
    """
    array = np.asarray(image)
    if array.dtype == object or np.iscomplexobj(array) or array.dtype.kind in "SUVM":
        raise UNetCellsError(
            f"Cannot segment an image of dtype {array.dtype}: give a numeric (integer or "
            "float) image."
        )
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.size == 0:
        raise UNetCellsError(
            f"The image is empty (shape {array.shape}): it has no pixels; check that the "
            "file or layer holds image data."
        )
    channel_axis = channel_layout(array.shape, in_channels, rgb, channel_axis, channel)
    has_channels = channel_axis is not None
    if channel_axis is not None:
        array = np.moveaxis(array, channel_axis, -1)
    spatial_ndim = array.ndim - (1 if has_channels else 0)
    if spatial_ndim < 2:
        raise UNetCellsError(
            f"The image must have at least two spatial axes (Y, X), got shape "
            f"{np.shape(image)}{' with channels last' if has_channels else ''}: give a 2-D "
            "image or a stack of 2-D planes."
        )
    if not has_channels:
        array = array[..., None]
    lead_shape = tuple(int(s) for s in array.shape[:-3])
    height, width, n_channels = array.shape[-3:]
    planes = array.reshape(-1, height, width, n_channels)
    message = ""
    if n_channels != in_channels:
        if in_channels == 1:
            if channel is not None:
                if not 0 <= channel < n_channels:
                    raise UNetCellsError(
                        f"channel {channel} does not exist: the image has {n_channels} channels; "
                        f"choose one from 0 to {n_channels - 1}."
                    )
                planes = planes[..., channel : channel + 1]
                message = (
                    f"The image has {n_channels} channels and the model reads 1: using "
                    f"channel {channel}."
                )
            else:
                planes = planes.astype(np.float32).mean(axis=-1, keepdims=True)
                message = (
                    f"The image has {n_channels} channels and the model reads 1: using their "
                    "mean (to use one channel only, split the layer in napari: right-click > "
                    "Split RGB; or pass channel=N in Python)."
                )
        else:
            raise UNetCellsError(
                f"The model reads {in_channels} channels but the image has {n_channels} "
                f"(shape {np.shape(image)}): give an image with {in_channels} channels "
                "(channels last)."
            )
    if message:
        logger.info(message)
    return PreparedImage(planes=planes, lead_shape=lead_shape, message=message)


# --------------------------------------------------------------------------------------
# predictors
# --------------------------------------------------------------------------------------


class TorchPredictor:
    """Runs a U-Net on a batch: (B, C, Ty, Tx) float32 -> (B, K, Oy, Ox) float32 softmax.

    device: "auto" picks CUDA with bf16 autocast, else the CPU in fp32 (core/device.py).
    tta: average the softmax of the 4 flips (identity, X, Y, both); stays exactly tileable.
    The network is moved to the device and put in eval mode.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        device: str | Any = "auto",
        *,
        tta: bool = False,
        channels_last: bool = True,
    ):
        import torch

        from .device import inference_dtype, resolve_device

        self.device = resolve_device(device)
        self.dtype = inference_dtype(self.device)
        self.tta = tta
        # channels-last runs inference faster on CPUs and GPUs alike (values unchanged;
        # benchmarks/bench_predict.py: channels_last_speedup); off for a network that is
        # being trained: its backward pass is about 2x slower in that layout on a CPU
        self.channels_last = channels_last
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(self.device, memory_format=self.layout).eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        from .device import autocast

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        x = x.contiguous(memory_format=self.layout)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            probs = torch.softmax(self.net(x).float(), dim=1)
            if self.tta:
                for dims in ((-1,), (-2,), (-2, -1)):
                    probs += torch.softmax(self.net(x.flip(dims)).float(), dim=1).flip(dims)
                probs /= 4
        return probs.cpu().numpy()

    def on_cpu(self) -> TorchPredictor | None:
        """The same predictor on the CPU (None if already there): the OOM fallback."""
        if self.device.type == "cpu":
            return None
        from .device import release_memory

        previous = self.device
        cpu = TorchPredictor(self.net, "cpu", tta=self.tta, channels_last=self.channels_last)
        release_memory(previous)
        return cpu

    def release(self) -> None:
        """Free cached device memory (the network stays where it is)."""
        from .device import release_memory

        release_memory(self.device)

    def close(self) -> None:
        """After the last batch: move the network back to the CPU and free device memory."""
        if self.device.type != "cpu":
            self.net.to("cpu")
        self.release()


def is_out_of_memory(err: BaseException) -> bool:
    """True for a device out-of-memory error (torch.OutOfMemoryError or its message)."""
    try:
        import torch

        if isinstance(err, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover - very old torch
        pass
    return isinstance(err, RuntimeError | MemoryError) and "out of memory" in str(err).lower()


def bytes_per_pixel(model: CellModel, half: bool = False) -> float:
    """Rough activation memory of one network call per input pixel, bytes.

    ~12 * base float values per pixel (both paths, skips and the concatenations), halved
    under bf16 autocast. Used only to pick automatic tile and batch sizes.
    """
    return 12 * model.config.base * (2 if half else 4)


def auto_tile_and_batch(
    model: CellModel, device: Any, tile: int | None = None, batch_size: int | None = None
) -> tuple[int, int]:
    """(tile, batch) from the device's memory when not given.

    CPU: 1 GiB of activations per call. CUDA: half the free memory. Tiles are capped at
    2048 px and snapped to valid sizes; the batch fills the rest of the budget (1..64).
    """
    from .device import inference_dtype

    depth, padding = model.config.depth, model.config.padding
    if tile is not None and batch_size is not None:
        return snap_tile(tile, depth, padding), batch_size
    on_gpu = getattr(device, "type", "cpu") == "cuda"
    per_px = bytes_per_pixel(model, half=inference_dtype(device) is not None)
    budget = _CPU_BUDGET
    if on_gpu:
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        budget = free // 2
    if tile is None:
        side = int(math.sqrt(budget / per_px / (batch_size or 1)))
        tile = snap_tile(min(side, 1024 if on_gpu else _MAX_AUTO_TILE), depth, padding)
    else:
        tile = snap_tile(tile, depth, padding)
    if batch_size is None:
        batch_size = int(max(1, min(64, budget // (per_px * tile * tile)))) if on_gpu else 1
    return tile, batch_size


# --------------------------------------------------------------------------------------
# tiled inference
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictProgress:
    """One progress event: ``done`` of ``total`` tiles over all planes.

    plane / n_planes: the plane being processed (stacks, time series).
    tile_shape: the network input size in use; message: news for the user (OOM fallback,
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
    """Run ``predictor`` over the tiles of ``grid`` and stitch class ``channel`` into ``out``.

    plane: (Y, X, C) float32 normalised; out: (Y, X) float32, preallocated on the CPU.
    channel: a class index, or class weights (K,) (``cell_score_weights``): then the
    weighted sum of the K class probabilities is stitched.
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

    image: see ``prepare_image`` ((Y, X), stacks (..., Y, X), channels). scale: resample
    each normalised plane by this factor first (core/scale.py). Returns (via
    StopIteration.value) float32 scores in [0, 1] of shape (..., Y', X'), Y' = round(Y *
    scale), or None if stopped. ``predictor`` replaces the network call (tests, custom
    backends); it may have an ``on_cpu()`` method used as out-of-memory fallback.
    """
    config = config or PredictConfig()
    cell_model = resolve_model(model)
    net_config = cell_model.config
    prepared = prepare_image(
        image, net_config.in_channels, rgb=rgb, channel_axis=channel_axis, channel=channel
    )
    net = cell_model.net
    was_training = net.training
    own_predictor = predictor is None
    if predictor is None:
        predictor = TorchPredictor(net, config.device, tta=config.tta)
        device = predictor.device
    else:
        from .device import resolve_device

        device = getattr(predictor, "device", None) or resolve_device("cpu")
    tile, batch_size = auto_tile_and_batch(cell_model, device, config.tile, config.batch_size)
    class_weights = cell_score_weights(cell_model)
    n_planes = prepared.planes.shape[0]
    logger.info(
        "predicting %d plane(s) of %s px on %s: tiles of up to %d px, batch %d",
        n_planes,
        "x".join(map(str, prepared.plane_shape)),
        device,
        tile,
        batch_size,
    )
    grid_shape = scaled_shape(prepared.plane_shape, scale)
    out = np.empty((n_planes, *grid_shape), np.float32)
    if prepared.message:
        yield PredictProgress(0, 0, 0, n_planes, message=prepared.message)
    if net_config.padding != "valid":
        logger.warning(
            "This model uses 'same' padding: tiles overlap by the context margin, but tiled "
            "prediction is not exactly equal to whole-image prediction (small differences "
            "near tile edges); models with 'valid' padding, like the bundled one, have none."
        )
    done = 0
    try:
        net.eval()
        for index in range(n_planes):
            plane = normalize(prepared.planes[index], cell_model.normalization)
            plane = resize_plane(plane, grid_shape)
            while True:
                grid = plan_tiles(grid_shape, tile, net_config.depth, net_config.padding)
                total = done + len(grid) * (n_planes - index)
                count = 0
                try:
                    tiles = predict_tiles(
                        plane,
                        grid,
                        predictor,
                        out[index],
                        channel=class_weights,
                        batch_size=batch_size,
                        stop=stop,
                    )
                    for _ in tiles:
                        count += 1
                        yield PredictProgress(
                            done + count, total, index, n_planes, grid.tile_shape
                        )
                        if stop_requested(stop):
                            logger.info("prediction stopped")
                            return None
                    done += count
                    break
                except Exception as err:  # only out-of-memory is handled below
                    if not is_out_of_memory(err):
                        raise
                    predictor, tile, message = _shrink_after_oom(
                        predictor, grid, net_config.depth, net_config.padding
                    )
                    logger.warning(message)
                    yield PredictProgress(done, total, index, n_planes, grid.tile_shape, message)
            if stop_requested(stop):
                return None
    finally:
        net.train(was_training)
        # our own predictor: weights back to the CPU; a caller's: only free the cache
        done_with = getattr(predictor, "close" if own_predictor else "release", None)
        if done_with is not None:
            done_with()
    return out.reshape(*prepared.lead_shape, *grid_shape)


def _shrink_after_oom(
    predictor: Predictor, grid: TileGrid, depth: int, padding: str
) -> tuple[Predictor, int, str]:
    """After an out-of-memory error: (predictor, tile, message) for the next try."""
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
    """Probabilities and instance labels, as a generator of per-tile progress events.

    diameter: the typical nucleus diameter in px, "auto" (estimated, ``estimate_diameter``)
    or None (no rescaling); used only with models that record their own diameter.
    Returns (StopIteration.value) a PredictionResult, or None if stopped.
    """
    from .instances import instance_defaults, probabilities_to_labels

    model = resolve_model(model)
    config = config or PredictConfig()
    instances = instances or instance_defaults(model)
    messages: list[str] = []
    wanted = parse_diameter(diameter)
    reference = model_diameter(model)
    prepared = prepare_image(
        image, model.config.in_channels, rgb=rgb, channel_axis=channel_axis, channel=channel
    )
    choice, probs, reused = ScaleChoice(model_diameter=reference), None, None
    own = None
    try:
        if isinstance(wanted, float) and reference is not None:
            choice = _given_scale(wanted, reference)
        elif wanted == "auto" and reference is not None:
            if predictor is None:
                predictor = own = TorchPredictor(model.net, config.device, tta=config.tta)
            plane = normalize(prepared.planes[len(prepared.planes) // 2], model.normalization)
            choice, scores, reused = estimate_diameter(
                plane, model, predictor, instances, tile=config.tile, stop=stop
            )
            if scores is not None and len(prepared.planes) == 1:
                probs = scores.reshape(*prepared.lead_shape, *scores.shape)
                yield PredictProgress(1, 1, 0, 1)  # the estimate's pass was the whole image
            else:
                reused = None
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
    empty = _planes_without_signal(prepared.planes)
    if empty:
        probs = probs.copy()
        flat = probs.reshape(-1, *probs.shape[-2:])
        flat[[k for k, _ in empty]] = 0.0
        message = _no_signal_message(empty, len(prepared.planes))
        messages.append(message)
        yield PredictProgress(0, 0, 0, len(prepared.planes), message=message)
    tiny = tiny_image_message(prepared.plane_shape, reference)
    if tiny:
        messages.append(tiny)
        yield PredictProgress(0, 0, 0, len(prepared.planes), message=tiny)
    if reused is not None and not empty and reused.shape == tuple(prepared.plane_shape):
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


TINY_IMAGE_PX = 32  # planes narrower than this hold at most a cell or two


def tiny_image_message(shape: tuple[int, int], diameter: float | None = None) -> str:
    """A hint when a (Y, X) plane is too small to find cells in: narrower than
    TINY_IMAGE_PX or than two cell diameters (``diameter``: the model's, px); else ""."""
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


def _given_scale(diameter: float, reference: float) -> ScaleChoice:
    factor = factor_for(diameter, reference)
    message = ""
    if factor != 1.0:
        message = (
            f"Cells of {diameter:g} px (model: {reference:g} px): the image is resampled "
            f"x{factor:.2f} for prediction; labels come back on the image's grid."
        )
    return ScaleChoice(factor, diameter, reference, estimated=False, message=message)


def _score_plane(
    plane: np.ndarray, model: CellModel, predictor: Predictor, tile: int | None, stop: StopFlag
) -> np.ndarray | None:
    """Cell scores of one normalised (Y, X, C) plane, float32 (Y, X); None if stopped."""
    device = getattr(predictor, "device", None)
    if device is None:
        from .device import resolve_device

        device = resolve_device("cpu")
    size, batch = auto_tile_and_batch(model, device, tile)
    cfg = model.config
    grid = plan_tiles(plane.shape[:2], size, cfg.depth, cfg.padding)
    out = np.empty(plane.shape[:2], np.float32)
    weights = cell_score_weights(model)
    tiles = predict_tiles(
        plane, grid, predictor, out, channel=weights, batch_size=batch, stop=stop
    )
    for _ in tiles:
        pass
    return None if stop_requested(stop) else out


def estimate_diameter(
    plane: np.ndarray,
    model: CellModel,
    predictor: Predictor,
    instances: InstanceConfig,
    *,
    tile: int | None = None,
    stop: StopFlag = None,
) -> tuple[ScaleChoice, np.ndarray | None, np.ndarray | None]:
    """The typical nucleus diameter of a normalised plane, by running the network.

    plane: (Y, X) or (Y, X, C) float32, normalised. The network and the instance step run
    on a central crop (up to ``ESTIMATE_CROP`` px on the model's grid), first at the
    image's own scale; the median equivalent diameter of the objects found
    (``typical_diameter``) gives the factor to the model's diameter; while that factor is
    far from the current one, the crop is resampled and measured again (up to
    ``MAX_PASSES`` passes), so the last measurement is made with nuclei near the model's
    size. Real cells measure about the same at every scale; when two passes disagree by
    more than 2x (noise or texture taken for cells), the image is predicted at its own
    scale and the message says so. Returns (ScaleChoice, scores, labels): the last pass's
    cell scores and their instance labels (sequential, on the scores' grid) when that
    pass covered the whole plane at the chosen factor (to be re-used), else
    (ScaleChoice, None, None).
    """
    from .instances import plane_labels

    reference = model_diameter(model)
    if reference is None:
        return ScaleChoice(), None, None
    plane = plane if plane.ndim == 3 else plane[..., None]
    height, width = plane.shape[:2]
    factor, measured, scores, whole = 1.0, None, None, False
    unsure = False
    for _ in range(MAX_PASSES):
        side = max(1, int(ESTIMATE_CROP / factor))
        ch, cw = min(side, height), min(side, width)
        y0, x0 = (height - ch) // 2, (width - cw) // 2
        crop = resize_plane(plane[y0 : y0 + ch, x0 : x0 + cw], scaled_shape((ch, cw), factor))
        scores = _score_plane(crop, model, predictor, None, stop)
        if scores is None:
            return ScaleChoice(factor, measured, reference, True), None, None
        whole = (ch, cw) == (height, width)
        labels = plane_labels(scores, instances)[0]
        seen = typical_diameter(labels)
        if seen is None:
            break
        previous, measured = measured, seen / factor
        if previous is not None and max(measured / previous, previous / measured) > 2:
            # real cells measure the same at any scale; texture or noise does not
            factor, scores, unsure = 1.0, None, True
            break
        if 1 / TOLERANCE <= seen / reference <= TOLERANCE:
            break
        factor = factor_for(measured, reference)
        scores = None
    if unsure:
        message = (
            "Could not measure the cell size consistently (objects of "
            f"{previous:.0f} px at the image's scale, {measured:.0f} px after resampling): "
            "predicted at the image's own scale. If cells come out split or merged, give "
            "their diameter in px."
        )
        return ScaleChoice(1.0, None, reference, True, message), None, None
    choice = _estimated_choice(factor, measured, reference)
    return (choice, scores, labels) if whole and scores is not None else (choice, None, None)


def _estimated_choice(factor: float, measured: float | None, reference: float) -> ScaleChoice:
    if measured is None:
        message = (
            "No cells found to estimate their size: predicted at the image's own scale. "
            "If the image has cells, give their diameter in px."
        )
        return ScaleChoice(factor, None, reference, True, message)
    low, high = reference / MAX_FACTOR, reference * MAX_FACTOR
    if not low <= measured <= high:
        message = (
            f"Estimated cell diameter {measured:.0f} px is outside what this model covers by "
            f"rescaling ({low:.0f}-{high:.0f} px): check the result, or give the diameter."
        )
    elif factor != 1.0:
        message = (
            f"Estimated cell diameter {measured:.0f} px (model: {reference:g} px): the image "
            f"is resampled x{factor:.2f} for prediction; labels come back on its own grid."
        )
    else:
        message = f"Estimated cell diameter {measured:.0f} px (model: {reference:g} px)."
    return ScaleChoice(factor, measured, reference, True, message)


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

    model: a CellModel, a model file, the name of a model registered in this session, or
    None for the bundled model. device: "auto" | "cpu" | "cuda[:N]". tile: network input
    size in px (None: by memory). The instance step (``InstanceConfig``): threshold: cell
    probability (0..1) above which a pixel can belong to a cell; seed_threshold: cells
    grow from cores above this probability (separates touching cells; 0: no seeds);
    min_size: smallest object kept, px; min_confidence: smallest mean probability of an
    object. Each left at None takes the model's stored recommendation
    (``instance_defaults``; the bundled model: 0.5, 0.9, 30 px, 0.7). With
    ``return_probabilities`` returns (labels, float32 cell-class probabilities).
    ``progress`` receives a PredictProgress per tile.
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
    """``result.probabilities`` resampled (bilinear) onto the input's grid: (..., Y, X)."""
    probs = result.probabilities
    if result.image_shape is None or probs.shape[-2:] == tuple(result.image_shape):
        return probs
    planes = probs.reshape(-1, *probs.shape[-2:])
    out = np.stack([resize_plane(p, result.image_shape) for p in planes])
    return out.reshape(*probs.shape[:-2], *result.image_shape)
