"""The operator pages under /datacenter/admin: organizations, their users, API keys and exports.

The pages call the same account and export services as the /v1/admin API, with the signed-in operator
as the actor, so every action lands in the audit trail the same way. Campus users get a 403 error page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy.orm import Session

from datalab.accounts import service as accounts
from datalab.accounts.errors import OperatorRequired
from datalab.accounts.models import MEMBERSHIP_ROLES, USER_STATUSES, Organization
from datalab.admin.schemas import admin_export_out
from datalab.deps import DbDep, NowDep, ReadDbDep, SettingsDep, StoreDep, public_base_url
from datalab.domain_errors import DomainError
from datalab.errors import domain_status
from datalab.exports import forms
from datalab.exports.models import PRODUCT_KEYS
from datalab.exports.service import list_exports
from datalab.pagination import MAX_OFFSET, paginate
from datalab.scoping import OrgContext
from datalab.web.errors import UnknownOperatorChoice
from datalab.web.models import WebSession
from datalab.web.pages.common import (
    BodyDep,
    PageRoute,
    ReadSessionDep,
    SessionDep,
    checked_form,
    file_form_answer,
    one,
    render,
)

PAGE_SIZE = 50
router = APIRouter(prefix="/admin", route_class=PageRoute)


def _operator_of(session: WebSession) -> WebSession:
    if not session.user.is_operator:
        raise OperatorRequired("Only operators can open the operator pages.")
    return session


def operator_session(session: SessionDep) -> WebSession:
    """The signed-in session of an operator; anyone else gets the 403 error page."""
    return _operator_of(session)


def operator_read_session(session: ReadSessionDep) -> WebSession:
    """The same, on the read-only database session of a page that only reads."""
    return _operator_of(session)


OperatorSessionDep = Annotated[WebSession, Depends(operator_session)]
OperatorReadSessionDep = Annotated[WebSession, Depends(operator_read_session)]
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def _organization_path(organization: Organization) -> str:
    return f"/datacenter/admin/organizations/{organization.uid}"


# --- organizations ----------------------------------------------------------------------------------


@router.get("")
def overview(
    request: Request, session: OperatorReadSessionDep, db: ReadDbDep, offset: OffsetQuery = 0
) -> HTMLResponse:
    """Every organization, oldest first, paged; create one."""
    page = paginate(db=db, query=accounts.organizations_query(), limit=PAGE_SIZE, offset=offset)
    return render(
        request,
        "admin.html",
        session,
        organizations=page.items,
        total=page.total,
        offset=offset,
        page_size=PAGE_SIZE,
    )


@router.post("/organizations")
def create_organization(session: OperatorSessionDep, body: BodyDep, db: DbDep) -> RedirectResponse:
    """A new organization (FICE codes are unique); its page opens next."""
    form = checked_form(session, body)
    organization = accounts.create_organization(
        db=db,
        name=one(form, "name"),
        fice=one(form, "fice"),
        state_code=one(form, "stateCode").strip(),
        by=session.user,
    )
    return RedirectResponse(_organization_path(organization), status_code=303)


def _set_active(
    session: WebSession, body: bytes, db: Session, org: str, *, active: bool, now: datetime
) -> str:
    checked_form(session, body)
    organization = accounts.find_organization(db=db, ref=org)
    accounts.set_organization_active(
        db=db, organization=organization, active=active, now=now, by=session.user
    )
    return _organization_path(organization)


@router.post("/organizations/{org}/deactivate")
def deactivate_organization(
    org: str, session: OperatorSessionDep, body: BodyDep, db: DbDep, now: NowDep
) -> RedirectResponse:
    """Deactivate an organization: its users can no longer act in it; its rows are kept."""
    return RedirectResponse(_set_active(session, body, db, org, active=False, now=now), status_code=303)


@router.post("/organizations/{org}/reactivate")
def reactivate_organization(
    org: str, session: OperatorSessionDep, body: BodyDep, db: DbDep, now: NowDep
) -> RedirectResponse:
    """Reactivate a deactivated organization."""
    return RedirectResponse(_set_active(session, body, db, org, active=True, now=now), status_code=303)


def _organization_page(
    request: Request,
    session: WebSession,
    db: Session,
    organization: Organization,
    offset: int,
    created_key: str | None = None,
) -> HTMLResponse:
    members = paginate(
        db=db, query=accounts.users_query(organization=organization), limit=PAGE_SIZE, offset=offset
    )
    exports = list_exports(
        db=db,
        org=OrgContext(user=None, organization=organization),
        status=None,
        product_key=None,
        limit=PAGE_SIZE,
        offset=0,
        include_expired=True,
    )
    return render(
        request,
        "admin_organization.html",
        session,
        shows_secret=created_key is not None,
        organization=organization,
        members=members.items,
        total_members=members.total,
        offset=offset,
        page_size=PAGE_SIZE,
        roles={
            member.uid: next(m.role for m in member.memberships if m.organization_id == organization.id)
            for member in members.items
        },
        keys={member.uid: accounts.list_api_keys(db=db, user=member) for member in members.items},
        exports=[admin_export_out(export) for export in exports.items],
        total_exports=exports.total,
        created_key=created_key,
        member_roles=MEMBERSHIP_ROLES,
        statuses=USER_STATUSES,
        products=PRODUCT_KEYS,
    )


@router.get("/organizations/{org}")
def organization_page(
    request: Request, org: str, session: OperatorReadSessionDep, db: ReadDbDep, offset: OffsetQuery = 0
) -> HTMLResponse:
    """One organization: its members with their keys, its exports in every state, publishing one."""
    organization = accounts.find_organization(db=db, ref=org)
    return _organization_page(request, session, db, organization, offset)


# --- users and API keys -----------------------------------------------------------------------------


@router.post("/organizations/{org}/users")
def add_user(org: str, session: OperatorSessionDep, body: BodyDep, db: DbDep) -> RedirectResponse:
    """A new active user of the organization with a password and a role."""
    form = checked_form(session, body)
    organization = accounts.find_organization(db=db, ref=org)
    role = accounts.check_role(one(form, "role"))
    accounts.create_user(
        db=db,
        user_name=one(form, "userName"),
        password=one(form, "password"),
        organizations=[organization],
        first_name=one(form, "firstName").strip(),
        last_name=one(form, "lastName").strip(),
        email=one(form, "email").strip(),
        admin=role == "admin",
        by=session.user,
    )
    return RedirectResponse(_organization_path(organization), status_code=303)


@router.post("/organizations/{org}/users/{user}/status")
def set_user_status(
    org: str, user: str, session: OperatorSessionDep, body: BodyDep, db: DbDep, now: NowDep
) -> RedirectResponse:
    """Activate or deactivate a user (deactivation ends their sessions at once)."""
    form = checked_form(session, body)
    organization = accounts.find_organization(db=db, ref=org)
    member = accounts.find_member(db=db, organization=organization, ref=user)
    accounts.set_user_status(db=db, user=member, status=one(form, "status"), now=now, by=session.user)
    return RedirectResponse(_organization_path(organization), status_code=303)


@router.post("/organizations/{org}/members")
def add_member(
    org: str, session: OperatorSessionDep, body: BodyDep, db: DbDep, now: NowDep
) -> RedirectResponse:
    """Add an existing user (by user name or uid) to the organization with a role, or change a member's
    role."""
    form = checked_form(session, body)
    organization = accounts.find_organization(db=db, ref=org)
    role = accounts.check_role(one(form, "role"))
    user = accounts.find_user(db=db, ref=one(form, "user").strip())
    accounts.add_membership(db=db, user=user, organization=organization, role=role, now=now, by=session.user)
    return RedirectResponse(_organization_path(organization), status_code=303)


@router.post("/organizations/{org}/users/{user}/remove")
def remove_member(
    org: str, user: str, session: OperatorSessionDep, body: BodyDep, db: DbDep, now: NowDep
) -> RedirectResponse:
    """Take a member out of the organization (their account and other memberships stay)."""
    checked_form(session, body)
    organization = accounts.find_organization(db=db, ref=org)
    member = accounts.find_member(db=db, organization=organization, ref=user)
    accounts.remove_membership(db=db, user=member, organization=organization, now=now, by=session.user)
    return RedirectResponse(_organization_path(organization), status_code=303)


_OPERATOR_CHOICES = {"grant": True, "revoke": False}


@router.post("/organizations/{org}/users/{user}/operator")
def set_operator(
    org: str, user: str, session: OperatorSessionDep, body: BodyDep, db: DbDep, now: NowDep
) -> RedirectResponse:
    """Grant a member the operator role or revoke it (revoking ends their sessions at once)."""
    form = checked_form(session, body)
    organization = accounts.find_organization(db=db, ref=org)
    member = accounts.find_member(db=db, organization=organization, ref=user)
    choice = one(form, "operator")
    if choice not in _OPERATOR_CHOICES:
        raise UnknownOperatorChoice(choice)
    accounts.set_operator(db=db, user=member, on=_OPERATOR_CHOICES[choice], now=now, by=session.user)
    return RedirectResponse(_organization_path(organization), status_code=303)


@router.post("/organizations/{org}/users/{user}/api-keys")
def create_api_key(
    request: Request, org: str, user: str, session: OperatorSessionDep, body: BodyDep, db: DbDep
) -> HTMLResponse:
    """Create an API key for a user; it is shown on the page that answers, once and never again."""
    form = checked_form(session, body)
    organization = accounts.find_organization(db=db, ref=org)
    issued = accounts.create_api_key(
        db=db,
        user=accounts.find_member(db=db, organization=organization, ref=user),
        name=one(form, "name").strip()[:100],
        by=session.user,
    )
    return _organization_page(request, session, db, organization, 0, created_key=issued.plain_key)


@router.post("/organizations/{org}/api-keys/{uid}/revoke")
def revoke_api_key(
    org: str, uid: str, session: OperatorSessionDep, body: BodyDep, db: DbDep, now: NowDep
) -> RedirectResponse:
    """Revoke an API key: it stops working at once."""
    checked_form(session, body)
    organization = accounts.find_organization(db=db, ref=org)
    accounts.revoke_api_key(db=db, uid=uid, now=now, organization=organization, by=session.user)
    return RedirectResponse(_organization_path(organization), status_code=303)


# --- exports ----------------------------------------------------------------------------------------


@router.post("/organizations/{org}/exports")
def create_export_form(
    request: Request,
    org: str,
    session: OperatorSessionDep,
    body: BodyDep,
    db: DbDep,
    settings: SettingsDep,
    store: StoreDep,
    now: NowDep,
) -> JSONResponse:
    """Record the export; the page's script then posts the file straight to the returned form."""
    form = checked_form(session, body)
    organization = accounts.find_organization(db=db, ref=org)
    try:
        created = forms.create_export_form(
            db=db,
            store=store,
            bucket=settings.exports_bucket,
            organization=organization,
            product_key=one(form, "productKey"),
            order_name=one(form, "orderName").strip()[:200],
            base_url=public_base_url(request, settings),
            ttl_seconds=settings.upload_form_ttl_seconds,
            max_size=settings.max_upload_bytes,
            now=now,
            by=session.user,
        )
    except DomainError as failure:
        return JSONResponse({"message": failure.message}, status_code=domain_status(failure))
    export_path = f"{_organization_path(organization)}/exports/{created.export.uid}"
    return file_form_answer(created.export.uid, created.url, created.fields, next_path=export_path)


