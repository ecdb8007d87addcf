"""Pick the analyzer the settings ask for."""

from __future__ import annotations

from docintel.core.analysis.base import Analyzer
from docintel.core.config import Settings


def build_analyzer(settings: Settings, name: str | None = None) -> Analyzer:
    """`name` overrides the settings (the CLI's `analyze --analyzer`)."""
    chosen = name or settings.analyzer_name
    if chosen == "openai":
        from docintel.core.analysis.openai import OpenAIAnalyzer

        return OpenAIAnalyzer(settings)
    from docintel.core.analysis.offline import OfflineAnalyzer

    return OfflineAnalyzer(processes=settings.workers)
