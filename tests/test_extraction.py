"""Text extraction: decoding text files, and PDFs parsed in the child process."""

from __future__ import annotations

import asyncio
import codecs
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from docintel.core.errors import ExtractionFailed
from docintel.core.extraction import Limits, decode_text, extract, read_text
from tests.conftest import PDFS, TXTS


def test_corpus_text_files_decode_correctly() -> None:
    assert "comité" in decode_text((TXTS / "accents-utf8.txt").read_bytes())
    bom = decode_text((TXTS / "utf8-bom.txt").read_bytes())
    assert not bom.startswith("\ufeff")
    assert "certificate" in decode_text((TXTS / "utf16le-bom.txt").read_bytes())
    legacy = decode_text((TXTS / "cp1252.txt").read_bytes())
    assert "We’re" in legacy and "“express”" in legacy and "12 €" in legacy


# A leading NUL makes UTF-16 LE look like UTF-32 LE; a leading U+FEFF is a BOM.
@given(st.text().filter(lambda t: not t.startswith(("\x00", "\ufeff"))))
def test_utf8_and_utf16_with_bom_round_trip(text: str) -> None:
    assert decode_text(text.encode("utf-8")) == text
    assert decode_text(codecs.BOM_UTF16_LE + text.encode("utf-16-le")) == text
    assert decode_text(codecs.BOM_UTF8 + text.encode("utf-8")) == text


@given(st.binary())
def test_any_bytes_decode_to_some_text(data: bytes) -> None:
    assert isinstance(decode_text(data), str)


BOMS = [b"", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE]
BOMS += [codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE]


def test_corpus_text_files_read_in_chunks_decode_as_whole() -> None:
    for path in sorted(TXTS.iterdir()):
        whole = decode_text(path.read_bytes())
        for chunk_bytes in (1, 2, 3, 7, 64 * 1024):
            assert read_text(path, 10**9, chunk_bytes) == (whole, False), (path, chunk_bytes)


# Random bytes after each BOM; text encoded in each encoding (so multi-byte
# sequences and surrogate pairs straddle chunk boundaries); chunks of 1 byte up;
# a character limit that cuts anywhere, or none.
@given(
    st.sampled_from(BOMS),
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda text, encoding: text.encode(
                encoding, errors="surrogatepass" if encoding.startswith("utf") else "replace"
            ),
            st.text(max_size=60),
            st.sampled_from(["utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "cp1252"]),
        ),
    ),
    st.integers(min_value=1, max_value=9),
    st.one_of(st.none(), st.integers(min_value=0, max_value=120)),
)
def test_chunked_decoding_equals_whole_decoding(
    bom: bytes, body: bytes, chunk_bytes: int, max_chars: int | None
) -> None:
    data = bom + body
    whole = decode_text(data)
    limit = len(whole) + 1 if max_chars is None else max_chars
    expected = (whole[:limit], len(whole) > limit)
    assert read_text(io.BytesIO(data), limit, chunk_bytes) == expected


def test_a_large_text_file_is_read_in_bounded_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes("naïve — café\n".encode() * 100_000)

    class Counting(io.FileIO):
        largest = 0

        def read(self, size: int = -1) -> bytes:
            assert size > 0, "read whole"
            data = super().read(size)
            Counting.largest = max(Counting.largest, len(data))
            return data

    with Counting(path, "rb") as f:
        text, truncated = read_text(f, 1000)
    assert text == ("naïve — café\n" * 100)[:1000] and truncated
    assert 0 < Counting.largest <= 64 * 1024


def test_invalid_utf8_past_the_limit_still_makes_the_file_cp1252(tmp_path: Path) -> None:
    path = tmp_path / "late.txt"
    path.write_bytes("café ".encode() * 50_000 + b"\x93quoted\x94")
    text, truncated = read_text(path, 10)
    assert (text, truncated) == ("cafÃ© cafÃ", True)


def run(path: Path, content_type: str = "application/pdf", **limits: object):
    return asyncio.run(extract(path, content_type, Limits(**limits)))


def test_pdf_text_is_extracted_in_a_child_process() -> None:
    result = run(PDFS / "pdflatex-4-pages.pdf")
    assert result.pages == result.total_pages == 4
    assert "Hello, here is some text without a meaning" in result.text
    assert "你好世界" in run(PDFS / "multilang.pdf").text


def test_page_and_character_limits_truncate_and_say_so() -> None:
    by_pages = run(PDFS / "pdflatex-4-pages.pdf", max_pages=2)
    assert (by_pages.pages, by_pages.total_pages, by_pages.truncated) == (2, 4, True)
    assert "2 of 4 pages" in by_pages.describe()
    by_chars = run(PDFS / "pdflatex-4-pages.pdf", max_chars=1000)
    assert len(by_chars.text) == 1000 and by_chars.truncated


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("grayscale-image.pdf", "No extractable text"),
        ("libreoffice-writer-password.pdf", "password-protected"),
    ],
)
def test_unreadable_pdfs_fail_with_a_reason(name: str, reason: str) -> None:
    with pytest.raises(ExtractionFailed, match=reason):
        run(PDFS / name)


def test_truncated_pdf_fails_cleanly(tmp_path: Path) -> None:
    data = (PDFS / "pdflatex-4-pages.pdf").read_bytes()
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(ExtractionFailed):
        run(cut)


def test_slow_extraction_is_stopped_at_the_timeout() -> None:
    with pytest.raises(ExtractionFailed, match="longer than"):
        run(PDFS / "GeoTopo-komprimiert.pdf", timeout=0.5)


def test_empty_text_file_content_fails(tmp_path: Path) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_bytes(b" \n\t \n")
    with pytest.raises(ExtractionFailed, match="No extractable text"):
        run(blank, "text/plain")
