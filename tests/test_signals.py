"""flows/signals.py with real signals sent to this process: stop, then abort, then interrupt."""
from __future__ import annotations

import os
import signal

import pytest

from flows.signals import stop_on_signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_stops_second_aborts_third_interrupts(sig):
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with stop_on_signals(lambda name: calls.append(f"stop {name}"), lambda name: calls.append(f"abort {name}")):
            os.kill(os.getpid(), sig)
            os.kill(os.getpid(), sig)
            assert calls == [f"stop {sig.name}", f"abort {sig.name}"]
            os.kill(os.getpid(), sig)
    assert signal.getsignal(sig) is not None and calls == [f"stop {sig.name}", f"abort {sig.name}"]


def test_handlers_are_restored_on_exit():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(lambda name: None, lambda name: None):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
