"""Logging set-up for `docintel serve`, with secrets kept out of every line."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

from docintel.server.streamguard import QuietDeliberateDrops

# ?access_token=… (EventSource clients) would otherwise land in the access log.
# The server decodes the query before it looks for the key, so `access%5Ftoken`
# and `%61ccess_token` authenticate too: match the decoded key, not its spelling.
_QUERY_PARAM = re.compile(r"([?&;])([^=&;\s\"]+)=([^&;\s\"]*)")
_SECRET_KEYS = frozenset({"access_token"})
# And a backstop for a token anywhere else: a JWT's header always starts "eyJ".
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")


def redact(text: str) -> str:
    def param(match: re.Match[str]) -> str:
        sep, key, value = match.groups()
        if unquote_plus(key).strip().lower() in _SECRET_KEYS:
            return f"{sep}{key}=[redacted]"
        return match.group(0)

    return _JWT.sub("[redacted]", _QUERY_PARAM.sub(param, text))


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def configure(level: str = "INFO") -> dict[str, object]:
    """A dictConfig for uvicorn and our loggers: one format, secrets redacted."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact": {"()": RedactSecrets},
            "deliberate_drops": {"()": QuietDeliberateDrops},
        },
        "formatters": {
            "default": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["redact", "deliberate_drops"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "docintel": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": level, "propagate": False},
            # The SDK's and httpx's debug lines can carry headers; keep them quiet.
            "openai": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            "httpx": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            "pypdf": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
            # A malformed multipart body is a 400 of ours; the parser's own line
            # about it would be one per request, in no format.
            "python_multipart": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        },
    }
