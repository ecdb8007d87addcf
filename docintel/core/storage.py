"""Where uploaded files live: `<data dir>/uploads/{document_id}/{safe_name}`.

Uploads stream into `<data dir>/incoming/` first and are moved into place with
an atomic rename only once accepted, so a cut-off upload never leaves a
half-written file among the documents.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import unicodedata
from pathlib import Path

MAX_NAME_BYTES = 150


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


class Storage:
    def __init__(self, data_dir: Path) -> None:
        self.uploads = data_dir / "uploads"
        self.incoming = data_dir / "incoming"

    def prepare(self) -> None:
        """Create the folders; clear partial uploads a crash may have left."""
        self.uploads.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.incoming, ignore_errors=True)
        self.incoming.mkdir(parents=True, exist_ok=True)

    def new_incoming(self) -> tuple[int, Path]:
        """An open file descriptor and path for a streaming upload."""
        fd, path = tempfile.mkstemp(dir=self.incoming, prefix="part-")
        return fd, Path(path)

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
            if entry.is_dir() and entry.name not in known_ids:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed
