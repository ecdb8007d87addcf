"""Sentiment: VADER compound scores per sentence, summed up as one tone.

Mixed when both positive and negative sentences are present, neither swamped
by the other, and together a fair share of the text; otherwise the mean score
decides. Only English is scored: VADER's lexicon is English.
"""

from __future__ import annotations

import functools
from typing import Any

from docintel.core.analysis.base import Sentiment
from docintel.core.analysis.offline.sentences import Sentence

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


@functools.cache
def _vader() -> Any:
    """VADER with the supplement above, built once per process."""
    from vaderSentiment import vaderSentiment

    vader = vaderSentiment.SentimentIntensityAnalyzer()
    vader.lexicon.update(_LEXICON_SUPPLEMENT)
    return vader


def overall_sentiment(sentences: list[Sentence], language: str) -> Sentiment:
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
