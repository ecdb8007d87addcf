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

One module per stage, in the order the analysis runs them (`analyzer`):

- `text`: normalisation, sampling, language guess, small text helpers
- `layout`: lines → prose paragraphs, list items, headings (`Unit`)
- `sentences`: units → sentences with pysbd (`Sentence`)
- `topics`, `sentiment`, `actions`, `summary`: the four results
- `cues`: the words and patterns that mark a task (read by `layout` and `actions`)
"""

from __future__ import annotations

from docintel.core.analysis.offline.analyzer import MODEL, OfflineAnalyzer, analyze_text

__all__ = ["MODEL", "OfflineAnalyzer", "analyze_text"]
