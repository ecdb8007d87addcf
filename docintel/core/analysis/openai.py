"""The `openai` analyzer: structured output from an OpenAI-compatible chat API.

Retries, in two layers:
- transport faults (connection errors, timeouts, 408/409/429 honouring
  Retry-After, 5xx) are retried once by the SDK itself (`max_retries=1`);
- faults the SDK does not retry — output that is not valid JSON or does not
  match the schema, an answer cut off by the length limit or the content
  filter, a refusal — are retried once here.
Then the document fails with an `AnalysisFailed` whose message a user can act
on. Messages and logs never carry the API key, the document text or the
service's own error text (which may echo either).
"""

from __future__ import annotations

import json
import logging
from types import TracebackType

import openai
import pydantic

from docintel.core.analysis.base import Analysis, AnalysisResult
from docintel.core.analysis.prompt import build_messages
from docintel.core.config import Settings
from docintel.core.errors import AnalysisFailed

log = logging.getLogger(__name__)

# Our own retries, on top of the SDK's, for bad output (see the module docstring).
OUTPUT_RETRIES = 1
SDK_MAX_RETRIES = 1
CONNECT_TIMEOUT = 5.0

SCHEMA_MISMATCH = "The language model returned output that does not match the analysis schema."
REFUSED = "The language model refused to analyse this document."
TRUNCATED = "The language model's answer was cut off at its output length limit."
FILTERED = "The language model's answer was blocked by its content filter."
EMPTY = "The language model returned an empty answer."
OFFLINE_HINT = "set DOCINTEL_ANALYZER=offline to analyse documents locally without it."


