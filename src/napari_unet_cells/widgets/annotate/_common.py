"""Small helpers the Annotate panels share: combo boxes of layers, errors as notifications."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.utils.notifications import show_error
from qtpy.QtWidgets import QComboBox, QLayout

from ... import layers as L
from ...core import annotation as A
from ...core.errors import UNetCellsError

NONE = "(none)"  # the empty choice of an optional combo box

# the ignore mask: 1 = ignore (grey), 0 = annotated (transparent)
IGNORE_COLOURS = {None: "transparent", 0: "transparent", 1: "gray"}

# colours of the check layer, by CHECK_CODES value
CHECK_COLOURS = {
    None: "transparent",
    0: "transparent",
    A.CHECK_CODES["split_id"]: "magenta",
    A.CHECK_CODES["speck"]: "yellow",
    A.CHECK_CODES["edge"]: "orange",
    A.CHECK_CODES["border"]: "white",
    A.CHECK_CODES["merged_by_prediction"]: "red",
    A.CHECK_CODES["split_by_prediction"]: "cyan",
}


def index_of(combo: QComboBox, data: Any) -> int:
    """The index of the item holding ``data`` (compared by identity), or -1.

    Parameters
    ----------
    combo : QComboBox
        A combo box whose items hold layers as their data.
    data : Any
        The layer (napari's proxy or the layer itself).

    Returns
    -------
    int
        The item's index, or -1 when no item holds it.
    """
    data = L.unwrap(data)
    for i in range(combo.count()):
        if combo.itemData(i) is data:
            return i
    return -1


def select(combo: QComboBox, data: Any) -> None:
    """Select the item holding ``data`` (a layer) in a combo box, if it is there.

    Parameters
    ----------
    combo : QComboBox
        A combo box whose items hold layers as their data.
    data : layer
        The layer to select (napari's proxy or the layer itself).
    """
    index = index_of(combo, data)
    if index >= 0:
        combo.setCurrentIndex(index)


def fill(combo: QComboBox, layers: list[Any], optional: bool) -> None:
    """Replace the items of ``combo`` by ``layers``, keeping the current choice.

    The choice is kept when its layer is still there; no signal is emitted.

    Parameters
    ----------
    combo : QComboBox
        The combo box; each item shows a layer's name and holds the layer.
    layers : list of napari.layers.Layer
        The layers to offer, in order.
    optional : bool
        Put ``(none)`` (data None) first.
    """
    current = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    if optional:
        combo.addItem(NONE, None)
    for layer in layers:
        combo.addItem(layer.name, layer)
    index = index_of(combo, current) if current is not None else -1
    if index >= 0:
        combo.setCurrentIndex(index)
    combo.blockSignals(False)


def guard(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a user's mistake (UNetCellsError) becomes a notification, not a traceback.

    Other errors propagate.

    Parameters
    ----------
    fn : callable
        What to call.
    *args, **kwargs
        Passed to ``fn``.

    Returns
    -------
    Any
        ``fn``'s result, or None after a mistake.
    """
    try:
        return fn(*args, **kwargs)
    except UNetCellsError as err:
        show_error(str(err))
        return None


def no_margins(layout: QLayout) -> QLayout:
    """``layout`` without margins: a panel looks as if its controls were in the dock.

    Parameters
    ----------
    layout : QLayout
        Changed in place.

    Returns
    -------
    QLayout
        ``layout`` itself.
    """
    layout.setContentsMargins(0, 0, 0, 0)
    return layout
