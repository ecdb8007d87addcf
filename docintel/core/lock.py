"""One server per data dir: an exclusive lock that the kernel drops when its holder dies.

The embedded SQLite database, the upload folders and the start-up recovery
(work left in flight goes back to the queue) all assume that one process owns
the data dir. A second server on it would requeue the first one's running work
and run it twice, so it must refuse to start. A `flock` is held for the life
of the process: no stale lock file to clean up after a crash or `kill -9`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from docintel.core.errors import DocintelError

LOCK_FILE = "server.lock"


class DataDirInUse(DocintelError):
    """The data dir is in use by another docintel server."""

    code = "data_dir_in_use"


class DataDirLock:
    """Held from `acquire()` until `release()` or the end of the process."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, data_dir: Path, port: int) -> DataDirLock:
        """Take the lock, or raise DataDirInUse naming the holder's PID and port."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise DataDirInUse(
                f"the data dir {data_dir} is in use by another docintel server ({holder}); "
                "stop it first, or give this one another --data-dir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "port": port}).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _read(fd: int) -> dict[str, object]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # the holder is between truncating and writing
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, object]) -> str:
    parts = []
    if holder.get("pid"):
        parts.append(f"PID {holder['pid']}")
    if holder.get("port"):
        parts.append(f"port {holder['port']}")
    return ", ".join(parts) or "starting up"
