"""The one place that picks a compute device and a numeric precision."""

from __future__ import annotations

import contextlib
import logging
import os

import torch

from .errors import UNetCellsError

logger = logging.getLogger(__name__)


def available_devices() -> list[str]:
    """Device names usable here, "auto" first: e.g. ["auto", "cpu", "cuda:0", "mps"]."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(request: str | torch.device | None = "auto") -> torch.device:
    """Turn "auto" | "cpu" | "cuda" | "cuda:N" | "mps" into a usable ``torch.device``.

    "auto" picks the first CUDA GPU, else Apple's MPS, else the CPU. Case and surrounding
    spaces are ignored; "cuda" means "cuda:0".

    Parameters
    ----------
    request : str, torch.device or None
        The device asked for; None means "auto".

    Returns
    -------
    torch.device
        A device present on this machine (CUDA with an explicit index).

    Raises
    ------
    UNetCellsError
        The name is unknown or the device is not present; the message names the devices
        that are.
    """
    if isinstance(request, torch.device):
        request = str(request)
    name = (request or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UNetCellsError(
            f"Unknown device {request!r}: choose one of {_choices()} (cuda:N is the N-th "
            "NVIDIA GPU, mps the GPU of an Apple computer)."
        ) from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        index = 0 if device.index is None else device.index
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            found = (
                f"PyTorch finds {torch.cuda.device_count()} CUDA GPU(s), numbered from 0. "
                f"Choose one of {_choices()}."
                if torch.cuda.is_available()
                else "PyTorch finds no CUDA GPU (a CPU-only PyTorch build, or no NVIDIA "
                f"driver). Choose one of {_choices()}, or install PyTorch's CUDA build "
                "(pytorch.org) to use the GPU."
            )
            raise UNetCellsError(f"Device {request!r} is not available on this machine: {found}")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _mps_available():
            raise UNetCellsError(
                f"Device {request!r} is not available on this machine: PyTorch finds no Apple "
                f"GPU (MPS needs macOS 12.3 or newer on Apple silicon). Choose one of "
                f"{_choices()}."
            )
        return device
    raise UNetCellsError(
        f"Device type {device.type!r} is not supported: choose one of {_choices()}."
    )


def _choices() -> str:
    """The usable device names, quoted, for messages: "'auto', 'cpu'"."""
    return ", ".join(repr(name) for name in available_devices())


PRECISION_VARIABLE = "NAPARI_UNET_CELLS_PRECISION"
"""Environment variable: "fp32" turns bf16 autocast off everywhere (it is "auto" by default)."""


def cpu_has_fast_bf16() -> bool:
    """True if this CPU multiplies bf16 in hardware (Intel AMX, e.g. Xeon Sapphire Rapids).

    There bf16 autocast runs the U-Net 2-3x faster than fp32 (benchmarks/bench_predict.py:
    bf16_speedup); on other CPUs bf16 is emulated and slower, so they stay in fp32.
    """
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # an older or newer torch without the probe
        return False


def inference_dtype(device: torch.device) -> torch.dtype | None:
    """Autocast dtype for the network (prediction and training) on ``device``.

    bf16 on CUDA GPUs that support it and on CPUs with bf16 hardware (``cpu_has_fast_bf16``),
    else None (fp32). Setting the environment variable ``NAPARI_UNET_CELLS_PRECISION=fp32``
    keeps everything in fp32 (the probabilities then match other machines' to ~1e-6; bf16
    moves them by ~0.002 on average, which the stress suite shows does not change the cells).

    Parameters
    ----------
    device : torch.device
        Where the network runs.

    Returns
    -------
    torch.dtype or None
        ``torch.bfloat16``, or None for full float32 precision (MPS, older GPUs and CPUs).
    """
    if os.environ.get(PRECISION_VARIABLE, "auto").strip().lower() == "fp32":
        return None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context manager: autocast to ``dtype`` on ``device``, or nothing if dtype is None.

    Parameters
    ----------
    device : torch.device
        Where the network runs (its type is passed to ``torch.autocast``).
    dtype : torch.dtype or None
        From :func:`inference_dtype`.

    Returns
    -------
    contextlib.AbstractContextManager
        ``torch.autocast`` or ``contextlib.nullcontext``.
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def release_memory(device: torch.device) -> None:
    """Give cached GPU memory back to the driver (no-op on the CPU).

    Parameters
    ----------
    device : torch.device
        A CUDA or MPS device empties its cache; any other does nothing.
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
