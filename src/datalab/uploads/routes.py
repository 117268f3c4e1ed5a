"""HTTP handlers of the File Upload API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse

from datalab.deps import ApiCallDep, ReadUploadServiceDep, UploadServiceDep, raw_body
from datalab.errors import ORG_SCOPED_ERRORS, error_responses
from datalab.pagination import parse_paging
from datalab.pipeline.keys import CSV_CONTENT_TYPE
from datalab.uploads.schemas import (
    FILE_LIST,
    UPLOAD_BODY_SCHEMA,
    FileOut,
    UploadFormOut,
    file_out,
    parse_mapping_body,
    parse_upload_request,
)
from datalab.uploads.service import UploadService

router = APIRouter(prefix="/files", tags=["Files"])

OptionalText = Annotated[str | None, Query()]
_UPLOAD_DOC: dict[str, Any] = {
    "response_model": UploadFormOut,
    "summary": "Save file metadata and get upload URL",
    "openapi_extra": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": UPLOAD_BODY_SCHEMA}}}
    },
    "responses": error_responses(
        *ORG_SCOPED_ERRORS,
        408,
        413,
        s400="Missing Organization header, or a body missing, not valid JSON or not valid text",
        s422="Invalid fileName, productType, dataSource or fileDescription",
    ),
}


@router.post("/upload", operation_id="createUpload", **_UPLOAD_DOC)
@router.get("/upload", operation_id="createUploadWithGet", **_UPLOAD_DOC)
def create_upload(body: Annotated[bytes, Depends(raw_body)], uploads: UploadServiceDep) -> UploadFormOut:
    """Create an upload record in `uploading` and return the presigned POST form for its file."""
    form = uploads.create(parse_upload_request(body))
    return UploadFormOut(id=form.upload.uid, url=form.url, fields=form.fields)


@router.get(
    "",
    operation_id="getUploadFile",
    response_model=list[FileOut],
    summary="Uploaded files list",
    responses=error_responses(*ORG_SCOPED_ERRORS),
)
@router.get("/", include_in_schema=False)
async def list_files(
    api: ApiCallDep,
    limit: OptionalText = None,
    offset: OptionalText = None,
    sortBy: OptionalText = None,
    sortDirection: OptionalText = None,
    status: OptionalText = None,
    productType: OptionalText = None,
) -> Response:
    """The organization's uploads (20 per page by default); `total-count` gives the number of matches."""
    page_limit, page_offset = parse_paging(limit=limit, offset=offset)

    def listed(uploads: UploadService) -> tuple[bytes, int]:
        page = uploads.list(
            status=status,
            product_type=productType,
            sort_by=sortBy,
            sort_direction=sortDirection,
            limit=page_limit,
            offset=page_offset,
        )
        return FILE_LIST.dump_json([file_out(upload) for upload in page.items]), page.total

    body, total = await api.serve(UploadService, listed)
    return Response(body, media_type="application/json", headers={"total-count": str(total)})


@router.get(
    "/{uid}",
    operation_id="getFile",
    response_model=FileOut,
    summary="Get uploaded file record and metadata",
    responses=error_responses(*ORG_SCOPED_ERRORS, 404, s404="File is NOT FOUND for this organization"),
)
async def get_file(uid: str, api: ApiCallDep) -> Response:
    """The current state of one upload."""
    body = await api.serve(UploadService, lambda uploads: file_out(uploads.read(uid)).model_dump_json())
    return Response(body, media_type="application/json")


@router.post(
    "/{uid}/process",
    operation_id="processFile",
    response_model=FileOut,
    summary="Save the file's header mapping and queue it",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": 'Layout field to file column, e.g. {"UniqueID": "Student Number"}; '
                        'or {"fieldsMap": {...}, "valuesMap": {"Gender": {"Man": "M"}}}',
                        "additionalProperties": True,
                    }
                }
            },
        }
    },
    responses=error_responses(
        *ORG_SCOPED_ERRORS,
        404,
        408,
        413,
        s404="No such file",
        s422="Invalid mapping, or a file not waiting for one",
    ),
)
def process_file(uid: str, body: Annotated[bytes, Depends(raw_body)], uploads: UploadServiceDep) -> FileOut:
    """Map the file's columns (saved for later uploads with the same headers) and queue it."""
    mapping = parse_mapping_body(body)
    return file_out(uploads.process(uid, mapping))


@router.post(
    "/{uid}/cancel",
    operation_id="cancelFile",
    response_model=FileOut,
    summary="Cancel a file not yet processed",
    responses=error_responses(
        *ORG_SCOPED_ERRORS,
        404,
        413,
        s404="No such file",
        s422="This file status is [X] and cannot be canceled.",
    ),
)
def cancel_file(uid: str, uploads: UploadServiceDep) -> FileOut:
    """Cancel an upload that has not gone past `enqueued`."""
    return file_out(uploads.cancel(uid))


@router.get(
    "/{uid}/errors",
    operation_id="getFileErrors",
    summary="Download the file's row report (CSV: row, column, field, value, severity, code, message)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "One line per warning or rejected row"},
        **error_responses(*ORG_SCOPED_ERRORS, 404, s404="No such file, or not cleansed yet"),
    },
)
def get_file_errors(uid: str, uploads: ReadUploadServiceDep) -> StreamingResponse:
    """The warnings and rejections cleansing found, one CSV line each, rows numbered as in a spreadsheet."""
    file_name, stream = uploads.row_report(uid)
    return report_response(file_name, stream)


def report_response(file_name: str, stream: IO[bytes]) -> StreamingResponse:
    """A row report streamed as a CSV attachment."""

    def chunks() -> Iterator[bytes]:
        with stream:
            while chunk := stream.read(256 * 1024):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type=CSV_CONTENT_TYPE,
        headers={"content-disposition": f'attachment; filename="{file_name}"'},
    )
