"""Workers whose dock goes away: ``release`` and ``detach``, shared by the docks."""

from __future__ import annotations

import contextlib
from typing import Any

_RELEASED: set[Any] = set()  # released workers, kept alive until their thread ends


def release(worker: Any) -> None:
    """Disconnect every handler of a running napari worker, keeping it referenced until
    it finishes: were it collected with its dock, its thread would end by emitting on
    deleted signals (a traceback, or an abort)."""
    for name in ("yielded", "returned", "errored", "finished"):
        # a function worker has no "yielded"; disconnect raises when nothing is connected,
        # and reading a signal raises RuntimeError once its Qt object was deleted
        with contextlib.suppress(AttributeError, TypeError, RuntimeError):
            getattr(worker, name).disconnect()
    with contextlib.suppress(RuntimeError):
        if worker.is_running:
            _RELEASED.add(worker)
            worker.finished.connect(lambda: _RELEASED.discard(worker))


def detach(worker: Any) -> None:
    """Release a napari worker (``release``) and ask it to quit (the dock closes)."""
    if worker is None:
        return
    release(worker)
    with contextlib.suppress(RuntimeError):
        worker.quit()
