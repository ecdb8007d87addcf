"""Where uploaded files live: `<data dir>/uploads/{document_id}/{safe_name}`.

Uploads stream into `<data dir>/incoming/` first and are moved into place with
an atomic rename only once accepted, so a cut-off upload never leaves a
half-written file among the documents.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import tempfile
import time
import unicodedata
import uuid
from pathlib import Path

import peewee

from docintel.core.errors import InsufficientStorage

MAX_NAME_BYTES = 150
# The errors that mean "no room": no free blocks or inodes, or the quota is used up.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
SQLITE_FULL_MESSAGE = "database or disk is full"


def safe_name(filename: str, default_stem: str = "document") -> str:
    """A file name that is safe to create on disk, derived from the client's name.

    No path separators, no `..`, no control or format characters, no leading
    dots, bounded length; the extension is kept so the type stays visible.
    """
    name = unicodedata.normalize("NFC", filename or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = " ".join(name.split())  # collapse whitespace runs, strip ends
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    ext = "".join(ch for ch in ext if ch.isalnum())[:16]
    stem = stem.replace("..", "_").strip(". ") or default_stem
    suffix = f".{ext}" if ext else ""
    while len((stem + suffix).encode("utf-8")) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return (stem.rstrip(". ") or default_stem) + suffix


# With a shared data dir, what another node may still be working on is left
# alone for this long: an upload that is streaming in, or placed but not yet queued.
SHARED_GRACE_SECONDS = 3600.0
# A part file this old is no upload in progress: 10 MB at the slowest body rate
# allowed (DOCINTEL_BODY_MIN_RATE, 500 B/s) takes under six hours.
STALE_PART_SECONDS = 24 * 3600.0


class Storage:
    def __init__(self, data_dir: Path, shared: bool = False) -> None:
        """`shared`: other processes (other nodes) use the same data dir at once."""
        self.uploads = data_dir / "uploads"
        self.shared = shared
        self._incoming_root = data_dir / "incoming"
        # Each process streams into a folder of its own when the data dir is
        # shared, so that one node's start-up never clears another's uploads.
        self.incoming = (
            self._incoming_root / f"node-{uuid.uuid4().hex[:12]}" if shared else self._incoming_root
        )

    def prepare(self) -> None:
        """Create the folders; clear partial uploads a crash may have left."""
        self.uploads.mkdir(parents=True, exist_ok=True)
        if not self.shared:
            shutil.rmtree(self.incoming, ignore_errors=True)
        else:
            # Other nodes' folders are theirs while they live: only part files
            # older than any upload can take (a dead node's) go, and the
            # folders themselves stay (an idle live node's folder looks old).
            self._incoming_root.mkdir(parents=True, exist_ok=True)
            for part in self._incoming_root.glob("node-*/part-*"):
                if _age(part) > STALE_PART_SECONDS:
                    part.unlink(missing_ok=True)
        self.incoming.mkdir(parents=True, exist_ok=True)

    def new_incoming(self) -> tuple[int, Path]:
        """An open file descriptor and path for a streaming upload."""
        try:
            fd, path = tempfile.mkstemp(dir=self.incoming, prefix="part-")
        except FileNotFoundError:
            # Our folder went (an operator's clean-up of a shared data dir): again.
            self.incoming.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(dir=self.incoming, prefix="part-")
        return fd, Path(path)

    @staticmethod
    def write_all(fd: int, data: bytes | memoryview) -> None:
        """Write every byte of `data`: a write that fills the disk returns short
        first (and raises ENOSPC only on the next call), so a single `os.write`
        could silently keep part of a chunk."""
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def full_error(self, exc: BaseException, what: str) -> InsufficientStorage:
        """The error to answer for `exc` (see `is_out_of_space`): `what` did not
        happen, and why, in a sentence."""
        return InsufficientStorage(what, self._why_full(exc))

    def _why_full(self, exc: BaseException) -> str:
        if isinstance(exc, OSError) and exc.errno == errno.EDQUOT:
            return "the server's disk quota is used up"
        if not isinstance(exc, OSError):
            return "the server's disk is full (its database cannot grow)"
        try:
            fs = os.statvfs(self.uploads)
        except OSError:
            return "the server's disk is full"
        # ENOSPC is the same error for blocks and inodes; statvfs tells which ran out.
        if fs.f_files > 0 and fs.f_favail == 0:
            return "the server's disk has no free inodes (no room for another file)"
        return "the server's disk is full"

    def place(self, incoming: Path, document_id: str, name: str) -> Path:
        """Move an accepted upload to its final place; returns the final path."""
        target = self.path_for(document_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(incoming, target)
        return target

    def path_for(self, document_id: str, name: str) -> Path:
        target = (self.uploads / document_id / name).resolve()
        # Belt and braces: ids are generated and names sanitized, but nothing
        # may ever resolve outside the uploads folder.
        if not target.is_relative_to(self.uploads.resolve()):
            raise ValueError(f"refusing a path outside the uploads folder: {target}")
        return target

    def remove(self, document_id: str) -> None:
        folder = self.uploads / document_id
        if folder.resolve().parent == self.uploads.resolve():
            shutil.rmtree(folder, ignore_errors=True)

    def sweep(self, known_ids: set[str]) -> list[str]:
        """Remove upload folders with no document row (a crash between the two)."""
        removed = []
        for entry in self.uploads.iterdir():
            if self.shared and _age(entry) < SHARED_GRACE_SECONDS:
                continue  # another node may be about to queue it
            if entry.is_dir() and entry.name not in known_ids:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def is_out_of_space(exc: BaseException) -> bool:
    """Whether `exc` says the disk is full: ENOSPC or EDQUOT from the system, or
    SQLite's SQLITE_FULL ("database or disk is full", which peewee wraps)."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if not isinstance(exc, (sqlite3.Error, peewee.DatabaseError)):
        return False
    # peewee's OperationalError carries sqlite3's as its first argument.
    causes = [exc, *(a for a in exc.args if isinstance(a, sqlite3.Error))]
    for cause in causes:
        code = getattr(cause, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL:  # any extended code
            return True
    return any(SQLITE_FULL_MESSAGE in str(cause) for cause in causes)
