"""Response shape of the audit trail and the parsing of its `since` filter."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter

from datalab.audit.models import AuditEvent
from datalab.errors import bad_request
from datalab.record_out import record_out


class AuditEventOut(BaseModel):
    """One recorded action."""

    id: int
    occurredAt: datetime
    organizationUid: str | None = Field(description="None for an event of no one organization")
    actorUid: str = Field(description="The acting user's uid; empty for an operator or the pipeline")
    actorName: str = Field(description="The acting user's userName, or operator / pipeline / system")
    channel: str = Field(description="API, DataCenter, store, CLI, pipeline or system")
    action: str = Field(description="e.g. signin.failed, apikey.created, export.downloaded")
    targetType: str
    targetId: str
    clientAddress: str
    bytes: int | None = Field(description="Bytes sent or received, where the action moved a file")
    detail: dict[str, Any]


AUDIT_LIST = TypeAdapter(list[AuditEventOut])


def audit_event_out(event: AuditEvent, organization_uid: str | None) -> AuditEventOut:
    """The response shape of an event."""
    return record_out(AuditEventOut, event, organizationUid=organization_uid, bytes=event.size_bytes)


def parse_since(raw: str | None) -> datetime | None:
    """An ISO 8601 date or date-time (UTC unless it says otherwise); anything else is a 400."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    try:
        if len(text) > 40:
            raise ValueError(text)
        moment = datetime.fromisoformat(text) if "T" in text or " " in text else None
        if moment is None:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day)
    except ValueError:
        raise bad_request(
            f"since must be an ISO 8601 date or date-time, e.g. 2026-11-01 or 2026-11-01T08:00:00Z, "
            f"not {text[:40]!r}",
            code="invalid_since",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
