"""Predictions other docks ask for (``workspace.request_prediction``), run by Predict.

A request that arrives while the dock predicts, or while its folder run goes on, waits
(one at a time: a newer request replaces it) and runs when that work ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any


class PredictionRequests:
    """Takes the workspace's requests for a Predict dock.

    ``busy()`` is True while the dock predicts or runs a folder; ``run_on(image, model)``
    starts a prediction; ``status`` is the dock's status label. Call :meth:`take` when the
    workspace announces a request and :meth:`release` whenever a run or folder run ends.
    """

    def __init__(
        self,
        workspace: Any,
        busy: Callable[[], bool],
        run_on: Callable[[Any, str], None],
        status: Any,
    ) -> None:
        self.workspace = workspace
        self.busy = busy
        self.run_on = run_on
        self.status = status
        self.queued: tuple[Any, str] | None = None  # a request that came while busy

    def take(self, *_: Any) -> None:
        """Run the workspace's waiting request now, or queue it while the dock is busy."""
        request = self.workspace.take_prediction_request()
        if request is None:
            return
        image, model = request
        with contextlib.suppress(RuntimeError):  # the widget was deleted meanwhile
            if self.busy():
                self.queued = (image, model)
                name = getattr(image, "name", image)
                self.status.value = f"Next: {model!r} on {name!r}, when the current run ends."
                return
            self.run_on(image, model)

    def release(self) -> None:
        """A run or folder run ended: start the queued request, if any and none is busy."""
        if self.queued is None or self.busy():
            return
        queued, self.queued = self.queued, None
        with contextlib.suppress(RuntimeError):  # the widget was deleted meanwhile
            self.run_on(*queued)

    def drop(self) -> None:
        """Forget the queued request (Stop, or the dock closes)."""
        self.queued = None
