"""Layout: the sample's lines grouped into prose paragraphs, list items and headings.

Extracted text keeps the line breaks of the page, not the structure of the
document; this module recovers it. Which lines are a wrapped paragraph, a
list item, a header field ("Subject: …"), a title or a section heading, and
which lists are task lists ("Actions:", "Next steps"), decides what the
sentence splitter, the topic extractor and the action-item finder each see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from docintel.core.analysis.offline.cues import (
    ACTION_HEADING,
    LABEL,
    OBLIGATION,
    PLEASE,
    has_task_cue,
)
from docintel.core.analysis.offline.text import WORD, collapse, ends_sentence

_LIST_MARKER = re.compile(r"^\s*(?:[-*•‣◦▪●○■□–—]|\(?\d{1,3}[.)]|\(?[a-z][.)]|\[[ xX]?\])\s+")
HEADER_FIELD = re.compile(r"^([A-Z][\w'/-]*(?: [\w'/-]+){0,3}):\s+(\S.*)$")
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
_ACTION_TITLE = re.compile(r"(?:" + ACTION_HEADING.pattern + r")\W*$", re.IGNORECASE)
# A section number before a heading: "1", "1.2", "2.3.1", "IV.", "A.".
_SECTION_NUMBER = re.compile(r"^(?:\d{1,3}(?:\.\d{1,3})*\.?|[IVX]{1,4}\.|[A-Z]\.)\s+(?=\S)")


@dataclass(frozen=True)
class Unit:
    """A paragraph-level piece of the document: prose, a list item, or a heading."""

    text: str
    kind: str  # "prose" | "item" | "heading"
    in_action_list: bool = False


def is_header_field(line: str) -> bool:
    """`Subject: Q3 review`, `Name: Foo Bar` — a label and a short value, not a sentence."""
    match = HEADER_FIELD.match(line)
    return bool(
        match
        and len(line) <= 120
        and len(match.group(2).split()) <= 10
        and not ends_sentence(line)
        and not LABEL.match(line)
    )


def split_units(text: str) -> list[Unit]:
    """Group lines into prose paragraphs, list items and headings.

    A line break ends a unit when the line ends a sentence, when the next line
    starts a list item, or when the line is a header field ("Subject: …") or a
    short title; otherwise the lines are a wrapped paragraph and are joined.
    A numbered line that is short and unpunctuated and is followed by a
    paragraph ("1. Release 2.4" then prose) is a section heading, not an item.
    """
    units: list[Unit] = []
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
            body = collapse(" ".join(current))
            if kind == "item":
                units.append(Unit(body, "item", action_list))
            elif kind == "heading" or (body.endswith(":") and len(body) <= 120):
                units.append(Unit(body, "heading"))
                # "Actions:", "Please do the following:", "Action items" — the
                # items after it are tasks.
                cue = ACTION_HEADING.search(body) or PLEASE.search(body)
                action_list = (
                    body.endswith(":") and bool(cue or OBLIGATION.search(body))
                ) or _is_action_title(body)
            else:
                units.append(Unit(body, "prose"))
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
            elif LABEL.match(line):  # "Action: …", "TODO: …" lines are items too
                flush()
                current, kind = [line], "item"
            elif is_header_field(line):
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
                ends_sentence(line) or (line.endswith(":") and not _continues(line, following))
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
        and not LABEL.match(following)
    )


def _starts_upper(line: str) -> bool:
    head = line.lstrip("\"'“‘«(")
    return head[:1].isupper()


def _is_title(line: str, following: str | None) -> bool:
    """A short line without punctuation standing before a capitalised line or a section."""
    if ends_sentence(line) or len(line.split()) > 6 or following is None:
        return False
    if _LIST_MARKER.match(following) or LABEL.match(following):
        return True
    words = WORD.findall(line)
    if words and words[-1] in _FUNCTION_WORDS:
        return False  # a wrapped line: "…a staffing review for the" / "Leeds warehouse…"
    number = _SECTION_NUMBER.match(following)  # "1 Basics" / "1.1 Spaces"
    return _starts_upper(following[number.end() :] if number else following)


def _open_ended(line: str) -> bool:
    """Does `line` stop mid-phrase ("…a staffing review for the"), so the next line goes on?"""
    if line.endswith((",", ";", "-", "–", "—", "&", "/", "+")):
        return True
    words = WORD.findall(line)
    return bool(words) and words[-1] in _FUNCTION_WORDS


def _is_action_title(body: str) -> bool:
    """A short title such as "Action items" or "Next steps" (no colon needed)."""
    return len(body.split()) <= 5 and not is_header_field(body) and bool(_ACTION_TITLE.search(body))


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
        or ends_sentence(body)
        or body.endswith(":")
        or _open_ended(body)
        or has_task_cue(body)
    ):
        return False
    if following is not None:
        if LABEL.match(following):
            return False
        bullet = _LIST_MARKER.match(following)
        if bullet:
            # A numbered section over a bulleted list; numbered siblings are a list.
            return not re.match(r"\s*\(?(?:\d{1,3}|[a-zA-Z])[.)]", following)
        return _starts_upper(following) and (len(following) > len(line) or ends_sentence(following))
    if not next_paragraph:
        return False
    first = next_paragraph[0]
    if _LIST_MARKER.match(first) or LABEL.match(first) or not _starts_upper(first):
        return False
    return len(next_paragraph) >= 2 or len(first.split()) >= 12
