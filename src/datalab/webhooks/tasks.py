"""Sending webhook deliveries: claim a due one, POST its signed body, log the attempt, retry or give up.

With the embedded queue a `WebhookSender` thread of `datalab serve` claims due deliveries with a
conditional UPDATE and a lease (like the pipeline's embedded runner: SQLite has no job queue library).
With procrastinate each attempt is a job (`pgqueue.WEBHOOK_TASK`) that a `datalab worker` runs; the
next attempt is deferred in the transaction that logs the failed one.

Before each attempt the URL's host is resolved again and a non-public address refused (`targets`), and
the stored secret is decrypted (`sealing`) only to sign that attempt.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx2
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from datalab import __version__
from datalab.db import first_unclaimed, transaction, utcnow
from datalab.operations.metrics import observe_webhook_attempt
from datalab.pipeline.pgqueue import QUEUE_INFO_KEY, defer_delivery
from datalab.settings import Settings
from datalab.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery
from datalab.webhooks.sealing import SecretBox, UnreadableSecret
from datalab.webhooks.service import is_deliverable_url, sign
from datalab.webhooks.targets import Destination, RefusedTarget, destination

log = logging.getLogger(__name__)

MAX_ERROR = 500
# Beyond the receiver's timeout: how long a claimed delivery stays with its sender.
LEASE_MARGIN = timedelta(seconds=30)


@dataclass(frozen=True)
class Sending:
    """How a sender sends: the key that opens stored secrets, and whether non-public addresses may be
    reached."""

    box: SecretBox
    allow_private: bool


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a sender holds: what to send where (the secret as stored, encrypted), and the number of
    this attempt (1 the first time)."""

    id: int
    uid: str
    event_type: str
    body: str
    url: str
    secret: str
    attempt: int
    sender: str


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: the response status (None when there was no response) or the error."""

    status: int | None
    error: str
    duration_ms: int

    @property
    def delivered(self) -> bool:
        """A 2xx answer."""
        return self.status is not None and 200 <= self.status < 300


def _due(now: datetime) -> object:
    return or_(
        and_(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now),
        and_(WebhookDelivery.state == "sending", WebhookDelivery.lease_until < now),
    )


def claim_delivery(
    *, db: Session, sender: str, lease: timedelta, now: datetime, delivery_id: int | None = None
) -> ClaimedDelivery | None:
    """Take the oldest due delivery (or the one given, if due) for `lease`, or None."""
    candidates = select(WebhookDelivery.id).where(_due(now)).order_by(WebhookDelivery.id).limit(1)  # type: ignore[arg-type]
    if delivery_id is not None:
        candidates = candidates.where(WebhookDelivery.id == delivery_id)
    candidate = first_unclaimed(db, candidates)
    if candidate is None:
        return None
    claimed_id = candidate.id
    row = db.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == claimed_id, _due(now))  # type: ignore[arg-type]
        .values(
            state="sending", locked_by=sender, lease_until=now + lease, attempts=WebhookDelivery.attempts + 1
        )
        .returning(
            WebhookDelivery.uid, WebhookDelivery.event_type, WebhookDelivery.body, WebhookDelivery.attempts
        )
    ).first()
    if row is None:
        return None
    webhook = db.scalar(
        select(Webhook)
        .join(WebhookDelivery, WebhookDelivery.webhook_id == Webhook.id)
        .where(WebhookDelivery.id == claimed_id)
    )
    if webhook is None:
        return None
    return ClaimedDelivery(
        id=claimed_id,
        uid=row.uid,
        event_type=row.event_type,
        body=row.body,
        url=webhook.url,
        secret=webhook.secret,
        attempt=row.attempts,
        sender=sender,
    )


def delivery_headers(claimed: ClaimedDelivery, timestamp: str, secret: str) -> dict[str, str]:
    """The headers of an attempt: event, delivery id, timestamp and signature."""
    return {
        "content-type": "application/json",
        "user-agent": f"datalab-webhooks/{__version__}",
        "x-datalab-event": claimed.event_type,
        "x-datalab-delivery": claimed.uid,
        "x-datalab-timestamp": timestamp,
        "x-datalab-signature": sign(secret=secret, timestamp=timestamp, body=claimed.body.encode()),
    }


def _destination(claimed: ClaimedDelivery, sending: Sending) -> Destination:
    """Where the delivery is sent (see `targets.destination`); raises RefusedTarget."""
    if not is_deliverable_url(claimed.url):
        raise RefusedTarget("the webhook's URL is not http(s)")
    return destination(claimed.url, allow_private=sending.allow_private)


def send(claimed: ClaimedDelivery, *, client: httpx2.Client, sending: Sending) -> Outcome:
    """POST the delivery's body, signed now, to its webhook; never raises."""
    started = time.monotonic()
    try:
        target = _destination(claimed, sending)
        secret = sending.box.open(claimed.secret)
    except (RefusedTarget, UnreadableSecret) as exc:
        return Outcome(status=None, error=f"refused: {exc}", duration_ms=0)
    timestamp = str(int(time.time()))
    try:
        response = client.post(
            target.url,
            content=claimed.body.encode(),
            headers={**delivery_headers(claimed, timestamp, secret), **target.headers},
            extensions=target.extensions,
        )
        error = "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        status: int | None = response.status_code
    except httpx2.HTTPError as exc:
        status, error = None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Outcome(
        status=status, error=error[:MAX_ERROR], duration_ms=int((time.monotonic() - started) * 1000)
    )


