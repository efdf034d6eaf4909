"""Running the network on batches of tiles: the torch runner, class weights, tile sizes.

A *predictor* is any callable ``(B, C, Ty, Tx) float32 -> (B, K, Oy, Ox) float32`` class
probabilities over batches of normalised input tiles; ``TorchPredictor`` runs a U-Net,
tests pass fakes. A predictor may also have ``device`` (a ``torch.device``),
``release()`` (free cached device memory) and ``on_cpu()`` (the same predictor on the
CPU: the out-of-memory fallback, see core/tile_loop.py).

``auto_tile_and_batch`` picks the input tile size and the batch from the device's memory
and a ``ModelConfig``; ``cell_score_weights`` says how the K class probabilities make
the one cell score that prediction stitches.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .tiling import snap_tile

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .checkpoint import CellModel
    from .config import ModelConfig

logger = logging.getLogger(__name__)

#: a predictor: (B, C, Ty, Tx) float32 normalised tiles -> (B, K, Oy, Ox) float32 probabilities
Predictor = Callable[[np.ndarray], np.ndarray]

_CPU_BUDGET = 1 << 30  # bytes of activations per network call on the CPU
_MAX_AUTO_TILE = 2048

#: share of the "boundary" class's probability counted in the cell score
BOUNDARY_SCORE = 0.5


# --------------------------------------------------------------------------------------
# classes -> one cell score
# --------------------------------------------------------------------------------------


def _class_names(model: CellModel | Sequence[str]) -> list[str]:
    return list(getattr(model, "classes", model))


def cell_class_index(model: CellModel | Sequence[str]) -> int:
    """Index of the "cell" class among the output classes (1 if not named).

    Parameters
    ----------
    model : CellModel or sequence of str
        A model (its ``classes``) or the class names themselves.
    """
    names = _class_names(model)
    return names.index("cell") if "cell" in names else 1


def cell_score_weights(model: CellModel | Sequence[str]) -> np.ndarray:
    """The weights of the cell score: ``score = sum_k weights[k] * p_k`` over K classes.

    Two classes (the paper: background, cell): the cell probability. Three classes
    (background, cell, boundary: each cell's 1 px outline and the seams between touching
    cells): p_cell + 0.5 p_boundary, about 1 inside cells, 0.5 on outlines and seams, 0
    on background. The instance step (core/instances.py) then seeds cells in the
    interiors (above the seed threshold) and floods them over outlines (above the
    threshold), splitting touching cells along the seams.

    Parameters
    ----------
    model : CellModel or sequence of str
        A model (its ``classes``) or the class names, e.g. ``default_classes(n)`` for a
        network being trained.

    Returns
    -------
    numpy.ndarray
        float32 (K,).
    """
    names = _class_names(model)
    weights = np.zeros(len(names), np.float32)
    weights[cell_class_index(names)] = 1.0
    if "boundary" in names:
        weights[names.index("boundary")] = BOUNDARY_SCORE
    return weights


# --------------------------------------------------------------------------------------
# the torch runner
# --------------------------------------------------------------------------------------


class TorchPredictor:
    """Runs a U-Net on a batch: (B, C, Ty, Tx) float32 -> (B, K, Oy, Ox) float32 softmax.

    Parameters
    ----------
    net : torch.nn.Module
        The network. It is never moved or converted: when it already sits on ``device``
        in the memory layout wanted it is used as it is (and put in eval mode), otherwise
        the predictor runs its own copy (``owns_copy``) and the caller's network keeps its
        device, layout and mode.
    device : str or torch.device
        "auto" picks CUDA, else the CPU; bf16 autocast where the hardware has it
        (``core.device.inference_dtype``), else fp32.
    tta : bool
        Average the softmax of the 4 flips (identity, X, Y, both); stays exactly tileable.
    channels_last : bool
        Run in channels-last memory format: faster inference on CPUs and GPUs alike
        (values unchanged; benchmarks/bench_predict.py: channels_last_speedup). Training
        uses the same layout, so validating a network in training needs no copy.
    fp32 : bool
        Never autocast: full float32 on every device (reference outputs that other tools
        must reproduce, such as a bioimage.io package's test tensors).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        device: str | Any = "auto",
        *,
        tta: bool = False,
        channels_last: bool = True,
        fp32: bool = False,
    ):
        import torch

        from .device import inference_dtype, resolve_device

        self.device = resolve_device(device)
        self.fp32 = fp32
        self.dtype = None if fp32 else inference_dtype(self.device)
        self.tta = tta
        self.channels_last = channels_last
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        self.source = net
        self.net: torch.nn.Module | None = None
        self.owns_copy = not _fits(net, self.device, self.layout)
        self._network()

    def _network(self) -> torch.nn.Module:
        """The network to run: the caller's, or (again, after ``close``) our own copy."""
        net = self.net
        if net is None:
            if self.owns_copy:
                net = copy.deepcopy(self.source).to(self.device, memory_format=self.layout)
            else:
                net = self.source
            self.net = net
        return net.eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        from .device import autocast

        net = self._network()
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        x = x.contiguous(memory_format=self.layout)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            probs = torch.softmax(net(x).float(), dim=1)
            if self.tta:
                for dims in ((-1,), (-2,), (-2, -1)):
                    probs += torch.softmax(net(x.flip(dims)).float(), dim=1).flip(dims)
                probs /= 4
        return probs.cpu().numpy()

    def on_cpu(self) -> TorchPredictor | None:
        """The same predictor on the CPU (None if already there): the OOM fallback.

        Built from the caller's network; this predictor's cached device memory is freed
        (``close`` it to free its copy of the weights too).
        """
        if self.device.type == "cpu":
            return None
        cpu = TorchPredictor(
            self.source,
            "cpu",
            tta=self.tta,
            channels_last=self.channels_last,
            fp32=self.fp32,
        )
        self.release()
        return cpu

    def release(self) -> None:
        """Free cached device memory (the weights stay where they are)."""
        from .device import release_memory

        release_memory(self.device)

    def close(self) -> None:
        """After the last batch: drop our copy of the weights and free device memory.

        The caller's network is left as it is (on its own device). A closed predictor
        can still be called: it copies the network again.
        """
        if self.owns_copy:
            self.net = None
        self.release()


