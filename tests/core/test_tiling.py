"""Overlap-tile geometry: exact coverage, pooling alignment, mirroring like numpy."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.tiling import (
    dependency_reach,
    plan_axis,
    plan_tiles,
    read_tile,
    reflect_indices,
    shift_reads,
    smallest_tile,
    snap_tile,
    tile_for_output,
    tile_margin,
    usable_output,
)
from napari_unet_cells.core.unet import context_margin, is_valid_input_size, output_size


@pytest.mark.parametrize("length", [1, 2, 3, 5, 17])
def test_reflect_indices_match_numpy_pad(length):
    data = np.arange(length)
    pad = 3 * length + 7
    expected = np.pad(data, (pad, pad), mode="reflect")
    got = data[reflect_indices(-pad, length + pad, length)]
    np.testing.assert_array_equal(got, expected)


def test_paper_numbers_depth4():
    assert tile_margin(4) == 92
    assert usable_output(572, 4) == 388
    assert smallest_tile(4) == 204  # 188 px gives only 4 output pixels, less than one pool
    assert snap_tile(500, 4) == 492
    assert snap_tile(10, 4) == 204
    plan = plan_axis(1024, 572, 4)
    assert len(plan.starts) == 3 and plan.stride % 16 == 0
    assert plan.tile <= 572 and is_valid_input_size(plan.tile, 4)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("length", [1, 3, 16, 45, 100, 257, 1000])
@pytest.mark.parametrize("tile", [1, 60, 130, 300, 700])
def test_axis_plan_covers_exactly_and_aligns(depth, length, tile):
    plan = plan_axis(length, tile, depth)
    step = 2**depth
    assert is_valid_input_size(plan.tile, depth)
    out = output_size(plan.tile, depth)
    covered = np.zeros(length, int)
    for start in plan.starts:
        assert start % step == 0  # pooling grids of tile and whole image coincide
        stop = min(start + plan.stride, length)
        assert stop - start <= out
        covered[start:stop] += 1
    np.testing.assert_array_equal(covered, 1)
    # never larger than asked for (unless below the smallest tile)
    assert plan.tile <= max(snap_tile(tile, depth), smallest_tile(depth))
    if len(plan.starts) == 1:  # one tile: as small as covers the axis
        assert plan.tile == tile_for_output(length, depth)


@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (120, 45), (333, 251)])
@pytest.mark.parametrize("tile", [44, 64, (48, 100), 200])
def test_grid_write_regions_partition_the_image(shape, tile):
    depth = 2
    grid = plan_tiles(shape, tile, depth)
    margin = context_margin(depth)
    count = np.zeros(shape, int)
    for t in grid.tiles:
        y0, y1, x0, x1 = t.write
        count[y0:y1, x0:x1] += 1
        assert t.read[1] - t.read[0] == grid.tile_shape[0]
        assert t.read[3] - t.read[2] == grid.tile_shape[1]
        assert (t.read[0], t.read[2]) == (y0 - margin, x0 - margin)
        cy0, cy1, cx0, cx1 = t.crop
        assert (cy1 - cy0, cx1 - cx0) == (y1 - y0, x1 - x0)
        assert 0 <= cy0 and cy1 <= grid.out_shape[0] and 0 <= cx0 and cx1 <= grid.out_shape[1]
    np.testing.assert_array_equal(count, 1)
    assert grid.exact


def test_read_tile_mirrors_like_numpy_pad():
    rng = np.random.default_rng(0)
    plane = rng.random((13, 9, 2)).astype(np.float32)
    grid = plan_tiles(plane.shape[:2], 44, 2)
    m = grid.margin
    pad_y = grid.tile_shape[0] - 13 - m
    pad_x = grid.tile_shape[1] - 9 - m
    padded = np.pad(plane, ((m, pad_y), (m, pad_x), (0, 0)), mode="reflect")
    tile = grid.tiles[0]
    np.testing.assert_array_equal(read_tile(plane, tile), padded)
    shifted = shift_reads(grid, 2, 3).tiles[0]
    assert shifted.read == (tile.read[0] + 2, tile.read[1] + 2, tile.read[2] + 3, tile.read[3] + 3)
    assert shifted.write == tile.write


def test_same_padding_is_tiled_with_context():
    grid = plan_tiles((100, 100), 96, 2, "same")
    assert grid.out_shape == grid.tile_shape and not grid.exact
    assert all(t.crop[0] == grid.margin for t in grid.tiles)
    assert dependency_reach(2) == 24


def test_bad_input():
    with pytest.raises(UNetCellsError):
        plan_axis(0, 100, 2)
    with pytest.raises(UNetCellsError):
        plan_tiles((10, 10, 3), 100, 2)


def test_tiling_needs_no_torch():
    """core/tiling.py plans tiles without importing torch (it used to, via core/unet.py)."""
    import subprocess
    import sys

    code = (
        "import sys; from napari_unet_cells.core import tiling; "
        "tiling.plan_tiles((300, 200), 100, 2); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_torch_free_sizes_agree_with_the_network_module(depth, padding):
    from napari_unet_cells.core import unet, unet_sizes

    assert unet_sizes.context_margin(depth, padding) == unet.context_margin(depth, padding)
    assert unet_sizes.min_input_size(depth, padding) == unet.min_input_size(depth, padding)
    for size in range(1, 400, 7):
        valid = unet.is_valid_input_size(size, depth, padding)
        assert unet_sizes.is_valid_input_size(size, depth, padding) == valid
        for direction in ("up", "down"):
            assert unet_sizes.nearest_valid_input_size(
                size, depth, padding, direction
            ) == unet.nearest_valid_input_size(size, depth, padding, direction)
        assert unet_sizes.input_size_for_output(
            size, depth, padding
        ) == unet.input_size_for_output(size, depth, padding)
        if valid:
            assert unet_sizes.output_size(size, depth, padding) == unet.output_size(
                size, depth, padding
            )
