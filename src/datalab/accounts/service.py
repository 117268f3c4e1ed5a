"""Accounts: organizations, users, API keys, login, session tokens and the organization context."""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, case, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, lazyload

from datalab.accounts.errors import (
    AccountError,
    ApiKeyNotFound,
    InvalidApiKey,
    InvalidSessionToken,
    MembershipNotFound,
    MissingApiKey,
    MissingOrganization,
    MissingToken,
    OperatorRequired,
    OrganizationForbidden,
    OrganizationInactive,
    OrganizationNotFound,
    SignInFailed,
    TooManyLoginFailures,
    UserNotFound,
)
from datalab.accounts.models import (
    MEMBERSHIP_ROLES,
    USER_STATUSES,
    ApiKey,
    LoginThrottle,
    Membership,
    Organization,
    User,
)
from datalab.accounts.security import (
    InvalidToken,
    TokenClaims,
    hash_api_key,
    hash_password,
    issue_token,
    issued_at_claim,
    new_api_key,
    read_token,
    verify_password,
)
from datalab.audit.service import home_organization_id, record
from datalab.db import is_read_only, utcnow
from datalab.scoping import OrgContext
from datalab.settings import Settings

# Longest userName an account can have (its column's size) and longest password an account can have.
MAX_USER_NAME_LENGTH = 254
MAX_PASSWORD_LENGTH = 1024
# Writing last_used_at on every request would turn every read into a write.
API_KEY_TOUCH_INTERVAL = timedelta(seconds=60)
PENDING_KEY_USES = "datalab_pending_api_key_uses"


@dataclass(frozen=True)
class IssuedApiKey:
    """A newly created API key: the only moment its plain value is known."""

    api_key: ApiKey
    plain_key: str


def _check_state_code(state_code: str) -> None:
    if state_code and (len(state_code) != 2 or not state_code.isalpha()):
        raise AccountError(f"stateCode must be a two-letter code, not {state_code!r}")


def _audit_organization(
    db: Session,
    organization: Organization,
    action: str,
    *,
    now: datetime,
    by: User | None,
    detail: dict[str, object],
) -> None:
    record(
        db,
        action=action,
        organization_id=organization.id,
        now=now,
        actor=by,
        target=("organization", organization.uid),
        detail=detail,
    )


def _audit_user(
    db: Session,
    user: User,
    action: str,
    *,
    now: datetime,
    by: User | None,
    organization: Organization | None = None,
    detail: dict[str, object] | None = None,
) -> None:
    """Record what was done to a user, in `organization` (else the user's home one); the detail names them."""
    record(
        db,
        action=action,
        organization_id=home_organization_id(user) if organization is None else organization.id,
        now=now,
        actor=by,
        target=("user", user.uid),
        detail={"userName": user.user_name, **(detail or {})},
    )


def create_organization(
    *, db: Session, name: str, fice: str, state_code: str = "", by: User | None = None
) -> Organization:
    """Create an organization; FICE codes are text and unique."""
    fice = fice.strip()
    if not name.strip() or not fice:
        raise AccountError("an organization needs a name and a FICE code")
    _check_state_code(state_code)
    if db.scalar(select(Organization).where(Organization.fice == fice)) is not None:
        raise AccountError(f"an organization with FICE {fice} already exists")
    organization = Organization(name=name.strip(), fice=fice, state_code=state_code.upper())
    db.add(organization)
    db.flush()
    _audit_organization(
        db,
        organization,
        "organization.created",
        now=utcnow(),
        by=by,
        detail={"name": organization.name, "fice": organization.fice},
    )
    return organization


def get_user(*, db: Session, user_name: str) -> User | None:
    """The user with this userName (case-insensitive), if any."""
    return db.scalar(select(User).where(User.user_name_key == user_name.strip().lower()))