@router.get("/organizations/{org}/exports/{uid}")
def export_page(
    request: Request,
    org: str,
    uid: str,
    session: OperatorSessionDep,
    db: DbDep,
    settings: SettingsDep,
    store: StoreDep,
    now: NowDep,
) -> HTMLResponse:
    """One export of the organization in whatever state; on S3 its file's arrival is looked for first."""
    organization = accounts.find_organization(db=db, ref=org)
    export = forms.find_export(db=db, organization=organization, uid=uid)
    forms.reconcile_export(db=db, store=store, bucket=settings.exports_bucket, export=export, now=now)
    return render(
        request, "admin_export.html", session, organization=organization, export=admin_export_out(export)
    )


@router.post("/organizations/{org}/exports/{uid}/withdraw")
def withdraw_export(
    org: str, uid: str, session: OperatorSessionDep, body: BodyDep, db: DbDep, now: NowDep
) -> RedirectResponse:
    """Withdraw an export: no longer listed to the organization, its download URLs refused."""
    checked_form(session, body)
    organization = accounts.find_organization(db=db, ref=org)
    export = forms.find_export(db=db, organization=organization, uid=uid)
    forms.withdraw_export(db=db, export=export, now=now, by=session.user)
    return RedirectResponse(_organization_path(organization), status_code=303)
