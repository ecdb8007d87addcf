"""What marks a task: the words and patterns of obligation, request and deadline.

Two stages read them: `layout` (a heading such as "Actions:" makes the list
after it a task list; a numbered line that reads like a task is an item, not a
section heading) and `actions` (which sentences are action items).
"""

from __future__ import annotations

import re

from docintel.core.analysis.offline.text import WORD

# The longest an action item is said in; a longer list item is split into sentences.
MAX_ACTION_CHARS = 300

ACTION_HEADING = re.compile(
    r"\b(?:actions?|action items?|action points?|next steps?|to[- ]?dos?|tasks?|"
    r"follow[- ]ups?|deliverables|what (?:you|we) need to do)\b",
    re.IGNORECASE,
)
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
DEADLINE = re.compile(
    r"\b(?:by|before|no later than|not later than|due(?: on| by)?|until)\s+(?:the\s+)?(?:"
    r"end of (?:the\s+)?(?:day|week|month|quarter|year)|eod|cob|eow|tomorrow|tonight|"
    r"next (?:week|month|quarter|year|\w+day)|this (?:week|month|\w+day)|"
    r"(?:mon|tues|wednes|thurs|fri|satur|sun)day|"
    r"\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r"|" + _MONTH + r"\.?\s+\d{1,2}\b|"
    r"\d{1,4}[-/.]\d{1,2}(?:[-/.]\d{1,4})?|q[1-4]\b)",
    re.IGNORECASE,
)
OBLIGATION = re.compile(
    r"\b(?:must(?! have been)|should(?! have been)|shall|need(?:s)? to|have to|has to|"
    r"ought to|(?:is|are) (?:required|expected|asked) to|make sure|ensure that|be sure to|"
    r"do(?:n't| not) forget|remember to)\b",
    re.IGNORECASE,
)
NOT_OBLIGATION = re.compile(
    r"\b(?:do(?:es)?n't|do(?:es)? not|did not|didn't) (?:need|have) to\b|"
    r"\bneed not\b|\bno need\b|^(?:maybe|perhaps)\b|\bmight\b|"
    # A thing, not a person, as the subject: "This text should contain…".
    r"^(?:this|that|these|those|it|there)\b(?:\s+\w+){0,2}\s+"
    r"(?:should|must|shall|needs?|has|have)\b",
    re.IGNORECASE,
)
PLEASE = re.compile(
    r"\b(?:please|bitte|veuillez|por favor|per favore|пожалуйста)\b"
    r"(?!\s+(?:find|see)\s+(?:attached|enclosed|below|above))",
    re.IGNORECASE,
)
LABEL = re.compile(
    r"^(?:action(?: items?| points?)?|todo|to-do|to do|ai|follow[- ]up|next steps?)"
    r"\s*[:\-–]\s*",
    re.IGNORECASE,
)
# "Order 55120 was promised…": the verb-like first word is the subject's noun.
NOUN_SUBJECT = re.compile(
    r"(?:\s+\S+){0,2}?\s+(?:is|was|are|were|has|had|will|would|can|could|may)\b",
    re.IGNORECASE,
)
TODO = re.compile(r"\b(?:TODO|FIXME)\b")
IMPERATIVES = frozenset(
    """
    add approve arrange ask assign attend book buy call cancel check clean collect complete
    confirm contact create deliver deploy document draft email escalate ensure file fill
    finalise finalize finish fix follow forward install inform invite make notify order
    organise organize pay plan prepare provide register remember remove renew reply report
    request reschedule respond return review schedule send set share sign submit test update
    upload verify write
    """.split()
)


def has_task_cue(text: str) -> bool:
    first = WORD.match(text)
    return bool(
        PLEASE.search(text)
        or TODO.search(text)
        or DEADLINE.search(text)
        or (OBLIGATION.search(text) and not NOT_OBLIGATION.search(text))
        or (first and first.group(0).lower() in IMPERATIVES)
    )
