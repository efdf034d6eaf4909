"""Train / Stop / Preview buttons, the progress bar, the status line and the live plot.

:meth:`ProgressPanel.show_event` draws one ``TrainEvent`` of ``core.train.train_iter``:
it is called on the GUI thread for every event the training worker yields.
"""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_error
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from .._plot import LivePlot
from .._tips import tip

_TIPS = {
    "train_button": "Start training in the background; napari stays usable. Progress, time "
    "left, loss and validation AP50 show below.",
    "stop_button": "Stop after the current step; the best model so far is saved and kept.",
    "preview_button": "Add 4 augmented training tiles (image, labels, weight map) as layers, "
    "exactly as the network sees them.",
}


def event_text(event: Any) -> str:
    """The status line for a "step" or "validation" event: step, loss, best AP50, time left.

    Parameters
    ----------
    event : TrainEvent
        A training progress event (``step``, ``total_steps``, ``loss``,
        ``best_metrics``, ``eta_s`` in s).

    Returns
    -------
    str
        The parts present, joined by " · ".
    """
    total = f"/{event.total_steps}" if event.total_steps else ""
    parts = [f"step {event.step}{total}"]
    if event.loss is not None:
        parts.append(f"loss {event.loss:.4f}")
    if event.best_metrics:
        parts.append(f"best AP50 {event.best_metrics['ap50']:.3f}")
    if event.eta_s is not None:
        parts.append(f"{int(event.eta_s) // 60} min {int(event.eta_s) % 60:02d} s left")
    return "  ·  ".join(parts)


class ProgressPanel(QWidget):
    """The controls and read-outs of one training run (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.preview_button = QPushButton("Preview augmentation")
        actions = QHBoxLayout()
        actions.addWidget(self.train_button)
        actions.addWidget(self.stop_button)
        layout.addLayout(actions)
        layout.addWidget(self.preview_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.plot = LivePlot()
        layout.addWidget(self.plot, 1)
        for name, text in _TIPS.items():
            tip(getattr(self, name), text)

    def started(self, total_steps: int | None) -> None:
        """A run begins: empty plot, bar at 0, Train off, Stop on."""
        self.plot.clear(total_steps)
        self.progress.setValue(0)
        self.status.setText("preparing the training data ...")
        self.set_running(True)

    def refuse(self, message: str) -> None:
        """A request was refused: say why in the status (it stays) and as a notification."""
        self.status.setText(f"Not started: {message}")
        show_error(message)

    def set_running(self, running: bool) -> None:
        """Enable Train when idle, Stop while a run goes on."""
        self.train_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def stopping(self) -> None:
        """Stop was asked for: say what happens next."""
        self.stop_button.setEnabled(False)
        self.status.setText(
            "stopping after the current step: the best model validated so far is kept and "
            "saved ..."
        )

    def show_event(self, event: Any) -> None:
        """Show one training event: bar, plot points, status line."""
        self.progress.setValue(int(1000 * event.progress))
        if event.kind in ("start", "tuning"):
            self.status.setText(event.message)
            return
        if event.kind == "step" and event.loss is not None:
            self.plot.add_loss(event.step, event.loss)
        if event.kind == "validation" and event.metrics:
            self.plot.add_ap(event.step, event.metrics["ap50"])
        if event.kind == "done":
            self.progress.setValue(1000)
            self.status.setText(event.message)
            return
        self.status.setText(event_text(event))
