"""Logging set-up for `docintel serve`, with secrets kept out of every line."""

from __future__ import annotations

import logging
import re

from docintel.server.streamguard import QuietDeliberateDrops

# ?access_token=… (EventSource clients) would otherwise land in the access log.
_SECRET_IN_URL = re.compile(r"(access_token=)[^&\s\"]+")


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_IN_URL.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _SECRET_IN_URL.sub(r"\1[redacted]", record.msg)
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
        },
    }
