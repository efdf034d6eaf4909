"""The docks' thread workers: made with ``dock_worker``, their errors told once
(``error_text``), and let go with ``release`` / ``detach`` when their dock goes away."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ..core.errors import UNetCellsError

logger = logging.getLogger(__name__)
_RELEASED: set[Any] = set()  # released workers, kept alive until their thread ends


def dock_worker(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A napari worker (not started) running ``func(*args, **kwargs)`` for a dock.

    Its errors reach only the handlers connected to ``errored`` (the dock shows one
    notification); napari would otherwise also re-raise them: a second notification and
    a traceback on the console.
    """
    from napari.qt.threading import create_worker

    return create_worker(func, *args, _start_thread=False, _ignore_errors=True, **kwargs)


def error_text(err: Exception, what: str) -> str:
    """The message for a worker's error: a UNetCellsError's own words; anything else
    (a bug) is logged with its traceback and told as "<what> failed: ..."."""
    if isinstance(err, UNetCellsError):
        return str(err)
    logger.error("%s failed", what, exc_info=err)
    return f"{what} failed: {err!r}"


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
