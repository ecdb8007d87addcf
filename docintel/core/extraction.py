"""File → text. PDFs are parsed by pypdf in a child process; text files are decoded.

pypdf is CPU-bound and hostile files can make it recurse, balloon or spin, so
each PDF is parsed in a fresh `python -m docintel.core.extraction` process with
a wall-clock timeout and an address-space cap: the service's event loop and
GIL stay free, and a file that kills the parser kills only that child.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import logging
import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from docintel.core import children
from docintel.core.errors import ExtractionFailed

log = logging.getLogger(__name__)

NO_TEXT = "No extractable text was found — is it a scanned image?"
PASSWORD = "The PDF is password-protected; upload an unencrypted copy."
TOO_DEEP = "The PDF is too deeply nested to parse (damaged or hostile file)."
TOO_BIG = (
    "The PDF unpacks to more data than this server allows (a decompression bomb?); "
    "it was not processed."
)


# A text file this small is read and decoded on the event loop itself: that
# takes tens of microseconds, less than handing the work to a thread and back
# (two wake-ups, the GIL changing hands twice, each a wait on a busy machine).
INLINE_TEXT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    timeout: float = 60.0
    memory_mb: int = 1024
    max_pages: int = 2000
    max_chars: int = 2_000_000


@dataclass(frozen=True)
class Extracted:
    text: str
    pages: int = 0  # pages read (0 for text files)
    total_pages: int = 0
    truncated: bool = False

    def describe(self) -> str:
        parts = [f"extracted {len(self.text):,} characters"]
        if self.total_pages:
            parts.append(f"from {self.pages} of {self.total_pages} pages")
        if self.truncated:
            parts.append("(truncated at the extraction limit)")
        return " ".join(parts)


async def extract(path: Path, content_type: str, limits: Limits) -> Extracted:
    """Extract the text of a stored upload; raises ExtractionFailed with a reason."""
    if content_type == "text/plain":
        # Read in bounded chunks, keeping at most max_chars: read whole, a 10 MB
        # file and its decoded copy (up to 40 MB) were allocated on an executor
        # thread, whose malloc arena kept the memory after they were freed.
        # A small file is read on the loop: decoding 64 KB costs less than a
        # thread hop, and this is on every document's path.
        if path.stat().st_size <= INLINE_TEXT_BYTES:
            text, truncated = read_text(path, limits.max_chars)
        else:
            text, truncated = await asyncio.to_thread(read_text, path, limits.max_chars)
        return _finish(Extracted(text=text, truncated=truncated))
    return await _extract_pdf_in_child(path, limits)


async def _extract_pdf_in_child(path: Path, limits: Limits) -> Extracted:
    proc = await children.spawn(
        "docintel.core.extraction",
        str(path),
        "--max-pages",
        str(limits.max_pages),
        "--max-chars",
        str(limits.max_chars),
        "--memory-mb",
        str(limits.memory_mb),
        "--timeout",
        str(limits.timeout),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=limits.timeout)
    except TimeoutError:
        raise ExtractionFailed(too_slow(limits.timeout)) from None
    finally:
        # Also on cancellation (document deleted, server stopping): never leak the child.
        await children.stop(proc)
    try:
        result = json.loads(out)
    except ValueError:
        log.warning("extractor exited %s: %s", proc.returncode, err[-500:].decode(errors="replace"))
        sigxcpu = getattr(signal, "SIGXCPU", None)  # the child's CPU-time backstop
        if sigxcpu is not None and proc.returncode == -sigxcpu:
            raise ExtractionFailed(too_slow(limits.timeout)) from None
        if proc.returncode in (-9, 137) or b"MemoryError" in err:
            raise ExtractionFailed(too_much_memory(limits.memory_mb)) from None
        raise ExtractionFailed(
            f"The PDF parser crashed on this file (exit status {proc.returncode})."
        ) from None
    if "error" in result:
        raise ExtractionFailed(result["error"])
    return _finish(Extracted(**result))


def too_slow(timeout: float) -> str:
    return f"Text extraction took longer than {timeout:g} s and was stopped."


def too_much_memory(memory_mb: int | None) -> str:
    cap = f"more than {memory_mb} MB" if memory_mb else "too much memory"
    return f"The PDF needed {cap} to parse and was stopped."


def _finish(extracted: Extracted) -> Extracted:
    if not extracted.text.strip():
        raise ExtractionFailed(NO_TEXT)
    return extracted


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE, whose BOM it starts with
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
TEXT_CHUNK_BYTES = 64 * 1024


def decode_text(data: bytes) -> str:
    """Bytes of a text file → str: BOMs first, then UTF-8, then Windows-1252."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Legacy 8-bit text is far more often Windows-1252 than anything else;
        # its five unassigned bytes become U+FFFD rather than failing the file.
        return data.decode("cp1252", errors="replace")


