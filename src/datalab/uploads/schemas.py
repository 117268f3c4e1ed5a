"""Request and response shapes of the File Upload API, as the documentation shows them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from datalab.bodies import parse_json_object
from datalab.errors import ApiError
from datalab.uploads.models import Upload

UPLOAD_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["fileName", "productType"],
    "properties": {
        "fileName": {"type": "string", "example": "file_to_upload.csv"},
        "productType": {"type": "string", "enum": ["enrollment", "affinity", "ematch", "legacy"]},
        "dataSource": {"type": "string", "example": "API", "description": "Also accepted as 'datasource'"},
        "fileDescription": {"type": "string"},
    },
}


@dataclass(frozen=True)
class UploadRequest:
    """What a client announces before uploading a file."""

    file_name: str
    product_type: str
    data_source: str
    file_description: str


def invalid_field(field: str, message: str) -> ApiError:
    """A 422 in upstream's validation shape for one body field."""
    return ApiError(
        422,
        "validation_error",
        f"{field}: {message}",
        detail=[{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )


def _text(fields: dict[str, Any], name: str, *aliases: str) -> str | None:
    for key in (name, *aliases):
        if key in fields:
            value = fields[key]
            if value is None:
                return None
            if not isinstance(value, str):
                raise invalid_field(name, "must be a string")
            return value
    return None


def parse_upload_request(raw: bytes) -> UploadRequest:
    """Read the create-record body: JSON whatever the Content-Type; unknown fields are ignored."""
    fields = parse_json_object(raw.decode("utf-8", errors="replace"), wanted="fileName and productType")
    file_name = _text(fields, "fileName")
    if file_name is None:
        raise invalid_field("fileName", "field required")
    product_type = _text(fields, "productType")
    if product_type is None:
        raise invalid_field("productType", "field required")
    return UploadRequest(
        file_name=file_name,
        product_type=product_type,
        data_source=_text(fields, "dataSource", "datasource", "DataSource") or "API",
        file_description=_text(fields, "fileDescription") or "",
    )


class UploadFormOut(BaseModel):
    id: str
    url: str
    fields: dict[str, str]


class FileOut(BaseModel):
    id: str
    fileName: str
    filePath: str
    productType: str
    status: str
    userName: str
    uploadDate: str
    recordVolume: int
    meta: dict[str, Any]
    fieldsMap: dict[str, Any] | None
    valuesMap: dict[str, Any] | None
    dataSource: str
    error: str | None


def upload_date(moment: datetime) -> str:
    """Upstream's uploadDate format: naive ISO 8601 UTC with microseconds."""
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds")


def file_out(upload: Upload) -> FileOut:
    """An upload record as GET /files/{id} shows it."""
    return FileOut(
        id=upload.uid,
        fileName=upload.file_name,
        filePath=upload.object_key,
        productType=upload.product_type,
        status=upload.status,
        userName=upload.user_name,
        uploadDate=upload_date(upload.created_at),
        recordVolume=upload.record_volume,
        meta=upload.meta,
        fieldsMap=upload.fields_map,
        valuesMap=upload.values_map,
        dataSource=upload.data_source,
        error=upload.error,
    )
