"""One search at a time per experiment: an advisory lock file that names its holder.

`evolveflow run` takes the lock as "starting" before Prefect starts (10-20 s), so that status
and a second run see the search at once; the search flow, run in the same process, inherits it.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


class SearchAlreadyRunning(Exception):
    """Another search holds this experiment's lock."""


# Locks taken by hold_while_starting() in this process, by path: the next acquire inherits one.
_STARTING: dict[Path, "SearchLock"] = {}


class SearchLock:
    """An exclusive flock on a file; the OS releases it when the holder dies, even by kill -9."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        early = _STARTING.pop(self.path.resolve(), None)
        if early is not None and early._fd is not None:  # this process took it before Prefect started
            self._fd, early._fd = early._fd, None
            return
        self._acquire({})

    def _acquire(self, extra: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(self.path)
            os.close(fd)
            who = f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}" if holder else "another process"
            raise SearchAlreadyRunning(
                f"a search is already running on this experiment ({who}); lock file {self.path}. "
                "Wait for it to finish or stop it; `evolveflow status` works meanwhile."
            ) from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "started_at": time.time(), **extra}
        os.write(fd, json.dumps(info).encode())
        self._fd = fd

    @classmethod
    def hold_while_starting(cls, path: Path) -> "SearchLock":
        """Takes the lock marked "starting"; the next SearchLock on this path in this process inherits it.

        Readers treat the search as starting until it publishes a report newer than started_at.
        Release it when the run ends: a no-op once inherited (the inheritor releases it).
        """
        lock = cls(path)
        lock._acquire({"phase": "starting"})
        _STARTING[path.resolve()] = lock
        return lock

    def release(self) -> None:
        if _STARTING.get(self.path.resolve()) is self:
            del _STARTING[self.path.resolve()]
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "SearchLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: Path) -> dict:
    """Returns what the lock file says about its holder ({} if nothing)."""
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def starting_since(path: Path, report_path: Path) -> dict | None:
    """Returns the holder of a search that is starting ({pid, since}), or None.

    Starting: taken by `evolveflow run` and no report published since (the report on disk, if any,
    is the previous search's).
    """
    holder = read_holder(path)
    if holder.get("phase") != "starting":
        return None
    try:
        if report_path.stat().st_mtime >= holder.get("started_at", 0):
            return None
    except OSError:
        pass
    return {"pid": holder.get("pid"), "since": str(holder.get("started", "")).split(" ")[-1]}


def is_locked(path: Path) -> bool:
    """Returns True when a live process holds the lock."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
