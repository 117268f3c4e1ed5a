"""Request and response shapes of the webhooks API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from datalab.record_out import record_out
from datalab.webhooks.models import EVENT_TYPES, Webhook, WebhookDelivery

EVENTS_DESCRIPTION = f"Events the webhook receives: any of {', '.join(EVENT_TYPES)}"


class WebhookCreate(BaseModel):
    """A new webhook."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="http:// or https:// URL deliveries are POSTed to")
    events: list[str] = Field(min_length=1, max_length=10, description=EVENTS_DESCRIPTION)
    active: bool = True
    description: str = Field(default="", max_length=200)


class WebhookUpdate(BaseModel):
    """Changes to a webhook: only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    events: list[str] | None = Field(
        default=None, min_length=1, max_length=10, description=EVENTS_DESCRIPTION
    )
    active: bool | None = None
    description: str | None = Field(default=None, max_length=200)


class WebhookOut(BaseModel):
    """A webhook (its secret is shown only when it is created)."""

    uid: str
    url: str
    events: list[str]
    active: bool
    description: str
    createdAt: datetime
    updatedAt: datetime


class CreatedWebhookOut(WebhookOut):
    """A new webhook with its signing secret, shown this once."""

    secret: str = Field(description="Signs every delivery (X-Datalab-Signature); store it now")


class AttemptOut(BaseModel):
    """One try at sending a delivery."""

    attemptedAt: datetime
    durationMs: int
    responseStatus: int | None = Field(description="The receiver's HTTP status; None when it did not answer")
    error: str = Field(description="Why the attempt failed; empty when it was delivered")


class DeliveryOut(BaseModel):
    """One event sent (or being sent) to a webhook, and its attempts so far."""

    uid: str = Field(description="The X-Datalab-Delivery header of its requests")
    eventId: str
    eventType: str
    state: str = Field(description="pending, sending, delivered or failed")
    attempts: list[AttemptOut]
    nextAttemptAt: datetime | None = Field(description="When it is tried again, while pending")
    createdAt: datetime
    finishedAt: datetime | None


WEBHOOK_LIST = TypeAdapter(list[WebhookOut])
DELIVERY_LIST = TypeAdapter(list[DeliveryOut])


def webhook_out(webhook: Webhook) -> WebhookOut:
    """The response shape of a webhook."""
    return record_out(WebhookOut, webhook, events=list(webhook.events))


def delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    """The response shape of a delivery with its attempts."""
    return DeliveryOut(
        uid=delivery.uid,
        eventId=delivery.event_uid,
        eventType=delivery.event_type,
        state=delivery.state,
        attempts=[
            AttemptOut(
                attemptedAt=attempt.attempted_at,
                durationMs=attempt.duration_ms,
                responseStatus=attempt.response_status,
                error=attempt.error,
            )
            for attempt in delivery.attempt_log
        ],
        nextAttemptAt=delivery.next_attempt_at if delivery.state == "pending" else None,
        createdAt=delivery.created_at,
        finishedAt=delivery.finished_at,
    )
