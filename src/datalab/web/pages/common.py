"""What every Data Center page shares: the route class that renders failures as pages, the session
and service dependencies, templates, CSRF and form helpers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from datalab.deps import (
    DbDep,
    NowDep,
    ReadDbDep,
    ServiceT,
    public_base_url,
    raw_body,
    service_dependency,
)
from datalab.domain_errors import DomainError
from datalab.errors import ApiError, domain_status
from datalab.exports.service import ExportService
from datalab.scoping import OrgContext
from datalab.settings import Settings
from datalab.uploads.service import UploadService
from datalab.web import service as web
from datalab.web.models import WebSession

COOKIE = "datalab_session"
SIGNIN_CSRF_COOKIE = "datalab_signin"
DATA_SOURCE = "DataCenter"
CODED_RULES = ("gender", "state", "term", "boolean", "athlete")
MAX_FORM_BYTES = 256 * 1024
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")
STATIC_DIR = Path(__file__).parent.parent / "static"


class SignInRequired(Exception):
    """The page needs a signed-in session; the browser is sent to sign in and brought back."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.back_to = back_to


def _error_page(request: Request, status: int, message: str) -> Response:
    return TEMPLATES.TemplateResponse(
        request, "error.html", {"status": status, "message": message, "session": None}, status_code=status
    )


class PageRoute(APIRoute):
    """A route whose API errors become an error page (or a sign-in redirect) instead of JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as missing:
                return RedirectResponse(f"/datacenter/signin?next={quote(missing.back_to)}", status_code=303)
            except DomainError as failure:
                return _error_page(request, domain_status(failure), failure.message)
            except ApiError as error:
                return _error_page(request, error.status, error.message)

        return handle


def _signed_in(request: Request, db: Session, now: datetime) -> WebSession:
    session = web.find_session(db=db, token=request.cookies.get(COOKIE), now=now)
    if session is None:
        back_to = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(back_to if request.method == "GET" else "/datacenter/exports")
    return session


def current_session(request: Request, db: DbDep, now: NowDep) -> WebSession:
    """The signed-in session of the request, else a redirect to the sign-in page."""
    return _signed_in(request, db, now)


def current_read_session(request: Request, db: ReadDbDep, now: NowDep) -> WebSession:
    """The same, on the read-only database session of a page that only reads (ReadDbDep)."""
    return _signed_in(request, db, now)


SessionDep = Annotated[WebSession, Depends(current_session)]
# Pages that only read take this one with ReadDbDep: on SQLite they never wait for the write lock.
ReadSessionDep = Annotated[WebSession, Depends(current_read_session)]


def _session_org(session: SessionDep) -> OrgContext:
    return web.org_of(session)


def _read_session_org(session: ReadSessionDep) -> OrgContext:
    return web.org_of(session)


def _page_service(service_type: type[ServiceT], *, read_only: bool) -> Callable[..., ServiceT]:
    """The service of the organization the signed-in session acts in, built as the API builds it."""
    org_context = _read_session_org if read_only else _session_org
    return service_dependency(service_type, org_context=org_context, read_only=read_only)


ExportServiceDep = Annotated[ExportService, Depends(_page_service(ExportService, read_only=False))]
ReadExportServiceDep = Annotated[ExportService, Depends(_page_service(ExportService, read_only=True))]
UploadServiceDep = Annotated[UploadService, Depends(_page_service(UploadService, read_only=False))]
ReadUploadServiceDep = Annotated[UploadService, Depends(_page_service(UploadService, read_only=True))]
BodyDep = Annotated[bytes, Depends(raw_body)]


def form_of(body: bytes) -> dict[str, list[str]]:
    """A URL-encoded form's fields (every value, in order)."""
    if len(body) > MAX_FORM_BYTES:
        raise ApiError(413, "form_too_large", "The form is too large.")
    return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)


def one(form: dict[str, list[str]], name: str) -> str:
    """The first value of a field, or ""."""
    return form.get(name, [""])[0]


def checked_form(session: WebSession, body: bytes) -> dict[str, list[str]]:
    """The form, after its CSRF token was checked against the session's."""
    form = form_of(body)
    if not web.csrf_ok(session, one(form, "csrf_token")):
        raise ApiError(
            403, "csrf_failed", "The form expired or did not come from this site; reload the page."
        )
    return form


def file_form_answer(uid: str, url: str, fields: dict[str, str], *, next_path: str) -> JSONResponse:
    """The answer to a page's script that created a record: the presigned form to post the file to,
    and the page to go to once it is posted."""
    return JSONResponse({"id": uid, "url": url, "fields": fields, "next": next_path})


def render(
    request: Request, template: str, session: WebSession | None, *, shows_secret: bool = False, **context: Any
) -> HTMLResponse:
    """A page with the session's user, organizations and CSRF token available to the template.

    A page that `shows_secret` (a new key, shown this once) is not to be kept by any cache.
    """
    response = TEMPLATES.TemplateResponse(request, template, {"session": session, **context})
    if shows_secret:
        response.headers["cache-control"] = "no-store"
    return response


def secure_cookies(request: Request, settings: Settings) -> bool:
    return urlsplit(public_base_url(request, settings)).scheme == "https"


def local_path(candidate: str) -> str:
    # Only paths of this site: an open redirect would let a link send people elsewhere after sign-in.
    if candidate.startswith("/datacenter") and not candidate.startswith("//"):
        return candidate
    return "/datacenter/exports"
