"""The napari main window, seen from a dock: be told when it closes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

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
    """Call ``callback`` when the top-level window holding ``widget`` closes.

    That is napari's main window, once docked. The close event itself is let through; a
    callback on an already deleted dock (RuntimeError) is ignored.

    Parameters
    ----------
    widget : QWidget
        The dock (it parents the event filter, so the watch ends with it).
    callback : callable
        Called with no arguments.

    Returns
    -------
    bool
        False if ``widget`` is not in a window yet (nothing is watched).
    """
    window = widget.window()
    if window is None or window is widget:
        return False
    window.installEventFilter(_CloseWatcher(widget, callback))
    return True


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """A vertical layout inside a scroll area that fills ``widget``.

    A dock taller than the window scrolls instead of pushing napari's window off the
    screen. Call it once, on a widget without a layout.

    Parameters
    ----------
    widget : QWidget
        The dock; it gets a margin-less layout holding the scroll area.

    Returns
    -------
    QVBoxLayout
        The layout to add the dock's controls to (4 px margins).
    """
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
    """Once docked, title the dock (and so its tab) ``title``.

    Instead of napari's longer "<title> (<plugin>)", which tabs cut off. Applied on the
    next turn of the event loop; nothing happens if the widget is not in a dock then.

    Parameters
    ----------
    widget : QWidget
        The dock's widget.
    title : str
        The short title.
    """
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
    """Let the combo boxes and line edits in ``widget`` shrink to a narrow dock.

    Their minimum width no longer follows their longest entry (which shows in full when
    opened). Applies to the controls present now, not to those added later.

    Parameters
    ----------
    widget : QWidget
        Its descendants are changed.
    characters : int
        The minimum width, in characters.
    """
    from qtpy.QtWidgets import QComboBox, QLineEdit

    for combo in widget.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(characters)
    for edit in widget.findChildren(QLineEdit):
        edit.setMinimumWidth(edit.fontMetrics().horizontalAdvance("x" * characters))


def layer_list_events(viewer: Any) -> tuple:
    """The viewer's events after which layer choices must be refilled: a layer added,
    removed or renamed (a combo box showing an old name is a trap)."""
    events = viewer.layers.events
    return (events.inserted, events.removed, events.renamed)


class _RemovalWatcher(QObject):
    """Calls ``callback`` once when the widget it filters loses its parent (napari's
    ``remove_dock_widget``, the dock's close button) or is destroyed."""

    def __init__(self, widget: QWidget, callback: Callable[[], None]):
        super().__init__(widget)
        self.callback = callback
        self.called = False
        widget.installEventFilter(self)
        widget.destroyed.connect(lambda *_: self.fire())

    def fire(self) -> None:
        if not self.called:
            self.called = True
            self.callback()

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.ParentChange and obj.parent() is None:
            self.fire()
        return False


def on_dock_closed(widget: QWidget, callback: Callable[[], None]) -> None:
    """Call ``callback`` once when the dock holding ``widget`` is closed.

    napari's close button (``remove_dock_widget``) only takes the widget out of its dock
    (its parent becomes None): the widget, and a run it started, live on. This is told
    then, or when the widget is destroyed (napari closing), whichever comes first.

    Parameters
    ----------
    widget : QWidget
        The dock's widget (``.native`` for magicgui containers).
    callback : callable
        Called with no arguments, on the GUI thread.
    """
    widget._dock_closed_watcher = _RemovalWatcher(widget, callback)  # kept with the widget


def connect_while_alive(widget: QWidget, signal, callback: Callable[..., object]) -> None:
    """Connect ``signal`` to ``callback`` until ``widget``'s dock is closed or the widget
    destroyed (see :func:`on_dock_closed`).

    A closed dock is no longer called.

    Parameters
    ----------
    widget : QWidget
        The dock's widget.
    signal : psygnal.SignalInstance or napari EventEmitter
        E.g. a workspace's or the model registry's signal.
    callback : callable
        Called with the signal's arguments.
    """
    signal.connect(callback)
    watcher = _RemovalWatcher(widget, lambda: signal.disconnect(callback))
    widget._close_watchers = [*getattr(widget, "_close_watchers", []), watcher]
