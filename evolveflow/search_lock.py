"""One search at a time per experiment: an advisory lock file that names its holder."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


class SearchAlreadyRunning(Exception):
    """Another search holds this experiment's lock."""


class SearchLock:
    """An exclusive flock on a file; the OS releases it when the holder dies, even by kill -9."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
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
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.write(fd, json.dumps(info).encode())
        self._fd = fd

    def release(self) -> None:
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
