"""The tile grid overlay: every tile's write region and one tile's read region with its
context margin, as in the paper's Figure 2."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import layers as L
from ...core.config import ModelConfig
from ...core.errors import UNetCellsError
from .inputs import AUTO


def grid_tile(
    config: ModelConfig, device: str, choice: str, last: tuple[int, int] | None = None
) -> int | tuple[int, int]:
    """The input tile (px) a run uses for the Tile control's ``choice``: that size snapped;
    for "auto", the tile of the ``last`` run, else the automatic one on ``device`` (the
    CPU when that device is not available)."""
    from ...core.device import resolve_device
    from ...core.predict import auto_tile_and_batch

    if choice == AUTO and last is not None:
        return last
    tile = None if choice in (None, AUTO) else int(choice)
    try:
        resolved = resolve_device(device)
    except UNetCellsError:
        resolved = resolve_device("cpu")
    return auto_tile_and_batch(config, resolved, tile, 1)[0]


def grid_rectangles(
    shape: tuple[int, int], config: ModelConfig, tile: int
) -> tuple[list[np.ndarray], list[str]]:
    """Write regions of all tiles (yellow) and a middle tile's read region (blue).

    Parameters
    ----------
    shape : (int, int)
        The image plane (Y, X), px.
    config : ModelConfig
        The network (depth and padding set the tiles' context margin).
    tile : int or (int, int)
        The network input tile, px.

    Returns
    -------
    (list of ndarray, list of str)
        Rectangles, corners (4, 2) in the plane's pixel coordinates with half-pixel edges
        so they frame the pixels, and their edge colours.
    """
    from ...core.tiling import plan_tiles

    grid = plan_tiles(tuple(shape), tile, config.depth, config.padding)

    def box(y0, y1, x0, x1):
        return np.array(
            [
                [y0 - 0.5, x0 - 0.5],
                [y0 - 0.5, x1 - 0.5],
                [y1 - 0.5, x1 - 0.5],
                [y1 - 0.5, x0 - 0.5],
            ]
        )

    rectangles = [box(*t.write) for t in grid.tiles]
    colors = ["yellow"] * len(rectangles)
    middle = grid.tiles[len(grid.tiles) // 2]
    rectangles.append(box(*middle.read))
    colors.append("dodgerblue")
    return rectangles, colors


def dock_grid(
    inputs: Any, layer: Any, last: tuple[int, int] | None = None
) -> tuple[list[np.ndarray], list[str]]:
    """:func:`grid_rectangles` over ``layer`` for the model, device and tile chosen in the
    dock's Inputs panel (``last``: the tile of the last run, for "auto")."""
    config = inputs.model_config()
    tile = grid_tile(config, inputs.device.value, inputs.tile.value, last)
    return grid_rectangles(L.plane_shape(layer)[-2:], config, tile)


class TileGridOverlay:
    """The Shapes layer "<image> tile grid" (not editable), owned by one dock."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.layer: Any | None = None

    def forget_removed(self) -> None:
        """Drop the layer if the user removed it from the viewer."""
        if self.layer is not None and self.layer not in self.viewer.layers:
            self.layer = None

    def hide(self) -> None:
        """Remove the overlay."""
        if self.layer is not None and self.layer in self.viewer.layers:
            self.viewer.layers.remove(self.layer)
        self.layer = None

    def show(self, image: Any, rectangles: list[np.ndarray], colors: list[str]) -> None:
        """Show (or replace) the overlay over ``image`` with its scale and translate."""
        shape = L.plane_shape(image)[-2:]
        self.hide()
        self.layer = self.viewer.add_shapes(
            rectangles,
            shape_type="rectangle",
            edge_color=colors,
            face_color="transparent",
            edge_width=max(1.0, max(shape) / 400),
            name=f"{image.name} tile grid",
            scale=tuple(image.scale)[-2:],
            translate=tuple(image.translate)[-2:],
        )
        self.layer.editable = False
