"""The offline analyzer: deterministic, local, no network, no downloads.

- summary: extractive — the best-scoring sentences (keyword weight, position),
  in document order; short documents are padded with factual sentences about
  the document so the summary always has 3 to 5 sentences.
- key_topics: YAKE keyphrases.
- sentiment: VADER compound scores per sentence.
- action_items: list items under an "Actions:"-style heading, and sentences
  or list items with an obligation cue (please, must, should, need to, TODO,
  an imperative verb first, a deadline on a list item…).

Long documents are sampled (the head plus evenly spaced windows) so the work
is bounded: pysbd's segmenter in particular is super-linear in its input.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any

from docintel.core import children
from docintel.core.analysis.base import AnalysisResult, Sentiment
from docintel.core.errors import AnalysisFailed

MODEL = "offline-1"

# Work bounds. The sample is what every stage looks at; pysbd only ever sees
# chunks of at most _CHUNK_CHARS, because its cost grows faster than linearly.
_SAMPLE_CHARS = 40_000
_HEAD_CHARS = 20_000
_SAMPLE_WINDOWS = 4
_CHUNK_CHARS = 1_500
_MAX_SENTENCES = 600
_MAX_SENTENCE_CHARS = 300
_MAX_TOPICS = 6
_MAX_TOPIC_CHARS = 50
_MAX_ACTION_ITEMS = 10
_MAX_ACTION_CHARS = 300

# Languages whose stopword lists are used to guess a Latin-script text's language.
_LATIN_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl")
_PYSBD_LANGUAGES = frozenset(
    "en de fr es it nl ar ru zh ja el hi fa pl da bg sk ur mr hy am my kk".split()
)

_TERMINAL = ".!?。！？…"
_PUNCT = ".,;:!?()[]{}\"'“”‘’«»"
_LIST_MARKER = re.compile(r"^\s*(?:[-*•‣◦▪●○■□–—]|\(?\d{1,3}[.)]|\(?[a-z][.)]|\[[ xX]?\])\s+")
_HEADER_FIELD = re.compile(r"^([A-Z][\w'/-]*(?: [\w'/-]+){0,3}):\s+(\S.*)$")
_EMAIL_HEADERS = frozenset("from to cc bcc date sent re fwd fw attachments attachment".split())
# Fields whose label is no topic, though their value may be: "Attendees: Priya, Marco".
_VALUE_ONLY_FIELDS = frozenset("subject attendees participants present absent apologies".split())
_JUNK = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\ue000-\uf8ff\U000f0000-\U0010ffff]")
_TOKEN = re.compile(r"[^\w\s]*\w\S*")  # a whitespace-separated token with a letter or digit
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_ACTION_HEADING = re.compile(
    r"\b(?:actions?|action items?|action points?|next steps?|to[- ]?dos?|tasks?|"
    r"follow[- ]ups?|deliverables|what (?:you|we) need to do)\b",
    re.IGNORECASE,
)
# Articles, prepositions and conjunctions (lowercase, as written): a line
# ending in one was wrapped mid-phrase and is not a title.
_FUNCTION_WORDS = frozenset(
    """
    a an the of for to and or but nor with in on at by from into onto than that as is are
    was were be been our your their his her its my this these those which who whose if so
    via per about over under after before between
    der die das den dem des ein eine einen einem einer und oder aber mit von zu für auf im
    am bei aus nach über unter dass als wie
    le la les un une des du de et ou mais pour avec dans sur par en au aux que qui
    el los las unos unas del y o pero para con por al il lo gli di della ma su da che
    os as um uma do da ou mas com em ao het een maar voor met op van te aan dat
    """.split()
)
# "Action items", "Next steps" as a title line of their own.
_ACTION_TITLE = re.compile(r"(?:" + _ACTION_HEADING.pattern + r")\W*$", re.IGNORECASE)
# A section number before a heading: "1", "1.2", "2.3.1", "IV.", "A.".
_SECTION_NUMBER = re.compile(r"^(?:\d{1,3}(?:\.\d{1,3})*\.?|[IVX]{1,4}\.|[A-Z]\.)\s+(?=\S)")
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DEADLINE = re.compile(
    r"\b(?:by|before|no later than|not later than|due(?: on| by)?|until)\s+(?:the\s+)?(?:"
    r"end of (?:the\s+)?(?:day|week|month|quarter|year)|eod|cob|eow|tomorrow|tonight|"
    r"next (?:week|month|quarter|year|\w+day)|this (?:week|month|\w+day)|"
    r"(?:mon|tues|wednes|thurs|fri|satur|sun)day|"
    r"\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r"|" + _MONTH + r"\.?\s+\d{1,2}\b|"
    r"\d{1,4}[-/.]\d{1,2}(?:[-/.]\d{1,4})?|q[1-4]\b)",
    re.IGNORECASE,
)
_OBLIGATION = re.compile(
    r"\b(?:must(?! have been)|should(?! have been)|shall|need(?:s)? to|have to|has to|"
    r"ought to|(?:is|are) (?:required|expected|asked) to|make sure|ensure that|be sure to|"
    r"do(?:n't| not) forget|remember to)\b",
    re.IGNORECASE,
)
_NOT_OBLIGATION = re.compile(
    r"\b(?:do(?:es)?n't|do(?:es)? not|did not|didn't) (?:need|have) to\b|"
    r"\bneed not\b|\bno need\b|^(?:maybe|perhaps)\b|\bmight\b|"
    # A thing, not a person, as the subject: "This text should contain…".
    r"^(?:this|that|these|those|it|there)\b(?:\s+\w+){0,2}\s+"
    r"(?:should|must|shall|needs?|has|have)\b",
    re.IGNORECASE,
)
_PLEASE = re.compile(
    r"\b(?:please|bitte|veuillez|por favor|per favore|пожалуйста)\b"
    r"(?!\s+(?:find|see)\s+(?:attached|enclosed|below|above))",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^(?:action(?: items?| points?)?|todo|to-do|to do|ai|follow[- ]up|next steps?)"
    r"\s*[:\-–]\s*",
    re.IGNORECASE,
)
# "Order 55120 was promised…": the verb-like first word is the subject's noun.
_NOUN_SUBJECT = re.compile(
    r"(?:\s+\S+){0,2}?\s+(?:is|was|are|were|has|had|will|would|can|could|may)\b",
    re.IGNORECASE,
)
_TODO = re.compile(r"\b(?:TODO|FIXME)\b")
_IMPERATIVES = frozenset(
    """
    add approve arrange ask assign attend book buy call cancel check clean collect complete
    confirm contact create deliver deploy document draft email escalate ensure file fill
    finalise finalize finish fix follow forward install inform invite make notify order
    organise organize pay plan prepare provide register remember remove renew reply report
    request reschedule respond return review schedule send set share sign submit test update
    upload verify write
    """.split()
)


# VADER's lexicon comes from social media; these business-report words carry
# tone there but are missing from it (values on VADER's -4..4 scale).
_LEXICON_SUPPLEMENT = {
    "concern": -1.2,
    "concerned": -1.3,
    "concerns": -1.2,
    "concerning": -1.3,
    "shortfall": -1.5,
    "overrun": -1.4,
    "overruns": -1.4,
    "decline": -1.1,
    "declined": -1.1,
    "unavailable": -1.0,
    "outage": -1.5,
}
# Single words too generic to be a topic on their own.
_GENERIC_TOPICS = frozenset(
    """
    percent per cent step steps thing things way ways time times day days week weeks
    month months year years today people part parts number lot lots kind example
    january february march april may june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday
    """.split()
)


@dataclass(frozen=True)
class _Unit:
    """A paragraph-level piece of the document: prose, a list item, or a heading."""

    text: str
    kind: str  # "prose" | "item" | "heading"
    in_action_list: bool = False


@dataclass(frozen=True)
class _Sentence:
    text: str
    index: int  # position among the document's sentences
    first_in_unit: bool
    kind: str  # "prose" | "item"
    in_action_list: bool


class OfflineAnalyzer:
    """The Analyzer that needs no service: see the module docstring.

    The work is CPU-bound pure Python (segmentation, YAKE, VADER). In a thread
    it would hold the GIL for long stretches and the server's event loop would
    stall behind it (/healthz p95 went from 4 to 55 ms analysing 1 MB of text),
    so it runs in a small pool of long-lived child processes, started on first
    use (see children.py: they ignore the terminal and die with the server).
    """

    name = "offline"
    model = MODEL

    def __init__(self, processes: int = 1) -> None:
        self._pool = children.ChildPool(f"{__name__}:analyze_request", processes)

    async def analyze(self, text: str, *, filename: str) -> AnalysisResult:
        try:
            reply = await self._pool.call({"text": text})
        except children.ChildDied:
            raise AnalysisFailed("The offline analysis process stopped unexpectedly.") from None
        if "error" in reply:
            raise AnalysisFailed(str(reply["error"]))
        return AnalysisResult.model_validate(reply["result"])

    async def aclose(self) -> None:
        await self._pool.aclose()


def analyze_request(request: dict[str, Any]) -> dict[str, Any]:
    """A pool child's handler: `{"text"}` → `{"result"}` or `{"error"}`."""
    try:
        return {"result": analyze_text(request["text"]).model_dump(mode="json")}
    except AnalysisFailed as exc:
        return {"error": exc.message}


