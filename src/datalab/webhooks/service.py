"""Managing an organization's webhooks and recording events for them.

An event becomes one `WebhookDelivery` per active webhook of the organization that subscribes to it,
added to the transaction of the action itself: a delivery exists exactly when the action happened. The
body is rendered once, when the event is recorded, so every attempt sends (and signs) the same bytes.
With the procrastinate queue engine the first attempt is deferred in that same transaction too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from datalab.accounts.models import Organization
from datalab.audit.service import is_admin, record_for
from datalab.db import new_uid
from datalab.pagination import Page, paginate
from datalab.pipeline.pgqueue import QUEUE_INFO_KEY, defer_delivery
from datalab.scoping import OrgContext, scoped
from datalab.webhooks.errors import (
    InvalidWebhookEvents,
    InvalidWebhookUrl,
    PrivateWebhookAddress,
    WebhookAdminRequired,
    WebhookNotFound,
)
from datalab.webhooks.models import EVENT_TYPES, TEST_EVENT, UPLOAD_STATUS_CHANGED, Webhook, WebhookDelivery
from datalab.webhooks.sealing import SecretBox
from datalab.webhooks.targets import non_public_address

MAX_URL_LENGTH = 2048
MAX_DESCRIPTION = 200
SIGNATURE_PREFIX = "sha256="


@dataclass(frozen=True)
class CreatedWebhook:
    """A new webhook and its secret, which is shown this once."""

    webhook: Webhook
    secret: str


def new_secret() -> str:
    """A random signing secret (256 bits)."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(*, secret: str, timestamp: str, body: bytes) -> str:
    """The X-Datalab-Signature value: HMAC-SHA256 of "<timestamp>.<body>" with the secret, in hex."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def is_deliverable_url(url: str) -> bool:
    """Whether a URL is one deliveries may go to: absolute http(s) with a host."""
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL, stripped, if deliveries may go to it; a 422 saying why not otherwise (a host resolving to
    a non-public address is refused unless `allow_private`)."""
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"url must be at most {MAX_URL_LENGTH} characters")
    if not is_deliverable_url(url) or any(character.isspace() for character in url):
        raise InvalidWebhookUrl(
            "url must be an absolute http:// or https:// URL with a host, e.g. https://example.edu/hooks/datalab"
        )
    refused = None if allow_private else non_public_address(url)
    if refused is not None:
        raise PrivateWebhookAddress(refused)
    return url


def check_events(events: Sequence[str]) -> list[str]:
    """The events, deduplicated in a stable order, if every one is an event type; a 422 otherwise."""
    unknown = [event for event in events if event not in EVENT_TYPES]
    if unknown or not events:
        raise InvalidWebhookEvents(
            f"events must be a non-empty list of {', '.join(EVENT_TYPES)}"
            + (f"; unknown: {', '.join(repr(event[:60]) for event in unknown[:5])}" if unknown else ""),
        )
    return [event for event in EVENT_TYPES if event in events]


def require_admin(org: OrgContext) -> None:
    """403 unless the context manages the organization's webhooks: one of its admins, or an operator."""
    if not is_admin(org):
        raise WebhookAdminRequired()


def _audit_detail(webhook: Webhook) -> dict[str, object]:
    # The host only: a URL's path or query may itself carry a credential of the receiver.
    return {"host": urlsplit(webhook.url).hostname or "", "events": webhook.events, "active": webhook.active}


def create_webhook(
    *,
    db: Session,
    org: OrgContext,
    url: str,
    events: Sequence[str],
    active: bool,
    description: str,
    box: SecretBox,
    allow_private: bool,
    now: datetime,
) -> CreatedWebhook:
    """Add a webhook to the organization with a new secret, stored encrypted (admins only)."""
    require_admin(org)
    secret = new_secret()
    webhook = Webhook(
        organization_id=org.organization.id,
        url=check_url(url, allow_private=allow_private),
        secret=box.seal(secret),
        events=check_events(events),
        active=active,
        description=description[:MAX_DESCRIPTION],
        created_at=now,
        updated_at=now,
    )
    db.add(webhook)
    db.flush()
    record_for(
        db,
        org,
        action="webhook.created",
        now=now,
        target=("webhook", webhook.uid),
        detail=_audit_detail(webhook),
    )
    return CreatedWebhook(webhook=webhook, secret=secret)


def list_webhooks(*, db: Session, org: OrgContext) -> list[Webhook]:
    """The organization's webhooks, oldest first (admins only)."""
    require_admin(org)
    return list(db.scalars(scoped(Webhook, org).order_by(Webhook.id)))


def get_webhook(*, db: Session, org: OrgContext, uid: str) -> Webhook:
    """One of the organization's webhooks (admins only); 404 for any other uid."""
    require_admin(org)
    webhook = db.scalar(scoped(Webhook, org).where(Webhook.uid == uid))
    if webhook is None:
        raise WebhookNotFound(uid)
    return webhook