def _fits(net: torch.nn.Module, device: torch.device, layout: torch.memory_format) -> bool:
    """True if every tensor of ``net`` is on ``device`` and every 4-D one in ``layout``."""
    tensors = [*net.parameters(), *net.buffers()]
    for tensor in tensors:
        if tensor.device.type != device.type or (
            device.index is not None and tensor.device.index != device.index
        ):
            return False
        if tensor.ndim == 4 and not tensor.is_contiguous(memory_format=layout):
            return False
    return True


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is a device out-of-memory error.

    Parameters
    ----------
    err : BaseException
        The error caught around a network call.

    Returns
    -------
    bool
        True for ``torch.OutOfMemoryError``, or a RuntimeError or MemoryError whose
        message says "out of memory" (any case).
    """
    try:
        import torch

        if isinstance(err, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover - very old torch
        pass
    return isinstance(err, RuntimeError | MemoryError) and "out of memory" in str(err).lower()


def predictor_device(predictor: Predictor) -> torch.device:
    """The device a predictor runs on (its ``device``; the CPU for plain callables).

    Parameters
    ----------
    predictor : Predictor
        A ``TorchPredictor`` or any callable from tiles to scores.

    Returns
    -------
    torch.device
        ``predictor.device`` when it has one, else the CPU.
    """
    device = getattr(predictor, "device", None)
    if device is None:
        from .device import resolve_device

        device = resolve_device("cpu")
    return device


# --------------------------------------------------------------------------------------
# automatic tile and batch sizes
# --------------------------------------------------------------------------------------


def bytes_per_pixel(config: ModelConfig, half: bool = False) -> float:
    """Rough activation memory of one network call per input pixel, bytes.

    ~12 * base float values per pixel (both paths, skips and the concatenations), halved
    under bf16 autocast. Used only to pick automatic tile and batch sizes.

    Parameters
    ----------
    config : ModelConfig
        The network's configuration (a CellModel is still accepted).
    half : bool
        bf16 activations.
    """
    return 12 * config.base * (2 if half else 4)


def auto_tile_and_batch(
    config: ModelConfig,
    device: Any,
    tile: int | None = None,
    batch_size: int | None = None,
) -> tuple[int, int]:
    """The input tile size and the batch, from the device's memory when not given.

    CPU: 1 GiB of activations per call. CUDA: half the free memory. Tiles are capped at
    2048 px (1024 px on a GPU) and snapped to valid sizes; the batch fills the rest of the
    budget (1..64; always 1 on the CPU).

    Parameters
    ----------
    config : ModelConfig
        The network's configuration (depth, padding, base).
    device : torch.device
        Where the network runs (``predictor.device``).
    tile : int, optional
        Wanted input tile size, px (snapped down to a valid size); None: by memory.
    batch_size : int, optional
        Tiles per network call; None: by memory.

    Returns
    -------
    (int, int)
        (input tile size in px, batch size).
    """
    from .device import inference_dtype

    depth, padding = config.depth, config.padding
    if tile is not None and batch_size is not None:
        return snap_tile(tile, depth, padding), batch_size
    on_gpu = getattr(device, "type", "cpu") == "cuda"
    per_px = bytes_per_pixel(config, half=inference_dtype(device) is not None)
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
