"""Stream a multipart upload to disk, enforcing the per-file limit as bytes arrive.

Starlette's `request.form()` spools every file part to disk with no size cap,
so a 5 GB part would be written whole before we could refuse it. Here each
part is checked by extension as soon as its headers arrive and counted as it
streams; a part past the limit stops being written at once and the rest of it
is discarded. Nothing of a rejected or cut-off upload stays on disk.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from docintel.core import validation
from docintel.core.errors import RejectedUpload, UnreadableFile
from docintel.core.service import Received
from docintel.core.storage import Storage

FIELD = "files"


@dataclass
class Rejection:
    filename: str
    error: RejectedUpload


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
    error: RejectedUpload | None = None


class UploadReceiver:
    def __init__(self, storage: Storage, max_bytes: int, max_files: int) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.received: list[Received] = []
        self.rejected: list[Rejection] = []
        self._part = _Part()
        self._headers: list[tuple[bytes, bytes]] = []
        self._name = b""
        self._value = b""
        self._files = 0

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
            },
        )
        try:
            async for chunk in request.stream():
                # The callbacks write each chunk (at most 64 KB) to the page cache
                # synchronously: microseconds, cheaper than a thread hop per chunk.
                parser.write(chunk)
            parser.finalize()
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

    # --- parser callbacks (sync, called from parser.write) -------------------

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
            return  # a plain form field, or a file under another name: ignored
        part.filename = _decode(options[b"filename"]) or "(unnamed)"
        self._files += 1
        try:
            if self._files > self.max_files:
                raise RejectedUpload(
                    f"{part.filename!r} was not accepted: at most {self.max_files} files per upload."
                )
            part.content_type = validation.content_type_for(part.filename)
        except RejectedUpload as exc:
            part.error = exc
            return
        part.fd, part.path = self.storage.new_incoming()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.filename is None:
            return
        chunk = data[start:end]
        part.size += len(chunk)
        if part.error is not None:
            return  # already refused: let the bytes pass by
        if part.size > self.max_bytes:
            try:
                validation.check_size(part.filename, part.size, self.max_bytes)
            except RejectedUpload as exc:
                part.error = exc
            self._close_part(part, remove=True)
            return
        if len(part.head) < validation.SNIFF_BYTES:
            part.head += chunk[: validation.SNIFF_BYTES - len(part.head)]
        part.sha256.update(chunk)
        assert part.fd is not None
        os.write(part.fd, chunk)

    def _on_part_end(self) -> None:
        part = self._part
        if part.filename is None:
            return
        self._close_part(part, remove=part.error is not None)
        if part.error is None:
            try:
                validation.validate(part.filename, part.size, bytes(part.head), self.max_bytes)
            except RejectedUpload as exc:
                part.error = exc
                assert part.path is not None
                part.path.unlink(missing_ok=True)
        if part.error is not None:
            self.rejected.append(Rejection(part.filename, part.error))
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

    @staticmethod
    def _close_part(part: _Part, *, remove: bool) -> None:
        if part.fd is not None:
            os.close(part.fd)
            part.fd = None
        if remove and part.path is not None:
            part.path.unlink(missing_ok=True)
            part.path = None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
