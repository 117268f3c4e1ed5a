"""Recording new exports for the digests, and claiming and closing a user's digest.

A published export becomes one `DigestEntry` per active user of its organization who has an e-mail
address and has not opted out, in the transaction that publishes it: an entry exists exactly when the
export does. A digest is claimed for one user of one organization with a conditional UPDATE and a lease
(like a webhook delivery), sent, then marked sent; a sender that dies before marking it leaves a lease
that runs out, and the digest is sent again by the next round (at least once, never lost).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from datalab.accounts.models import Membership, Organization, User
from datalab.audit.service import record, record_for
from datalab.db import first_unclaimed, new_uid
from datalab.digests.errors import DigestsNeedAUser, UnknownUnsubscribeLink
from datalab.digests.models import DigestEntry, DigestOptOut
from datalab.exports.models import Export
from datalab.scoping import OrgContext, across_organizations


@dataclass(frozen=True)
class DigestItem:
    """One export listed in a digest."""

    file_name: str
    product_key: str
    published_at: datetime


@dataclass(frozen=True)
class ClaimedDigest:
    """A digest a sender holds: who gets it, for which organization, listing which exports."""

    uid: str
    sender: str
    organization_id: int
    organization_name: str
    user_id: int
    user_uid: str
    recipient: str
    first_name: str
    items: tuple[DigestItem, ...]


def record_new_export(*, db: Session, export: Export, now: datetime) -> int:
    """Queue the export for the next digest of every user of its organization who gets digests; how many."""
    opted_out = select(DigestOptOut.user_id)
    user_ids = db.scalars(
        select(User.id)
        .join(Membership, Membership.user_id == User.id)
        .where(
            Membership.organization_id == export.organization_id,
            User.status == "Active",
            User.email != "",
            User.id.not_in(opted_out),
        )
        .order_by(User.id)
    ).all()
    for user_id in user_ids:
        db.add(
            DigestEntry(
                organization_id=export.organization_id,
                export_id=export.id,
                user_id=user_id,
                state="pending",
                created_at=now,
            )
        )
    return len(user_ids)


def _person(org: OrgContext) -> User:
    if org.user is None:
        raise DigestsNeedAUser()
    return org.user


def receives_digests(*, db: Session, user: User) -> bool:
    """Whether the user gets digests (the default)."""
    return db.get(DigestOptOut, user.id) is None


def is_subscribed(*, db: Session, org: OrgContext) -> bool:
    """Whether the context's user gets digests (the default)."""
    return receives_digests(db=db, user=_person(org))


def _subscribe(*, db: Session, user: User, subscribed: bool, now: datetime) -> bool:
    """Turn the user's digests on or off, in every organization (exports waiting for their next digest are
    dropped when they turn them off); whether anything changed."""
    opt_out = db.get(DigestOptOut, user.id)
    if subscribed and opt_out is not None:
        db.delete(opt_out)
    elif not subscribed and opt_out is None:
        db.add(DigestOptOut(user_id=user.id, created_at=now))
        db.execute(
            update(DigestEntry)
            .where(DigestEntry.user_id == user.id, DigestEntry.state == "pending")
            .values(state="skipped")
        )
    else:
        return False
    db.flush()
    return True


def set_subscribed(*, db: Session, org: OrgContext, subscribed: bool, now: datetime) -> bool:
    """Turn the context's user's digests on or off, in every organization; exports waiting for their next
    digest are dropped when they turn them off."""
    user = _person(org)
    if _subscribe(db=db, user=user, subscribed=subscribed, now=now):
        record_for(
            db,
            org,
            action="email.digest_subscription",
            now=now,
            target=("user", user.uid),
            detail={"subscribed": subscribed},
        )
    return subscribed


def unsubscribe_token(key: bytes, user_uid: str) -> str:
    """The token of a user's unsubscribe link (an HMAC of their id): the link stops their digests without
    signing in, and no one can make it for another user without the server's key."""
    digest = hmac.new(key, f"digest-unsubscribe:{user_uid}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii")


def unsubscribing_user(*, db: Session, key: bytes, user_uid: str, token: str) -> User:
    """The user an unsubscribe link is for; raises UnknownUnsubscribeLink when the token is not theirs."""
    expected = unsubscribe_token(key, user_uid)
    user = db.scalar(select(User).where(User.uid == user_uid))
    if not hmac.compare_digest(expected.encode(), token.encode()) or user is None:
        raise UnknownUnsubscribeLink()
    return user


def unsubscribe(*, db: Session, user: User, now: datetime) -> None:
    """Stop the user's digests from their unsubscribe link (nothing changes when they are stopped)."""
    if _subscribe(db=db, user=user, subscribed=False, now=now):
        record(
            db,
            action="email.digest_subscription",
            organization_id=None,
            now=now,
            actor=user,
            target=("user", user.uid),
            detail={"subscribed": False, "from": "unsubscribe link"},
        )


