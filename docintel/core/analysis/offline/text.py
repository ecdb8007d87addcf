"""Text preparation: normalise, sample, guess the language; small text helpers.

Every stage reads the *sample*, not the whole text: long documents are cut
to their head plus evenly spaced windows so the work is bounded (pysbd's
segmenter in particular is super-linear in its input). The language guess
picks the stopwords and the sentence splitter the other stages use.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter

# Work bounds: the sample is what every stage looks at.
_SAMPLE_CHARS = 40_000
_HEAD_CHARS = 20_000
_SAMPLE_WINDOWS = 4

# Languages whose stopword lists are used to guess a Latin-script text's language.
_LATIN_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl")

_TERMINAL = ".!?。！？…"
_JUNK = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\ue000-\uf8ff\U000f0000-\U0010ffff]")
WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


@functools.cache
def stopwords(language: str) -> frozenset[str]:
    """YAKE's stopword list for `language` (its language-neutral list when it has none)."""
    import yake

    return frozenset(w for w in yake.KeywordExtractor(lan=language).stopword_set if w)


def normalize(text: str) -> str:
    # NFKC also undoes PDF ligatures ("ﬁ" → "fi") and presentation forms.
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.replace("\u00ad", "").replace("\ufeff", "").replace("\t", " ")
    # Other control characters and private-use glyphs (icon fonts in PDFs) become
    # spaces; newlines stay.
    return _JUNK.sub(" ", text)


def sample_of(text: str) -> str:
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


def detect_language(sample: str) -> str:
    """A two-letter code good enough to pick stopwords and a sentence splitter."""
    scripts: Counter[str] = Counter(script_of(ch) for ch in sample[:20_000] if ch.isalpha())
    if not scripts:
        return "en"
    script, _ = scripts.most_common(1)[0]
    if script == "zh" and scripts["ja"] > 0:
        return "ja"
    if script != "latin":
        return script
    words = [w.lower() for w in WORD.findall(sample[:20_000])][:3_000]
    best, best_hits = "en", 0
    for language in _LATIN_LANGUAGES:
        stop = stopwords(language)
        hits = sum(1 for w in words if w in stop)
        if hits > best_hits:
            best, best_hits = language, hits
    # Running text has a fifth or more stopwords; lorem ipsum and word lists don't.
    if len(words) >= 20 and best_hits < 0.2 * len(words):
        return "und"
    return best


def script_of(ch: str) -> str:
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


def collapse(text: str) -> str:
    return " ".join(text.split())


def ends_sentence(text: str) -> bool:
    return text.rstrip("\"'”’)]»").endswith(tuple(_TERMINAL))


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit - 3)
    return text[: cut if cut > limit // 2 else limit - 3].rstrip(" ,;:-–—") + "..."
