"""The U-Net's size arithmetic without torch: input size -> output size, context margin.

Sizes are pixels along one axis. A "valid" (unpadded) U-Net of depth ``d`` loses
``6 * 2**d - 4`` px of context on each side (92 px for depth 4: 572 -> 388) and accepts
inputs whose every 2x2 pooling sees an even size (16k + 12 px for depth 4, from 188 px);
a "same"-padded one keeps the size and accepts multiples of ``2**d``.

core/tiling.py plans tiles with these functions so that it needs no torch; core/unet.py
(which builds the network) states the same rules, and a test checks that both agree.
"""

from __future__ import annotations

import math
from typing import Literal

from .errors import UNetCellsError

Padding = Literal["valid", "same"]


def context_margin(depth: int = 4, padding: Padding = "valid") -> int:
    """Pixels lost on each side by the network: ``6 * 2**depth - 4`` (92 for depth 4).

    Parameters
    ----------
    depth : int
        Number of poolings.
    padding : {"valid", "same"}
        "same" padding loses nothing.

    Returns
    -------
    int
        The margin, px per side; 0 for "same" padding.
    """
    return 0 if padding == "same" else 6 * 2**depth - 4


def _trace_valid(input_size: int, depth: int) -> int | None:
    """Output size of a valid-padded U-Net, or None if ``input_size`` is not valid."""
    size = input_size
    for _ in range(depth):
        size -= 4
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= 4
    if size <= 0:
        return None
    for _ in range(depth):
        size = 2 * size - 4
        if size <= 0:
            return None
    return size


def is_valid_input_size(size: int, depth: int = 4, padding: Padding = "valid") -> bool:
    """True if every 2x2 pooling sees an even size and the output is non-empty.

    Parameters
    ----------
    size : int
        Input size along one axis, px.
    depth : int
        Number of poolings.
    padding : {"valid", "same"}
        "same": valid sizes are positive multiples of ``2**depth``.

    Returns
    -------
    bool
        Whether the network accepts ``size``.
    """
    if padding == "same":
        return size > 0 and size % 2**depth == 0
    return _trace_valid(size, depth) is not None


def min_input_size(depth: int = 4, padding: Padding = "valid") -> int:
    """The smallest valid input size, px (188 for a valid depth-4 network).

    Parameters
    ----------
    depth : int
        Number of poolings.
    padding : {"valid", "same"}
        The network's padding ("same": ``2**depth``).

    Returns
    -------
    int
        Size along one axis, px.
    """
    if padding == "same":
        return 2**depth
    size = 2 * context_margin(depth) + 1
    while not is_valid_input_size(size, depth):
        size += 1
    return size


def nearest_valid_input_size(
    size: int,
    depth: int = 4,
    padding: Padding = "valid",
    direction: Literal["up", "down"] = "up",
) -> int | None:
    """The nearest valid input size >= ``size`` ("up") or <= ``size`` ("down"), px.

    Parameters
    ----------
    size : int
        Wanted input size along one axis, px.
    depth : int
        Number of poolings.
    padding : {"valid", "same"}
        The network's padding.
    direction : {"up", "down"}
        Which way to look.

    Returns
    -------
    int or None
        A valid size, px; None going down when no valid size exists below ``size``.

    Raises
    ------
    UNetCellsError
        ``direction`` is neither "up" nor "down".
    """
    if direction not in ("up", "down"):
        raise UNetCellsError(f"direction must be 'up' or 'down', got {direction!r}.")
    smallest = min_input_size(depth, padding)
    step = 2**depth
    if direction == "up":
        if size <= smallest:
            return smallest
        return smallest + math.ceil((size - smallest) / step) * step
    if size < smallest:
        return None
    return smallest + ((size - smallest) // step) * step


def output_size(input_size: int, depth: int = 4, padding: Padding = "valid") -> int:
    """Output size for a valid input size, px (572 -> 388 for depth 4).

    Parameters
    ----------
    input_size : int
        Input size along one axis, px; must be valid (:func:`is_valid_input_size`).
    depth : int
        Number of poolings.
    padding : {"valid", "same"}
        The network's padding ("same": output = input).

    Returns
    -------
    int
        Output size along that axis, px.

    Raises
    ------
    UNetCellsError
        ``input_size`` is not valid; the message gives the next valid size.
    """
    if not is_valid_input_size(input_size, depth, padding):
        above = nearest_valid_input_size(input_size, depth, padding, direction="up")
        raise UNetCellsError(
            f"{input_size} px is not a valid input size for a {padding} U-Net of depth "
            f"{depth}; the next valid size is {above} px."
        )
    return input_size if padding == "same" else input_size - 2 * context_margin(depth)


def input_size_for_output(out_size: int, depth: int = 4, padding: Padding = "valid") -> int:
    """The smallest valid input size whose output is at least ``out_size`` px.

    Parameters
    ----------
    out_size : int
        Wanted output size along one axis, px (>= 1).
    depth : int
        Number of poolings.
    padding : {"valid", "same"}
        The network's padding.

    Returns
    -------
    int
        Input size along that axis, px.

    Raises
    ------
    UNetCellsError
        ``out_size`` is below 1.
    """
    if out_size < 1:
        raise UNetCellsError(f"The output size must be at least 1 px, got {out_size}.")
    size = nearest_valid_input_size(
        out_size + 2 * context_margin(depth, padding), depth, padding, direction="up"
    )
    assert size is not None  # going up always finds one
    return size
