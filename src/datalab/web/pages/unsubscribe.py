"""Stopping the e-mail digest from the link each digest carries, without signing in.

The link's token (an HMAC of the user's id, see `digests.service.unsubscribe_token`) is what allows it,
so the page needs no session and its form no CSRF token: a forged request could only do what the link
itself does. A GET changes nothing, since mail scanners open links; the page's button, and a mail
program's one-click request (RFC 8058: a POST of `List-Unsubscribe=One-Click` to the link), stop the
digests with a POST.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from datalab.deps import DbDep, NowDep, ReadDbDep, SettingsDep
from datalab.digests import service as digests
from datalab.web.pages.common import PageRoute, render

router = APIRouter(route_class=PageRoute)


@router.get("/unsubscribe/{user_uid}/{token}")
def unsubscribe_page(
    request: Request, user_uid: str, token: str, db: ReadDbDep, settings: SettingsDep
) -> HTMLResponse:
    """Whether the link's user gets the digest, with a button to stop it."""
    user = digests.unsubscribing_user(db=db, key=settings.unsubscribe_key, user_uid=user_uid, token=token)
    stopped = not digests.receives_digests(db=db, user=user)
    return render(request, "unsubscribe.html", None, email=user.email, stopped=stopped)


@router.post("/unsubscribe/{user_uid}/{token}")
def unsubscribe(
    request: Request, user_uid: str, token: str, db: DbDep, settings: SettingsDep, now: NowDep
) -> HTMLResponse:
    """Stop the link's user's digests (the page's button, or a mail program's one-click request)."""
    user = digests.unsubscribing_user(db=db, key=settings.unsubscribe_key, user_uid=user_uid, token=token)
    digests.unsubscribe(db=db, user=user, now=now)
    return render(request, "unsubscribe.html", None, email=user.email, stopped=True)
