"""Is this upload acceptable? Type by name and by content, size, emptiness.

Each check raises a RejectedUpload subclass whose message names the file.
"""

from __future__ import annotations

import codecs
from pathlib import PurePath

from docintel.core.errors import EmptyFile, FileTooLarge, UnsupportedFileType

PDF = "application/pdf"
TEXT = "text/plain"
CONTENT_TYPES = {".pdf": PDF, ".txt": TEXT}
# PDF readers accept the header anywhere in the first 1024 bytes.
SNIFF_BYTES = 4096


def clean_filename(name: str) -> str:
    """The client's file name as it is kept: as sent (clients escape what they
    show), but a NUL becomes U+FFFD, since PostgreSQL text cannot hold one."""
    return name.replace("\x00", "\ufffd")


def content_type_for(filename: str) -> str:
    """The content type we accept for this name, by extension."""
    ext = PurePath(filename.replace("\\", "/")).suffix.lower()
    try:
        return CONTENT_TYPES[ext]
    except KeyError:
        shown = f"'{ext}' files" if ext else "files without an extension"
        raise UnsupportedFileType(
            f"{filename!r} was refused: {shown} are not supported; upload .pdf or .txt."
        ) from None


def check_size(filename: str, size: int, limit: int) -> None:
    if size == 0:
        raise EmptyFile(f"{filename!r} is empty.")
    if size > limit:
        raise FileTooLarge(f"{filename!r} is larger than the {format_bytes(limit)} upload limit.")


def check_content(filename: str, content_type: str, head: bytes) -> None:
    """Does the start of the file match its extension?"""
    if content_type == PDF and b"%PDF-" not in head[:1024]:
        raise UnsupportedFileType(f"{filename!r} is named .pdf but is not a PDF (no %PDF- header).")
    if content_type == TEXT and not looks_like_text(head):
        raise UnsupportedFileType(f"{filename!r} is named .txt but contains binary data.")


# Byte-order marks of the encodings extraction.decode_text reads. UTF-16 and
# UTF-32 text is full of NULs, so a file with one of these is text by its BOM.
# (UTF-32 BE's BOM starts with NULs: a check for UTF-16's alone refused it.)
UNICODE_BOMS = (
    codecs.BOM_UTF32_LE,
    codecs.BOM_UTF32_BE,
    codecs.BOM_UTF16_LE,
    codecs.BOM_UTF16_BE,
)


def looks_like_text(head: bytes) -> bool:
    """Heuristic on the first bytes: UTF-16/32 with a BOM, or no NULs and few controls."""
    if head.startswith(UNICODE_BOMS):
        return True
    if b"\x00" in head:
        return False
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls <= max(1, len(head) // 100)


def validate(filename: str, size: int, head: bytes, limit: int) -> str:
    """Run every check; returns the content type."""
    content_type = content_type_for(filename)
    check_size(filename, size, limit)
    check_content(filename, content_type, head)
    return content_type


def format_bytes(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KB"
    return f"{n} bytes"
