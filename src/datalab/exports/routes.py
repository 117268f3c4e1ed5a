"""HTTP handlers of the File Export API."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from datalab.deps import (
    ApiCallDep,
    DbDep,
    ExportServiceDep,
    NowDep,
    SettingsDep,
    StoreDep,
    public_base_url,
)
from datalab.errors import ORG_SCOPED_ERRORS, error_responses
from datalab.exports import service
from datalab.exports.schemas import DownloadUrlOut, ExportOut
from datalab.exports.service import ExportService
from datalab.pagination import non_negative, parse_paging
from datalab.storage.errors import GATE_FAILURES
from datalab.storage.routes import s3_error_for, s3_error_response

router = APIRouter(prefix="/datacenter", tags=["Exports"])

OptionalText = Annotated[str | None, Query()]


@router.get(
    "/exports",
    operation_id="readExports",
    response_model=list[ExportOut],
    summary="Retrieve a list of exports",
    responses=error_responses(*ORG_SCOPED_ERRORS),
)
@router.get("/exports/", include_in_schema=False)
async def read_exports(
    api: ApiCallDep,
    status: Annotated[str | None, Query(description="Delivered or NotDelivered (case-sensitive)")] = None,
    productKey: Annotated[
        str | None, Query(description="e.g. score-reporter; all products when absent")
    ] = None,
    limit: OptionalText = None,
    offset: OptionalText = None,
) -> Response:
    """The organization's export files; 200 with [] when none match."""
    status_filter, product_filter = service.parse_export_filters(status=status, product_key=productKey)
    page_limit, page_offset = parse_paging(limit=limit, offset=offset)
    body, total = await api.serve(
        ExportService,
        lambda exports: exports.list_json(
            status=status_filter, product_key=product_filter, limit=page_limit, offset=page_offset
        ),
    )
    return Response(body, media_type="application/json", headers={"total-count": str(total)})


_DOWNLOAD_RESPONSES = error_responses(*ORG_SCOPED_ERRORS, 404, s404="No such export in this organization")


@router.get(
    "/exports/{uid}/download",
    operation_id="downloadExport",
    response_model=DownloadUrlOut,
    summary="Get a one-time download URL for an export",
    responses=_DOWNLOAD_RESPONSES,
)
@router.get(
    "/{uid}/download",
    operation_id="downloadExportShort",
    response_model=DownloadUrlOut,
    summary="Get a one-time download URL for an export (documented short path)",
    responses=_DOWNLOAD_RESPONSES,
)
@router.get("/exports/{uid}/download/", include_in_schema=False)
@router.get("/{uid}/download/", include_in_schema=False)
def download_export(
    uid: str,
    exports: ExportServiceDep,
    fileType: OptionalText = None,
    filetype: OptionalText = None,
    limit: OptionalText = None,
    skip: OptionalText = None,
) -> DownloadUrlOut:
    """A one-time download URL for one export; limit/skip serve a slice of its rows."""
    # Counts of data rows, so not capped like a page size.
    row_limit, row_skip = non_negative("limit", limit), non_negative("skip", skip)
    url = exports.issue_download_url(uid, file_type=fileType or filetype, skip=row_skip, limit=row_limit)
    return DownloadUrlOut(downloadUrl=url)


tickets_router = APIRouter(include_in_schema=False)


@tickets_router.get("/download/{token}/{file_name}")
def redeem_download_ticket(
    request: Request,
    token: str,
    file_name: str,
    db: DbDep,
    settings: SettingsDep,
    store: StoreDep,
    now: NowDep,
) -> Response:
    """On S3: a one-time download URL, answered with a redirect to a short-lived presigned GET."""
    request_id = secrets.token_hex(8).upper()
    try:
        url = service.redeem_ticket(
            db=db,
            store=store,
            bucket=settings.exports_bucket,
            token=token,
            file_name=file_name,
            base_url=public_base_url(request, settings),
            redirect_ttl=settings.s3_redirect_ttl_seconds,
            now=now,
        )
    except GATE_FAILURES as failure:
        return s3_error_response(s3_error_for(failure), request_id)
    return RedirectResponse(url, status_code=307, headers={"x-amz-request-id": request_id})
