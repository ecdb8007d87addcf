"""Analyzers: turn extracted text into an Analysis.

`build_analyzer(settings)` picks the implementation the settings ask for;
both implementations satisfy the `Analyzer` protocol in `base`.
"""

from __future__ import annotations

from docintel.core.analysis.base import Analysis, AnalysisResult, Analyzer, Sentiment
from docintel.core.analysis.factory import build_analyzer, describe_choice

__all__ = [
    "Analysis",
    "AnalysisResult",
    "Analyzer",
    "Sentiment",
    "build_analyzer",
    "describe_choice",
]
