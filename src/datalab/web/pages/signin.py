"""Signing in and out, and switching the organization a session acts in."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from datalab.deps import DbDep, NowDep, SettingsDep
from datalab.domain_errors import Forbidden, Throttled, Unauthenticated
from datalab.errors import ApiError, domain_status
from datalab.operations.metrics import login_attempt
from datalab.settings import Settings
from datalab.web import service as web
from datalab.web.pages.common import (
    COOKIE,
    SIGNIN_CSRF_COOKIE,
    BodyDep,
    PageRoute,
    SessionDep,
    checked_form,
    form_of,
    local_path,
    one,
    render,
    secure_cookies,
)

router = APIRouter(route_class=PageRoute)


@router.get("")
@router.get("/")
def home() -> RedirectResponse:
    """Data Center opens on the export files."""
    return RedirectResponse("/datacenter/exports", status_code=303)


def _set_cookie(
    response: Response,
    request: Request,
    settings: Settings,
    name: str,
    value: str,
    *,
    max_age: int | None = None,
) -> None:
    """A cookie of the Data Center pages only, out of scripts' reach, sent over HTTPS only behind HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request, settings),
        path="/datacenter",
    )


@router.get("/signin")
def signin_page(request: Request, settings: SettingsDep, next: str = "/datacenter/exports") -> HTMLResponse:
    """The sign-in form (a per-browser token guards it against cross-site posts)."""
    token = request.cookies.get(SIGNIN_CSRF_COOKIE) or web.new_csrf_token()
    response = render(request, "signin.html", None, next=local_path(next), csrf_token=token, error=None)
    _set_cookie(response, request, settings, SIGNIN_CSRF_COOKIE, token)
    return response


@router.post("/signin")
def signin(request: Request, body: BodyDep, db: DbDep, settings: SettingsDep, now: NowDep) -> Response:
    """Check the user name and password and open a session."""
    form = form_of(body)
    expected = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
    back_to = local_path(one(form, "next"))
    if not expected or not web.same_token(expected, one(form, "csrf_token")):
        raise ApiError(403, "csrf_failed", "The sign-in form expired; reload the page and try again.")
    try:
        with login_attempt("datacenter"):
            session, token = web.sign_in(
                db=db,
                settings=settings,
                user_name=one(form, "userName").strip(),
                password=one(form, "password"),
                client_address=request.client.host if request.client else "",
                now=now,
            )
    except (Unauthenticated, Forbidden, Throttled) as refused:
        # A failed attempt is counted by the throttle and must stay counted.
        db.commit()
        response = render(
            request, "signin.html", None, next=back_to, csrf_token=expected, error=refused.message
        )
        response.status_code = domain_status(refused)
        return response
    if session.organization_id is None:
        # an operator who belongs to no organization has only the operator pages
        back_to = "/datacenter/admin"
    redirect = RedirectResponse(back_to, status_code=303)
    _set_cookie(
        redirect, request, settings, COOKIE, token, max_age=int(settings.datacenter_session_hours * 3600)
    )
    return redirect


@router.post("/signout")
def signout(session: SessionDep, body: BodyDep, db: DbDep, now: NowDep) -> RedirectResponse:
    """End the session."""
    checked_form(session, body)
    web.sign_out(db=db, session=session, now=now)
    redirect = RedirectResponse("/datacenter/signin", status_code=303)
    redirect.delete_cookie(COOKIE, path="/datacenter")
    return redirect


@router.post("/organization")
def switch_organization(session: SessionDep, body: BodyDep, db: DbDep) -> RedirectResponse:
    """Act in another of the user's organizations."""
    form = checked_form(session, body)
    web.switch_organization(db=db, session=session, organization_uid=one(form, "organization"))
    return RedirectResponse(local_path(one(form, "next")), status_code=303)
