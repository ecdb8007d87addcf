"""Key topics: YAKE keyphrases of the layout's units, filtered and de-duplicated.

YAKE reads one unit per line, each closed with a full stop so its n-grams do
not span units; e-mail header fields and action-list headings are left out
because they are no topic. A phrase that overlaps one already chosen, or is
too generic, too long or mostly not letters, is dropped.
"""

from __future__ import annotations

import re

from docintel.core.analysis.offline.cues import ACTION_HEADING
from docintel.core.analysis.offline.layout import HEADER_FIELD, Unit, is_header_field
from docintel.core.analysis.offline.text import collapse, ends_sentence, stopwords

_MAX_TOPICS = 6
_MAX_TOPIC_CHARS = 50

_EMAIL_HEADERS = frozenset("from to cc bcc date sent re fwd fw attachments attachment".split())
# Fields whose label is no topic, though their value may be: "Attendees: Priya, Marco".
_VALUE_ONLY_FIELDS = frozenset("subject attendees participants present absent apologies".split())
# Single words too generic to be a topic on their own.
_GENERIC_TOPICS = frozenset(
    """
    percent per cent step steps thing things way ways time times day days week weeks
    month months year years today people part parts number lot lots kind example
    january february march april may june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday
    """.split()
)


def key_topics(units: list[Unit], language: str) -> list[str]:
    import yake

    text = _keyword_text(units)
    if not text.strip():
        return []
    extractor = yake.KeywordExtractor(
        lan=language, n=2, top=30, dedup_lim=0.8, stopwords=set(stopwords(language))
    )
    topics: list[str] = []
    for phrase, _score in extractor.extract_keywords(text):
        phrase = collapse(str(phrase)).strip(" .,;:-–—'\"()[]“”‘’«»")
        if not _good_topic(phrase):
            continue
        folded = phrase.casefold()
        if any(_overlaps(folded, t.casefold()) for t in topics):
            continue
        topics.append(phrase)
        if len(topics) == _MAX_TOPICS:
            break
    return topics


def _keyword_text(units: list[Unit]) -> str:
    """The text YAKE reads: one unit per line, each closed so n-grams don't span them."""
    lines = []
    for unit in units:
        body = unit.text
        is_field = unit.kind == "heading" and is_header_field(body)
        header = HEADER_FIELD.match(body) if is_field else None
        if header:
            if header.group(1).lower() in _EMAIL_HEADERS:
                continue
            if header.group(1).lower() in _VALUE_ONLY_FIELDS:
                body = header.group(2)
        body = body.rstrip(":").strip()
        if unit.kind == "heading" and len(body) <= 30 and ACTION_HEADING.fullmatch(body):
            continue
        if body:
            lines.append(body if ends_sentence(body) else body + ".")
    return "\n".join(lines)


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