def _check_new_user(db: Session, user_name: str, password: str, *, has_organization: bool) -> None:
    if not user_name:
        raise AccountError("userName must not be empty")
    if len(password) < 8:
        raise AccountError("passwords must be at least 8 characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"passwords must be at most {MAX_PASSWORD_LENGTH} characters")
    if len(user_name) > MAX_USER_NAME_LENGTH:
        raise AccountError(f"userName must be at most {MAX_USER_NAME_LENGTH} characters")
    if not has_organization:
        raise AccountError("a user must belong to at least one organization unless they are an operator")
    if get_user(db=db, user_name=user_name) is not None:
        raise AccountError(f"a user named {user_name} already exists")


def create_user(
    *,
    db: Session,
    user_name: str,
    password: str,
    organizations: list[Organization],
    first_name: str = "",
    last_name: str = "",
    email: str = "",
    attributes: list[dict[str, Any]] | None = None,
    admin: bool = False,
    operator: bool = False,
    by: User | None = None,
) -> User:
    """Create an active user belonging to the given organizations, in that order (as their admin when
    `admin`); an operator may belong to none."""
    user_name = user_name.strip()
    _check_new_user(db, user_name, password, has_organization=bool(organizations) or operator)
    user = User(
        user_name=user_name,
        user_name_key=user_name.lower(),
        first_name=first_name,
        last_name=last_name,
        email=email or (user_name if "@" in user_name else ""),
        attributes=attributes or [],
        password_hash=hash_password(password),
        is_operator=operator,
    )
    user.memberships = [
        Membership(organization=organization, position=index, role="admin" if admin else "member")
        for index, organization in enumerate(organizations)
    ]
    db.add(user)
    db.flush()
    _audit_user(
        db,
        user,
        "user.created",
        now=utcnow(),
        by=by,
        detail={
            "organizations": [organization.uid for organization in organizations],
            "role": "admin" if admin else "member",
            "operator": operator,
        },
    )
    return user


def set_user_status(*, db: Session, user: User, status: str, now: datetime, by: User | None = None) -> User:
    """Activate or deactivate a user; deactivation revokes every session token at once."""
    if status not in USER_STATUSES:
        raise AccountError(f"status must be one of {', '.join(USER_STATUSES)}")
    user.status = status
    user.tokens_valid_after = now
    db.flush()
    _audit_user(db, user, "user.status_changed", now=now, by=by, detail={"status": status})
    return user


def check_role(role: str) -> str:
    """The role, if it is one a membership can have."""
    if role not in MEMBERSHIP_ROLES:
        raise AccountError(f"role must be one of {', '.join(MEMBERSHIP_ROLES)}")
    return role


def set_membership_role(
    *, db: Session, user: User, organization: Organization, role: str, now: datetime, by: User | None = None
) -> Membership:
    """Make a member an admin of the organization (who reads its audit trail), or a plain member again."""
    check_role(role)
    membership = next((m for m in user.memberships if m.organization_id == organization.id), None)
    if membership is None:
        raise MembershipNotFound(user.user_name, organization.name)
    membership.role = role
    db.flush()
    _audit_user(
        db, user, "membership.role_changed", now=now, by=by, organization=organization, detail={"role": role}
    )
    return membership


def find_organization(*, db: Session, ref: str) -> Organization:
    """The organization with this uid or FICE code."""
    organization = db.scalar(
        select(Organization).where(or_(Organization.uid == ref, Organization.fice == ref))
    )
    if organization is None:
        raise OrganizationNotFound(ref)
    return organization


def find_user(*, db: Session, ref: str) -> User:
    """The user with this uid or userName (case-insensitive)."""
    user = db.scalar(select(User).where(or_(User.uid == ref, User.user_name_key == ref.strip().lower())))
    if user is None:
        raise UserNotFound(ref)
    return user


def find_member(*, db: Session, organization: Organization, ref: str) -> User:
    """The user with this uid or userName, when they belong to the organization."""
    user = find_user(db=db, ref=ref)
    if not any(membership.organization_id == organization.id for membership in user.memberships):
        raise MembershipNotFound(user.user_name, organization.name)
    return user


def organizations_query(*, active: bool | None = None) -> Select[Organization]:
    """Every organization (only the active or deactivated ones when asked), oldest first."""
    query = select(Organization).order_by(Organization.created_at, Organization.id)
    if active is not None:
        deactivated = Organization.deactivated_at
        query = query.where(deactivated.is_(None) if active else deactivated.is_not(None))
    return query


def users_query(*, organization: Organization | None = None) -> Select[User]:
    """Every user (or the members of one organization), oldest first."""
    query = select(User).options(joinedload(User.memberships)).order_by(User.created_at, User.id)
    if organization is not None:
        query = query.where(User.memberships.any(Membership.organization_id == organization.id))
    return query


def update_organization(
    *,
    db: Session,
    organization: Organization,
    now: datetime,
    name: str | None = None,
    state_code: str | None = None,
    by: User | None = None,
) -> Organization:
    """Rename an organization or change its state code."""
    changes: dict[str, object] = {}
    if name is not None:
        if not name.strip():
            raise AccountError("an organization needs a name")
        organization.name = changes["name"] = name.strip()
    if state_code is not None:
        _check_state_code(state_code)
        organization.state_code = changes["stateCode"] = state_code.upper()
    db.flush()
    _audit_organization(db, organization, "organization.updated", now=now, by=by, detail=changes)
    return organization


def set_organization_active(
    *, db: Session, organization: Organization, active: bool, now: datetime, by: User | None = None
) -> Organization:
    """Deactivate an organization (its users can no longer act in it, its rows stay) or reactivate it."""
    organization.deactivated_at = None if active else (organization.deactivated_at or now)
    db.flush()
    _audit_organization(
        db,
        organization,
        "organization.reactivated" if active else "organization.deactivated",
        now=now,
        by=by,
        detail={"name": organization.name},
    )
    return organization


def set_operator(*, db: Session, user: User, on: bool, now: datetime, by: User | None = None) -> User:
    """Grant or revoke the operator role; revoking it ends the user's sessions too."""
    if user.is_operator and not on:
        user.tokens_valid_after = now
    user.is_operator = on
    db.flush()
    _audit_user(db, user, "user.operator_granted" if on else "user.operator_revoked", now=now, by=by)
    return user


def add_membership(
    *, db: Session, user: User, organization: Organization, role: str, now: datetime, by: User | None = None
) -> Membership:
    """Make the user a member of one more organization (or change their role in it)."""
    if role not in MEMBERSHIP_ROLES:
        raise AccountError(f"role must be one of {', '.join(MEMBERSHIP_ROLES)}")
    if any(m.organization_id == organization.id for m in user.memberships):
        return set_membership_role(db=db, user=user, organization=organization, role=role, now=now, by=by)
    position = max((m.position for m in user.memberships), default=-1) + 1
    membership = Membership(organization=organization, position=position, role=role)
    user.memberships.append(membership)
    db.flush()
    _audit_user(
        db, user, "membership.added", now=now, by=by, organization=organization, detail={"role": role}
    )
    return membership


def remove_membership(
    *, db: Session, user: User, organization: Organization, now: datetime, by: User | None = None
) -> None:
    """Take the user out of an organization: their session no longer acts in it."""
    membership = next((m for m in user.memberships if m.organization_id == organization.id), None)
    if membership is None:
        raise MembershipNotFound(user.user_name, organization.name)
    user.memberships.remove(membership)
    db.flush()
    _audit_user(db, user, "membership.removed", now=now, by=by, organization=organization)


def create_api_key(*, db: Session, user: User, name: str = "", by: User | None = None) -> IssuedApiKey:
    """Create an API key for the user (by themselves, or by an operator when `by` is None); the plain key
    is returned once and stored only hashed."""
    plain_key = new_api_key()
    api_key = ApiKey(user=user, name=name, prefix=plain_key[:8], key_hash=hash_api_key(plain_key))
    db.add(api_key)
    db.flush()
    record(
        db,
        action="apikey.created",
        organization_id=home_organization_id(user),
        now=utcnow(),
        actor=by,
        target=("apikey", api_key.uid),
        detail={"owner": user.user_name, "name": name},
    )
    return IssuedApiKey(api_key=api_key, plain_key=plain_key)


def revoke_api_key(
    *,
    db: Session,
    uid: str,
    now: datetime,
    user: User | None = None,
    organization: Organization | None = None,
    by: User | None = None,
) -> ApiKey:
    """Revoke an API key by uid: the user's own (when a user is given), one of a member of the
    organization (when one is given), else any (an operator's, `by`)."""
    query = select(ApiKey).where(ApiKey.uid == uid)
    if user is not None:
        query = query.where(ApiKey.user_id == user.id)
    if organization is not None:
        members = select(Membership.user_id).where(Membership.organization_id == organization.id)
        query = query.where(ApiKey.user_id.in_(members))
    api_key = db.scalar(query)
    if api_key is None:
        raise ApiKeyNotFound(uid)
    if api_key.revoked_at is None:
        api_key.revoked_at = now
        db.flush()
        record(
            db,
            action="apikey.revoked",
            organization_id=home_organization_id(api_key.user),
            now=now,
            actor=user or by,
            target=("apikey", api_key.uid),
            detail={"owner": api_key.user.user_name, "name": api_key.name},
        )
    return api_key


def list_api_keys(*, db: Session, user: User) -> list[ApiKey]:
    """The user's API keys, newest first."""
    return list(
        db.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at.desc()))
    )


