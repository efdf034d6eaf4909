"""Long work as generators: the stop flag they check and the loop that consumes them.

Training, prediction and weight maps are generators that yield progress events and
return their result (``StopIteration.value``); widgets run them in a thread worker,
scripts and the CLI through ``run``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any

#: a stop request: a threading.Event, a callable returning True to stop, or None
StopFlag = threading.Event | Callable[[], bool] | None


def stop_requested(stop: StopFlag) -> bool:
    """True if ``stop`` (an Event, a callable or None) asks to stop."""
    if stop is None:
        return False
    if isinstance(stop, threading.Event):
        return stop.is_set()
    return bool(stop())


def run(gen: Generator, on_event: Callable[[Any], None] | None = None) -> Any:
    """Consume a progress generator; call ``on_event`` for each event; return its result."""
    while True:
        try:
            event = next(gen)
        except StopIteration as done:
            return done.value
        if on_event is not None:
            on_event(event)
