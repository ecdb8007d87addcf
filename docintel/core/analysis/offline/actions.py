"""Action items: the sentences that ask someone to do something.

A sentence is a task when it is an item of a task list ("Actions:", "Next
steps"), carries a label ("TODO:", "Action:"), a request ("please"), an
obligation not negated ("must", "need to"; not "you don't need to"), starts
with an imperative verb, or names a deadline on a list item or beside "will".
Questions and long prose are not tasks. At most `_MAX_ACTION_ITEMS`, each
clipped to `MAX_ACTION_CHARS`, without repeats.
"""

from __future__ import annotations

import re

from docintel.core.analysis.offline.cues import (
    DEADLINE,
    IMPERATIVES,
    LABEL,
    MAX_ACTION_CHARS,
    NOT_OBLIGATION,
    NOUN_SUBJECT,
    OBLIGATION,
    PLEASE,
    TODO,
)
from docintel.core.analysis.offline.sentences import Sentence
from docintel.core.analysis.offline.text import WORD, clip

_MAX_ACTION_ITEMS = 10


def action_items(sentences: list[Sentence]) -> list[str]:
    items: list[str] = []
    seen: set[str] = set()
    for sentence in sentences:
        if not _is_action(sentence):
            continue
        text = clip(LABEL.sub("", sentence.text) or sentence.text, MAX_ACTION_CHARS)
        key = text.casefold()
        if key in seen:
            continue
        seen.add(key)
        items.append(text)
        if len(items) == _MAX_ACTION_ITEMS:
            break
    return items


def _is_action(sentence: Sentence) -> bool:
    text = sentence.text
    words = len(WORD.findall(text))
    if words < 2 or text.rstrip().endswith("?"):
        return False
    if sentence.kind == "item" and sentence.in_action_list:
        return True
    if sentence.kind == "prose" and words > 60:
        return False  # a task is said briefly; this is running prose
    if LABEL.match(text) or TODO.search(text) or PLEASE.search(text):
        return True
    if OBLIGATION.search(text) and not NOT_OBLIGATION.search(text):
        return True
    first = WORD.match(text)
    if (
        first
        and first.group(0).lower() in IMPERATIVES
        and text[first.end() : first.end() + 1] != "("
    ):
        # Mid-sentence fragments start lowercase; list items often do too.
        if NOUN_SUBJECT.match(text, first.end()):
            pass  # "Order 55120 was promised…": a noun, not a verb
        elif first.group(0)[:1].isupper() or sentence.kind == "item":
            return True
    # A deadline marks a task in a list, or in a sentence that says someone will act.
    if DEADLINE.search(text):
        return sentence.kind == "item" or bool(re.search(r"\bwill\b", text, re.IGNORECASE))
    return False
