"""Tells a failure of the storage itself (a full disk, read-only or failing storage) from other errors."""
from __future__ import annotations

import errno

STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO}
STORAGE_MESSAGES = ("No space left on device", "Read-only file system", "Disk quota exceeded", "Input/output error")


def storage_failure(exc: BaseException) -> bool:
    """True when exc (or an exception it was raised from) says the storage cannot be written."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            return True
        if any(message in str(current) for message in STORAGE_MESSAGES):  # DuckDB, LanceDB: text only
            return True
        current = current.__cause__ or current.__context__
    return False
