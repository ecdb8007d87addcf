"""One base error; each subclass has a machine code and a default sentence.

Core code raises these; only the edges translate them (HTTP status in the
server's exception handler, exit status in the CLI).
"""

from __future__ import annotations

import errno
from typing import Any


class DocintelError(Exception):
    """Something went wrong in docintel."""

    code = "error"

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        if code is not None:
            self.code = code  # a more precise code than the class's
        super().__init__(self.message)

    @property
    def details(self) -> dict[str, Any]:
        """Fields the error's answer carries beside `code` and `message`."""
        return {}


class RejectedUpload(DocintelError):
    """The file was not accepted."""

    code = "rejected"


class EmptyFile(RejectedUpload):
    """The file is empty."""

    code = "empty_file"


class UnsupportedFileType(RejectedUpload):
    """Only PDF (.pdf) and plain text (.txt) files are accepted."""

    code = "unsupported_type"


class FileTooLarge(RejectedUpload):
    """The file is larger than the upload limit."""

    code = "file_too_large"


class UnreadableFile(RejectedUpload):
    """The file could not be read."""

    code = "unreadable_file"


class ExtractionFailed(DocintelError):
    """No text could be extracted from the document."""

    code = "extraction_failed"


class AnalysisFailed(DocintelError):
    """The document could not be analysed."""

    code = "analysis_failed"


class DocumentNotFound(DocintelError):
    """No such document."""

    code = "not_found"


class IdTooShort(DocintelError):
    """A document id prefix needs at least 4 characters."""

    code = "id_too_short"


class AmbiguousId(DocintelError):
    """The id prefix matches more than one document; type more of it."""

    code = "ambiguous_id"

    def __init__(self, message: str, candidates: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.candidates = candidates  # each {"id", "filename", "status"}

    @property
    def details(self) -> dict[str, Any]:
        return {"candidates": self.candidates}


class BadRequest(DocintelError):
    """The request cannot be served as sent."""

    code = "bad_request"


class InvalidRequest(DocintelError):
    """The request is not valid."""

    code = "invalid_request"


class RequestTooLarge(DocintelError):
    """The request is larger than this server accepts."""

    code = "request_too_large"


class NotAuthenticated(DocintelError):
    """Authentication required: send a bearer token."""

    code = "not_authenticated"


class TooManyRequests(DocintelError):
    """Too many requests; try again later."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UploadNotFound(DocintelError):
    """No such resumable upload (unknown, someone else's, expired or deleted)."""

    code = "upload_not_found"


class UploadConflict(DocintelError):
    """The request does not fit the upload's state (e.g. the wrong offset)."""

    code = "offset_mismatch"


class UploadBusy(UploadConflict):
    """Another request is sending this upload; wait for it or ask for the offset again."""

    code = "upload_busy"


class UnsupportedProtocol(DocintelError):
    """This server speaks tus 1.0.0 (send Tus-Resumable: 1.0.0)."""

    code = "unsupported_tus_version"


class InsufficientStorage(DocintelError):
    """The server has no space left to store this; try again once space is freed."""

    code = "insufficient_storage"

    def __init__(self, what: str, reason: str) -> None:
        # "'a.txt' was not stored" + "the server's disk is full": what did not happen, and why.
        super().__init__(f"{what}: {reason}. Try again once space is freed on the server.")
        self.reason = reason


# --- transient resource errors ------------------------------------------------
#
# Running out of disk, descriptors or memory, or a database another process is
# holding, says nothing about the document being processed: the same work
# succeeds once the shortage passes. The workers requeue a document for such
# a cause instead of failing it (see core/workers.py).

_TRANSIENT_ERRNOS = {
    errno.ENOSPC: "the disk was full",
    errno.EDQUOT: "the disk quota was exceeded",
    errno.EMFILE: "the server had too many open files",
    errno.ENFILE: "the system had too many open files",
    errno.ENOMEM: "the system was out of memory",
}
# SQLite's primary result codes (the low byte of an extended code).
_TRANSIENT_SQLITE = {
    5: "the database was busy",  # SQLITE_BUSY: another connection holds the lock
    6: "the database was locked",  # SQLITE_LOCKED
    13: "the disk was full",  # SQLITE_FULL: "database or disk is full"
}
_TRANSIENT_SQLITE_MESSAGES = {
    "database is locked": "the database was busy",
    "database table is locked": "the database was locked",
    "database or disk is full": "the disk was full",
}


def transient_cause(exc: BaseException) -> str | None:
    """Why `exc` is a passing shortage ("the disk was full"), or None for a real failure.

    Follows the chain of causes, so an error raised while handling one (the
    database driver's wrapper, an HTTP client's "connection failed" around an
    EMFILE) is classified by what lies underneath.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        cause = _own_transient_cause(current)
        if cause is not None:
            return cause
        current = current.__cause__ or current.__context__
    return None


def _own_transient_cause(exc: BaseException) -> str | None:
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return _TRANSIENT_ERRNOS[exc.errno]
    code = getattr(exc, "sqlite_errorcode", None)  # sqlite3.Error, Python 3.11+
    if isinstance(code, int) and code & 0xFF in _TRANSIENT_SQLITE:
        return _TRANSIENT_SQLITE[code & 0xFF]
    # psycopg's OperationalError: the connection was lost, a lock or statement
    # timed out, a deadlock or serialization failure — all worth another try.
    # (By name: the CLI imports this module and must not import a driver.)
    if type(exc).__module__.startswith("psycopg") and type(exc).__name__ != "Error":
        if any(k.__name__ in ("OperationalError", "InterfaceError") for k in type(exc).__mro__):
            return "the database was unavailable"
    # peewee re-raises sqlite3's errors as its own classes with the same message.
    if type(exc).__name__ in ("OperationalError", "DatabaseError"):
        return _TRANSIENT_SQLITE_MESSAGES.get(str(exc).strip())
    return None
