"""Data Center: the pages people use to download exports, upload files, map fields and manage keys.

Server-rendered (Jinja2), sharing the service layer with the API. Every page needs a signed-in session
(an HttpOnly, SameSite=Lax cookie, Secure over HTTPS); every form carries the session's CSRF token.
Pages work without JavaScript except the upload itself, which the browser sends straight to the
presigned POST form.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from datalab.accounts import service as accounts
from datalab.deps import (
    DbDep,
    NowDep,
    ReadDbDep,
    SettingsDep,
    StoreDep,
    build_export_service,
    build_upload_service,
    public_base_url,
    raw_body,
)
from datalab.domain_errors import DomainError, Forbidden, Throttled, Unauthenticated, Unprocessable
from datalab.errors import ApiError, domain_status
from datalab.exports import service as exports
from datalab.exports.models import EXPORT_STATUSES, PRODUCT_KEYS, Export
from datalab.exports.service import ExportService
from datalab.layouts import load_layout
from datalab.lifecycle import CANCELABLE, LIVE
from datalab.operations.metrics import login_attempt
from datalab.pagination import MAX_OFFSET
from datalab.settings import Settings
from datalab.storage.streaming import ByteRange, FileStreamResponse
from datalab.uploads import mappings
from datalab.uploads.models import PRODUCT_TYPES, Upload
from datalab.uploads.routes import report_response
from datalab.uploads.schemas import UploadRequest
from datalab.uploads.service import UploadService
from datalab.web import service as web
from datalab.web.models import WebSession

COOKIE = "datalab_session"
SIGNIN_CSRF_COOKIE = "datalab_signin"
DATA_SOURCE = "DataCenter"
CODED_RULES = ("gender", "state", "term", "boolean", "athlete")
MAX_FORM_BYTES = 256 * 1024
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
STATIC_DIR = Path(__file__).parent / "static"


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


router = APIRouter(prefix="/datacenter", route_class=PageRoute, include_in_schema=False)


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


def export_service(
    request: Request, session: SessionDep, db: DbDep, settings: SettingsDep, store: StoreDep, now: NowDep
) -> ExportService:
    """The exports of the organization the signed-in session acts in (built as the API builds them)."""
    return build_export_service(
        request, db=db, org=web.org_of(session), settings=settings, store=store, now=now
    )


def read_export_service(
    request: Request,
    session: ReadSessionDep,
    db: ReadDbDep,
    settings: SettingsDep,
    store: StoreDep,
    now: NowDep,
) -> ExportService:
    """The same, on the read-only session of a page that only reads."""
    return build_export_service(
        request, db=db, org=web.org_of(session), settings=settings, store=store, now=now
    )


ExportServiceDep = Annotated[ExportService, Depends(export_service)]
ReadExportServiceDep = Annotated[ExportService, Depends(read_export_service)]


def upload_service(
    request: Request, session: SessionDep, db: DbDep, settings: SettingsDep, store: StoreDep, now: NowDep
) -> UploadService:
    """The uploads of the organization the signed-in session acts in (built as the API builds them)."""
    return build_upload_service(
        request, db=db, org=web.org_of(session), settings=settings, store=store, now=now
    )


def read_upload_service(
    request: Request,
    session: ReadSessionDep,
    db: ReadDbDep,
    settings: SettingsDep,
    store: StoreDep,
    now: NowDep,
) -> UploadService:
    """The same, on the read-only session of a page that only reads."""
    return build_upload_service(
        request, db=db, org=web.org_of(session), settings=settings, store=store, now=now
    )


UploadServiceDep = Annotated[UploadService, Depends(upload_service)]
ReadUploadServiceDep = Annotated[UploadService, Depends(read_upload_service)]
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


def render(request: Request, template: str, session: WebSession | None, **context: Any) -> HTMLResponse:
    """A page with the session's user, organizations and CSRF token available to the template."""
    return TEMPLATES.TemplateResponse(request, template, {"session": session, **context})


def _secure(request: Request, settings: Settings) -> bool:
    return urlsplit(public_base_url(request, settings)).scheme == "https"


