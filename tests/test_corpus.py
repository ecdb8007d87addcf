"""Every file of the shared corpus through the live server: the outcome its README promises."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PDFS, TXTS, ServerProcess, upload, wait_terminal

# file → (status, words the failure reason must contain)
FAILS = {
    "imagemagick-CCITTFaxDecode.pdf": "no extractable text",
    "grayscale-image.pdf": "no extractable text",
    "libreoffice-writer-password.pdf": "password-protected",
}


@pytest.fixture(scope="module")
def outcomes(offline_server: ServerProcess) -> dict[str, dict]:
    files = sorted(PDFS.glob("*.pdf")) + sorted(
        p for p in TXTS.glob("*.txt") if p.name != "empty.txt"
    )
    assert len(files) >= 30, f"corpus not found at {PDFS.parent}"
    with offline_server.client() as alice:
        ids = {}
        for batch in (files[i : i + 10] for i in range(0, len(files), 10)):
            response = upload(alice, *batch)
            assert response.status_code == 201, response.text
            ids.update({d["id"]: d["filename"] for d in response.json()["documents"]})
        details = wait_terminal(alice, list(ids), timeout=120)
    return {ids[i]: d for i, d in details.items()}


def test_every_corpus_file_ends_as_its_readme_says(outcomes: dict[str, dict]) -> None:
    wrong = {}
    for name, detail in outcomes.items():
        if name in FAILS:
            if detail["status"] != "failed" or FAILS[name] not in detail["error"].lower():
                wrong[name] = (detail["status"], detail["error"])
        elif detail["status"] != "completed":
            wrong[name] = (detail["status"], detail["error"])
    assert wrong == {}


def test_completed_documents_have_a_full_offline_analysis(outcomes: dict[str, dict]) -> None:
    for name, detail in outcomes.items():
        if detail["status"] != "completed":
            continue
        analysis = detail["analysis"]
        assert analysis["analyzer"] == "offline", name
        assert analysis["summary"].strip(), name
        assert analysis["sentiment"] in ("positive", "negative", "neutral", "mixed"), name
        assert isinstance(analysis["key_topics"], list) and isinstance(
            analysis["action_items"], list
        )
        assert [h["status"] for h in detail["history"]] == [
            "pending",
            "processing",
            "analyzing",
            "completed",
        ]


def test_failed_documents_keep_their_history_and_reason(outcomes: dict[str, dict]) -> None:
    for name in FAILS:
        detail = outcomes[name]
        assert [h["status"] for h in detail["history"]] == ["pending", "processing", "failed"]
        assert detail["history"][-1]["detail"] == detail["error"]


def test_the_memo_analysis_has_its_four_action_items(outcomes: dict[str, dict]) -> None:
    analysis = outcomes["quarterly-memo.txt"]["analysis"]
    items = " ".join(analysis["action_items"]).lower()
    for words in ("leeds", "fuel surcharge", "forecast", "rotterdam"):
        assert words in items
    assert analysis["sentiment"] in ("mixed", "neutral", "positive", "negative")
    assert outcomes["complaint-negative.txt"]["analysis"]["sentiment"] == "negative"


def test_text_encodings_are_decoded(
    offline_server: ServerProcess, outcomes: dict[str, dict]
) -> None:
    """The offline summary quotes the text, so mojibake or a BOM would show in it."""
    summaries = {
        n: outcomes[n]["analysis"]["summary"]
        for n in ("accents-utf8.txt", "utf8-bom.txt", "utf16le-bom.txt", "cp1252.txt")
    }
    assert not summaries["utf8-bom.txt"].startswith("\ufeff")
    assert "Ã" not in "".join(summaries.values())
    assert "certificate" in summaries["utf16le-bom.txt"].lower()


def test_the_server_stayed_healthy(
    offline_server: ServerProcess, outcomes: dict[str, dict]
) -> None:
    assert httpx.get(offline_server.url + "/healthz").status_code == 200
    assert "Traceback" not in offline_server.log()
