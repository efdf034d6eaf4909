"""The napari main window, seen from a dock: be told when it closes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QVBoxLayout, QWidget


class _CloseWatcher(QObject):
    """Calls ``callback`` when the window it filters receives a Close event (which it
    lets through)."""

    def __init__(self, parent: QWidget, callback: Callable[[], None]):
        super().__init__(parent)
        self.callback = callback

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Close:
            with contextlib.suppress(RuntimeError):  # the dock is already deleted
                self.callback()
        return False


def watch_window_close(widget: QWidget, callback: Callable[[], None]) -> bool:
    """Call ``callback`` when the top-level window holding ``widget`` (napari's main
    window, once docked) closes. False if ``widget`` is not in a window yet."""
    window = widget.window()
    if window is None or window is widget:
        return False
    window.installEventFilter(_CloseWatcher(widget, callback))
    return True


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """A vertical layout inside a scroll area that fills ``widget``: a dock taller than
    the window scrolls instead of pushing napari's window off the screen."""
    from qtpy.QtWidgets import QFrame, QScrollArea

    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = QScrollArea(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    inner = QWidget()
    area.setWidget(inner)
    outer.addWidget(area)
    layout = QVBoxLayout(inner)
    layout.setContentsMargins(4, 4, 4, 4)
    return layout


def short_dock_title(widget: QWidget, title: str) -> None:
    """Once docked, title the dock (and so its tab) ``title`` instead of napari's longer
    "<title> (<plugin>)", which tabs cut off."""
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QDockWidget

    def apply() -> None:
        with contextlib.suppress(RuntimeError):  # closed before the event loop ran
            parent = widget.parentWidget()
            while parent is not None and not isinstance(parent, QDockWidget):
                parent = parent.parentWidget()
            if parent is not None:
                parent.setWindowTitle(title)

    QTimer.singleShot(0, apply)


def compact_controls(widget: QWidget, characters: int = 6) -> None:
    """Let the combo boxes and line edits in ``widget`` shrink to a narrow dock: their
    minimum width no longer follows their longest entry (which shows in full when
    opened)."""
    from qtpy.QtWidgets import QComboBox, QLineEdit

    for combo in widget.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(characters)
    for edit in widget.findChildren(QLineEdit):
        edit.setMinimumWidth(edit.fontMetrics().horizontalAdvance("x" * characters))


def connect_while_alive(widget: QWidget, signal, callback: Callable[..., object]) -> None:
    """Connect ``signal`` (a psygnal signal, e.g. a workspace's or the model registry's,
    or a napari event emitter) to ``callback`` until ``widget`` is destroyed: a closed
    dock is no longer called."""
    signal.connect(callback)
    widget.destroyed.connect(lambda *_: signal.disconnect(callback))
