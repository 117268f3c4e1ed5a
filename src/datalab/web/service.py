"""Data Center sessions: sign-in with the account's password, CSRF tokens, organization switching."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from datalab.accounts.errors import OrganizationInactive
from datalab.accounts.models import Membership, Organization
from datalab.accounts.service import authenticate
from datalab.audit.service import record
from datalab.scoping import OrgContext
from datalab.settings import Settings
from datalab.web.errors import NoOrganization, NotAMember
from datalab.web.models import WebSession


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(
    *, db: Session, settings: Settings, user_name: str, password: str, client_address: str, now: datetime
) -> tuple[WebSession, str]:
    """Check the password (throttled like the API's login) and open a session; returns it and its cookie."""
    user = authenticate(
        db=db,
        settings=settings,
        user_name=user_name,
        password=password,
        client_address=client_address,
        now=now,
    )
    active = [m for m in user.memberships if m.organization.deactivated_at is None]
    if not active and not user.is_operator:
        raise NoOrganization()
    db.execute(delete(WebSession).where(WebSession.expires_at < now))
    token = secrets.token_urlsafe(32)
    session = WebSession(
        token_hash=_digest(token),
        user=user,
        organization_id=active[0].organization_id if active else None,
        csrf_token=new_csrf_token(),
        created_at=now,
        expires_at=now + timedelta(hours=settings.datacenter_session_hours),
    )
    db.add(session)
    db.flush()
    return session, token


def find_session(*, db: Session, token: str | None, now: datetime) -> WebSession | None:
    """The live session a cookie belongs to (None when absent, expired, revoked or the user is inactive)."""
    if not token:
        return None
    session = db.scalar(select(WebSession).where(WebSession.token_hash == _digest(token)))
    if session is None or session.expires_at <= now:
        return None
    user = session.user
    if user.status != "Active" or session.created_at < user.tokens_valid_after:
        return None
    if session.organization is None:
        return session if user.is_operator else None
    if session.organization_id not in {m.organization_id for m in user.memberships}:
        return None
    if session.organization.deactivated_at is not None:
        return None
    return session


def sign_out(*, db: Session, session: WebSession, now: datetime) -> None:
    """End the session (the cookie stops working at once)."""
    record(db, action="signout", organization_id=session.organization_id, now=now, actor=session.user)
    db.delete(session)


def new_csrf_token() -> str:
    """A fresh anti-forgery token."""
    return secrets.token_urlsafe(32)


def same_token(expected: str, submitted: str | None) -> bool:
    """Whether a submitted token is the expected one (compared in constant time)."""
    return bool(submitted) and hmac.compare_digest(expected.encode(), str(submitted).encode())


def csrf_ok(session: WebSession, submitted: str | None) -> bool:
    """Whether a form carried the session's CSRF token."""
    return same_token(session.csrf_token, submitted)


def switch_organization(*, db: Session, session: WebSession, organization_uid: str) -> Organization:
    """Act in another of the user's organizations; 403 when the user is not a member."""
    membership = db.scalar(
        select(Membership)
        .join(Organization, Membership.organization_id == Organization.id)
        .where(Membership.user_id == session.user_id, Organization.uid == organization_uid)
    )
    if membership is None:
        raise NotAMember()
    if membership.organization.deactivated_at is not None:
        raise OrganizationInactive(organization_uid)
    session.organization_id = membership.organization_id
    db.flush()
    return membership.organization


def org_of(session: WebSession) -> OrgContext:
    """The organization context the pages act in; an operator's session without one has none."""
    if session.organization is None:
        raise NoOrganization()
    return OrgContext(user=session.user, organization=session.organization)