def update_webhook(
    *,
    db: Session,
    org: OrgContext,
    uid: str,
    changes: Mapping[str, object],
    allow_private: bool,
    now: datetime,
) -> Webhook:
    """Change a webhook's url, events, active flag or description (only those given)."""
    webhook = get_webhook(db=db, org=org, uid=uid)
    if "url" in changes:
        webhook.url = check_url(str(changes["url"]), allow_private=allow_private)
    if "events" in changes:
        events = changes["events"]
        webhook.events = check_events([str(event) for event in events] if isinstance(events, list) else [])
    if "active" in changes:
        webhook.active = bool(changes["active"])
    if "description" in changes:
        webhook.description = str(changes["description"])[:MAX_DESCRIPTION]
    webhook.updated_at = now
    db.flush()
    record_for(
        db, org, action="webhook.updated", now=now, target=("webhook", uid), detail=_audit_detail(webhook)
    )
    return webhook


def rotate_secret(*, db: Session, org: OrgContext, uid: str, box: SecretBox, now: datetime) -> CreatedWebhook:
    """Give a webhook a new secret, shown this once; every attempt from now on, retries of earlier
    events included, is signed with it (the old secret signs nothing more)."""
    webhook = get_webhook(db=db, org=org, uid=uid)
    secret = new_secret()
    webhook.secret = box.seal(secret)
    webhook.updated_at = now
    db.flush()
    record_for(db, org, action="webhook.secret_rotated", now=now, target=("webhook", uid))
    return CreatedWebhook(webhook=webhook, secret=secret)


def delete_webhook(*, db: Session, org: OrgContext, uid: str, now: datetime) -> None:
    """Remove a webhook with its deliveries and their log."""
    webhook = get_webhook(db=db, org=org, uid=uid)
    detail = _audit_detail(webhook)
    # The foreign keys' ON DELETE CASCADE removes its deliveries and their attempts in the database.
    db.delete(webhook)
    db.flush()
    record_for(db, org, action="webhook.deleted", now=now, target=("webhook", uid), detail=detail)


def list_deliveries(
    *, db: Session, org: OrgContext, uid: str, limit: int | None, offset: int
) -> Page[WebhookDelivery]:
    """A webhook's deliveries, newest first, with their attempts (admins only)."""
    webhook = get_webhook(db=db, org=org, uid=uid)
    query = (
        scoped(WebhookDelivery, org)
        .where(WebhookDelivery.webhook_id == webhook.id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    )
    return paginate(db=db, query=query, limit=limit, offset=offset)


def event_body(
    *, event_uid: str, event_type: str, organization_uid: str, data: Mapping[str, object], now: datetime
) -> str:
    """The JSON body of an event, as every delivery of it sends it."""
    document = {
        "id": event_uid,
        "type": event_type,
        "createdAt": now.isoformat().replace("+00:00", "Z"),
        "organization": organization_uid,
        "data": dict(data),
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=False)


def _queue(
    *, db: Session, webhook: Webhook, event_uid: str, event_type: str, body: str, now: datetime
) -> WebhookDelivery:
    delivery = WebhookDelivery(
        organization_id=webhook.organization_id,
        webhook_id=webhook.id,
        event_uid=event_uid,
        event_type=event_type,
        body=body,
        state="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    db.add(delivery)
    db.flush()
    if db.info.get(QUEUE_INFO_KEY) == "procrastinate":
        defer_delivery(db=db, delivery_id=delivery.id)
    return delivery


def emit(
    *, db: Session, organization_id: int, event_type: str, data: Mapping[str, object], now: datetime
) -> list[WebhookDelivery]:
    """Queue the event for every active webhook of the organization subscribed to it, in the caller's
    transaction."""
    organization = db.get_one(Organization, organization_id)
    webhooks = db.scalars(
        scoped(Webhook, OrgContext(user=None, organization=organization)).where(Webhook.active.is_(True))
    ).all()
    subscribed = [webhook for webhook in webhooks if event_type in webhook.events]
    if not subscribed:
        return []
    event_uid = new_uid()
    body = event_body(
        event_uid=event_uid, event_type=event_type, organization_uid=organization.uid, data=data, now=now
    )
    return [
        _queue(db=db, webhook=webhook, event_uid=event_uid, event_type=event_type, body=body, now=now)
        for webhook in subscribed
    ]


def upload_status_changed(
    *, db: Session, organization_id: int, upload_uid: str, from_status: str, status: str, now: datetime
) -> None:
    """Queue `upload.status_changed` for an upload that moved from one status to another."""
    emit(
        db=db,
        organization_id=organization_id,
        event_type=UPLOAD_STATUS_CHANGED,
        data={"upload": {"uid": upload_uid}, "previousStatus": from_status, "status": status},
        now=now,
    )


def send_test_event(*, db: Session, org: OrgContext, uid: str, now: datetime) -> WebhookDelivery:
    """Queue a `webhook.test` event for one webhook, whatever its events and active flag."""
    webhook = get_webhook(db=db, org=org, uid=uid)
    event_uid = new_uid()
    body = event_body(
        event_uid=event_uid,
        event_type=TEST_EVENT,
        organization_uid=org.organization.uid,
        data={"webhook": {"uid": webhook.uid}, "message": "A test event sent from Data Lab"},
        now=now,
    )
    delivery = _queue(db=db, webhook=webhook, event_uid=event_uid, event_type=TEST_EVENT, body=body, now=now)
    record_for(db, org, action="webhook.test_sent", now=now, target=("webhook", uid))
    return delivery
