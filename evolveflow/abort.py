"""The search was aborted: work in flight is dropped, never recorded as an outcome of the candidate."""
from __future__ import annotations


class Aborted(Exception):
    """Raised in a round (or an evaluation) once its search was aborted (a second Ctrl-C, a breaker)."""


class SearchAborted(Exception):
    """A search ended by abort: raised to whoever called the flow (the run's state is Cancelled)."""
