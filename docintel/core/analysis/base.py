"""The Analysis shape and the interface every analyzer implements."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

Sentiment = Literal["positive", "negative", "neutral", "mixed"]


class Analysis(BaseModel):
    """What an analyzer says about a document (the LLM's structured output)."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(description="A summary of the document in 3 to 5 sentences.")
    key_topics: list[str] = Field(description="The main topics, most important first.")
    sentiment: Sentiment = Field(description="The overall tone of the document.")
    action_items: list[str] = Field(
        description="Concrete tasks the document asks someone to do; empty when there are none."
    )


class AnalysisResult(Analysis):
    """An Analysis plus which analyzer and model produced it (the spec's shape)."""

    analyzer: Literal["openai", "offline"]
    model: str


class Analyzer(Protocol):
    """Turns document text into an AnalysisResult; raises AnalysisFailed on failure."""

    name: str
    model: str

    async def analyze(self, text: str, *, filename: str) -> AnalysisResult: ...
