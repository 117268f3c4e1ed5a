"""The user's own API keys: list, create (shown once), revoke."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from datalab.accounts import service as accounts
from datalab.accounts.errors import ApiKeyNotFound
from datalab.deps import DbDep, NowDep, ReadDbDep
from datalab.errors import ApiError
from datalab.web.pages.common import BodyDep, PageRoute, ReadSessionDep, SessionDep, checked_form, one, render

router = APIRouter(route_class=PageRoute)


def _keys_page(request: Request, session: SessionDep, db: DbDep, created: str | None) -> HTMLResponse:
    keys = accounts.list_api_keys(db=db, user=session.user)
    return render(
        request, "api_keys.html", session, shows_secret=created is not None, keys=keys, created=created
    )


@router.get("/api-keys")
def api_keys_page(request: Request, session: ReadSessionDep, db: ReadDbDep) -> HTMLResponse:
    """The user's own API keys."""
    return _keys_page(request, session, db, None)


@router.post("/api-keys")
def create_api_key(request: Request, session: SessionDep, body: BodyDep, db: DbDep) -> HTMLResponse:
    """Create a key; it is shown on this page once and never again."""
    form = checked_form(session, body)
    issued = accounts.create_api_key(
        db=db, user=session.user, name=one(form, "name").strip()[:100], by=session.user
    )
    return _keys_page(request, session, db, issued.plain_key)


@router.post("/api-keys/{uid}/revoke")
def revoke_api_key(uid: str, session: SessionDep, body: BodyDep, db: DbDep, now: NowDep) -> RedirectResponse:
    """Revoke one of the user's own keys."""
    checked_form(session, body)
    try:
        accounts.revoke_api_key(db=db, uid=uid, now=now, user=session.user)
    except ApiKeyNotFound:
        raise ApiError(404, "key_not_found", "No such API key.") from None
    return RedirectResponse("/datacenter/api-keys", status_code=303)