def check_api_key(*, db: Session, plain_key: str, now: datetime) -> ApiKey:
    """The active API key with this value (its last-used time refreshed), else 401.

    On a read-only session the refresh is left for `record_api_key_uses` after the request's reads.
    """
    # The key's user is not joined in: callers compare user ids, and the user is loaded already.
    api_key = db.scalar(
        select(ApiKey)
        .options(lazyload(ApiKey.user))
        .where(ApiKey.key_hash == hash_api_key(plain_key.strip()))
    )
    if api_key is None or api_key.revoked_at is not None:
        raise InvalidApiKey()
    if api_key.last_used_at is None or now - api_key.last_used_at >= API_KEY_TOUCH_INTERVAL:
        if is_read_only(db):
            db.info.setdefault(PENDING_KEY_USES, {})[api_key.id] = now
        else:
            api_key.last_used_at = now
            db.flush()
    return api_key


def _note_api_key_use(db: Session, *, key_id: int, last_used_at: datetime | None, now: datetime) -> None:
    """check_api_key's last-used bookkeeping for a key read as columns (no ORM object)."""
    if last_used_at is None or now - last_used_at >= API_KEY_TOUCH_INTERVAL:
        if is_read_only(db):
            db.info.setdefault(PENDING_KEY_USES, {})[key_id] = now
        else:
            db.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))


