"""Overlap-tile geometry (paper section 2, Figure 2): write regions, read regions, mirroring.

The image is cut into a grid of *write regions* that cover it exactly, without overlap.
Each tile's *read region* is its write region grown by the network's context margin (92 px
on each side for a valid depth-4 U-Net) and extended to one fixed, valid network input
size; pixels of the read region outside the image are filled by mirroring the image
(numpy "reflect": the edge pixel is not repeated).

Why tiled prediction equals whole-image prediction exactly: with valid convolutions,
every feature of every level is a function of the input pixels at fixed image positions,
whatever the tile it is computed in, *provided the 2x2 max-pooling grids line up*. So the
write regions start at multiples of ``2**depth`` pixels and every read region starts
``margin`` pixels before its write region, as the whole-image input does. The stride is
therefore a multiple of ``2**depth`` and consecutive tiles' outputs overlap by a few pixels
(e.g. 4 px for depth 4, where outputs are 16k + 4 px), which are simply not written twice.

"same"-padded networks (zero padding inside the network) are tiled the same way with the
context margin of the valid network of the same depth (rounded up to a multiple of
``2**depth``) and the centre of each output kept; their tiles are seamless in practice but
*not* exactly equal to a whole-image prediction, because zero padding reaches further than
the context.

Vocabulary (the same names in core/predict.py, core/tile_loop.py, core/predict_large.py):

- *tile* / *input tile* (``tile``, ``TileGrid.tile_shape``): the network input size, px;
- *output tile* (``TileGrid.out_shape``): the network output for one input tile, px;
- *margin* (``tile_margin``): context added on each side of a write region, px;
- *write region* / *read region* (``Tile.write`` / ``Tile.read``) and *crop* (the part
  of the output tile that goes to the write region);
- *reach* (``dependency_reach``): how far an output pixel's inputs extend, px: the
  overlap chunked prediction needs between chunks.

Coordinates are (Y, X) pixels of one plane. Nothing here needs torch (the size
arithmetic comes from core/unet_sizes.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import UNetCellsError
from .unet_sizes import (
    context_margin,
    input_size_for_output,
    nearest_valid_input_size,
    output_size,
)

Padding = Literal["valid", "same"]


# --------------------------------------------------------------------------------------
# one axis
# --------------------------------------------------------------------------------------


def tile_margin(depth: int, padding: Padding = "valid") -> int:
    """Context added on each side of a write region, in pixels (92 for valid depth 4).

    For "same" padding the valid network's margin, rounded up to a multiple of
    ``2**depth`` (so tiles still see their context).

    Parameters
    ----------
    depth : int
        The network's number of poolings.
    padding : {"valid", "same"}
        The network's padding.

    Returns
    -------
    int
        Margin per side, px.
    """
    if padding == "same":
        step = 2**depth
        return math.ceil(context_margin(depth, "valid") / step) * step
    return context_margin(depth, "valid")


def usable_output(tile: int, depth: int, padding: Padding = "valid") -> int:
    """Pixels of one tile's output that can be written: input ``tile`` minus 2 * margin.

    Parameters
    ----------
    tile : int
        Network input size along one axis, px; must be valid for the network.
    depth : int
        The network's number of poolings.
    padding : {"valid", "same"}
        The network's padding.

    Returns
    -------
    int
        Usable output along that axis, px.

    Raises
    ------
    UNetCellsError
        ``tile`` is not a valid input size (not a multiple of ``2**depth`` for "same").
    """
    if padding == "same":
        if tile % 2**depth:
            raise UNetCellsError(
                f"{tile} px is not a valid tile for a 'same' U-Net of depth {depth}: use a "
                f"multiple of {2**depth} px."
            )
        return tile - 2 * tile_margin(depth, padding)
    return output_size(tile, depth, "valid")


def tile_for_output(out: int, depth: int, padding: Padding = "valid") -> int:
    """The smallest valid tile (network input size) whose usable output is >= ``out`` px.

    Parameters
    ----------
    out : int
        Wanted usable output along one axis, px (values below 1 count as 1).
    depth : int
        The network's number of poolings.
    padding : {"valid", "same"}
        The network's padding.

    Returns
    -------
    int
        Input tile size, px.
    """
    if padding == "same":
        step = 2**depth
        return 2 * tile_margin(depth, padding) + math.ceil(max(out, 1) / step) * step
    return input_size_for_output(max(out, 1), depth, "valid")


def smallest_tile(depth: int, padding: Padding = "valid") -> int:
    """The smallest tile usable for tiling: its usable output is at least ``2**depth`` px.

    (The smallest valid input, 188 px for depth 4, gives only 4 output pixels, less than
    one pooling cell, so it cannot step across an image; 204 px is the smallest tile.)

    Parameters
    ----------
    depth : int
        The network's number of poolings.
    padding : {"valid", "same"}
        The network's padding.

    Returns
    -------
    int
        Input tile size, px.
    """
    return tile_for_output(2**depth, depth, padding)


def snap_tile(tile: int, depth: int, padding: Padding = "valid") -> int:
    """The largest valid tile <= ``tile``, but at least ``smallest_tile``.

    Parameters
    ----------
    tile : int
        Requested network input size, px (any integer).
    depth : int
        The network's number of poolings.
    padding : {"valid", "same"}
        The network's padding.

    Returns
    -------
    int
        A valid input tile size, px.
    """
    smallest = smallest_tile(depth, padding)
    if tile <= smallest:
        return smallest
    if padding == "same":
        return max(smallest, (tile // 2**depth) * 2**depth)
    snapped = nearest_valid_input_size(tile, depth, "valid", direction="down")
    return max(smallest, snapped or smallest)


@dataclass(frozen=True)
class AxisPlan:
    """Tiling of one axis of ``length`` px: tiles of ``tile`` px input, writes every ``stride``.

    starts: first written pixel of each tile (multiples of 2**depth); tile i writes
    [starts[i], min(starts[i] + stride, length)) and reads [starts[i] - margin,
    starts[i] - margin + tile).
    """

    length: int
    tile: int
    stride: int
    margin: int
    starts: tuple[int, ...]


def plan_axis(length: int, tile: int, depth: int, padding: Padding = "valid") -> AxisPlan:
    """Plan one axis: as few tiles as ``tile`` allows, balanced, each as small as it can be.

    ``tile`` (requested network input size, px) is snapped down to a valid size. If the axis
    fits in one tile, the tile shrinks to the smallest valid size covering it. Otherwise the
    number of tiles is the least the requested size allows and the stride is spread evenly
    (rounded up to 2**depth), which may make the tile smaller than requested.

    Parameters
    ----------
    length : int
        Axis length, px (>= 1).
    tile : int
        Requested network input size, px.
    depth : int
        The network's number of poolings.
    padding : {"valid", "same"}
        The network's padding.

    Returns
    -------
    AxisPlan
        Tile size, stride, margin and write starts along the axis.

    Raises
    ------
    UNetCellsError
        ``length`` is below 1.
    """
    if length < 1:
        raise UNetCellsError(f"Cannot tile an empty axis (length {length}).")
    step = 2**depth
    margin = tile_margin(depth, padding)
    tile = snap_tile(tile, depth, padding)
    out = usable_output(tile, depth, padding)
    if length <= out:
        single = tile_for_output(length, depth, padding)
        return AxisPlan(length, single, length, margin, (0,))
    max_stride = (out // step) * step
    count = math.ceil(length / max_stride)
    stride = math.ceil(math.ceil(length / count) / step) * step
    tile = tile_for_output(stride, depth, padding)
    return AxisPlan(length, tile, stride, margin, tuple(i * stride for i in range(count)))


# --------------------------------------------------------------------------------------
# the grid
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One tile, in image pixel coordinates (Y, X).

    write: (y0, y1, x0, x1), inside the image; the tiles' write regions cover it exactly.
    read: (y0, y1, x0, x1) of the network input; may reach outside the image (mirrored).
    crop: (y0, y1, x0, x1) of the network output that goes to ``write``.
    """

    index: int
    row: int
    col: int
    write: tuple[int, int, int, int]
    read: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]


