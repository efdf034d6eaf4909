"""A small live plot of training loss and validation AP, drawn with QPainter.

No plotting library: napari does not ship matplotlib or pyqtgraph, and two curves need
none. Left axis: training loss (per step, thin, with a moving average); right axis:
validation AP50 (0..1, dots joined by a line). Adding points only schedules a repaint,
so calling it on every step from a worker's signal is cheap.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

_LOSS = QColor(90, 170, 255)
_LOSS_SMOOTH = QColor(30, 110, 230)
_AP = QColor(255, 150, 40)
_AXIS = QColor(160, 160, 160)


class LivePlot(QWidget):
    """Training loss (left axis) and validation AP50 (right axis, 0..1) against steps."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.loss: list[tuple[int, float]] = []
        self.smooth: list[tuple[int, float]] = []
        self.ap: list[tuple[int, float]] = []
        self.total_steps: int | None = None
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setToolTip("blue: training loss (left axis); orange: validation AP50 (right axis)")

    def clear(self, total_steps: int | None = None) -> None:
        self.loss.clear()
        self.smooth.clear()
        self.ap.clear()
        self.total_steps = total_steps
        self.update()

    def add_loss(self, step: int, loss: float) -> None:
        self.loss.append((step, loss))
        previous = self.smooth[-1][1] if self.smooth else loss
        self.smooth.append((step, 0.9 * previous + 0.1 * loss))
        self.update()

    def add_ap(self, step: int, ap: float) -> None:
        self.ap.append((step, ap))
        self.update()

    # -- drawing -----------------------------------------------------------------------

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(38, 8, -34, -20)
        painter.setPen(QPen(_AXIS, 1))
        painter.drawRect(rect)
        x_max = max(
            [self.total_steps or 0] + [s for s, _ in self.loss] + [s for s, _ in self.ap] + [1]
        )
        values = [v for _, v in self.loss]
        y_max = max(values) * 1.05 if values else 1.0
        y_max = y_max if y_max > 0 else 1.0

        def to_point(step: float, value: float, top: float) -> QPointF:
            x = rect.left() + rect.width() * step / x_max
            y = rect.bottom() - rect.height() * min(max(value / top, 0.0), 1.0)
            return QPointF(x, y)

        def polyline(points, top, pen) -> None:
            if len(points) < 2:
                return
            path = QPainterPath(to_point(*points[0], top))
            stride = max(1, len(points) // 1000)  # at most ~1000 segments
            for point in points[stride::stride]:
                path.lineTo(to_point(*point, top))
            path.lineTo(to_point(*points[-1], top))
            painter.setPen(pen)
            painter.drawPath(path)

        polyline(self.loss, y_max, QPen(_LOSS, 1))
        polyline(self.smooth, y_max, QPen(_LOSS_SMOOTH, 2))
        polyline(self.ap, 1.0, QPen(_AP, 2))
        painter.setPen(QPen(_AP, 2))
        painter.setBrush(_AP)
        for point in self.ap:
            painter.drawEllipse(to_point(*point, 1.0), 2.5, 2.5)

        painter.setPen(QPen(_AXIS, 1))
        font = painter.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.8))
        painter.setFont(font)
        align_right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        align_left = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        for frac in (0.0, 0.5, 1.0):
            y = rect.bottom() - rect.height() * frac
            label = f"{y_max * frac:.2g}"
            painter.drawText(QRectF(0, y - 8, rect.left() - 3, 16), align_right, label)
            painter.drawText(QRectF(rect.right() + 3, y - 8, 32, 16), align_left, f"{frac:.1f}")
        painter.drawText(
            QRectF(rect.left(), rect.bottom() + 2, rect.width(), 16),
            Qt.AlignmentFlag.AlignCenter,
            f"step (0 - {x_max})   loss (blue, left)   AP50 (orange, right)",
        )
        painter.end()
