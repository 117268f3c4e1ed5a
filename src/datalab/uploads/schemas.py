"""Request and response shapes of the File Upload API, as the documentation shows them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, TypeAdapter

from datalab.bodies import parse_json_object
from datalab.record_out import record_out
from datalab.uploads.errors import InvalidField
from datalab.uploads.models import Upload

# Longest text accepted in each field of the create-record body (the file name is checked again, after
# its directory part is dropped, against the stored limit of 255).
FIELD_LIMITS = {"fileName": 1024, "productType": 64, "dataSource": 30, "fileDescription": 2000}
# Mapping bodies: longest layout field name, file column name or coded value, and most entries.
MAX_MAPPING_TEXT = 255
MAX_MAPPING_ENTRIES = 1000

UPLOAD_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["fileName", "productType"],
    "properties": {
        "fileName": {
            "type": "string",
            "example": "file_to_upload.csv",
            "maxLength": FIELD_LIMITS["fileName"],
        },
        "productType": {"type": "string", "enum": ["enrollment", "affinity", "ematch", "legacy"]},
        "dataSource": {
            "type": "string",
            "example": "API",
            "description": "Also accepted as 'datasource'",
            "maxLength": FIELD_LIMITS["dataSource"],
        },
        "fileDescription": {"type": "string", "maxLength": FIELD_LIMITS["fileDescription"]},
    },
}


@dataclass(frozen=True)
class UploadRequest:
    """What a client announces before uploading a file."""

    file_name: str
    product_type: str
    data_source: str
    file_description: str


def invalid_field(field: str, message: str) -> InvalidField:
    """A 422 in upstream's validation shape for one body field."""
    return InvalidField(field, message)


def _text(fields: dict[str, Any], name: str, *aliases: str) -> str | None:
    for key in (name, *aliases):
        if key in fields:
            value = fields[key]
            if value is None:
                return None
            if not isinstance(value, str):
                raise invalid_field(name, "must be a string")
            if len(value) > FIELD_LIMITS[name]:
                raise invalid_field(name, f"must be at most {FIELD_LIMITS[name]} characters")
            return value
    return None


def parse_upload_request(raw: bytes) -> UploadRequest:
    """Read the create-record body: JSON whatever the Content-Type; unknown fields are ignored."""
    fields = parse_json_object(raw, wanted="fileName and productType")
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


def _mapping_text(value: str, where: str) -> None:
    if len(value) > MAX_MAPPING_TEXT:
        raise invalid_field(where[:MAX_MAPPING_TEXT], f"must be at most {MAX_MAPPING_TEXT} characters")


def parse_mapping_body(raw: bytes) -> dict[str, Any]:
    """Read a process body: the flat {field: column} form or {"fieldsMap": {...}, "valuesMap": {...}}.

    Shapes and sizes are checked here (422 naming the field); what the names mean is the service's.
    """
    body = parse_json_object(raw, wanted="{layoutField: fileHeader}")
    nested = isinstance(body.get("fieldsMap"), dict)
    fields_map: dict[str, Any] = body["fieldsMap"] if nested else body
    values_map = body.get("valuesMap") if nested else None
    if nested and values_map is not None and not isinstance(values_map, dict):
        raise invalid_field("valuesMap", "must be an object of {field: {fileValue: layoutValue}}")
    if len(fields_map) > MAX_MAPPING_ENTRIES:
        raise invalid_field("fieldsMap", f"must have at most {MAX_MAPPING_ENTRIES} fields")
    for name, header in fields_map.items():
        _mapping_text(name, "fieldsMap")
        if isinstance(header, str):
            _mapping_text(header, name)
    for name, values in (values_map or {}).items():
        _mapping_text(name, "valuesMap")
        if not isinstance(values, dict):
            raise invalid_field(
                "valuesMap", f"{name[:MAX_MAPPING_TEXT]} must map file values to layout values"
            )
        if len(values) > MAX_MAPPING_ENTRIES:
            raise invalid_field("valuesMap", f"must have at most {MAX_MAPPING_ENTRIES} values per field")
        for value_from, value_to in values.items():
            _mapping_text(value_from, "valuesMap")
            if isinstance(value_to, str):
                _mapping_text(value_to, "valuesMap")
    return body


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


# Serializes a list page straight to JSON bytes (what the list route sends).
FILE_LIST = TypeAdapter(list[FileOut])


def upload_date(moment: datetime) -> str:
    """Upstream's uploadDate format: naive ISO 8601 UTC with microseconds."""
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds")


def file_out(upload: Upload) -> FileOut:
    """An upload record as GET /files/{id} shows it."""
    return record_out(
        FileOut,
        upload,
        id=upload.uid,
        filePath=upload.object_key,
        uploadDate=upload_date(upload.created_at),
    )