@dataclass(frozen=True)
class TileGrid:
    """The overlap-tile plan of one (Y, X) plane.

    tile_shape: network input size (Ty, Tx); out_shape: network output size (Oy, Ox)
    (equal to tile_shape for 'same' padding); margin: context per side, px;
    out_offset: network output pixel j lies at input pixel j + out_offset.
    """

    image_shape: tuple[int, int]
    tile_shape: tuple[int, int]
    out_shape: tuple[int, int]
    margin: int
    out_offset: int
    depth: int
    padding: str
    y: AxisPlan
    x: AxisPlan
    tiles: tuple[Tile, ...]

    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def exact(self) -> bool:
        """True if tiled prediction equals whole-image prediction (valid padding)."""
        return self.padding == "valid"


def plan_tiles(
    image_shape: tuple[int, int],
    tile: int | tuple[int, int],
    depth: int,
    padding: Padding = "valid",
) -> TileGrid:
    """The tile grid of a (Y, X) plane for a U-Net of ``depth`` and ``padding``.

    Parameters
    ----------
    image_shape : (int, int)
        (Y, X) of the plane (or of the region to predict), px.
    tile : int or (int, int)
        Requested input tile size in px (one int for both axes, or (Ty, Tx)); snapped to
        valid sizes, shrunk for small images, balanced across the image (see plan_axis).
    depth, padding
        The network's poolings and padding ("valid" or "same").

    Returns
    -------
    TileGrid
        Write regions covering the plane exactly, read regions (input tiles, may reach
        outside the plane: mirrored) and the crop of each output tile.
    """
    if len(image_shape) != 2:
        raise UNetCellsError(f"plan_tiles needs a (Y, X) shape, got {image_shape}.")
    ty, tx = (tile, tile) if isinstance(tile, int | np.integer) else tile
    py = plan_axis(int(image_shape[0]), int(ty), depth, padding)
    px = plan_axis(int(image_shape[1]), int(tx), depth, padding)
    if padding == "same":
        out_shape, out_offset = (py.tile, px.tile), 0
    else:
        out_shape = (output_size(py.tile, depth), output_size(px.tile, depth))
        out_offset = context_margin(depth)
    margin = py.margin
    tiles = []
    for row, y0 in enumerate(py.starts):
        y1 = min(y0 + py.stride, py.length)
        for col, x0 in enumerate(px.starts):
            x1 = min(x0 + px.stride, px.length)
            ry, rx = y0 - margin, x0 - margin
            cy, cx = y0 - (ry + out_offset), x0 - (rx + out_offset)
            tiles.append(
                Tile(
                    index=len(tiles),
                    row=row,
                    col=col,
                    write=(y0, y1, x0, x1),
                    read=(ry, ry + py.tile, rx, rx + px.tile),
                    crop=(cy, cy + y1 - y0, cx, cx + x1 - x0),
                )
            )
    return TileGrid(
        image_shape=(py.length, px.length),
        tile_shape=(py.tile, px.tile),
        out_shape=out_shape,
        margin=margin,
        out_offset=out_offset,
        depth=depth,
        padding=padding,
        y=py,
        x=px,
        tiles=tuple(tiles),
    )