def analyze_text(text: str) -> AnalysisResult:
    """Analyse `text` synchronously (the CLI's `analyze` calls this directly)."""
    try:
        return _analyze(text)
    except Exception as exc:
        raise AnalysisFailed(f"The offline analysis failed: {exc}") from exc


def _analyze(text: str) -> AnalysisResult:
    text = _normalize(text)
    sample = _sample(text)
    language = _detect_language(sample)
    units = _units(sample)
    sentences = _sentences(units, language)
    topics = _topics(units, language)
    sentiment = _sentiment(sentences, language)
    actions = _action_items(sentences)
    summary = _summary(text, sentences, topics, sentiment, actions, language)
    return AnalysisResult(
        summary=summary,
        key_topics=topics,
        sentiment=sentiment,
        action_items=actions,
        analyzer="offline",
        model=MODEL,
    )


# --- the libraries, built once per process -------------------------------------------


@functools.cache
def _vader() -> Any:
    from vaderSentiment import vaderSentiment

    vader = vaderSentiment.SentimentIntensityAnalyzer()
    vader.lexicon.update(_LEXICON_SUPPLEMENT)
    return vader


@functools.cache
def _stopwords(language: str) -> frozenset[str]:
    """YAKE's stopword list for `language` (its language-neutral list when it has none)."""
    import yake

    return frozenset(w for w in yake.KeywordExtractor(lan=language).stopword_set if w)


