"""Upload files: start an upload, its history, one upload followed live, cancel, its row report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from datalab.domain_errors import DomainError
from datalab.errors import domain_status
from datalab.lifecycle import CANCELABLE, LIVE
from datalab.pagination import MAX_OFFSET
from datalab.uploads.models import PRODUCT_TYPES, Upload
from datalab.uploads.routes import report_response
from datalab.uploads.schemas import UploadRequest
from datalab.web.pages.common import (
    DATA_SOURCE,
    BodyDep,
    PageRoute,
    ReadSessionDep,
    ReadUploadServiceDep,
    SessionDep,
    UploadServiceDep,
    checked_form,
    file_form_answer,
    one,
    render,
)

router = APIRouter(route_class=PageRoute)


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
    upload_path = f"/datacenter/uploads/{created.upload.uid}"
    return file_form_answer(created.upload.uid, created.url, created.fields, next_path=upload_path)


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
