"""Resumable uploads (tus 1.0): one file that arrives over several requests.

An upload is a folder `<data dir>/resumable/<id>/` holding `info.json` (its
owner, file name, declared length, expiry and, once finished, the document it
became) and `data`, the bytes received so far. The offset *is* the size of
`data`: what is on disk is what the server has, after a dropped connection or
a crash alike, so a client asks for the offset and goes on from there.

Only the file name and the declared length are checked at creation (type by
extension, size limit); the content is checked when the last byte arrives, by
the same validation a multipart upload goes through, and the file then moves
into the uploads store as a document, queued like any other.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from docintel.core import validation
from docintel.core.errors import BadRequest, TooManyRequests, UploadBusy, UploadNotFound

INFO = "info.json"
DATA = "data"
HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass
class Upload:
    id: str
    owner: str
    filename: str
    length: int
    created_at: float
    expires_at: float
    document_id: str | None = None  # set once the upload became a document


@dataclass(frozen=True)
class Finished:
    """The bytes of a complete upload, checked, ready to become a document."""

    path: Path
    size_bytes: int
    content_type: str
    sha256: str


class ResumableUploads:
    def __init__(self, data_dir: Path, max_bytes: int, max_open: int, expiry: float) -> None:
        self.root = data_dir / "resumable"
        self.max_bytes = max_bytes
        self.max_open = max_open  # unfinished uploads per user
        self.expiry = expiry

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, owner: str, filename: str, length: int) -> Upload:
        """A new, empty upload; the name and the declared length are checked now."""
        validation.content_type_for(filename)
        validation.check_size(filename, length, self.max_bytes)
        if self._unfinished(owner) >= self.max_open:
            raise TooManyRequests(
                f"You have {self.max_open} unfinished uploads; finish or delete one first "
                f"(unfinished uploads expire after {self.expiry / 3600:g} h).",
                60,
                code="too_many_uploads",
            )
        now = time.time()
        upload = Upload(uuid.uuid4().hex, owner, filename, length, now, now + self.expiry)
        folder = self.root / upload.id
        folder.mkdir(parents=True)
        (folder / DATA).touch()
        self._save(upload)
        return upload

    def get(self, owner: str, upload_id: str) -> Upload:
        """The owner's upload; anyone else's, an expired or an unknown one is not found."""
        if len(upload_id) != 32 or not set(upload_id) <= HEX_DIGITS:
            raise UploadNotFound()
        try:
            info = json.loads((self.root / upload_id / INFO).read_text())
            upload = Upload(**info)
        except (OSError, ValueError, TypeError):
            raise UploadNotFound() from None
        if upload.owner != owner or upload.expires_at < time.time():
            raise UploadNotFound()
        return upload

    def offset(self, upload: Upload) -> int:
        """Bytes received so far (all of them once it became a document)."""
        if upload.document_id is not None:
            return upload.length
        try:
            return (self.root / upload.id / DATA).stat().st_size
        except FileNotFoundError:
            # Finished, but the server stopped before it could record the document.
            raise UploadNotFound(
                "This upload was interrupted as it finished; upload the file again."
            ) from None

    @contextlib.contextmanager
    def appending(self, upload: Upload) -> Iterator[int]:
        """The data file, open for appending, held by this request alone.

        The lock is the file's (flock), so two requests for one upload are
        refused whichever process of this machine serves them.
        """
        try:
            fd = os.open(self.root / upload.id / DATA, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:  # deleted, expired, or finished meanwhile
            raise UploadNotFound() from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UploadBusy() from None
            yield fd
        finally:
            os.close(fd)

    def finish(self, upload: Upload) -> Finished:
        """Check a complete upload as a multipart one is checked (raises RejectedUpload)."""
        path = self.root / upload.id / DATA
        digest = hashlib.sha256()
        try:
            f = path.open("rb")
        except FileNotFoundError:  # deleted or expired while its last bytes came
            raise UploadNotFound() from None
        with f:
            head = f.read(validation.SNIFF_BYTES)
            digest.update(head)
            while block := f.read(1 << 20):
                digest.update(block)
        size = path.stat().st_size
        content_type = validation.validate(upload.filename, size, head, self.max_bytes)
        return Finished(path, size, content_type, digest.hexdigest())

    def became(self, upload: Upload, document_id: str) -> None:
        """Records the document a finished upload became (its data has moved there)."""
        upload.document_id = document_id
        self._save(upload)

    def delete(self, upload: Upload) -> None:
        shutil.rmtree(self.root / upload.id, ignore_errors=True)

    def sweep(self) -> list[str]:
        """Removes expired uploads (finished ones too: their record is kept until then)."""
        removed = []
        now = time.time()
        for folder in self.root.iterdir():
            try:
                expires_at = json.loads((folder / INFO).read_text())["expires_at"]
            except (OSError, ValueError, KeyError, TypeError):
                # No readable record: a creation cut short, or not ours at all.
                expires_at = folder.stat().st_mtime + self.expiry
            if expires_at < now:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed

    def _unfinished(self, owner: str) -> int:
        count = 0
        for folder in self.root.iterdir():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                info = json.loads((folder / INFO).read_text())
                if info["owner"] == owner and info["document_id"] is None:
                    count += info["expires_at"] >= time.time()
        return count

    def _save(self, upload: Upload) -> None:
        """Writes the record whole or not at all (a crash never leaves half of it)."""
        folder = self.root / upload.id
        tmp = folder / (INFO + ".tmp")
        tmp.write_text(json.dumps(asdict(upload)))
        os.replace(tmp, folder / INFO)


def parse_metadata(header: str) -> dict[str, str]:
    """tus `Upload-Metadata`: `key base64value,key2 base64value2` (values may be absent)."""
    metadata: dict[str, str] = {}
    for pair in header.split(","):
        key, _, value = pair.strip().partition(" ")
        if not key:
            continue
        try:
            metadata[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(
                f"Upload-Metadata: the value of {key!r} is not base64-encoded UTF-8.",
                code="invalid_metadata",
            ) from None
    return metadata