def _segmenter(language: str) -> Any:
    # A Segmenter is cheap to build and keeps per-call state, so one per call
    # keeps concurrent analyses (worker threads) apart.
    import pysbd

    return pysbd.Segmenter(language=language if language in _PYSBD_LANGUAGES else "en")


def _split(segmenter: Any, text: str) -> list[str]:
    """pysbd sentences of `text`, fed in bounded chunks (its cost is super-linear).

    `processor(...).process()` is what `segment()` runs, minus its quadratic
    search for character offsets we do not need.
    """
    out: list[str] = []
    for chunk in _chunks(text, _CHUNK_CHARS):
        out.extend(s.strip() for s in segmenter.processor(chunk).process() if s.strip())
    return out


def _chunks(text: str, size: int) -> list[str]:
    """Cut `text` into pieces of at most about `size` chars, at sentence ends if possible."""
    chunks: list[str] = []
    while len(text) > size:
        cut = max(text.rfind(". ", 0, size), text.rfind("? ", 0, size), text.rfind("! ", 0, size))
        cut = cut + 1 if cut > size // 3 else text.rfind(" ", 0, size)
        if cut <= 0:
            cut = size
        chunks.append(text[:cut])
        text = text[cut:].lstrip()
    if text:
        chunks.append(text)
    return chunks


# --- text preparation -------------------------------------------------------------------


def _normalize(text: str) -> str:
    # NFKC also undoes PDF ligatures ("ﬁ" → "fi") and presentation forms.
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.replace("\u00ad", "").replace("\ufeff", "").replace("\t", " ")
    # Other control characters and private-use glyphs (icon fonts in PDFs) become
    # spaces; newlines stay.
    return _JUNK.sub(" ", text)