def _claimable(now: datetime) -> object:
    return or_(
        DigestEntry.state == "pending",
        and_(DigestEntry.state == "sending", DigestEntry.lease_until < now),
    )


def _due(*, now: datetime, oldest_before: datetime) -> object:
    return or_(
        and_(DigestEntry.state == "pending", DigestEntry.created_at <= oldest_before),
        and_(DigestEntry.state == "sending", DigestEntry.lease_until < now),
    )


def claim_digest(
    *, db: Session, sender: str, lease: timedelta, period: timedelta, now: datetime
) -> ClaimedDigest | None:
    """Take the digest of a user whose oldest waiting export is a period old (or whose digest's sender
    lost its lease), with every export waiting for that user in that organization; None if none is due."""
    candidates = (
        across_organizations(DigestEntry)
        .with_only_columns(DigestEntry.organization_id, DigestEntry.user_id)
        .where(_due(now=now, oldest_before=now - period))  # type: ignore[arg-type]
        .order_by(DigestEntry.id)
        .limit(1)
    )
    candidate = first_unclaimed(db, candidates)
    if candidate is None:
        return None
    uid = new_uid()
    claimed_ids = db.scalars(
        update(DigestEntry)
        .where(
            DigestEntry.organization_id == candidate.organization_id,
            DigestEntry.user_id == candidate.user_id,
            _claimable(now),  # type: ignore[arg-type]
        )
        .values(state="sending", digest_uid=uid, locked_by=sender, lease_until=now + lease)
        .returning(DigestEntry.id)
    ).all()
    if not claimed_ids:
        return None
    return _claimed(db=db, uid=uid, sender=sender, entry_ids=claimed_ids)


def _claimed(*, db: Session, uid: str, sender: str, entry_ids: Sequence[int]) -> ClaimedDigest:
    rows = db.execute(
        select(Export.file_name, Export.product_key, Export.created_at, DigestEntry.user_id)
        .join(DigestEntry, DigestEntry.export_id == Export.id)
        .where(DigestEntry.id.in_(entry_ids))
        .order_by(Export.created_at, Export.id)
    ).all()
    entry = db.get_one(DigestEntry, entry_ids[0])
    user = db.get_one(User, entry.user_id)
    organization = db.get_one(Organization, entry.organization_id)
    return ClaimedDigest(
        uid=uid,
        sender=sender,
        organization_id=organization.id,
        organization_name=organization.name,
        user_id=user.id,
        user_uid=user.uid,
        recipient=user.email,
        first_name=user.first_name,
        items=tuple(
            DigestItem(file_name=row.file_name, product_key=row.product_key, published_at=row.created_at)
            for row in rows
        ),
    )


def finish_digest(*, db: Session, claimed: ClaimedDigest, now: datetime) -> bool:
    """Mark the digest's exports sent and record it in the audit trail; False when the sender had lost
    its lease to another (which sends them again)."""
    moved = db.execute(
        update(DigestEntry)
        .where(
            DigestEntry.digest_uid == claimed.uid,
            DigestEntry.locked_by == claimed.sender,
            DigestEntry.state == "sending",
        )
        .values(state="sent", sent_at=now, lease_until=None, locked_by=None)
    )
    if moved.rowcount == 0:  # type: ignore[attr-defined]
        return False
    record(
        db,
        action="email.digest_sent",
        organization_id=claimed.organization_id,
        now=now,
        target=("user", claimed.user_uid),
        detail={"digest": claimed.uid, "exports": len(claimed.items)},
    )
    return True


def release_digest(*, db: Session, claimed: ClaimedDigest) -> None:
    """Give a digest that could not be sent back to the next round."""
    db.execute(
        update(DigestEntry)
        .where(DigestEntry.digest_uid == claimed.uid, DigestEntry.locked_by == claimed.sender)
        .values(state="pending", digest_uid=None, lease_until=None, locked_by=None)
    )


def drop_digest(*, db: Session, claimed: ClaimedDigest) -> None:
    """Mark a digest that can never be delivered (its recipient refused for good) skipped."""
    db.execute(
        update(DigestEntry)
        .where(DigestEntry.digest_uid == claimed.uid, DigestEntry.locked_by == claimed.sender)
        .values(state="skipped", lease_until=None, locked_by=None)
    )


def skip_pending(*, db: Session) -> int:
    """Mark every waiting entry skipped (no SMTP server is set): exports published while e-mail is off
    are never mailed later, when it is turned on. How many."""
    skipped = db.execute(update(DigestEntry).where(DigestEntry.state == "pending").values(state="skipped"))
    return int(skipped.rowcount)  # type: ignore[attr-defined]