def record_outcome(
    *, db: Session, claimed: ClaimedDelivery, outcome: Outcome, retry_waits: Sequence[float], now: datetime
) -> str:
    """Log the attempt and move the delivery on: `delivered`, `pending` until its next try, or `failed`.

    Nothing happens when another sender took the delivery over (its lease ran out). Returns the state.
    """
    retries_left = claimed.attempt <= len(retry_waits) and is_deliverable_url(claimed.url)
    state = "delivered" if outcome.delivered else "pending" if retries_left else "failed"
    next_attempt = now + timedelta(seconds=retry_waits[claimed.attempt - 1]) if state == "pending" else now
    moved = db.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == claimed.id, WebhookDelivery.locked_by == claimed.sender)
        .values(
            state=state,
            next_attempt_at=next_attempt,
            lease_until=None,
            locked_by=None,
            finished_at=None if state == "pending" else now,
        )
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return "sending"
    db.add(
        WebhookAttempt(
            delivery_id=claimed.id,
            attempted_at=now - timedelta(milliseconds=outcome.duration_ms),
            duration_ms=outcome.duration_ms,
            response_status=outcome.status,
            error=outcome.error,
        )
    )
    if state == "pending" and db.info.get(QUEUE_INFO_KEY) == "procrastinate":
        defer_delivery(db=db, delivery_id=claimed.id, at=next_attempt)
    return state


def attempt_delivery(
    *,
    session_factory: sessionmaker[Session],
    client: httpx2.Client,
    sending: Sending,
    sender: str,
    lease: timedelta,
    retry_waits: Sequence[float],
    delivery_id: int | None = None,
) -> bool:
    """Claim a due delivery (or the one given), send it and record the outcome; False if none was due."""
    with transaction(session_factory) as db:
        claimed = claim_delivery(db=db, sender=sender, lease=lease, now=utcnow(), delivery_id=delivery_id)
    if claimed is None:
        return False
    outcome = send(claimed, client=client, sending=sending)
    with transaction(session_factory) as db:
        state = record_outcome(db=db, claimed=claimed, outcome=outcome, retry_waits=retry_waits, now=utcnow())
    observe_webhook_attempt(event=claimed.event_type, state=state, seconds=outcome.duration_ms / 1000)
    # A failed attempt is a warning: the receiver's operators may need to act.
    log.log(
        logging.INFO if outcome.delivered else logging.WARNING,
        "webhook delivery %s (%s) attempt %s: %s in %s ms%s",
        claimed.uid,
        claimed.event_type,
        claimed.attempt,
        outcome.status if outcome.status is not None else "no response",
        outcome.duration_ms,
        f" ({outcome.error})" if outcome.error else "",
        extra={"webhook_delivery": claimed.uid, "webhook_state": state},
    )
    return True


def sending_for(settings: Settings) -> Sending:
    """How the settings say deliveries are sent."""
    return Sending(
        box=SecretBox(settings.encryption_key), allow_private=settings.webhook_private_targets_allowed
    )


def make_client(timeout_seconds: float) -> httpx2.Client:
    """The HTTP client deliveries are sent with: a short timeout, no redirects followed, no proxies from
    the environment (a receiver is reached directly)."""
    return httpx2.Client(timeout=timeout_seconds, follow_redirects=False, trust_env=False)


def lease_for(timeout_seconds: float) -> timedelta:
    """How long a sender holds a delivery: the receiver's timeout and a margin."""
    return timedelta(seconds=timeout_seconds) + LEASE_MARGIN


class WebhookSender:
    """A thread of `datalab serve` sending due deliveries until stopped (the embedded queue)."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        sending: Sending,
        timeout_seconds: float,
        retry_waits: Sequence[float],
        poll_seconds: float,
    ) -> None:
        self.session_factory = session_factory
        self.sending = sending
        self.timeout_seconds = timeout_seconds
        self.retry_waits = tuple(retry_waits)
        self.poll_seconds = poll_seconds
        self.name = f"{socket.gethostname()}:{os.getpid()}:webhooks"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="webhook-sender", daemon=True)

    def start(self) -> None:
        """Start sending."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current attempt and wait for it."""
        self._stop.set()
        self._thread.join(timeout=self.timeout_seconds + 5)

    def _work(self) -> None:
        with make_client(self.timeout_seconds) as client:
            while not self._stop.is_set():
                try:
                    busy = attempt_delivery(
                        session_factory=self.session_factory,
                        client=client,
                        sending=self.sending,
                        sender=self.name,
                        lease=lease_for(self.timeout_seconds),
                        retry_waits=self.retry_waits,
                    )
                except Exception:
                    # The database may be briefly unavailable; keep the sender alive and try again.
                    log.exception("the webhook sender could not claim a delivery")
                    busy = False
                if not busy:
                    self._stop.wait(self.poll_seconds)


def defer_unfinished(*, session_factory: sessionmaker[Session], delivery_id: int) -> None:
    """Defer a procrastinate job again for a delivery its job found not yet due (another sender's lease
    had not run out): at the moment it becomes due, so no delivery is left without a job."""
    with transaction(session_factory) as db:
        delivery = db.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.state not in ("pending", "sending"):
            return
        due = delivery.next_attempt_at if delivery.state == "pending" else delivery.lease_until
        defer_delivery(db=db, delivery_id=delivery_id, at=due)