def _sample(text: str) -> str:
    """The whole text when short; else its head plus evenly spaced windows."""
    if len(text) <= _SAMPLE_CHARS:
        return text
    parts = [_trim_end(text[:_HEAD_CHARS])]
    rest = len(text) - _HEAD_CHARS
    width = (_SAMPLE_CHARS - _HEAD_CHARS) // _SAMPLE_WINDOWS
    for i in range(_SAMPLE_WINDOWS):
        start = _HEAD_CHARS + rest * (i + 1) // (_SAMPLE_WINDOWS + 1)
        parts.append(_trim_end(_trim_start(text[start : start + width])))
    return "\n\n".join(p for p in parts if p.strip())


def _trim_start(window: str) -> str:
    """Drop the partial line or sentence a window starts in the middle of."""
    cut = _first_boundary(window)
    return window[cut:] if cut is not None else window


def _trim_end(window: str) -> str:
    line = window.rfind("\n")
    sentence = max(window.rfind(". "), window.rfind("? "), window.rfind("! "))
    cut = max(line, sentence + 1 if sentence >= 0 else -1)
    return window[:cut] if cut > len(window) // 4 else window


def _first_boundary(window: str) -> int | None:
    match = re.search(r"\n|[.!?]\s", window)
    return match.end() if match and match.end() < len(window) * 3 // 4 else None


def _detect_language(sample: str) -> str:
    """A two-letter code good enough to pick stopwords and a sentence splitter."""
    scripts: Counter[str] = Counter(_script(ch) for ch in sample[:20_000] if ch.isalpha())
    if not scripts:
        return "en"
    script, _ = scripts.most_common(1)[0]
    if script == "zh" and scripts["ja"] > 0:
        return "ja"
    if script != "latin":
        return script
    words = [w.lower() for w in _WORD.findall(sample[:20_000])][:3_000]
    best, best_hits = "en", 0
    for language in _LATIN_LANGUAGES:
        stop = _stopwords(language)
        hits = sum(1 for w in words if w in stop)
        if hits > best_hits:
            best, best_hits = language, hits
    # Running text has a fifth or more stopwords; lorem ipsum and word lists don't.
    if len(words) >= 20 and best_hits < 0.2 * len(words):
        return "und"
    return best


def _script(ch: str) -> str:
    code = ord(ch)
    if 0x0600 <= code <= 0x06FF or 0x0750 <= code <= 0x077F or 0xFB50 <= code <= 0xFEFF:
        return "ar"
    if 0x0400 <= code <= 0x04FF:
        return "ru"
    if 0x0370 <= code <= 0x03FF:
        return "el"
    if 0x3040 <= code <= 0x30FF:
        return "ja"
    if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF:
        return "zh"
    if 0x0900 <= code <= 0x097F:
        return "hi"
    if code < 0x0250 or 0x1E00 <= code <= 0x1EFF:
        return "latin"
    return "other"


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _ends_sentence(text: str) -> bool:
    return text.rstrip("\"'”’)]»").endswith(tuple(_TERMINAL))


def _is_header_field(line: str) -> bool:
    """`Subject: Q3 review`, `Name: Foo Bar` — a label and a short value, not a sentence."""
    match = _HEADER_FIELD.match(line)
    return bool(
        match
        and len(line) <= 120
        and len(match.group(2).split()) <= 10
        and not _ends_sentence(line)
        and not _LABEL.match(line)
    )