def read_text(
    source: Path | BinaryIO, max_chars: int, chunk_bytes: int = TEXT_CHUNK_BYTES
) -> tuple[str, bool]:
    """`decode_text` of a file read in chunks: (its first max_chars, whether it had more).

    Never holds more than one chunk and max_chars of text. Without a BOM the
    whole file must still be read, since one invalid UTF-8 byte anywhere makes
    it Windows-1252 from the start (the file is then read again).
    """
    if isinstance(source, Path):
        with source.open("rb") as f:
            return read_text(f, max_chars, chunk_bytes)
    head = b""
    while len(head) < 4 and (chunk := source.read(chunk_bytes)):
        head += chunk  # enough to see any BOM
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return _decode_chunks(source, head[len(bom) :], encoding, max_chars, chunk_bytes)
    try:
        return _decode_chunks(source, head, "utf-8", max_chars, chunk_bytes, strict=True)
    except UnicodeDecodeError:
        source.seek(0)
        return _decode_chunks(source, b"", "cp1252", max_chars, chunk_bytes)


def _decode_chunks(
    source: BinaryIO,
    first: bytes,
    encoding: str,
    max_chars: int,
    chunk_bytes: int,
    *,
    strict: bool = False,
) -> tuple[str, bool]:
    decoder = codecs.getincrementaldecoder(encoding)("strict" if strict else "replace")
    parts: list[str] = []
    kept = 0
    chunk = first or source.read(chunk_bytes)
    while True:
        final = not chunk
        text = decoder.decode(chunk, final=final)
        if kept <= max_chars:
            parts.append(text[: max_chars + 1 - kept])
            kept += len(parts[-1])
        elif not strict:
            break  # past the limit, and nothing later can change what was kept
        if final:
            break
        chunk = source.read(chunk_bytes)
    text = "".join(parts)
    return text[:max_chars], len(text) > max_chars


# --- the child process -------------------------------------------------------


def extract_pdf(
    path: Path, max_pages: int, max_chars: int, memory_mb: int | None = None
) -> dict[str, object]:
    """Parse a PDF; returns Extracted fields or {"error": reason}. Runs in the child."""
    import pypdf
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PyPdfError

    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            return {"error": PASSWORD}
        total = len(reader.pages)
        parts: list[str] = []
        size = 0
        read = 0
        for page in reader.pages[:max_pages]:
            chunk = page.extract_text() or ""
            parts.append(chunk)
            size += len(chunk)
            read += 1
            if size >= max_chars:
                break
        text = "\n\n".join(parts)
        truncated = read < total or len(text) > max_chars
        return {
            "text": text[:max_chars],
            "pages": read,
            "total_pages": total,
            "truncated": truncated,
        }
    except FileNotDecryptedError:
        return {"error": PASSWORD}
    except DependencyError as exc:
        return {"error": f"The PDF uses a feature this server cannot read ({exc})."}
    except LimitReachedError:
        # pypdf's own caps on inflated stream sizes and tokens per stream.
        return {"error": TOO_BIG}
    except RecursionError:
        return {"error": TOO_DEEP}
    except MemoryError:
        return {"error": too_much_memory(memory_mb)}
    except PyPdfError as exc:
        if isinstance(exc.__cause__ or exc.__context__, RecursionError):
            return {"error": TOO_DEEP}  # pypdf wraps deep nesting in objects as PdfReadError
        return {
            "error": f"The PDF is damaged or not a valid PDF ({type(exc).__name__}: {exc})."[:500]
        }
    except Exception as exc:
        return {"error": f"The PDF could not be parsed ({type(exc).__name__}: {exc})."[:500]}


def _limit_resources(megabytes: int, timeout: float) -> None:
    """Cap address space; cap CPU time too, as a backstop should the parent's timer be gone."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    try:
        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass
    try:
        seconds = math.ceil(timeout) + 5  # never before the parent's wall-clock timeout
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 5))
    except (ValueError, OSError):
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m docintel.core.extraction")
    parser.add_argument("path", type=Path)
    parser.add_argument("--max-pages", type=int, default=Limits.max_pages)
    parser.add_argument("--max-chars", type=int, default=Limits.max_chars)
    parser.add_argument("--memory-mb", type=int, default=Limits.memory_mb)
    parser.add_argument("--timeout", type=float, default=Limits.timeout)
    parser.add_argument(children.PARENT_PID_OPTION, type=int, default=None)
    args = parser.parse_args(argv)
    children.die_with_parent(args.parent_pid)
    _limit_resources(args.memory_mb, args.timeout)
    # pypdf logs a line per odd font or xref repair; noise in a child we only read JSON from.
    logging.basicConfig(level=logging.CRITICAL)
    result = extract_pdf(args.path, args.max_pages, args.max_chars, args.memory_mb)
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