class _BadOutput(Exception):
    """The model answered, but not with a usable Analysis; worth one more try."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason  # for the user
        self.detail = detail  # for the log: never the output or the document


class OpenAIAnalyzer:
    """Analyses text with `settings.model` through the official OpenAI SDK.

    The SDK client is created on first use and belongs to the event loop that
    used it first; call `aclose()` (or use `async with`) when done.
    """

    name = "openai"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = settings.model
        self._client: openai.AsyncOpenAI | None = None

    async def analyze(self, text: str, *, filename: str) -> AnalysisResult:
        messages = build_messages(text, filename=filename, max_chars=self.settings.max_prompt_chars)
        client = self._get_client()
        attempts = 1 + OUTPUT_RETRIES
        for attempt in range(1, attempts + 1):
            try:
                analysis = await self._ask(client, messages)
            except _BadOutput as bad:
                log.warning(
                    "OpenAI analysis of %r, attempt %d of %d: %s (%s)",
                    filename,
                    attempt,
                    attempts,
                    bad.reason,
                    bad.detail,
                )
                if attempt == attempts:
                    raise AnalysisFailed(bad.reason) from None
                continue
            except openai.OpenAIError as exc:
                reason = self._describe(exc)
                log.warning(
                    "OpenAI analysis of %r failed: %s (%s%s)",
                    filename,
                    reason,
                    type(exc).__name__,
                    _request_id(exc),
                )
                # `from None`: the SDK's exception text may echo the key or the prompt.
                raise AnalysisFailed(reason) from None
            return AnalysisResult(**analysis.model_dump(), analyzer="openai", model=self.model)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _ask(self, client: openai.AsyncOpenAI, messages: list[dict[str, str]]) -> Analysis:
        try:
            completion = await client.chat.completions.parse(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                response_format=Analysis,
            )
        except pydantic.ValidationError as exc:
            # Invalid JSON is a ValidationError too (type "json_invalid").
            kinds = sorted({error["type"] for error in exc.errors()})
            raise _BadOutput(SCHEMA_MISMATCH, "validation errors: " + ", ".join(kinds)) from None
        except json.JSONDecodeError:
            raise _BadOutput(SCHEMA_MISMATCH, "invalid JSON") from None
        except openai.LengthFinishReasonError:
            raise _BadOutput(TRUNCATED, "finish_reason=length") from None
        except openai.ContentFilterFinishReasonError:
            raise _BadOutput(FILTERED, "finish_reason=content_filter") from None

        if not completion.choices:
            raise _BadOutput(EMPTY, "no choices")
        message = completion.choices[0].message
        if message.refusal:
            raise _BadOutput(REFUSED, "refusal")
        if message.parsed is None:
            raise _BadOutput(EMPTY, "no content")
        analysis = _clean(message.parsed)
        if not analysis.summary:
            raise _BadOutput(SCHEMA_MISMATCH, "empty summary")
        return analysis

    def _describe(self, exc: openai.OpenAIError) -> str:
        """A sentence for the user; deliberately ignores the service's own message."""
        if isinstance(exc, openai.APITimeoutError):
            return (
                "The language model did not answer in time "
                f"(timed out after {self.settings.openai_timeout:g} s)."
            )
        if isinstance(exc, openai.APIConnectionError):
            return (
                f"Could not connect to the language model service at {self._service_url()}; "
                f"{OFFLINE_HINT}"
            )
        if isinstance(exc, openai.AuthenticationError):
            return (
                "Authentication with the language model service failed (check OPENAI_API_KEY); "
                f"{OFFLINE_HINT}"
            )
        if isinstance(exc, openai.PermissionDeniedError):
            return (
                "The language model service denied access (HTTP 403); "
                "check the API key's permissions."
            )
        if isinstance(exc, openai.NotFoundError):
            return (
                f"The language model service does not offer the model {self.model!r} (HTTP 404); "
                "check DOCINTEL_MODEL and OPENAI_BASE_URL."
            )
        if isinstance(exc, openai.RateLimitError):
            if exc.code == "insufficient_quota":
                return "The language model account has run out of quota (HTTP 429)."
            return (
                "The language model service is rate-limiting requests (HTTP 429); try again later."
            )
        if isinstance(exc, openai.BadRequestError):
            if exc.code == "context_length_exceeded":
                return (
                    "The document is too long for the language model's context window; "
                    "lower DOCINTEL_MAX_PROMPT_CHARS."
                )
            return "The language model service rejected the request (HTTP 400)."
        if isinstance(exc, openai.APIStatusError):
            if exc.status_code >= 500:
                return f"The language model service failed (HTTP {exc.status_code})."
            return f"The language model service returned an error (HTTP {exc.status_code})."
        if isinstance(exc, openai.APIResponseValidationError):
            return "The language model service sent a response that could not be read."
        return f"The language model request failed ({type(exc).__name__})."

    def _service_url(self) -> str:
        return self.settings.openai_base_url or "the OpenAI API"

    def _get_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            if not self.settings.openai_api_key:
                raise AnalysisFailed("No OpenAI API key is configured (set OPENAI_API_KEY).")
            timeout = self.settings.openai_timeout
            self._client = openai.AsyncOpenAI(
                api_key=self.settings.openai_api_key,
                base_url=self.settings.openai_base_url,
                timeout=openai.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
                max_retries=SDK_MAX_RETRIES,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client (its connection pool); safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> OpenAIAnalyzer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _clean(analysis: Analysis) -> Analysis:
    """Strip whitespace; drop empty and repeated topics and action items."""
    return Analysis(
        summary=" ".join(analysis.summary.split()),
        key_topics=_clean_list(analysis.key_topics),
        sentiment=analysis.sentiment,
        action_items=_clean_list(analysis.action_items),
    )


def _clean_list(items: list[str]) -> list[str]:
    seen: set[str] = set()
    cleaned: list[str] = []
    for item in items:
        item = " ".join(item.split())
        if item and item.casefold() not in seen:
            seen.add(item.casefold())
            cleaned.append(item)
    return cleaned


def _request_id(exc: openai.OpenAIError) -> str:
    request_id = getattr(exc, "request_id", None)
    return f", request id {request_id}" if request_id else ""
