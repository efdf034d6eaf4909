"""The check panel of the Annotate dock: run the pre-training check in the background,
list its findings (real problems first, the notes folded into one line) and show them in
a '<annotation> check' layer."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from ... import layers as L
from ...core import annotation as A
from ...workspace import AnnotationLink
from .._tips import tip
from .._workers import dock_worker, error_text
from ._common import CHECK_COLOURS, guard

if TYPE_CHECKING:  # pragma: no cover
    from ..annotate_widget import AnnotateWidget

_NOTES = object()  # the list entry standing for the folded notes of a check


class CheckPanel(QGroupBox):
    """The Check group. ``report`` is the last report shown (or None); ``check_worker``
    the check running in the background (or None).

    Parameters
    ----------
    dock : AnnotateWidget
        The dock: its viewer, the chosen annotation and prediction.
    """

    def __init__(self, dock: AnnotateWidget) -> None:
        super().__init__("Check")
        self.dock = dock
        self.report: A.CheckReport | None = None
        self.check_worker = None
        self._findings: list[Any] = []  # what each row of the problem list shows
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 100_000)
        self.min_size.setValue(20)
        self.min_size.setSuffix(" px min")
        self.check_button = QPushButton("Check")
        row.addWidget(self.min_size)
        row.addWidget(self.check_button)
        layout.addLayout(row)
        self.check_progress = QProgressBar()
        self.check_progress.hide()
        layout.addWidget(self.check_progress)
        self.check_summary = QLabel("")
        self.check_summary.setWordWrap(True)
        self.problem_list = QListWidget()
        self.problem_list.setMaximumHeight(120)
        layout.addWidget(self.check_summary)
        layout.addWidget(self.problem_list)
        tip(
            self.min_size,
            "Check reports cells smaller than this many pixels as specks "
            "(usually stray brush strokes); default 20 px.",
        )
        tip(
            self.check_button,
            "Check the annotation before training: numbers used by two "
            "separate pieces, specks, cells cut by the ignore mask, and the border carved "
            "between touching cells; with a prediction chosen, also cells it merged or split. "
            "Problems are listed below and shown in a '<annotation> check' layer.",
        )
        tip(
            self.problem_list,
            "Problems found by Check, most urgent first; click one to centre "
            "the view on it. The touching pairs (information, nothing to fix) are folded into "
            "the last line: click it to list them.",
        )
        self.check_button.clicked.connect(lambda: guard(self.start_check))
        self.problem_list.currentRowChanged.connect(self.show_problem)

    def _inputs(self) -> tuple[AnnotationLink, dict[str, Any]]:
        """The annotation to check and the arguments of the core check (copies: painting
        may go on while the check runs)."""
        link = self.dock.link_for()
        pred = self.dock.prediction_combo.currentData()
        prediction = None
        if L.is_labels(pred) and tuple(pred.data.shape) == link.annotation.data.shape:
            prediction = np.asarray(pred.data)
        kwargs = {
            "labels": np.array(link.annotation.data, copy=True),
            "ignore": None if link.ignore is None else np.array(link.ignore.data, copy=True),
            "min_size": self.min_size.value(),
            "prediction": prediction,
        }
        return link, kwargs

    def check(self) -> A.CheckReport:
        """Run the check here and now (scripts) and show its report.

        The Check button runs it in the background instead (:meth:`start_check`).

        Returns
        -------
        core.annotation.CheckReport
            The problems and notes; also listed in the dock and shown in a
            '<annotation> check' layer.
        """
        link, kwargs = self._inputs()
        report = A.check_annotation(**kwargs)
        self._show_report(link, report)
        return report

    def start_check(self):
        """Run the check in a thread worker with progress (the Check button).

        Returns
        -------
        napari.qt.threading.GeneratorWorker
            The running worker (the one already running, if any); the window stays
            responsive and the report is shown when it arrives.
        """
        if self.check_worker is not None:
            return self.check_worker
        link, kwargs = self._inputs()

        def work():
            return (yield from A.iter_check_annotation(**kwargs))

        worker = dock_worker(work)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda report: self._show_report(link, report))
        worker.errored.connect(lambda err: show_error(error_text(err, "Check")))
        worker.finished.connect(self._on_finished)
        self.check_worker = worker
        self.check_button.setEnabled(False)
        self.check_progress.setValue(0)
        self.check_progress.show()
        self.check_summary.setText("checking ...")
        worker.start()
        return worker

    def _on_progress(self, event: A.CheckProgress) -> None:
        self.check_progress.setMaximum(event.total)
        self.check_progress.setValue(event.done)

    def _on_finished(self) -> None:
        self.check_worker = None
        with contextlib.suppress(RuntimeError):  # the dock was closed meanwhile
            self.check_button.setEnabled(True)
            self.check_progress.hide()

    def _show_report(self, link: AnnotationLink, report: A.CheckReport | None) -> None:
        viewer = self.dock.viewer
        if report is None or link.annotation not in viewer.layers:
            return
        self.report = report
        name = f"{link.annotation.name} check"
        if name in viewer.layers and L.is_labels(viewer.layers[name]):
            viewer.layers[name].data = report.mask
        else:
            layer = viewer.add_labels(
                report.mask,
                name=name,
                scale=link.annotation.scale,
                translate=link.annotation.translate,
                opacity=0.8,
                metadata={L.ROLE_KEY: "check"},
            )
            layer.colormap = CHECK_COLOURS
            layer.editable = False
        self.check_summary.setText(report.summary())
        self._list_findings(show_notes=False)
        viewer.layers.selection.active = link.annotation

    def _list_findings(self, show_notes: bool) -> None:
        """Problems first; the notes folded into one line, listed when it is clicked."""
        report = self.report
        self._findings = list(report.problems)
        items = [_finding_text(p) for p in report.problems]
        if report.notes and show_notes:
            self._findings += report.notes
            items += [_finding_text(p) for p in report.notes]
        elif report.notes:
            self._findings.append(_NOTES)
            items.append(f"▸ {report.notes_summary()}: click to list them")
        self.problem_list.blockSignals(True)
        self.problem_list.clear()
        self.problem_list.addItems(items)
        self.problem_list.blockSignals(False)

    def show_problem(self, row: int) -> None:
        """Centre the view on finding ``row`` of the list (the folded notes line: list
        the notes)."""
        if self.report is None or not 0 <= row < len(self._findings):
            return
        problem = self._findings[row]
        if problem is _NOTES:
            self._list_findings(show_notes=True)
            return
        viewer = self.dock.viewer
        layer = self.dock.link_for().annotation
        world = layer.data_to_world((*problem.plane, *problem.position))
        if layer.ndim > 2:
            viewer.dims.set_point(range(layer.ndim - 2), world[: layer.ndim - 2])
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        camera.center = tuple(world[-2:])

    def quit(self) -> None:
        """Stop a running check (the dock closes)."""
        if self.check_worker is not None:
            self.check_worker.quit()


def _finding_text(problem: A.Problem) -> str:
    plane = f"[{', '.join(map(str, problem.plane))}] " if problem.plane else ""
    return plane + problem.message