def _units(text: str) -> list[_Unit]:
    """Group lines into prose paragraphs, list items and headings.

    A line break ends a unit when the line ends a sentence, when the next line
    starts a list item, or when the line is a header field ("Subject: …") or a
    short title; otherwise the lines are a wrapped paragraph and are joined.
    A numbered line that is short and unpunctuated and is followed by a
    paragraph ("1. Release 2.4" then prose) is a section heading, not an item.
    """
    units: list[_Unit] = []
    action_list = False
    paragraphs = [
        lines
        for lines in (
            [line.strip() for line in paragraph.split("\n") if line.strip()]
            for paragraph in re.split(r"\n\s*\n", text)
        )
        if lines
    ]
    for p, lines in enumerate(paragraphs):
        next_paragraph = paragraphs[p + 1] if p + 1 < len(paragraphs) else None
        current: list[str] = []
        kind = "prose"

        def flush() -> None:
            nonlocal current, kind, action_list
            if not current:
                return
            body = _collapse(" ".join(current))
            if kind == "item":
                units.append(_Unit(body, "item", action_list))
            elif kind == "heading" or (body.endswith(":") and len(body) <= 120):
                units.append(_Unit(body, "heading"))
                # "Actions:", "Please do the following:", "Action items" — the
                # items after it are tasks.
                cue = _ACTION_HEADING.search(body) or _PLEASE.search(body)
                action_list = (
                    body.endswith(":") and bool(cue or _OBLIGATION.search(body))
                ) or _is_action_title(body)
            else:
                units.append(_Unit(body, "prose"))
                action_list = False
            current, kind = [], "prose"

        for i, line in enumerate(lines):
            following = lines[i + 1] if i + 1 < len(lines) else None
            marker = _LIST_MARKER.match(line)
            if marker and len(line) > marker.end():
                flush()
                body = line[marker.end() :]
                if _is_numbered_heading(line, body, following, next_paragraph):
                    current, kind = [body], "heading"
                    flush()
                    continue
                current, kind = [body], "item"
            elif _LABEL.match(line):  # "Action: …", "TODO: …" lines are items too
                flush()
                current, kind = [line], "item"
            elif _is_header_field(line):
                flush()
                current, kind = [line], "heading"
                flush()
            elif not current and _is_title(line, following):
                current, kind = [line], "heading"
                flush()
            else:
                current.append(line)
            # A line ending in a colon ends a lead-in ("Actions:"), unless the
            # sentence carries on in lowercase on the next line.
            if current and (
                _ends_sentence(line) or (line.endswith(":") and not _continues(line, following))
            ):
                flush()
        flush()
    return units


def _continues(line: str, following: str | None) -> bool:
    """Does `following` carry on the sentence `line` (ending in a colon) started?"""
    return bool(
        following
        and len(line.split()) >= 3
        and len(following.split()) >= 3
        and following[:1].islower()
        and not _LIST_MARKER.match(following)
        and not _LABEL.match(following)
    )


def _starts_upper(line: str) -> bool:
    head = line.lstrip("\"'“‘«(")
    return head[:1].isupper()


def _is_title(line: str, following: str | None) -> bool:
    """A short line without punctuation standing before a capitalised line or a section."""
    if _ends_sentence(line) or len(line.split()) > 6 or following is None:
        return False
    if _LIST_MARKER.match(following) or _LABEL.match(following):
        return True
    words = _WORD.findall(line)
    if words and words[-1] in _FUNCTION_WORDS:
        return False  # a wrapped line: "…a staffing review for the" / "Leeds warehouse…"
    number = _SECTION_NUMBER.match(following)  # "1 Basics" / "1.1 Spaces"
    return _starts_upper(following[number.end() :] if number else following)


def _open_ended(line: str) -> bool:
    """Does `line` stop mid-phrase ("…a staffing review for the"), so the next line goes on?"""
    if line.endswith((",", ";", "-", "–", "—", "&", "/", "+")):
        return True
    words = _WORD.findall(line)
    return bool(words) and words[-1] in _FUNCTION_WORDS


def _is_action_title(body: str) -> bool:
    """A short title such as "Action items" or "Next steps" (no colon needed)."""
    return (
        len(body.split()) <= 5 and not _is_header_field(body) and bool(_ACTION_TITLE.search(body))
    )


def _is_numbered_heading(
    line: str,
    body: str,
    following: str | None,
    next_paragraph: list[str] | None,
) -> bool:
    """Is a list-marked line a section heading ("1. Release 2.4") rather than an item?

    It is when it is numbered, short, unpunctuated, does not read like a task,
    and a paragraph follows it: on the next line, or after a blank line.
    """
    if not re.match(r"\s*\(?(?:\d{1,3}|[a-zA-Z])[.)]", line):
        return False  # bullets are items
    words = body.split()
    if (
        len(words) > 8
        or len(body) > 60
        or _ends_sentence(body)
        or body.endswith(":")
        or _open_ended(body)
        or _has_task_cue(body)
    ):
        return False
    if following is not None:
        if _LABEL.match(following):
            return False
        bullet = _LIST_MARKER.match(following)
        if bullet:
            # A numbered section over a bulleted list; numbered siblings are a list.
            return not re.match(r"\s*\(?(?:\d{1,3}|[a-zA-Z])[.)]", following)
        return _starts_upper(following) and (
            len(following) > len(line) or _ends_sentence(following)
        )
    if not next_paragraph:
        return False
    first = next_paragraph[0]
    if _LIST_MARKER.match(first) or _LABEL.match(first) or not _starts_upper(first):
        return False
    return len(next_paragraph) >= 2 or len(first.split()) >= 12


