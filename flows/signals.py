"""Ctrl-C and SIGTERM during a search: the first asks for a clean stop, the second aborts."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(request_stop: Callable[[str], None], abort: Callable[[str], None]) -> Iterator[None]:
    """Routes SIGINT/SIGTERM while inside: the first to request_stop, the second to abort, a third
    raises KeyboardInterrupt.

    Replaces Prefect's own SIGTERM bridge for the duration, so a cancellation or `kill` lets the
    rounds in flight finish and the search end with a summary instead of crashing mid-round.
    Outside the main thread signals cannot be handled: then it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            request_stop(name)
        elif len(received) == 2:
            abort(name)
        else:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
