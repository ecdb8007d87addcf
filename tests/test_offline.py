"""The offline analyzer on the real corpus: shape, summary, topics, sentiment, actions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pysbd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader

from docintel.core.analysis.base import AnalysisResult
from docintel.core.analysis.offline import OfflineAnalyzer, analyze_text
from docintel.core.analysis.offline.actions import action_items
from docintel.core.analysis.offline.layout import Unit, split_units
from docintel.core.analysis.offline.sentences import Sentence, split_sentences
from docintel.core.analysis.offline.sentiment import overall_sentiment
from docintel.core.analysis.offline.summary import summarize
from docintel.core.analysis.offline.text import detect_language, normalize, sample_of
from docintel.core.analysis.offline.topics import key_topics
from tests.conftest import CORPUS

T = TypeVar("T")


def corpus_text(name: str) -> str:
    path = CORPUS / name
    if path.suffix == ".pdf":
        reader = PdfReader(path)
        return "\n".join(page.extract_text() or "" for page in reader.pages)
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252")


# One analyzer (its worker processes) on one event loop for the module, as in the server.
LOOP = asyncio.new_event_loop()
ANALYZER = OfflineAnalyzer(processes=2)


@pytest.fixture(scope="module", autouse=True)
def _close_the_pool() -> Iterator[None]:
    yield
    LOOP.run_until_complete(ANALYZER.aclose())
    LOOP.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return LOOP.run_until_complete(coro)


def analyze(text: str, filename: str = "doc.txt") -> AnalysisResult:
    return run(ANALYZER.analyze(text, filename=filename))


def sentence_count(text: str) -> int:
    return len(pysbd.Segmenter(language="en", clean=False).segment(text))


def assert_valid(result: AnalysisResult) -> None:
    AnalysisResult.model_validate(result.model_dump())
    assert result.analyzer == "offline"
    assert result.model == OfflineAnalyzer.model
    assert result.summary.strip()
    assert 3 <= sentence_count(result.summary) <= 5, result.summary
    assert result.sentiment in ("positive", "negative", "neutral", "mixed")
    assert len({t.casefold() for t in result.key_topics}) == len(result.key_topics)
    assert all(item.strip() for item in result.action_items)


@pytest.fixture(scope="module")
def memo() -> str:
    return corpus_text("txt/quarterly-memo.txt")


def test_analyzer_identity() -> None:
    analyzer = OfflineAnalyzer()
    assert analyzer.name == "offline"
    assert analyzer.model == "offline-1"


def test_memo_summary_is_extractive_in_document_order(memo: str) -> None:
    result = analyze(memo, "quarterly-memo.txt")
    assert_valid(result)
    flat = " ".join(memo.split())
    positions = []
    for sentence in pysbd.Segmenter(language="en", clean=False).segment(result.summary):
        position = flat.find(sentence.strip())
        assert position >= 0, f"not from the memo: {sentence!r}"
        positions.append(position)
    assert positions == sorted(positions)


def test_memo_topics(memo: str) -> None:
    result = analyze(memo)
    assert 1 <= len(result.key_topics) <= 6
    joined = " ".join(result.key_topics).casefold()
    assert "leeds" in joined or "rotterdam" in joined or "warehouse" in joined


def test_memo_action_items(memo: str) -> None:
    result = analyze(memo)
    items = result.action_items
    expected = {
        "staffing review": ("leeds",),
        "fuel surcharge": ("fuel surcharge",),
        "forecasts": ("forecast",),
        "packing line": ("rotterdam",),
    }
    found = {}
    for label, words in expected.items():
        matches = [i for i, item in enumerate(items) if all(w in item.casefold() for w in words)]
        assert matches, f"{label!r} missing from {items}"
        found[label] = matches[0]
    assert len(set(found.values())) == 4, "each action is its own item"
    assert len(items) <= 5, f"too much noise: {items}"
    # List markers are stripped.
    assert not any(item.lstrip()[:2] in ("1.", "2.", "3.", "4.") for item in items)


def test_complaint_is_negative() -> None:
    result = analyze(corpus_text("txt/complaint-negative.txt"))
    assert_valid(result)
    assert result.sentiment == "negative"
    assert result.action_items == []


def test_lorem_ipsum_has_no_action_items() -> None:
    result = analyze(corpus_text("pdf/minimal-document.pdf"), "minimal-document.pdf")
    assert_valid(result)
    assert result.action_items == []


@pytest.mark.parametrize(
    "text",
    ["Test", "", "   \n\t ", "Header\nFoo: bar\nABC: DEF", "!!! ??? ...", "1234 5678."],
    ids=["one-word", "empty", "whitespace", "26-chars", "punctuation", "digits"],
)
def test_tiny_text_still_gets_three_sentences(text: str) -> None:
    result = analyze(text)
    assert_valid(result)
    assert sentence_count(result.summary) == 3


def test_tiny_corpus_pdf_still_gets_three_sentences() -> None:
    text = corpus_text("pdf/inline-image.pdf")
    assert text.strip() == "Test"
    result = analyze(text, "inline-image.pdf")
    assert_valid(result)
    assert "Test" in result.summary


@pytest.mark.parametrize(
    "name",
    [
        "txt/accents-utf8.txt",
        "txt/utf8-bom.txt",
        "txt/utf16le-bom.txt",
        "txt/cp1252.txt",
        "pdf/multilang.pdf",
        "pdf/habibi.pdf",
        "pdf/pdflatex-4-pages.pdf",
    ],
)
def test_corpus_documents(name: str) -> None:
    assert_valid(analyze(corpus_text(name), Path(name).name))


def test_accents_survive() -> None:
    result = analyze(corpus_text("txt/accents-utf8.txt"))
    assert "Genève" in result.summary or "Zürich" in result.summary


@pytest.mark.parametrize(
    "text",
    [
        "مرحبا بالعالم. هذا تقرير قصير عن المبيعات في الربع الثالث. "
        "يجب إرسال التقرير قبل يوم الجمعة.",
        "你好世界。这是一个测试文件。我们需要在周五之前提交报告。" * 20,
        "こんにちは世界。これはテストです。" * 20,
        "Der Vorstand ist mit den Ergebnissen zufrieden. Die Kosten sind gestiegen. "
        "Bitte senden Sie den Bericht bis Freitag.",
        "Привет мир. Это тестовый документ. Пожалуйста, отправьте отчёт до пятницы.",
    ],
    ids=["arabic", "chinese", "japanese", "german", "russian"],
)
def test_non_latin_and_non_english_text(text: str) -> None:
    result = analyze(text)
    AnalysisResult.model_validate(result.model_dump())
    assert result.summary.strip()
    assert result.sentiment in ("positive", "negative", "neutral", "mixed")


def test_bullets_and_labels_are_action_items() -> None:
    text = "- buy milk\n- send the invoice to ACME by 3 March\nTODO: fix the login bug\n"
    items = analyze(text).action_items
    assert any("invoice" in item for item in items)
    assert any(item.startswith("fix the login bug") for item in items)


def test_huge_text_is_bounded(memo: str) -> None:
    text = (memo + "\n") * (2_000_000 // len(memo) + 1)
    assert len(text) >= 2_000_000
    started = time.perf_counter()
    result = analyze(text)
    elapsed = time.perf_counter() - started
    assert_valid(result)
    assert elapsed < 15, f"took {elapsed:.1f}s"
    assert any("Leeds" in item for item in result.action_items)
    # Repeated text is not repeated in the summary.
    sentences = pysbd.Segmenter(language="en", clean=False).segment(result.summary)
    assert len({s.strip() for s in sentences}) == len(sentences)


def test_huge_single_line_without_spaces() -> None:
    result = analyze("x" * 2_000_000)
    assert_valid(result)


def test_deterministic(memo: str) -> None:
    assert analyze(memo) == analyze(memo)
    complaint = corpus_text("txt/complaint-negative.txt")
    assert analyze_text(complaint) == analyze(complaint)


def test_concurrent_analyses_agree(memo: str) -> None:
    async def many() -> list[AnalysisResult]:
        return await asyncio.gather(*(ANALYZER.analyze(memo, filename="m.txt") for _ in range(6)))

    results = run(many())
    assert all(r == results[0] for r in results)


def test_analysis_runs_off_the_event_loop(memo: str) -> None:
    text = (memo + "\n") * 1_800

    async def watch_ticks() -> int:
        ticks = 0
        task = asyncio.create_task(ANALYZER.analyze(text, filename="big.txt"))
        while not task.done():
            await asyncio.sleep(0.005)
            ticks += 1
        await task
        return ticks

    assert run(watch_ticks()) >= 2


_FRAGMENTS = st.sampled_from(
    "the report must be sent by Friday . ! ? : - 1. e.g. Dr. U.S. ... “ ” Please TODO: "
    "é 你好 。 حَبيبي Привет 12.5 % 🙂 \n \n\n".split(" ")
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.lists(_FRAGMENTS, max_size=80).map(" ".join)))
def test_any_text_gives_a_valid_result(text: str) -> None:
    assert_valid(analyze_text(text))


# --- section headings, paragraphs and whole sentences -------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def flat(text: str) -> str:
    return " ".join(text.split())


def paragraphs(text: str) -> list[str]:
    return [flat(p) for p in text.split("\n\n") if p.strip()]


def summary_sentences(summary: str) -> list[str]:
    return [s.strip() for s in pysbd.Segmenter(language="en", clean=False).segment(summary)]


@pytest.fixture(scope="module")
def team_sync() -> str:
    return (EXAMPLES / "team-sync-notes.txt").read_text(encoding="utf-8")


def test_team_sync_summary_is_whole_sentences_without_headings(team_sync: str) -> None:
    result = analyze(team_sync, "team-sync-notes.txt")
    assert_valid(result)
    summary = result.summary
    assert "..." not in summary and "…" not in summary
    for heading in ("Release 2.4", "On-call load", "Hiring", "Action items"):
        assert not summary.startswith(heading), summary
        assert f"{heading} The" not in summary and f"{heading} Two" not in summary
    document = flat(team_sync)
    for sentence in summary_sentences(summary):
        assert sentence in document, f"not verbatim from the notes: {sentence!r}"


def test_team_sync_action_items_are_the_bullets(team_sync: str) -> None:
    items = analyze(team_sync, "team-sync-notes.txt").action_items
    bullets = [line[2:] for line in team_sync.splitlines() if line.startswith("- ")]
    assert len(bullets) == 5
    for bullet in bullets:
        assert bullet in items, f"{bullet!r} missing from {items}"
    paras = paragraphs(team_sync)
    for item in items:
        assert len(item) <= 300, item
        assert not item.endswith("..."), item
        assert any(item in p for p in paras), f"spans paragraphs or is not verbatim: {item!r}"
        # A whole multi-sentence paragraph is not an item.
        assert len(summary_sentences(item)) == 1, item
        assert not item.startswith(("Release 2.4", "Hiring", "On-call load")), item


def test_numbered_heading_before_a_paragraph_is_not_an_item() -> None:
    text = (
        "1. Budget\n"
        "The budget was approved on Monday. Spending stays flat next year.\n\n"
        "2. Office move\n\n"
        "The move to the new office is planned for March. Everyone\n"
        "agreed the timeline is realistic and the landlord has signed.\n"
    )
    result = analyze(text)
    assert_valid(result)
    assert not any(i.startswith(("Budget", "Office move")) for i in result.action_items)
    assert "Budget The" not in result.summary and "Office move The" not in result.summary
    for sentence in summary_sentences(result.summary):
        assert sentence in flat(text), sentence


def test_wrapped_numbered_items_stay_items() -> None:
    text = (
        "Actions:\n"
        "1. Please schedule a staffing review for the\n"
        "Leeds warehouse before 15 October.\n"
        "2. Send the forecast\n"
        "3. Book the venue\n"
        "The venue must seat forty people.\n"
    )
    items = analyze(text).action_items
    assert "Please schedule a staffing review for the Leeds warehouse before 15 October." in items
    assert "Send the forecast" in items
    assert any(i.startswith("Book the venue") for i in items)


def test_action_title_without_colon_marks_a_task_list() -> None:
    text = (
        "Weekly notes\n\nThe launch went well and customers are happy with it.\n\n"
        "Next steps\n- Jun to add log rotation on the server\n- Anna on the pricing page\n"
    )
    items = analyze(text).action_items
    assert "Jun to add log rotation on the server" in items
    assert "Anna on the pricing page" in items


def test_summary_skips_overlong_sentences_rather_than_clipping() -> None:
    run_on = "The committee discussed " + ", ".join(f"item number {i}" for i in range(60)) + "."
    text = (
        "The warehouse review is finished. Costs rose in the third quarter. "
        f"{run_on} Deliveries were on time. The board approved the plan."
    )
    result = analyze(text)
    assert_valid(result)
    assert "..." not in result.summary
    assert "item number 30" not in result.summary
    # Only when there is nothing else is a sentence clipped.
    alone = analyze(run_on)
    assert_valid(alone)
    assert alone.summary.strip()


def test_colon_mid_sentence_does_not_split_a_paragraph() -> None:
    text = (EXAMPLES / "review-standing-desk.txt").read_text(encoding="utf-8")
    result = analyze(text)
    assert_valid(result)
    for sentence in summary_sentences(result.summary):
        assert sentence[:1].isupper(), f"a fragment: {sentence!r}"
        assert sentence in flat(text)


def test_noun_that_looks_like_a_verb_is_no_task() -> None:
    text = (EXAMPLES / "supplier-complaint.txt").read_text(encoding="utf-8")
    result = analyze(text)
    assert not any(i.startswith("Order 55120") for i in result.action_items)
    assert any(i.startswith("Please send us a written explanation") for i in result.action_items)
    assert "Operations Manager, Harbour Foods" not in result.summary


# --- each stage on its own (the package's modules) ----------------------------------------


def test_text_normalises_samples_and_guesses_the_language() -> None:
    assert normalize("ﬁne\r\nsoft\u00adhyphen\tend\x07") == "fine\nsofthyphen end "
    assert sample_of("short text") == "short text"
    long = "A sentence that goes on. " * 10_000
    assert len(sample_of(long)) <= 40_000
    assert detect_language("Wir müssen das Budget bis Freitag mit dem Team besprechen.") == "de"
    assert detect_language("Пожалуйста, отправьте отчёт.") == "ru"


def test_layout_finds_headings_items_and_prose() -> None:
    units = split_units("Actions:\n- Send the report\n\nThe launch went well.\nIt was on time.")
    assert units == [
        Unit("Actions:", "heading"),
        Unit("Send the report", "item", in_action_list=True),
        Unit("The launch went well.", "prose"),
        Unit("It was on time.", "prose"),
    ]


def test_sentences_keep_a_short_item_whole_and_split_prose() -> None:
    units = [Unit("Send it. Then call.", "item", True), Unit("One here. Two there.", "prose")]
    assert [(s.text, s.kind, s.in_action_list) for s in split_sentences(units, "en")] == [
        ("Send it. Then call.", "item", True),
        ("One here.", "prose", False),
        ("Two there.", "prose", False),
    ]


def test_action_items_from_sentences_alone() -> None:
    def prose(text: str, index: int) -> Sentence:
        return Sentence(text, index, True, "prose", False)

    sentences = [
        prose("Please send the forecast by Friday.", 0),
        prose("You don't need to reply.", 1),
        prose("Order 55120 was promised for Tuesday.", 2),
        prose("TODO: fix the build", 3),
        prose("Can we ship?", 4),
    ]
    assert action_items(sentences) == ["Please send the forecast by Friday.", "fix the build"]


def test_sentiment_scores_english_only() -> None:
    def prose(text: str) -> Sentence:
        return Sentence(text, 0, True, "prose", False)

    assert overall_sentiment([prose("The outage was a terrible failure.")], "en") == "negative"
    assert overall_sentiment([prose("The outage was a terrible failure.")], "de") == "neutral"
    assert overall_sentiment([], "en") == "neutral"


def test_topics_leave_out_mail_headers() -> None:
    units = [
        Unit("From: Alice Smith", "heading"),
        Unit("Subject: Warehouse budget", "heading"),
        Unit("The warehouse budget for the Leeds site rose again this quarter.", "prose"),
    ]
    topics = key_topics(units, "en")
    assert topics and not any("Alice" in t for t in topics)


def test_summary_of_nothing_is_three_facts() -> None:
    summary = summarize("", [], [], "neutral", [], "en")
    assert summary == (
        "The document contains no readable words. No distinct key topics stand out in it. "
        "Its overall tone is neutral."
    )
