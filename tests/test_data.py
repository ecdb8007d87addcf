"""The sample files travel with the repository, each with its origin and licence."""

from __future__ import annotations

import re

from tests.conftest import CORPUS, REPO


def test_sample_files_live_in_the_repository() -> None:
    assert CORPUS.is_relative_to(REPO)
    files = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pdf", ".txt"))
    assert len(files) >= 30


def test_every_sample_file_is_listed_with_its_licence() -> None:
    readme = (CORPUS / "README.md").read_text()
    listed = set(re.findall(r"^\| ([\w.-]+\.(?:pdf|txt))\b", readme, re.MULTILINE))
    present = {p.name for p in CORPUS.rglob("*") if p.suffix in (".pdf", ".txt")}
    assert present == listed
    for licence in ("LICENSE-sample-files", "LICENSE-pypdf"):
        assert (CORPUS / "pdf" / licence).stat().st_size > 1000
    assert "CC-BY-SA-4.0" in readme and "BSD-3-Clause" in readme