def pending_api_key_uses(db: Session) -> dict[int, datetime]:
    """The key uses a read-only session noted and did not write (taken out of the session)."""
    uses: dict[int, datetime] = db.info.pop(PENDING_KEY_USES, {})
    return uses


def record_api_key_uses(*, db: Session, uses: dict[int, datetime]) -> None:
    """Write noted key uses, unless a concurrent request already recorded a recent one."""
    for key_id, at in uses.items():
        db.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key_id,
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= at - API_KEY_TOUCH_INTERVAL),
            )
            .values(last_used_at=at)
        )


def _throttle_scopes(settings: Settings, user_name: str, client_address: str) -> list[tuple[str, str]]:
    """The counters an attempt counts against, keyed by a keyed digest: never by what the client sent."""

    def digest(kind: str, value: str) -> str:
        return hmac.new(settings.secret_key.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    return [
        ("user:" + digest("user", user_name.strip().lower()), "userName"),
        ("addr:" + digest("addr", client_address), "address"),
    ]


def _too_many(locked_until: datetime, now: datetime) -> TooManyLoginFailures:
    return TooManyLoginFailures(max(1, int((locked_until - now).total_seconds()) + 1))


def _locked_counter(*, db: Session, scope: str, now: datetime) -> LoginThrottle:
    # Locked for update so concurrent failures all count; a row a concurrent request just inserted is reused.
    # That row may be gone again by the time it is read (the other login succeeded and forgave its attempt):
    # then this one makes it after all.
    while True:
        row = db.get(LoginThrottle, scope, with_for_update=True, populate_existing=True)
        if row is not None:
            return row
        try:
            with db.begin_nested():
                row = LoginThrottle(scope=scope, failures=0, window_started_at=now)
                db.add(row)
        except IntegrityError:
            continue
        return row


def _reserve_attempt(
    *, db: Session, settings: Settings, scopes: list[tuple[str, str]], now: datetime
) -> list[str]:
    """Count a login attempt as a failure before its password is checked; refuse it while locked out.

    Counting first (rows locked, committed at once) throttles a burst of parallel guesses as surely as a
    sequence. The attempt that reaches a limit is still checked, and locks the scope for the next ones.
    An attempt refused because a scope is locked out writes nothing. Returns the scopes this attempt
    locked, for a successful login to take back.
    """
    window = timedelta(seconds=settings.login_failure_window_seconds)
    limits = {"userName": settings.login_max_failures, "address": settings.login_max_failures_per_address}
    # Every scope's row is locked (made if missing) in the same order by every attempt: locking only the
    # rows that exist, then making the others, would let two attempts take the same rows in opposite
    # orders and deadlock.
    rows = [(_locked_counter(db=db, scope=scope, now=now), label) for scope, label in scopes]
    locks = [row.locked_until for row, _ in rows if row.locked_until and row.locked_until > now]
    if locks:
        # Nothing is kept for a refused attempt: rows made just now go with the rollback.
        db.rollback()
        raise _too_many(max(locks), now)
    newly_locked = []
    for row, label in rows:
        if now - row.window_started_at > window:
            row.failures = 0
            row.window_started_at = now
            row.locked_until = None
        row.failures += 1
        if row.failures >= limits[label]:
            row.locked_until = now + timedelta(seconds=settings.login_lockout_seconds)
            newly_locked.append(row.scope)
    # Committed now: the attempt counts even though this request may end in a rolled-back 401.
    db.commit()
    return newly_locked


def _forgive_attempt(*, db: Session, scopes: list[tuple[str, str]], newly_locked: list[str]) -> None:
    user_scope, address_scope = scopes[0][0], scopes[1][0]
    db.execute(delete(LoginThrottle).where(LoginThrottle.scope == user_scope))
    values: dict[str, Any] = {
        "failures": case((LoginThrottle.failures > 0, LoginThrottle.failures - 1), else_=0)
    }
    if address_scope in newly_locked:
        values["locked_until"] = None
    db.execute(update(LoginThrottle).where(LoginThrottle.scope == address_scope).values(**values))


@dataclass(frozen=True)
class LoginResult:
    """A successful login: the user and a fresh session token."""

    user: User
    session_token: str


def login(
    *,
    db: Session,
    settings: Settings,
    user_name: str,
    password: str,
    api_key: str | None,
    client_address: str,
    now: datetime,
) -> LoginResult:
    """Check the API key and the password (throttled per userName and address) and issue a session token."""
    key_row = None
    if api_key is not None:
        key_row = check_api_key(db=db, plain_key=api_key, now=now)
    elif settings.require_api_key_on_login:
        raise MissingApiKey()
    user = authenticate(
        db=db,
        settings=settings,
        user_name=user_name,
        password=password,
        client_address=client_address,
        now=now,
        api_key_user_id=key_row.user_id if key_row is not None else None,
    )
    token = issue_token(
        secret_key=settings.secret_key,
        user_uid=user.uid,
        now=now,
        ttl=timedelta(seconds=settings.session_token_ttl_seconds),
    )
    return LoginResult(user=user, session_token=token)


def authenticate(
    *,
    db: Session,
    settings: Settings,
    user_name: str,
    password: str,
    client_address: str,
    now: datetime,
    api_key_user_id: int | None = None,
) -> User:
    """The active user with this name and password (throttled per userName and address), else 401.

    Every attempt the throttle lets through is recorded in the audit trail, a failure at once (the
    request then rolls back). What the client sent is not: a failure names the account only when one
    has that name, so a password typed into the userName field is never kept.
    """
    if len(user_name) > MAX_USER_NAME_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
        # No account has such a name or password: refused without counting (nothing is stored).
        raise SignInFailed()
    scopes = _throttle_scopes(settings, user_name, client_address)
    newly_locked = _reserve_attempt(db=db, settings=settings, scopes=scopes, now=now)
    user = get_user(db=db, user_name=user_name)
    password_ok = verify_password(user.password_hash if user else None, password)
    key_matches = api_key_user_id is None or (user is not None and api_key_user_id == user.id)
    if user is None or not password_ok or not key_matches:
        reason = "unknown_user" if user is None else "wrong_password" if not password_ok else "wrong_api_key"
        raise _failed_sign_in(db, user, reason, SignInFailed(), now)
    if user.status != "Active":
        raise _failed_sign_in(
            db, user, "inactive_user", SignInFailed("This account is inactive", code="inactive_user"), now
        )
    _forgive_attempt(db=db, scopes=scopes, newly_locked=newly_locked)
    record(db, action="signin.succeeded", organization_id=home_organization_id(user), now=now, actor=user)
    return user


def _failed_sign_in(
    db: Session, user: User | None, reason: str, failure: SignInFailed, now: datetime
) -> SignInFailed:
    """Record a failed sign-in (committed now: the request rolls back) and return the failure."""
    record(
        db,
        action="signin.failed",
        organization_id=home_organization_id(user) if user is not None else None,
        now=now,
        actor=user,
        actor_name="unknown user",
        detail={"reason": reason},
    )
    db.commit()
    return failure


def user_from_token(*, db: Session, settings: Settings, token: str, now: datetime) -> User:
    """The active user a valid session token belongs to, else 401 saying why."""
    try:
        claims = read_token(secret_key=settings.secret_key, token=token, now=now)
    except InvalidToken as exc:
        raise InvalidSessionToken(str(exc)) from exc
    # One query: the user, their memberships and each membership's organization.
    user = (
        db.execute(select(User).where(User.uid == claims.user_uid).options(joinedload(User.memberships)))
        .unique()
        .scalar_one_or_none()
    )
    return _token_user(user, claims)


def _token_user(user: User | None, claims: TokenClaims) -> User:
    if user is None or user.status != "Active":
        raise InvalidSessionToken("session token belongs to an inactive or unknown account")
    if claims.issued_at.timestamp() < issued_at_claim(user.tokens_valid_after):
        raise InvalidSessionToken("session token has been revoked; log in again")
    return user


@functools.cache
def _principal_query(*, with_key: bool) -> Select[Any]:
    """The user by uid with memberships and organizations (and the key row by its hash), built once."""
    query: Select[Any] = (
        select(User).where(User.uid == bindparam("user_uid")).options(joinedload(User.memberships))
    )
    if with_key:
        # The key row joined in by its hash (an outer join: no such key still yields the user).
        query = query.add_columns(
            ApiKey.id, ApiKey.user_id, ApiKey.revoked_at, ApiKey.last_used_at
        ).outerjoin(ApiKey, ApiKey.key_hash == bindparam("key_hash"))
    return query


def principal(
    *, db: Session, settings: Settings, token: str, api_key: str | None, now: datetime
) -> tuple[User, int | None]:
    """The user of a session token and the id of their API key when one is sent, in one query.

    The same rules and errors as `user_from_token` then `check_own_api_key`: the token first (an
    unknown, inactive or revoked user is refused), then the key (unknown, revoked or another user's).
    """
    try:
        claims = read_token(secret_key=settings.secret_key, token=token, now=now)
    except InvalidToken as exc:
        raise InvalidSessionToken(str(exc)) from exc
    params = {"user_uid": claims.user_uid}
    if api_key is not None:
        params["key_hash"] = hash_api_key(api_key.strip())
    row = db.execute(_principal_query(with_key=api_key is not None), params).unique().first()
    user = _token_user(None if row is None else row[0], claims)
    if api_key is None or row is None:
        return user, None
    key_id, key_user_id, revoked_at, last_used_at = row[1], row[2], row[3], row[4]
    if key_id is None or revoked_at is not None or key_user_id != user.id:
        raise InvalidApiKey()
    _note_api_key_use(db, key_id=key_id, last_used_at=last_used_at, now=now)
    return user, key_id


def check_own_api_key(*, db: Session, user: User, plain_key: str, now: datetime) -> ApiKey:
    """The active API key with this value when it belongs to the user, else 401."""
    key_row = check_api_key(db=db, plain_key=plain_key, now=now)
    if key_row.user_id != user.id:
        raise InvalidApiKey()
    return key_row


def refresh_token(
    *, db: Session, settings: Settings, token: str, api_key: str | None = None, now: datetime
) -> str:
    """A fresh session token in exchange for a still-valid one (and the user's own key, when one is sent)."""
    user = user_from_token(db=db, settings=settings, token=token, now=now)
    if api_key is not None:
        check_own_api_key(db=db, user=user, plain_key=api_key, now=now)
    return issue_token(
        secret_key=settings.secret_key,
        user_uid=user.uid,
        now=now,
        ttl=timedelta(seconds=settings.session_token_ttl_seconds),
    )


def bearer_token(authorization: str | None) -> str:
    """The token of an 'Authorization: Bearer <t>' or 'JWT <t>' header, else 401."""
    if not authorization or not authorization.strip():
        raise MissingToken()
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() not in {"bearer", "jwt"} or not token.strip():
        raise InvalidSessionToken(
            "Authorization header must be 'Bearer <sessionToken>' or 'JWT <sessionToken>'"
        )
    return token.strip()


def org_context(
    *,
    db: Session,
    settings: Settings,
    authorization: str | None,
    api_key: str | None,
    organization_uid: str | None,
    now: datetime,
) -> OrgContext:
    """Authenticate the request and resolve the organization it acts in (400 missing, 403 not a member)."""
    user, key_id = principal(
        db=db, settings=settings, token=bearer_token(authorization), api_key=api_key, now=now
    )
    if organization_uid is None or not organization_uid.strip():
        raise MissingOrganization()
    wanted = organization_uid.strip()
    for membership in user.memberships:
        if membership.organization.uid == wanted:
            if membership.organization.deactivated_at is not None:
                raise OrganizationInactive(wanted)
            return OrgContext(user=user, organization=membership.organization, api_key_id=key_id)
    raise OrganizationForbidden(wanted)


def operator(
    *, db: Session, settings: Settings, authorization: str | None, api_key: str | None, now: datetime
) -> User:
    """Authenticate the request (as `org_context` does, without an organization) and require an operator."""
    user, _key_id = principal(
        db=db, settings=settings, token=bearer_token(authorization), api_key=api_key, now=now
    )
    if not user.is_operator:
        raise OperatorRequired()
    return user
