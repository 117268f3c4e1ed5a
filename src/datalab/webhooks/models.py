"""Webhooks, the deliveries of each event to them, and every attempt at a delivery."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datalab.db import Base, OrgOwned, UTCDateTime, new_uid

EXPORT_PUBLISHED = "export.published"
UPLOAD_STATUS_CHANGED = "upload.status_changed"
EVENT_TYPES = (EXPORT_PUBLISHED, UPLOAD_STATUS_CHANGED)
# Sent by "send test event" only, whatever events the webhook subscribes to.
TEST_EVENT = "webhook.test"
# A delivery waits in `pending`, is `sending` while a sender holds its lease, and ends `delivered` or
# `failed` (retries used up).
DELIVERY_STATES = ("pending", "sending", "delivered", "failed")


class Webhook(OrgOwned, Base):
    """An organization's endpoint and the events it receives.

    The secret signs every delivery, so it is kept recoverable (a one-way hash could not sign), encrypted
    with the deployment's key (`sealing.SecretBox`); it is shown once, when the webhook is created or its
    secret rotated, and never logged nor recorded in the audit trail.
    """

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uid)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(512))
    events: Mapped[list[str]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookDelivery(OrgOwned, Base):
    """One event for one webhook: the exact body signed and sent, and where its attempts stand."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_time", "webhook_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uid)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_uid: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    webhook: Mapped[Webhook] = relationship(lazy="joined")
    attempt_log: Mapped[list[WebhookAttempt]] = relationship(
        order_by="WebhookAttempt.id", cascade="all, delete-orphan", lazy="selectin"
    )


class WebhookAttempt(Base):
    """One try at sending a delivery: when, how long it took, and the answer or the error."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int] = mapped_column(Integer)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(String(500), default="")
