"""Stream a multipart upload to disk, enforcing the per-file limit as bytes arrive.

Starlette's `request.form()` spools every file part to disk with no size cap,
so a 5 GB part would be written whole before we could refuse it. Here each
part is checked by extension as soon as its headers arrive and counted as it
streams; a part past the limit stops being written at once and the rest of it
is discarded. Nothing of a rejected or cut-off upload stays on disk.

Whatever the transfer encoding (chunked bodies skip the route's Content-Length
check), the body is counted as it arrives and the request is refused as a
whole, without reading the rest, once it is larger than `max_files` full
files, has more than `max_files` files, or has more than `MAX_OTHER_PARTS`
parts that are not files: what is kept per request is bounded by the settings,
not by the client. A disk that fills up turns the part being written, and
every file after it, into an `insufficient_storage` rejection.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from docintel.core import validation
from docintel.core.errors import (
    BadRequest,
    DocintelError,
    InsufficientStorage,
    RejectedUpload,
    RequestTooLarge,
    UnreadableFile,
)
from docintel.core.service import Received
from docintel.core.storage import Storage, is_out_of_space

FIELD = "files"
# Multipart framing per part is a few hundred bytes; allow generously for it
# (and for a few small form fields) on top of the files themselves.
ENVELOPE_BYTES = 1024 * 1024
# Parts other than files named `files` are skipped; a form may send a few (a
# submit button, a CSRF field), a flood sends hundreds of thousands.
MAX_OTHER_PARTS = 100


def body_limit(max_files: int, max_bytes: int) -> int:
    """The most an upload body may be: every file at the limit, plus framing."""
    return max_files * max_bytes + ENVELOPE_BYTES


def too_large(max_files: int, max_bytes: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"The upload is larger than {max_files} files of "
        f"{validation.format_bytes(max_bytes)} each; nothing was stored."
    )


@dataclass
class Rejection:
    filename: str
    error: DocintelError


@dataclass
class _Part:
    field_name: str = ""
    filename: str | None = None
    content_type: str = ""
    fd: int | None = None
    path: Path | None = None
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    sha256: Any = field(default_factory=hashlib.sha256)  # hashlib's type is private
    error: DocintelError | None = None
    ended: bool = False


class UploadReceiver:
    def __init__(self, storage: Storage, max_bytes: int, max_files: int) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.max_body = body_limit(max_files, max_bytes)
        self.received: list[Received] = []
        self.rejected: list[Rejection] = []  # at most max_files: one per file part
        # Set when the request is refused as a whole (too large, too many parts):
        # nothing is kept, and the rest of the body is left unread.
        self.refusal: DocintelError | None = None
        self.refused_part = ""  # the file being read when it was refused, if any
        self._part = _Part()
        self._headers: list[tuple[bytes, bytes]] = []
        self._name = b""
        self._value = b""
        self._files = 0
        self._other_parts = 0
        self._body_bytes = 0
        self._ended = False  # the closing boundary was seen
        self._full: InsufficientStorage | None = None  # the disk ran out during this upload

    async def receive(self, request: Request) -> None:
        _, params = parse_options_header(request.headers.get("content-type", ""))
        boundary = params.get(b"boundary")
        if not boundary:
            raise UnreadableFile("The upload must be multipart/form-data with a boundary.")
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_end": self._on_end,
            },
        )
        try:
            async for chunk in request.stream():
                self._body_bytes += len(chunk)
                if self._body_bytes > self.max_body:
                    raise too_large(self.max_files, self.max_bytes)
                if not self._ended:  # the epilogue after the closing boundary is ignored
                    # The callbacks write each chunk (at most 64 KB) to the page cache
                    # synchronously: microseconds, cheaper than a thread hop per chunk.
                    parser.write(chunk)
            parser.finalize()
        except (RequestTooLarge, BadRequest) as exc:
            if not self._part.ended:
                self.refused_part = self._part.filename or ""
            self.discard()
            self.refusal = exc.with_traceback(None)
        except MultipartParseError as exc:
            self.discard()
            raise UnreadableFile(f"The upload is not valid multipart/form-data ({exc}).") from None
        except BaseException:
            # Cut off mid-body or malformed: keep nothing of this request.
            self.discard()
            raise

    def discard(self) -> None:
        self._close_part(self._part, remove=True)
        for item in self.received:
            item.path.unlink(missing_ok=True)
        self.received.clear()

    def reject(self, filename: str, error: DocintelError) -> None:
        self.rejected.append(Rejection(filename, error.with_traceback(None)))

    # --- parser callbacks (sync, called from parser.write) -------------------

    def _on_end(self) -> None:
        self._ended = True

    def _on_part_begin(self) -> None:
        self._part = _Part()
        self._headers = []

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers.append((self._name.lower(), self._value))
        self._name = self._value = b""

    def _on_headers_finished(self) -> None:
        disposition = dict(self._headers).get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        part = self._part
        part.field_name = _decode(options.get(b"name", b""))
        if b"filename" not in options or part.field_name != FIELD:
            # A plain form field, or a file under another name: ignored, but counted.
            self._other_parts += 1
            if self._other_parts > MAX_OTHER_PARTS:
                raise BadRequest(
                    f"The upload has more than {MAX_OTHER_PARTS} parts that are not files "
                    f"named {FIELD!r}; nothing was stored.",
                    code="too_many_parts",
                )
            return
        part.filename = validation.clean_filename(_decode(options[b"filename"])) or "(unnamed)"
        self._files += 1
        if self._files > self.max_files:
            raise RequestTooLarge(
                f"The upload has more than {self.max_files} files ({part.filename!r} is file "
                f"{self._files}); send at most {self.max_files} per request. Nothing was stored.",
                code="too_many_files",
            )
        try:
            part.content_type = validation.content_type_for(part.filename)
        except RejectedUpload as exc:
            part.error = exc.with_traceback(None)
            return
        if self._full is not None:  # no room for the last one: don't try the rest
            part.error = InsufficientStorage(f"{part.filename!r} was not stored", self._full.reason)
            return
        try:
            part.fd, part.path = self.storage.new_incoming()
        except OSError as exc:
            self._out_of_space(part, exc)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.filename is None:
            return
        part.size += end - start
        if part.error is not None:
            return  # already refused: let the bytes pass by (without copying them)
        if part.size > self.max_bytes:
            try:
                validation.check_size(part.filename, part.size, self.max_bytes)
            except RejectedUpload as exc:
                part.error = exc.with_traceback(None)
            self._close_part(part, remove=True)
            return
        chunk = data[start:end]
        if len(part.head) < validation.SNIFF_BYTES:
            part.head += chunk[: validation.SNIFF_BYTES - len(part.head)]
        part.sha256.update(chunk)
        assert part.fd is not None
        try:
            self.storage.write_all(part.fd, chunk)
        except OSError as exc:
            self._out_of_space(part, exc)

    def _on_part_end(self) -> None:
        part = self._part
        part.ended = True
        if part.filename is None:
            return
        try:
            self._close_part(part, remove=part.error is not None)
        except OSError as exc:  # some file systems report a full disk only at close
            self._out_of_space(part, exc)
        if part.error is None:
            try:
                validation.validate(part.filename, part.size, bytes(part.head), self.max_bytes)
            except RejectedUpload as exc:
                part.error = exc.with_traceback(None)
                assert part.path is not None
                part.path.unlink(missing_ok=True)
        if part.error is not None:
            self.reject(part.filename, part.error)
            return
        assert part.path is not None
        self.received.append(
            Received(
                filename=part.filename,
                path=part.path,
                size_bytes=part.size,
                content_type=part.content_type,
                sha256=part.sha256.hexdigest(),
            )
        )

    def _out_of_space(self, part: _Part, exc: OSError) -> None:
        """The disk is full: this part is refused and what it wrote is removed at
        once (giving the room back to the files already received); others are
        not tried. Any other error is a real failure and ends the request."""
        if not is_out_of_space(exc):
            raise exc
        assert part.filename is not None
        self._full = self.storage.full_error(exc, f"{part.filename!r} was not stored")
        part.error = self._full
        with contextlib.suppress(OSError):
            self._close_part(part, remove=True)

    @staticmethod
    def _close_part(part: _Part, *, remove: bool) -> None:
        fd, part.fd = part.fd, None
        try:
            if fd is not None:
                os.close(fd)
        finally:
            if remove and part.path is not None:
                part.path.unlink(missing_ok=True)
                part.path = None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
