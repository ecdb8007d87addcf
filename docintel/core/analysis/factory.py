"""Pick the analyzer the settings ask for."""

from __future__ import annotations

from docintel.core.analysis.base import Analyzer
from docintel.core.config import Settings


def describe_choice(settings: Settings, name: str | None = None) -> str:
    """Which analyzer and model run, and why: said at start so nobody is surprised."""
    chosen = name or settings.analyzer_name
    if chosen == "openai":
        where = f" at {settings.openai_base_url}" if settings.openai_base_url else ""
        what = f"openai ({settings.model}{where})"
    else:
        from docintel.core.analysis.offline import MODEL

        what = f"offline ({MODEL})"
    if name:
        return f"{what}, as asked"
    if settings.analyzer != "auto":
        return f"{what}, as DOCINTEL_ANALYZER asks"
    if chosen == "openai":
        return f"{what}, because OPENAI_API_KEY is set; DOCINTEL_ANALYZER=offline analyses locally"
    return f"{what}, because OPENAI_API_KEY is not set"


def build_analyzer(settings: Settings, name: str | None = None) -> Analyzer:
    """`name` overrides the settings (the CLI's `analyze --analyzer`)."""
    chosen = name or settings.analyzer_name
    if chosen == "openai":
        from docintel.core.analysis.openai import OpenAIAnalyzer

        return OpenAIAnalyzer(settings)
    from docintel.core.analysis.offline import OfflineAnalyzer

    return OfflineAnalyzer(processes=settings.workers)
