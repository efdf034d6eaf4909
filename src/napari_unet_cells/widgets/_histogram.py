"""A small histogram drawn with QPainter, whose bars can be clicked (no plotting library,
like :mod:`napari_unet_cells.widgets._plot`).

``set_values(values, title)`` bins the values in about sqrt(n) bars (5 to 30);
``bar_of(values)`` says which bar each value falls in, by the same rule the counts use, so
"the cells of a bar" are exactly the ones it counts; a click emits ``bar_clicked(bar)``.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

_BAR = QColor(90, 170, 255)
_SELECTED = QColor(255, 217, 26)
_AXIS = QColor(160, 160, 160)


class Histogram(QWidget):
    """Bars of a column's values; a click on a bar emits ``bar_clicked(bar)`` (-1: none)."""

    bar_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edges = np.zeros(0)
        self.counts = np.zeros(0, np.int64)
        self.selected = -1
        self.title = ""
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_values(self, values: np.ndarray, title: str) -> None:
        """Show ``values`` (NaN left out) in about sqrt(n) bars, 5 to 30."""
        values = np.asarray(values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        self.title, self.selected = title, -1
        if finite.size == 0:
            self.edges, self.counts = np.zeros(0), np.zeros(0, np.int64)
        else:
            bars = int(np.clip(round(np.sqrt(finite.size)), 5, 30))
            self.edges = np.histogram_bin_edges(finite, bins=bars)
            self.counts = np.bincount(self.bar_of(finite), minlength=bars)
        self.update()

    def bar_of(self, values: np.ndarray) -> np.ndarray:
        """The bar of each value (-1 for NaN); the last bar includes its right edge."""
        values = np.asarray(values, dtype=np.float64)
        bars = np.clip(
            np.searchsorted(self.edges, values, side="right") - 1, 0, len(self.edges) - 2
        )
        return np.where(np.isfinite(values), bars, -1)

    def _plot_rect(self) -> QRectF:
        return QRectF(self.rect()).adjusted(8, 18, -8, -18)

    def bar_rect(self, bar: int) -> QRectF:
        """Where bar ``bar`` is drawn (full height of the plot area), in widget pixels."""
        rect = self._plot_rect()
        width = rect.width() / max(len(self.counts), 1)
        return QRectF(rect.left() + bar * width, rect.top(), width, rect.height())

    def bar_at(self, x: float) -> int:
        """The bar under widget x, or -1."""
        rect = self._plot_rect()
        if not len(self.counts) or not rect.left() <= x < rect.right():
            return -1
        return int((x - rect.left()) * len(self.counts) // rect.width())

    def mousePressEvent(self, event) -> None:
        point = event.position() if hasattr(event, "position") else event.pos()
        self.bar_clicked.emit(self.bar_at(point.x()))

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        rect = self._plot_rect()
        painter.setPen(QPen(_AXIS, 1))
        painter.drawLine(rect.bottomLeft(), rect.bottomRight())
        top = max(int(self.counts.max()) if len(self.counts) else 0, 1)
        for bar, count in enumerate(self.counts):
            cell = self.bar_rect(bar).adjusted(1, 0, -1, 0)
            height = rect.height() * count / top
            color = _SELECTED if bar == self.selected else _BAR
            painter.fillRect(
                QRectF(cell.left(), rect.bottom() - height, cell.width(), height), color
            )
        font = painter.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.85))
        painter.setFont(font)
        left, right = Qt.AlignmentFlag.AlignLeft, Qt.AlignmentFlag.AlignRight
        below = QRectF(rect.left(), rect.bottom() + 2, rect.width(), 16)
        if len(self.edges):
            painter.drawText(below, left, f"{self.edges[0]:.4g}")
            painter.drawText(below, right, f"{self.edges[-1]:.4g}")
        text = f"{self.title}  (max {top} cells per bar; click a bar)" if len(self.counts) else ""
        painter.drawText(QRectF(rect.left(), 0, rect.width(), 16), left, text)
        painter.end()
