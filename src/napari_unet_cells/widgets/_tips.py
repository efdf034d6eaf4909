"""Tooltips that reach every part of a control.

magicgui puts a slider's tooltip on the slider only, not on the number read-out beside
it, and a file picker's on neither its text field nor its button; a Qt spin box keeps its
tooltip off the text field inside it. ``tip`` sets the tooltip on the control and on each
of its inner parts that has none, so hovering anywhere on a control explains it.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QScrollBar,
    QWidget,
)

_PARTS = (QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLineEdit)


def tip(widget: Any, text: str) -> None:
    """Set ``text`` as the tooltip of a control and of its inner parts that have none.

    Inner parts: a slider's read-out, a file picker's field and button, a spin box's
    text field (scroll bars are left alone). For magicgui widgets the label in front of
    the control shows it too.

    Parameters
    ----------
    widget : QWidget or magicgui.widgets.Widget
        The control.
    text : str
        The tooltip.
    """
    native = getattr(widget, "native", widget)
    if native is not widget:
        widget.tooltip = text
    native.setToolTip(text)
    for part in native.findChildren(QWidget):
        if isinstance(part, _PARTS) and not isinstance(part, QScrollBar) and not part.toolTip():
            part.setToolTip(text)
