"""Text extraction: decoding text files, and PDFs parsed in the child process."""

from __future__ import annotations

import asyncio
import codecs
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from docintel.core.errors import ExtractionFailed
from docintel.core.extraction import Limits, decode_text, extract
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
