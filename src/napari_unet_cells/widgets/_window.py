"""The napari main window, seen from a dock: be told when it closes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget


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
