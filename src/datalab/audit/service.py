"""Recording the audit trail, in the transaction of the action recorded, and reading it back.

A record holds who acted (a user's uid and name, or "operator" / "pipeline"), the action, its target,
a small detail object and where the request came from. It never holds what authenticates anyone:
no password, session token, API key, URL signature or session id is ever passed in. Details are
bounded whatever a client sent, so a hostile request cannot grow the trail by more than a few hundred
bytes.

Where a request came from (its channel and client address) is known at the HTTP edge, far from the
services that record; the edge puts it in a context variable for the request (`origin_scope`), which
also reaches the worker threads the request's handlers run in.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from datalab.accounts.models import Organization, User
from datalab.audit.errors import AuditAdminRequired
from datalab.audit.models import OPERATOR, PIPELINE, SYSTEM, AuditEvent
from datalab.pagination import Page, paginate
from datalab.scoping import OrgContext, across_organizations, scoped

MAX_DETAIL_KEYS = 20
MAX_DETAIL_TEXT = 200
MAX_DETAIL_LIST = 50
MAX_ADDRESS = 64
# Spreadsheet programs run a cell starting with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = (
    "id",
    "occurredAt",
    "organizationUid",
    "actorUid",
    "actorName",
    "channel",
    "action",
    "targetType",
    "targetId",
    "clientAddress",
    "bytes",
    "detail",
)


@dataclass(frozen=True)
class Origin:
    """Where the actions being recorded come from: a channel ("API", "DataCenter", "store", "CLI",
    "pipeline", "system") and the client's address when there is one."""

    channel: str
    client_address: str = ""


_ORIGIN: ContextVar[Origin | None] = ContextVar("datalab_audit_origin", default=None)
# Outside requests and commands: the upload sweeper and other background threads.
_BACKGROUND = Origin(channel=SYSTEM)


@contextmanager
def origin_scope(origin: Origin) -> Iterator[None]:
    """Record what happens inside the block as coming from `origin`."""
    token = _ORIGIN.set(origin)
    try:
        yield
    finally:
        _ORIGIN.reset(token)


def current_origin() -> Origin:
    """Where the actions being recorded now come from."""
    return _ORIGIN.get() or _BACKGROUND


def _default_actor(channel: str) -> str:
    return {"CLI": OPERATOR, "pipeline": PIPELINE}.get(channel, SYSTEM)


def _bounded_scalar(value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)[:MAX_DETAIL_TEXT]


def bounded_detail(detail: Mapping[str, object] | None) -> dict[str, object]:
    """The detail with at most MAX_DETAIL_KEYS keys, short texts and short lists of scalars."""
    bounded: dict[str, object] = {}
    for key, value in list((detail or {}).items())[:MAX_DETAIL_KEYS]:
        if isinstance(value, list | tuple):
            bounded[str(key)[:60]] = [_bounded_scalar(item) for item in value[:MAX_DETAIL_LIST]]
        else:
            bounded[str(key)[:60]] = _bounded_scalar(value)
    return bounded


def record(
    db: Session,
    *,
    action: str,
    organization_id: int | None,
    now: datetime,
    actor: User | None = None,
    actor_name: str | None = None,
    target: tuple[str, str] = ("", ""),
    detail: Mapping[str, object] | None = None,
    size_bytes: int | None = None,
    channel: str | None = None,
) -> AuditEvent:
    """Add an event to the session's transaction: it is kept exactly when the action is.

    The actor is the user given, else `actor_name`, else who acts on the channel ("operator" on the
    command line, "pipeline" for the pipeline).
    """
    origin = current_origin()
    chosen_channel = channel or origin.channel
    event = AuditEvent(
        occurred_at=now,
        organization_id=organization_id,
        actor_uid=actor.uid if actor is not None else "",
        actor_name=(actor.user_name if actor is not None else actor_name or _default_actor(chosen_channel))[
            :254
        ],
        channel=chosen_channel[:20],
        action=action,
        target_type=target[0][:30],
        target_id=target[1][:64],
        detail=bounded_detail(detail),
        client_address=origin.client_address[:MAX_ADDRESS],
        size_bytes=size_bytes,
    )
    db.add(event)
    return event


def record_for(
    db: Session,
    org: OrgContext,
    *,
    action: str,
    now: datetime,
    target: tuple[str, str] = ("", ""),
    detail: Mapping[str, object] | None = None,
    size_bytes: int | None = None,
) -> AuditEvent:
    """Record an action the context's user (or an operator) took in the context's organization."""
    return record(
        db,
        action=action,
        organization_id=org.organization.id,
        now=now,
        actor=org.user,
        target=target,
        detail=detail,
        size_bytes=size_bytes,
    )


def home_organization_id(user: User) -> int | None:
    """The organization events about a person themselves (sign-ins, API keys) are filed under: their
    first one, the one Data Center opens on."""
    return user.memberships[0].organization_id if user.memberships else None


def is_admin(org: OrgContext) -> bool:
    """Whether the context may read its organization's trail: an operator, or one of its admins."""
    if org.user is None:
        return True
    return any(
        membership.organization_id == org.organization.id and membership.role == "admin"
        for membership in org.user.memberships
    )


def require_admin(org: OrgContext) -> None:
    """403 unless the context may read its organization's trail."""
    if not is_admin(org):
        raise AuditAdminRequired()


def list_events(
    *, db: Session, org: OrgContext, since: datetime | None, limit: int | None, offset: int
) -> Page[AuditEvent]:
    """The organization's events, newest first, paged (admins only)."""
    require_admin(org)
    query = scoped(AuditEvent, org)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    return paginate(
        db=db,
        query=query.order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()),
        limit=limit,
        offset=offset,
    )


def organization_events(*, db: Session, org: OrgContext, since: datetime | None) -> Iterator[AuditEvent]:
    """Every event of the organization, oldest first (admins only), read in batches."""
    require_admin(org)
    query = scoped(AuditEvent, org)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    yield from db.scalars(query.order_by(AuditEvent.id).execution_options(yield_per=500))


def operator_events(
    *, db: Session, organization: Organization | None, since: datetime | None
) -> Iterator[AuditEvent]:
    """Every event (of one organization when given, else of all and of none), oldest first."""
    if organization is None:
        query = across_organizations(AuditEvent)
    else:
        query = scoped(AuditEvent, OrgContext(user=None, organization=organization))
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    yield from db.scalars(query.order_by(AuditEvent.id).execution_options(yield_per=500))


def organization_uids(db: Session) -> dict[int, str]:
    """Every organization's uid by id (for operators' exports, which span organizations)."""
    return {row.id: row.uid for row in db.execute(select(Organization.id, Organization.uid))}


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def event_row(event: AuditEvent, organization_uid: str) -> list[str]:
    """One event as CSV cells (texts that a spreadsheet would run as formulas are quoted with ')."""
    values: list[Any] = [
        event.id,
        event.occurred_at.isoformat(),
        organization_uid,
        event.actor_uid,
        event.actor_name,
        event.channel,
        event.action,
        event.target_type,
        event.target_id,
        event.client_address,
        event.size_bytes,
        json.dumps(event.detail, sort_keys=True, separators=(",", ":")),
    ]
    return [_cell(value) for value in values]


def csv_chunks(events: Iterable[AuditEvent], uids: Mapping[int, str]) -> Iterator[str]:
    """The events as CSV text with a header row, a chunk per few hundred events."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for index, event in enumerate(events, start=1):
        writer.writerow(event_row(event, uids.get(event.organization_id or 0, "")))
        if index % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