def _has_task_cue(text: str) -> bool:
    first = _WORD.match(text)
    return bool(
        _PLEASE.search(text)
        or _TODO.search(text)
        or _DEADLINE.search(text)
        or (_OBLIGATION.search(text) and not _NOT_OBLIGATION.search(text))
        or (first and first.group(0).lower() in _IMPERATIVES)
    )


def _sentences(units: list[_Unit], language: str) -> list[_Sentence]:
    segmenter = _segmenter(language)
    out: list[_Sentence] = []
    for unit in units:
        if unit.kind == "heading":
            continue
        if unit.kind == "item" and len(unit.text) <= _MAX_ACTION_CHARS:
            parts = [unit.text]
        else:
            # A long list item is split too: its first sentence is the item,
            # the rest is explanation and is read as prose.
            parts = _split(segmenter, unit.text)
        for j, part in enumerate(parts):
            kind = unit.kind if j == 0 else "prose"
            in_list = unit.in_action_list and j == 0
            out.append(_Sentence(_collapse(part), len(out), j == 0, kind, in_list))
            if len(out) >= _MAX_SENTENCES:
                return out
    return out


# --- key topics ---------------------------------------------------------------------------


def _keyword_text(units: list[_Unit]) -> str:
    """The text YAKE reads: one unit per line, each closed so n-grams don't span them."""
    lines = []
    for unit in units:
        body = unit.text
        is_field = unit.kind == "heading" and _is_header_field(body)
        header = _HEADER_FIELD.match(body) if is_field else None
        if header:
            if header.group(1).lower() in _EMAIL_HEADERS:
                continue
            if header.group(1).lower() in _VALUE_ONLY_FIELDS:
                body = header.group(2)
        body = body.rstrip(":").strip()
        if unit.kind == "heading" and len(body) <= 30 and _ACTION_HEADING.fullmatch(body):
            continue
        if body:
            lines.append(body if _ends_sentence(body) else body + ".")
    return "\n".join(lines)


def _topics(units: list[_Unit], language: str) -> list[str]:
    import yake

    text = _keyword_text(units)
    if not text.strip():
        return []
    extractor = yake.KeywordExtractor(
        lan=language, n=2, top=30, dedup_lim=0.8, stopwords=set(_stopwords(language))
    )
    topics: list[str] = []
    for phrase, _score in extractor.extract_keywords(text):
        phrase = _collapse(str(phrase)).strip(" .,;:-–—'\"()[]“”‘’«»")
        if not _good_topic(phrase):
            continue
        folded = phrase.casefold()
        if any(_overlaps(folded, t.casefold()) for t in topics):
            continue
        topics.append(phrase)
        if len(topics) == _MAX_TOPICS:
            break
    return topics


def _overlaps(a: str, b: str) -> bool:
    """Same topic: one contains the other, or the same words in another order."""
    return a in b or b in a or set(a.split()) == set(b.split())


def _good_topic(phrase: str) -> bool:
    if not 2 <= len(phrase) <= _MAX_TOPIC_CHARS or phrase.casefold() in _GENERIC_TOPICS:
        return False
    if not phrase[0].isalnum() or re.search(r"[.!?;:]", phrase):
        return False
    letters = sum(ch.isalpha() for ch in phrase)
    return letters >= 2 and letters >= len(phrase.replace(" ", "")) // 2


# --- sentiment ----------------------------------------------------------------------------


def _sentiment(sentences: list[_Sentence], language: str) -> Sentiment:
    # VADER's lexicon is English: on other languages it only finds false friends.
    if not sentences or language != "en":
        return "neutral"
    vader = _vader()
    scores = [float(vader.polarity_scores(s.text)["compound"]) for s in sentences]
    positive = sum(1 for c in scores if c >= 0.2)
    negative = sum(1 for c in scores if c <= -0.2)
    # Mixed: both kinds present, neither swamped by the other, and together a
    # fair share of the text (a long neutral report with one of each is neutral).
    if (
        positive
        and negative
        and 3 * min(positive, negative) >= max(positive, negative)
        and positive + negative >= 0.2 * len(scores)
    ):
        return "mixed"
    mean = sum(scores) / len(scores)
    if mean >= 0.05:
        return "positive"
    if mean <= -0.05:
        return "negative"
    return "neutral"