# --------------------------------------------------------------------------------------
# reading tiles with mirroring
# --------------------------------------------------------------------------------------


def reflect_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Indices into an axis of ``length`` for positions start..stop-1, mirrored at the edges.

    Same as numpy.pad(mode="reflect") (the edge pixel is not repeated), for any distance
    outside the axis; a 1-pixel axis repeats its pixel.

    Parameters
    ----------
    start, stop : int
        Positions along the axis, px; may lie outside [0, length).
    length : int
        Axis length, px (>= 1).

    Returns
    -------
    numpy.ndarray
        int64 (stop - start,), each in [0, length).
    """
    positions = np.arange(start, stop)
    if length == 1:
        return np.zeros_like(positions)
    period = 2 * (length - 1)
    positions = np.mod(positions, period)
    return np.where(positions < length, positions, period - positions)


def read_tile(plane: np.ndarray, tile: Tile, out: np.ndarray | None = None) -> np.ndarray:
    """The read region of ``tile`` from ``plane``, mirrored outside the plane.

    Parameters
    ----------
    plane : numpy.ndarray
        (Y, X) or (Y, X, C), any dtype.
    tile : Tile
        Its ``read`` region (y0, y1, x0, x1) in plane px.
    out : numpy.ndarray, optional
        (Ty, Tx[, C]) to write into.

    Returns
    -------
    numpy.ndarray
        (Ty, Tx[, C]) of ``plane``'s dtype. Reads only the pixels the tile needs: no
        padded copy of the whole plane is made.
    """
    h, w = plane.shape[:2]
    y0, y1, x0, x1 = tile.read
    if 0 <= y0 and y1 <= h and 0 <= x0 and x1 <= w:
        region = plane[y0:y1, x0:x1]
    else:
        rows = reflect_indices(y0, y1, h)
        cols = reflect_indices(x0, x1, w)
        # contiguous inner part + mirrored fringe, gathered in one fancy-index
        region = plane[rows[:, None], cols[None, :]]
    if out is None:
        return np.array(region, copy=True)
    out[...] = region
    return out


def shift_reads(grid: TileGrid, dy: int, dx: int) -> TileGrid:
    """The same grid with every read region moved by (dy, dx) px; writes stay.

    For a block that carries ``dy``/``dx`` px of real neighbouring pixels (a dask overlap)
    before its core: the grid is planned on the core, tiles are read from the padded block.

    Parameters
    ----------
    grid : TileGrid
        A grid planned on the block's core.
    dy, dx : int
        Shift of the read regions, px (the overlap before the core).

    Returns
    -------
    TileGrid
        A new grid (``grid`` is not changed).
    """
    tiles = tuple(
        Tile(
            index=t.index,
            row=t.row,
            col=t.col,
            write=t.write,
            read=(t.read[0] + dy, t.read[1] + dy, t.read[2] + dx, t.read[3] + dx),
            crop=t.crop,
        )
        for t in grid.tiles
    )
    return dataclasses.replace(grid, tiles=tiles)


def dependency_reach(depth: int, padding: Padding = "valid") -> int:
    """How far (px) an output pixel's input dependencies reach, per side, at most.

    The context margin plus up to 2**depth - 1 px, depending on the pixel's position in
    the pooling grid (measured: depth 2 -> 23 px with a 20 px margin). The overlap that
    chunked prediction needs between chunks.

    Parameters
    ----------
    depth : int
        The network's number of poolings.
    padding : {"valid", "same"}
        The network's padding.

    Returns
    -------
    int
        ``tile_margin(depth, padding) + 2**depth``, px.
    """
    return tile_margin(depth, padding) + 2**depth
