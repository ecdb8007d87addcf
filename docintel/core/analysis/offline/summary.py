"""Summary: extractive — the best-scoring sentences, in document order, 3 to 5 of them.

Sentences score by keyword weight (word frequency, topic words), wordiness and
position (the first real sentence, the last, the first of a paragraph); near
duplicates and overlong sentences are skipped. Short documents are padded
with factual sentences about the document (length, topics, tone, actions) so
the summary always has 3 to 5 sentences, counted the way a reader's splitter
would count them.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from docintel.core.analysis.base import Sentiment
from docintel.core.analysis.offline.sentences import Sentence, segmenter_for
from docintel.core.analysis.offline.text import (
    WORD,
    clip,
    collapse,
    ends_sentence,
    script_of,
    stopwords,
)

_MAX_SENTENCE_CHARS = 300

_PUNCT = ".,;:!?()[]{}\"'“”‘’«»"
_TOKEN = re.compile(r"[^\w\s]*\w\S*")  # a whitespace-separated token with a letter or digit


def summarize(
    text: str,
    sentences: list[Sentence],
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
    segmenter = segmenter_for(language if language in ("zh", "ja") else "en")
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


def _pick_sentences(sentences: list[Sentence], topics: list[str], language: str) -> list[str]:
    stop = stopwords(language)
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
    real = [s for s in candidates if ends_sentence(s.text) or len(s.text.split()) >= 12]
    first_real = real[0].index if real else None
    last_real = real[-1].index if real else None
    scored: list[tuple[float, Sentence]] = []
    for s in candidates:
        ws = words[s.index]
        if not ws:
            continue
        weight = sum(frequency[w] / top + (1.0 if w in topic_words else 0.0) for w in set(ws))
        # Formulas and tables (many tokens that are not words) make poor summaries.
        tokens = s.text.split()
        real_words = sum(1 for t in tokens if WORD.fullmatch(t.strip(_PUNCT)))
        wordiness = real_words / max(1, len(tokens))
        score = weight / math.sqrt(len(ws)) * wordiness**2
        if s.index == first_real:
            score += 0.5
        elif s.index == last_real:
            score += 0.25  # a closing sentence often sums up
        elif s.first_in_unit and first_real is not None and s.index > first_real:
            score += 0.15
        if not (ends_sentence(s.text) or len(tokens) >= 12):
            score *= 0.3
        scored.append((score, s))
    wanted = 3 if len(scored) <= 5 else 4 if len(scored) <= 15 else 5
    ranked = sorted(scored, key=lambda pair: (-pair[0], pair[1].index))
    picked: list[Sentence] = []
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
    return [_as_sentence(clip(s.text, _MAX_SENTENCE_CHARS)) for s in picked]


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
    return sum(1 for ch in sample if script_of(ch) in ("zh", "ja")) > 0.3 * len(sample)


def _length_phrase(text: str) -> tuple[int, str]:
    """(count, unit) describing the document's length: words, or characters for CJK."""
    if _unspaced(text.strip()):
        n = sum(1 for ch in text if ch.isalpha())
        return n, "character" if n == 1 else "characters"
    n = len(_TOKEN.findall(text))
    return n, "word" if n == 1 else "words"


def _content_words(text: str, stop: frozenset[str]) -> list[str]:
    return [w for w in (m.lower() for m in WORD.findall(text)) if len(w) > 1 and w not in stop]


def _similar(a: list[str], b: list[str]) -> bool:
    sa, sb = set(a), set(b)
    return bool(sa and sb) and len(sa & sb) / len(sa | sb) > 0.6


def _as_sentence(text: str) -> str:
    return text if ends_sentence(text) or text.endswith("...") else text + "."


def _facts(
    text: str, chosen: list[str], topics: list[str], sentiment: Sentiment, actions: list[str]
) -> list[str]:
    """Short true sentences about the document, to pad a summary of a very short text."""
    count, unit = _length_phrase(text)
    facts = []
    excerpt = collapse(re.sub(r"[.!?。！？…\"“”]", " ", text)) if len(text) <= 1_000 else ""
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
