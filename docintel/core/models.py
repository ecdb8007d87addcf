"""Peewee models: Document, StatusEvent (the event log) and Analysis.

The schema itself is created by the migrations in db.py; these classes map it.
"""

from __future__ import annotations

import peewee

from docintel.core.db import database

# Re-exported: the statuses live in a module without imports, for the CLI.
from docintel.core.statuses import ANALYZING as ANALYZING
from docintel.core.statuses import COMPLETED as COMPLETED
from docintel.core.statuses import FAILED as FAILED
from docintel.core.statuses import IN_FLIGHT as IN_FLIGHT
from docintel.core.statuses import PENDING as PENDING
from docintel.core.statuses import PROCESSING as PROCESSING
from docintel.core.statuses import STATUSES as STATUSES
from docintel.core.statuses import TERMINAL as TERMINAL


class BaseModel(peewee.Model):
    class Meta:
        database = database


class Document(BaseModel):
    seq = peewee.AutoField()  # queue order
    id = peewee.CharField(unique=True)
    owner = peewee.CharField()
    filename = peewee.CharField()  # as the client sent it
    stored_name = peewee.CharField()  # sanitized, under uploads/{id}/
    size_bytes = peewee.IntegerField()
    content_type = peewee.CharField()
    sha256 = peewee.CharField()
    status = peewee.CharField()
    error = peewee.TextField(null=True)
    attempts = peewee.IntegerField(default=0)
    created_at = peewee.CharField()
    updated_at = peewee.CharField()

    class Meta:
        table_name = "document"


class DocumentCount(BaseModel):
    """How many documents an owner has in a status; kept by triggers (db.m004)."""

    owner = peewee.CharField()
    status = peewee.CharField()
    n = peewee.IntegerField()

    class Meta:
        table_name = "document_count"
        primary_key = peewee.CompositeKey("owner", "status")


class StatusEvent(BaseModel):
    """One status transition; the id orders the log and is the SSE event id."""

    id = peewee.AutoField()
    document_id = peewee.CharField()
    owner = peewee.CharField()
    status = peewee.CharField()
    at = peewee.CharField()
    detail = peewee.TextField(null=True)

    class Meta:
        table_name = "status_event"


class Analysis(BaseModel):
    document_id = peewee.CharField(primary_key=True)
    summary = peewee.TextField()
    key_topics = peewee.JSONField()
    sentiment = peewee.CharField()
    action_items = peewee.JSONField()
    analyzer = peewee.CharField()
    model = peewee.CharField()
    created_at = peewee.CharField()

    class Meta:
        table_name = "analysis"

    def as_dict(self) -> dict[str, object]:
        return {
            "summary": self.summary,
            "key_topics": self.key_topics,
            "sentiment": self.sentiment,
            "action_items": self.action_items,
            "analyzer": self.analyzer,
            "model": self.model,
        }