# --- action items -------------------------------------------------------------------------


def _action_items(sentences: list[_Sentence]) -> list[str]:
    items: list[str] = []
    seen: set[str] = set()
    for sentence in sentences:
        if not _is_action(sentence):
            continue
        text = _clip(_LABEL.sub("", sentence.text) or sentence.text, _MAX_ACTION_CHARS)
        key = text.casefold()
        if key in seen:
            continue
        seen.add(key)
        items.append(text)
        if len(items) == _MAX_ACTION_ITEMS:
            break
    return items


def _is_action(sentence: _Sentence) -> bool:
    text = sentence.text
    words = len(_WORD.findall(text))
    if words < 2 or text.rstrip().endswith("?"):
        return False
    if sentence.kind == "item" and sentence.in_action_list:
        return True
    if sentence.kind == "prose" and words > 60:
        return False  # a task is said briefly; this is running prose
    if _LABEL.match(text) or _TODO.search(text) or _PLEASE.search(text):
        return True
    if _OBLIGATION.search(text) and not _NOT_OBLIGATION.search(text):
        return True
    first = _WORD.match(text)
    if (
        first
        and first.group(0).lower() in _IMPERATIVES
        and text[first.end() : first.end() + 1] != "("
    ):
        # Mid-sentence fragments start lowercase; list items often do too.
        if _NOUN_SUBJECT.match(text, first.end()):
            pass  # "Order 55120 was promised…": a noun, not a verb
        elif first.group(0)[:1].isupper() or sentence.kind == "item":
            return True
    # A deadline marks a task in a list, or in a sentence that says someone will act.
    if _DEADLINE.search(text):
        return sentence.kind == "item" or bool(re.search(r"\bwill\b", text, re.IGNORECASE))
    return False


# --- summary ------------------------------------------------------------------------------


def _summary(
    text: str,
    sentences: list[_Sentence],
    topics: list[str],
    sentiment: Sentiment,
    actions: list[str],
    language: str,
) -> str:
    chosen = _pick_sentences(sentences, topics, language)
    facts = _facts(text, chosen, topics, sentiment, actions)
    # Check the sentence count the way a reader's splitter would; pad or trim to 3–5.
    # The padding sentences are English, so English rules count, except for
    # Chinese and Japanese whose own rules also split English sentences.
    segmenter = _segmenter(language if language in ("zh", "ja") else "en")
    for _ in range(8):
        summary = " ".join(chosen)
        count = len(segmenter.processor(summary).process()) if summary else 0
        if 3 <= count <= 5:
            return summary
        if count > 5 and len(chosen) > 1:
            chosen = chosen[:-1]
        elif count < 3 and facts:
            chosen = chosen + [facts.pop(0)]
        else:
            break
    return " ".join(_facts(text, [], topics, sentiment, actions)[:3])


