"""The audit trail: one append-only row per action, never updated or deleted."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from datalab.db import Base, MaybeOrgOwned, UTCDateTime

# Who acts when no signed-in user does: an operator's command, the pipeline, a request without a user.
OPERATOR = "operator"
PIPELINE = "pipeline"
SYSTEM = "system"
# Where an action came from.
CHANNELS = ("API", "DataCenter", "store", "CLI", "pipeline")


class AuditEvent(MaybeOrgOwned, Base):
    """Who did what to which record, when and from where (no organization: a system-wide event).

    The actor's user uid and name are copied, not referenced: a record must survive whatever happens
    to the account later.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_org_time", "organization_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor_uid: Mapped[str] = mapped_column(String(36), default="")
    actor_name: Mapped[str] = mapped_column(String(254))
    channel: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(60))
    target_type: Mapped[str] = mapped_column(String(30), default="")
    target_id: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    client_address: Mapped[str] = mapped_column(String(64), default="")
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
