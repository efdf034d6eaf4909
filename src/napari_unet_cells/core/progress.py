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
    """Whether ``stop`` asks to stop.

    Parameters
    ----------
    stop : StopFlag
        A ``threading.Event`` (set: stop), a callable returning True to stop, or None
        (never stop).

    Returns
    -------
    bool
        True to stop now.
    """
    if stop is None:
        return False
    if isinstance(stop, threading.Event):
        return stop.is_set()
    return bool(stop())


def run(gen: Generator, on_event: Callable[[Any], None] | None = None) -> Any:
    """Consume a progress generator; call ``on_event`` for each event; return its result.

    Runs in the calling thread until the generator ends.

    Parameters
    ----------
    gen : Generator
        Yields progress events and returns its result (``StopIteration.value``).
    on_event : callable, optional
        Called with each event, in order.

    Returns
    -------
    Any
        The generator's return value (None for most generators when stopped).
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as done:
            return done.value
        if on_event is not None:
            on_event(event)