def _pick_sentences(sentences: list[_Sentence], topics: list[str], language: str) -> list[str]:
    stop = _stopwords(language)
    candidates = [s for s in sentences if s.kind == "prose" and _usable(s.text)]
    if len(candidates) < 3:
        candidates = [s for s in sentences if _usable(s.text)]
    if not candidates:
        return []
    words = {s.index: _content_words(s.text, stop) for s in candidates}
    frequency = Counter(w for ws in words.values() for w in set(ws))
    top = max(frequency.values(), default=1)
    topic_words = {w for t in topics for w in _content_words(t, stop)}
    # A short line without closing punctuation is a title, a signature or a
    # table cell rather than a sentence: a summary uses it only when short of text.
    real = [s for s in candidates if _ends_sentence(s.text) or len(s.text.split()) >= 12]
    first_real = real[0].index if real else None
    last_real = real[-1].index if real else None
    scored: list[tuple[float, _Sentence]] = []
    for s in candidates:
        ws = words[s.index]
        if not ws:
            continue
        weight = sum(frequency[w] / top + (1.0 if w in topic_words else 0.0) for w in set(ws))
        # Formulas and tables (many tokens that are not words) make poor summaries.
        tokens = s.text.split()
        real_words = sum(1 for t in tokens if _WORD.fullmatch(t.strip(_PUNCT)))
        wordiness = real_words / max(1, len(tokens))
        score = weight / math.sqrt(len(ws)) * wordiness**2
        if s.index == first_real:
            score += 0.5
        elif s.index == last_real:
            score += 0.25  # a closing sentence often sums up
        elif s.first_in_unit and first_real is not None and s.index > first_real:
            score += 0.15
        if not (_ends_sentence(s.text) or len(tokens) >= 12):
            score *= 0.3
        scored.append((score, s))
    wanted = 3 if len(scored) <= 5 else 4 if len(scored) <= 15 else 5
    ranked = sorted(scored, key=lambda pair: (-pair[0], pair[1].index))
    picked: list[_Sentence] = []
    # Whole sentences only: an overlong one (a run-on, a table read as text) is
    # skipped, and clipped only when there is nothing else to say.
    for _score, s in ranked:
        if len(s.text) > _MAX_SENTENCE_CHARS:
            continue
        if any(_similar(words[s.index], words[p.index]) for p in picked):
            continue
        picked.append(s)
        if len(picked) == wanted:
            break
    if not picked and ranked:
        picked = [ranked[0][1]]
    picked.sort(key=lambda s: s.index)
    return [_as_sentence(_clip(s.text, _MAX_SENTENCE_CHARS)) for s in picked]


def _usable(text: str) -> bool:
    letters = sum(ch.isalpha() for ch in text)
    if letters < 0.6 * len(text.replace(" ", "")):
        return False
    # Scripts written without spaces between words count characters instead.
    if _unspaced(text):
        return letters >= 5
    return letters >= 10 and len(text.split()) >= 4


def _unspaced(text: str) -> bool:
    """Mostly Chinese or Japanese (no spaces between words)?"""
    sample = text[:2_000]
    return sum(1 for ch in sample if _script(ch) in ("zh", "ja")) > 0.3 * len(sample)


def _length_phrase(text: str) -> tuple[int, str]:
    """(count, unit) describing the document's length: words, or characters for CJK."""
    if _unspaced(text.strip()):
        n = sum(1 for ch in text if ch.isalpha())
        return n, "character" if n == 1 else "characters"
    n = len(_TOKEN.findall(text))
    return n, "word" if n == 1 else "words"


def _content_words(text: str, stop: frozenset[str]) -> list[str]:
    return [w for w in (m.lower() for m in _WORD.findall(text)) if len(w) > 1 and w not in stop]


def _similar(a: list[str], b: list[str]) -> bool:
    sa, sb = set(a), set(b)
    return bool(sa and sb) and len(sa & sb) / len(sa | sb) > 0.6


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit - 3)
    return text[: cut if cut > limit // 2 else limit - 3].rstrip(" ,;:-–—") + "..."


def _as_sentence(text: str) -> str:
    return text if _ends_sentence(text) or text.endswith("...") else text + "."


def _facts(
    text: str, chosen: list[str], topics: list[str], sentiment: Sentiment, actions: list[str]
) -> list[str]:
    """Short true sentences about the document, to pad a summary of a very short text."""
    count, unit = _length_phrase(text)
    facts = []
    excerpt = _collapse(re.sub(r"[.!?。！？…\"“”]", " ", text)) if len(text) <= 1_000 else ""
    if not chosen and count and excerpt and len(excerpt) <= 80:
        facts.append(f"The whole document reads “{excerpt}”.")
        facts.append(f"It has {count} {unit} in all.")
    elif count == 0:
        facts.append("The document contains no readable words.")
    else:
        facts.append(f"The document has {count:,} {unit} in all.")
    clean = [re.sub(r"[.!?。！？…]", "", t) for t in topics[:3]]
    if clean:
        facts.append(f"Its key topics are {_join(clean)}.")
    else:
        facts.append("No distinct key topics stand out in it.")
    tone = {"mixed": "mixed, with both positive and negative passages"}.get(sentiment, sentiment)
    facts.append(f"Its overall tone is {tone}.")
    if actions:
        n = len(actions)
        facts.append(f"It lists {n} action item{'s' if n != 1 else ''}.")
    else:
        facts.append("It asks for no specific actions.")
    return facts


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
