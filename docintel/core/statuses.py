"""A document's statuses: plain strings, shared by the core, the server and the CLI.

No imports, on purpose: the CLI needs these names and must start without
peewee or the rest of the core (`models.py` imports them from here).
"""

from __future__ import annotations

PENDING = "pending"
PROCESSING = "processing"
ANALYZING = "analyzing"
COMPLETED = "completed"
FAILED = "failed"
STATUSES = (PENDING, PROCESSING, ANALYZING, COMPLETED, FAILED)
TERMINAL = (COMPLETED, FAILED)
IN_FLIGHT = (PROCESSING, ANALYZING)
