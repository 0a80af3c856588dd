"""Retry options for tasks, taken from the config at search start."""
from __future__ import annotations

from typing import Callable

from prefect import Task

from evolveflow.config import TaskRetry


def backoff(retry: TaskRetry) -> list[float]:
    """Returns exponential retry delays: delay, 2x delay, 4x delay, ..."""
    return [retry.delay_s * 2**attempt for attempt in range(retry.retries)]


def with_retries(task: Task, retry: TaskRetry, only_for: tuple[type[BaseException], ...] = ()) -> Task:
    """Returns the task with the configured retries (only for these exception types, if given)."""
    def retry_only_for(_task, _run, state) -> bool:
        try:
            state.result()
        except only_for:
            return True
        except BaseException:
            return False
        return False

    condition: Callable | None = retry_only_for if only_for else None
    return task.with_options(
        retries=retry.retries, retry_delay_seconds=backoff(retry) or 0,
        retry_jitter_factor=0.2 if retry.retries else None, retry_condition_fn=condition,
    )