def _local_path(candidate: str) -> str:
    # Only paths of this site: an open redirect would let a link send people elsewhere after sign-in.
    if candidate.startswith("/datacenter") and not candidate.startswith("//"):
        return candidate
    return "/datacenter/exports"


# --- signing in -------------------------------------------------------------------------------------


@router.get("")
@router.get("/")
def home() -> RedirectResponse:
    """Data Center opens on the export files."""
    return RedirectResponse("/datacenter/exports", status_code=303)


@router.get("/signin")
def signin_page(request: Request, settings: SettingsDep, next: str = "/datacenter/exports") -> HTMLResponse:
    """The sign-in form (a per-browser token guards it against cross-site posts)."""
    token = request.cookies.get(SIGNIN_CSRF_COOKIE) or web.new_csrf_token()
    response = render(request, "signin.html", None, next=_local_path(next), csrf_token=token, error=None)
    response.set_cookie(
        SIGNIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=_secure(request, settings),
        path="/datacenter",
    )
    return response


@router.post("/signin")
def signin(request: Request, body: BodyDep, db: DbDep, settings: SettingsDep, now: NowDep) -> Response:
    """Check the user name and password and open a session."""
    form = form_of(body)
    expected = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
    back_to = _local_path(one(form, "next"))
    if not expected or not web.same_token(expected, one(form, "csrf_token")):
        raise ApiError(403, "csrf_failed", "The sign-in form expired; reload the page and try again.")
    try:
        with login_attempt("datacenter"):
            _session, token = web.sign_in(
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
    redirect = RedirectResponse(back_to, status_code=303)
    redirect.set_cookie(
        COOKIE,
        token,
        max_age=int(settings.datacenter_session_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=_secure(request, settings),
        path="/datacenter",
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
    return RedirectResponse(_local_path(one(form, "next")), status_code=303)


# --- export files -----------------------------------------------------------------------------------


@router.get("/exports")
def exports_page(
    request: Request,
    session: ReadSessionDep,
    service: ReadExportServiceDep,
    product: str = "",
    status: str = "",
) -> HTMLResponse:
    """The organization's export files, filtered by product and status."""
    status_filter, product_filter = exports.parse_export_filters(
        status=status or None, product_key=product or None
    )
    page = service.list(status=status_filter, product_key=product_filter, limit=None, offset=0)
    return render(
        request,
        "exports.html",
        session,
        exports=page.items,
        products=PRODUCT_KEYS,
        statuses=EXPORT_STATUSES,
        product=product,
        status=status,
    )


@router.post("/exports/download")
def download_exports(session: SessionDep, body: BodyDep, service: ExportServiceDep, now: NowDep) -> Response:
    """One export: a redirect to its one-time URL. Several: one zip. Each counts as a delivery."""
    form = checked_form(session, body)
    uids = [uid for uid in form.get("uid", []) if uid]
    if len(uids) == 1:
        return RedirectResponse(service.issue_download_url(uids[0], method=DATA_SOURCE), status_code=303)
    bundle = service.bundle(uids, method=DATA_SOURCE)
    size = bundle.path.stat().st_size
    return FileStreamResponse(
        path=bundle.path,
        byte_range=ByteRange(0, size - 1),
        status_code=200,
        headers={
            "content-type": "application/zip",
            "content-disposition": f'attachment; filename="datalab-exports-{now:%Y%m%d-%H%M%S}.zip"',
        },
        on_finish=lambda sent, complete: bundle.finish(bytes_sent=sent, complete=complete, now=now),
    )


# --- upload files -----------------------------------------------------------------------------------


@router.get("/uploads")
def uploads_page(
    request: Request,
    session: ReadSessionDep,
    service: ReadUploadServiceDep,
    offset: Annotated[int, Query(le=MAX_OFFSET)] = 0,
) -> HTMLResponse:
    """Start an upload, and the organization's upload history."""
    page = service.list(limit=50, offset=max(offset, 0))
    return render(
        request,
        "uploads.html",
        session,
        uploads=page.items,
        total=page.total,
        offset=max(offset, 0),
        products=PRODUCT_TYPES,
        cancelable=CANCELABLE,
    )


@router.post("/uploads")
def create_upload(session: SessionDep, body: BodyDep, service: UploadServiceDep) -> JSONResponse:
    """Create the upload record; the page's script then posts the file straight to the returned form."""
    form = checked_form(session, body)
    try:
        created = service.create(
            UploadRequest(
                file_name=one(form, "fileName"),
                product_type=one(form, "productType"),
                file_description=one(form, "fileDescription")[:2000],
                data_source=DATA_SOURCE,
            )
        )
    except DomainError as refused:
        return JSONResponse({"message": refused.message}, status_code=domain_status(refused))
    return JSONResponse(
        {
            "id": created.upload.uid,
            "url": created.url,
            "fields": created.fields,
            "next": f"/datacenter/uploads/{created.upload.uid}",
        }
    )


def _upload_context(upload: Upload) -> dict[str, Any]:
    meta = upload.meta or {}
    return {
        "upload": upload,
        "meta": meta,
        "cancelable": upload.status in CANCELABLE,
        "has_report": "errorReport" in meta,
        "live": upload.status in LIVE,
    }


def read_upload(uid: str, service: ReadUploadServiceDep) -> Upload:
    """The organization's upload named in the path, with its arrival noticed as the API does."""
    return service.read(uid)


UploadDep = Annotated[Upload, Depends(read_upload)]


@router.get("/uploads/{uid}")
def upload_page(request: Request, session: ReadSessionDep, upload: UploadDep) -> HTMLResponse:
    """One upload: its status (followed live while it moves), counts, failure reason and actions."""
    return render(request, "upload.html", session, **_upload_context(upload))


@router.get("/uploads/{uid}/status")
def upload_status(upload: UploadDep) -> JSONResponse:
    """The upload's status, for the page that follows it."""
    return JSONResponse({"status": upload.status, "updatedAt": upload.updated_at.isoformat()})


@router.post("/uploads/{uid}/cancel")
def cancel_upload(
    uid: str, session: SessionDep, body: BodyDep, service: UploadServiceDep
) -> RedirectResponse:
    """Cancel an upload not yet past `enqueued`."""
    checked_form(session, body)
    service.cancel(uid)
    return RedirectResponse(f"/datacenter/uploads/{uid}", status_code=303)


@router.get("/uploads/{uid}/errors")
def upload_report(uid: str, service: ReadUploadServiceDep) -> Response:
    """The upload's row report (CSV)."""
    file_name, stream = service.row_report(uid)
    return report_response(file_name, stream)


def _distinct_values(meta: dict[str, Any]) -> dict[str, list[str]]:
    """The distinct values of each column: all of them for coded columns, else those of the sample."""
    seen: dict[str, list[str]] = {
        header: list(values) for header, values in meta.get("codedValues", {}).items()
    }
    for row in meta.get("data", []):
        for header, value in row.items():
            if header in meta.get("codedValues", {}):
                continue
            values = seen.setdefault(header, [])
            text = str(value).strip()
            if text and text not in values and len(values) < 25:
                values.append(text)
    return seen


def _mapping_context(upload: Upload, errors: list[str], chosen: dict[str, str] | None) -> dict[str, Any]:
    meta = upload.meta or {}
    layout = load_layout(upload.product_type)
    suggested = {str(entry["field"]): entry.get("fileHeader") or "" for entry in meta.get("headersMap", [])}
    selected = chosen if chosen is not None else suggested
    headers = meta.get("headers", [])
    samples = _distinct_values(meta)
    return {
        "upload": upload,
        "layout": layout,
        "headers": headers,
        "samples": samples,
        "samples_json": json.dumps(samples),
        "selected": selected,
        "coded": [f for f in layout.fields if f.rule in CODED_RULES],
        "errors": errors,
        "require_one_of": [", ".join(group) for group in layout.require_one_of],
    }


@router.get("/uploads/{uid}/mapping")
def mapping_page(
    request: Request, uid: str, session: ReadSessionDep, service: ReadUploadServiceDep
) -> HTMLResponse:
    """Map the file's columns (and coded values) to the product's layout."""
    upload = service.get(uid)
    return render(request, "mapping.html", session, **_mapping_context(upload, [], None))


@router.post("/uploads/{uid}/mapping")
def submit_mapping(
    request: Request, uid: str, session: SessionDep, body: BodyDep, service: UploadServiceDep
) -> Response:
    """Save the mapping for the organization and product, and queue the file."""
    form = checked_form(session, body)
    upload = service.get(uid)
    fields_map = {
        name.removeprefix("field:"): values[0]
        for name, values in form.items()
        if name.startswith("field:") and values[0]
    }
    values_map: dict[str, dict[str, str]] = {}
    for name, values in form.items():
        if not name.startswith("value:"):
            continue
        _prefix, field, index = name.split(":", 2)
        source = one(form, f"source:{field}:{index}")
        if values[0].strip() and source:
            values_map.setdefault(field, {})[source] = values[0].strip()
    try:
        service.process(uid, {"fieldsMap": fields_map, "valuesMap": values_map})
    except Unprocessable as refused:
        problems = (
            [str(p["msg"]) for p in refused.detail] if isinstance(refused.detail, list) else [refused.message]
        )
        response = render(request, "mapping.html", session, **_mapping_context(upload, problems, fields_map))
        response.status_code = 422
        return response
    return RedirectResponse(f"/datacenter/uploads/{uid}", status_code=303)


# --- saved mappings ---------------------------------------------------------------------------------


@router.get("/mappings")
def mappings_page(request: Request, session: ReadSessionDep, db: ReadDbDep) -> HTMLResponse:
    """The organization's saved mappings."""
    return render(
        request, "mappings.html", session, mappings=mappings.list_mappings(db=db, org=web.org_of(session))
    )


@router.get("/mappings/{uid}")
def mapping_detail(request: Request, uid: str, session: ReadSessionDep, db: ReadDbDep) -> HTMLResponse:
    """One saved mapping: its headers, fields and value mappings."""
    mapping = mappings.get_mapping(db=db, org=web.org_of(session), uid=uid)
    return render(request, "mapping_detail.html", session, mapping=mapping)


@router.post("/mappings/{uid}/rename")
def rename_mapping(uid: str, session: SessionDep, body: BodyDep, db: DbDep, now: NowDep) -> RedirectResponse:
    """Rename a saved mapping."""
    form = checked_form(session, body)
    mappings.rename_mapping(db=db, org=web.org_of(session), uid=uid, name=one(form, "name"), now=now)
    return RedirectResponse(f"/datacenter/mappings/{uid}", status_code=303)


@router.post("/mappings/{uid}/delete")
def delete_mapping(uid: str, session: SessionDep, body: BodyDep, db: DbDep, now: NowDep) -> RedirectResponse:
    """Delete a saved mapping."""
    checked_form(session, body)
    mappings.delete_mapping(db=db, org=web.org_of(session), uid=uid, now=now)
    return RedirectResponse("/datacenter/mappings", status_code=303)


# --- API keys ---------------------------------------------------------------------------------------


def _keys_page(request: Request, session: SessionDep, db: DbDep, created: str | None) -> HTMLResponse:
    keys = accounts.list_api_keys(db=db, user=session.user)
    return render(request, "api_keys.html", session, keys=keys, created=created)


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
    response = _keys_page(request, session, db, issued.plain_key)
    response.headers["cache-control"] = "no-store"
    return response


@router.post("/api-keys/{uid}/revoke")
def revoke_api_key(uid: str, session: SessionDep, body: BodyDep, db: DbDep, now: NowDep) -> RedirectResponse:
    """Revoke one of the user's own keys."""
    checked_form(session, body)
    try:
        accounts.revoke_api_key(db=db, uid=uid, now=now, user=session.user)
    except accounts.AccountError:
        raise ApiError(404, "key_not_found", "No such API key.") from None
    return RedirectResponse("/datacenter/api-keys", status_code=303)


def export_deliveries(export: Export) -> list[tuple[str, datetime]]:
    """Who downloaded an export and when (for the template)."""
    return [
        (delivery.user.display_name if delivery.user else "an operator", delivery.delivered_at)
        for delivery in export.deliveries
    ]


TEMPLATES.env.globals["deliveries_of"] = export_deliveries
