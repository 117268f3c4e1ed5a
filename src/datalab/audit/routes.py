"""The audit trail over HTTP: the API's list and CSV export, the Data Center page, and the middleware
that tells the recording services where each request came from."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from datalab.audit import service
from datalab.audit.schemas import AUDIT_LIST, AuditEventOut, audit_event_out, parse_since
from datalab.db import transaction
from datalab.deps import ApiCallDep, DbDep
from datalab.errors import ORG_SCOPED_ERRORS, error_responses
from datalab.pagination import MAX_OFFSET, parse_paging
from datalab.scoping import OrgContext
from datalab.web import service as web
from datalab.web.models import WebSession
from datalab.web.pages.common import TEMPLATES, PageRoute, SessionDep, render

PAGE_SIZE = 50
OptionalText = Annotated[str | None, Query()]


class AuditOriginMiddleware:
    """Makes each request's channel (API, DataCenter, or the embedded store) and client address the
    origin of whatever it records."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        channel = (
            "DataCenter" if path.startswith("/datacenter") else "API" if path.startswith("/v1") else "store"
        )
        client = scope.get("client")
        with service.origin_scope(
            service.Origin(channel=channel, client_address=client[0] if client else "")
        ):
            await self.app(scope, receive, send)


def csv_response(
    factory: sessionmaker[Session], org: OrgContext, since: datetime | None
) -> StreamingResponse:
    """The organization's whole trail as a CSV download, read in a transaction of its own while it streams."""

    def chunks() -> Iterator[str]:
        with transaction(factory) as db:
            events = service.organization_events(db=db, org=org, since=since)
            yield from service.csv_chunks(events, {org.organization.id: org.organization.uid})

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="audit-{org.organization.fice}.csv"'},
    )


# --- API --------------------------------------------------------------------------------------------

router = APIRouter(tags=["Audit"])


@router.get(
    "/audit",
    operation_id="readAuditTrail",
    response_model=list[AuditEventOut],
    summary="The organization's audit trail (its admins only)",
    responses=error_responses(*ORG_SCOPED_ERRORS, s403="Not an admin of the organization"),
)
async def read_audit_trail(
    api: ApiCallDep,
    since: Annotated[str | None, Query(description="ISO 8601 date or date-time (UTC by default)")] = None,
    limit: OptionalText = None,
    offset: OptionalText = None,
) -> Response:
    """Newest first, 50 per page by default; `total-count` gives the number of matching events."""

    def work(db: Session, org: OrgContext, _now: datetime) -> tuple[bytes, int]:
        page_limit, page_offset = parse_paging(limit=limit, offset=offset)
        page = service.list_events(
            db=db,
            org=org,
            since=parse_since(since),
            limit=PAGE_SIZE if page_limit is None else page_limit,
            offset=page_offset,
        )
        body = AUDIT_LIST.dump_json([audit_event_out(event, org.organization.uid) for event in page.items])
        return body, page.total

    body, total = await api.read(work)
    return Response(body, media_type="application/json", headers={"total-count": str(total)})


@router.get(
    "/audit/export",
    operation_id="exportAuditTrail",
    summary="The organization's whole audit trail as CSV (its admins only)",
    response_class=StreamingResponse,
    responses={
        200: {"description": "CSV, oldest event first", "content": {"text/csv": {}}},
        **error_responses(*ORG_SCOPED_ERRORS, s403="Not an admin of the organization"),
    },
)
async def export_audit_trail(
    api: ApiCallDep,
    since: Annotated[str | None, Query(description="ISO 8601 date or date-time (UTC by default)")] = None,
) -> StreamingResponse:
    """Every event of the organization since the given moment."""

    def work(_db: Session, org: OrgContext, _now: datetime) -> tuple[OrgContext, datetime | None]:
        moment = parse_since(since)
        service.require_admin(org)
        return org, moment

    org, moment = await api.read(work)
    return csv_response(api.runtime.read_session_factory, org, moment)


# --- Data Center ------------------------------------------------------------------------------------

pages = APIRouter(prefix="/datacenter", route_class=PageRoute, include_in_schema=False)


@pages.get("/audit")
def audit_page(
    request: Request,
    session: SessionDep,
    db: DbDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    since: str = "",
) -> HTMLResponse:
    """The organization's audit trail, newest first (its admins only)."""
    page = service.list_events(
        db=db, org=web.org_of(session), since=parse_since(since), limit=PAGE_SIZE, offset=offset
    )
    return render(
        request,
        "audit.html",
        session,
        events=page.items,
        total=page.total,
        offset=offset,
        since=since,
        page_size=PAGE_SIZE,
    )


@pages.get("/audit.csv")
def audit_csv(request: Request, session: SessionDep, since: str = "") -> StreamingResponse:
    """The organization's whole audit trail as CSV (its admins only)."""
    org = web.org_of(session)
    service.require_admin(org)
    return csv_response(request.app.state.read_session_factory, org, parse_since(since))


def audit_visible(session: WebSession) -> bool:
    """Whether the signed-in user sees the Audit Trail page (for the navigation)."""
    return session.organization is not None and service.is_admin(web.org_of(session))


TEMPLATES.env.globals["audit_visible"] = audit_visible
