"""Sentences: the layout's units split into sentences with pysbd.

A short list item stays one sentence (it is the item); prose and long items
are segmented. pysbd only ever sees chunks of at most `_CHUNK_CHARS`, because
its cost grows faster than linearly in its input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from docintel.core.analysis.offline.cues import MAX_ACTION_CHARS
from docintel.core.analysis.offline.layout import Unit
from docintel.core.analysis.offline.text import collapse

_CHUNK_CHARS = 1_500
_MAX_SENTENCES = 600

_PYSBD_LANGUAGES = frozenset(
    "en de fr es it nl ar ru zh ja el hi fa pl da bg sk ur mr hy am my kk".split()
)


@dataclass(frozen=True)
class Sentence:
    """A sentence of the sample, with where it stood: what the later stages read."""

    text: str
    index: int  # position among the document's sentences
    first_in_unit: bool
    kind: str  # "prose" | "item"
    in_action_list: bool


def segmenter_for(language: str) -> Any:
    # A Segmenter is cheap to build and keeps per-call state, so one per call
    # keeps concurrent analyses (worker threads) apart.
    import pysbd

    return pysbd.Segmenter(language=language if language in _PYSBD_LANGUAGES else "en")


def split_sentences(units: list[Unit], language: str) -> list[Sentence]:
    segmenter = segmenter_for(language)
    out: list[Sentence] = []
    for unit in units:
        if unit.kind == "heading":
            continue
        if unit.kind == "item" and len(unit.text) <= MAX_ACTION_CHARS:
            parts = [unit.text]
        else:
            # A long list item is split too: its first sentence is the item,
            # the rest is explanation and is read as prose.
            parts = _split(segmenter, unit.text)
        for j, part in enumerate(parts):
            kind = unit.kind if j == 0 else "prose"
            in_list = unit.in_action_list and j == 0
            out.append(Sentence(collapse(part), len(out), j == 0, kind, in_list))
            if len(out) >= _MAX_SENTENCES:
                return out
    return out


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
