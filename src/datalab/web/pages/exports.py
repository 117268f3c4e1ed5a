"""The export files page: list, filter, download one or several."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from datalab.deps import DbDep, NowDep, SettingsDep
from datalab.digests import service as digests
from datalab.digests.errors import UnknownDigestChoice
from datalab.exports import service as exports
from datalab.exports.models import EXPORT_STATUSES, PRODUCT_KEYS, Export
from datalab.storage.streaming import ByteRange, FileStreamResponse
from datalab.web.pages.common import (
    DATA_SOURCE,
    TEMPLATES,
    BodyDep,
    ExportServiceDep,
    PageRoute,
    ReadExportServiceDep,
    ReadSessionDep,
    SessionDep,
    checked_form,
    one,
    render,
)
from datalab.web.service import org_of

router = APIRouter(route_class=PageRoute)


@router.get("/exports")
def exports_page(
    request: Request,
    session: ReadSessionDep,
    service: ReadExportServiceDep,
    settings: SettingsDep,
    product: str = "",
    status: str = "",
) -> HTMLResponse:
    """The organization's export files, filtered by product and status, and whether the user gets the
    e-mail digest of new ones (when this server sends e-mail)."""
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
        digest_subscribed=(
            digests.is_subscribed(db=service.db, org=service.org) if settings.email_smtp_host else None
        ),
    )


_DIGEST_CHOICES = {"on": True, "off": False}


@router.post("/email-digest")
def set_email_digest(session: SessionDep, body: BodyDep, db: DbDep, now: NowDep) -> RedirectResponse:
    """Turn the user's e-mail digest of new exports on or off, as the API's PUT /email-digest does."""
    form = checked_form(session, body)
    choice = one(form, "digest")
    if choice not in _DIGEST_CHOICES:
        raise UnknownDigestChoice(choice)
    digests.set_subscribed(db=db, org=org_of(session), subscribed=_DIGEST_CHOICES[choice], now=now)
    return RedirectResponse("/datacenter/exports", status_code=303)


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


def export_deliveries(export: Export) -> list[tuple[str, datetime]]:
    """Who downloaded an export and when (for the template)."""
    return [
        (delivery.user.display_name if delivery.user else "an operator", delivery.delivered_at)
        for delivery in export.deliveries
    ]


TEMPLATES.env.globals["deliveries_of"] = export_deliveries
