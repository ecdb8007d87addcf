"""Build small PDFs by hand for tests (stdlib only): honest ones and hostile ones.

    text_pdf(["page one text", "page two text"])   # real text pypdf extracts
    many_pages_pdf(5000)                           # thousands of pages, a few hundred KB
    bomb_pdf(megabytes=400)                        # a FlateDecode stream that inflates to 400 MB
    bomb_pdf(70, pages=10)                         # 700 MB in all, each stream under pypdf's cap
    nested_pdf(depth=100_000)                      # a content stream of [[[[...]]]]
    text_pdf(["x"], xref_shift=37)                 # every xref offset wrong

Every file has a correct cross-reference table unless told otherwise, so a
failure is caused by the hostile part, not by sloppy framing.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

HELVETICA = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"


def build(
    objects: Sequence[bytes], *, root: int = 1, xref_shift: int = 0, trailer: bytes = b""
) -> bytes:
    """A PDF whose object n (1-based) is objects[n-1]; xref offsets moved by `xref_shift`."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += b"%010d 00000 n \n" % (offset + xref_shift)
    out += b"trailer\n<< /Size %d /Root %d 0 R %s>>\n" % (len(objects) + 1, root, trailer)
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def stream(data: bytes, *, compress: bool = False, extra: bytes = b"") -> bytes:
    """A stream object body; FlateDecode when `compress`."""
    if compress:
        data = zlib.compress(data, 9)
        extra = b"/Filter /FlateDecode " + extra
    return b"<< /Length %d %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def escape(text: str) -> bytes:
    raw = text.encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def text_content(text: str) -> bytes:
    """A content stream that shows `text` in Helvetica, one line per input line."""
    lines = text.splitlines() or [""]
    ops = b"BT /F1 12 Tf 14 TL 72 740 Td " + b" ".join(b"(%s) '" % escape(line) for line in lines)
    return ops + b" ET"


def pages_pdf(contents: Sequence[bytes], *, compress: bool = False, xref_shift: int = 0) -> bytes:
    """One page per content stream, sharing one Helvetica font.

    Objects: 1 catalog, 2 page tree, 3 font, then (page, content) pairs.
    """
    n = len(contents)
    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(n))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, n),
        HELVETICA,
    ]
    for i, content in enumerate(contents):
        data = 5 + 2 * i
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % data
        )
        objects.append(stream(content, compress=compress))
    return build(objects, xref_shift=xref_shift)


def text_pdf(pages: Sequence[str], *, compress: bool = False, xref_shift: int = 0) -> bytes:
    """A PDF with one page per string, each showing that text."""
    return pages_pdf([text_content(t) for t in pages], compress=compress, xref_shift=xref_shift)


def many_pages_pdf(n: int, text: str = "Page {n} of a very long report.") -> bytes:
    """n pages of a short line each (about 150 bytes a page)."""
    return text_pdf([text.format(n=i + 1) for i in range(n)])


def slow_pdf(pages: int = 1500, lines: int = 40) -> bytes:
    """Many pages of dense text: seconds of pypdf work in a compact file (Flate)."""
    body = "\n".join(
        f"Line {j} of a slow page with words to extract, again and again." for j in range(lines)
    )
    return text_pdf([f"Page {i + 1}.\n{body}" for i in range(pages)], compress=True)


def bomb_pdf(megabytes: int = 400, *, streams: int = 1, pages: int = 1) -> bytes:
    """Content streams that each inflate to `megabytes` MB of spaces.

    zlib squeezes such runs ~1000:1, so a 400 MB stream arrives as ~400 KB.
    Each of `pages` pages gets `streams` streams of its own (an array when
    more than one), so a parser that keeps what it inflated needs
    megabytes x streams x pages in all.
    """
    compressor = zlib.compressobj(9)
    chunk = b" " * (1024 * 1024)
    packed = b"".join(compressor.compress(chunk) for _ in range(megabytes)) + compressor.flush()
    body = (
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream"
    )
    per_page = 1 + streams
    kids = b" ".join(b"%d 0 R" % (4 + per_page * i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        HELVETICA,
    ]
    for i in range(pages):
        first = 5 + per_page * i
        refs = b" ".join(b"%d 0 R" % (first + j) for j in range(streams))
        contents = b"[%s]" % refs if streams > 1 else refs
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %s >>" % contents
        )
        objects.extend([body] * streams)  # separate objects with the same bytes
    return build(objects)


def nested_pdf(depth: int = 100_000, *, in_object: bool = False) -> bytes:
    """`depth` nested arrays: in the page's content stream, or (in_object) in the page dict."""
    nest = b"[" * depth + b"]" * depth
    if in_object:
        objects = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
            HELVETICA,
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Deep %s "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>" % nest,
            stream(text_content("Text after a deep object.")),
        ]
        return build(objects)
    return pages_pdf([b"BT /F1 12 Tf 72 740 Td (Deep) Tj ET " + nest], compress=True)


def drawing_heavy_pdf(pages: int = 120, shapes: int = 5000) -> bytes:
    """Pages of a short line of text under thousands of drawing operators.

    pypdf parses every operator to find the text, so this takes about 0.1 s a
    page to extract while yielding only a few words: a parser that is busy for
    many seconds, whatever the extraction's character limit.
    """
    drawing = b"\n" + b"1 1 1 1 re f\n" * shapes
    return pages_pdf(
        [text_content(f"Page {i + 1}. A few words here.") + drawing for i in range(pages)],
        compress=True,
    )
