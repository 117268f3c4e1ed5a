"""Uploads: announcing a file, its presigned POST form, receiving it, and reading records back."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import IO, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from datalab.audit.service import record_for
from datalab.db import new_uid, transaction
from datalab.layouts import load_layout, missing_required
from datalab.lifecycle import CANCELABLE, UploadStatus, status_values, transition
from datalab.org_service import OrgService
from datalab.pagination import Page, paginate
from datalab.pipeline.keys import report_key
from datalab.pipeline.service import drop_waiting_stages, enqueue_stage
from datalab.scoping import OrgContext, scoped
from datalab.storage.base import ObjectInfo, ObjectStore, ObjectWriter
from datalab.uploads.errors import (
    InvalidField,
    InvalidListParameter,
    MappingProblems,
    ReportNotFound,
    UnknownUploadForm,
    UploadFormExpired,
    UploadNotFound,
    UploadStatusConflict,
    WrongUploadKey,
)
from datalab.uploads.mappings import save_mapping
from datalab.uploads.models import PRODUCT_TYPE_ALIASES, PRODUCT_TYPES, UPLOAD_STATUSES, Upload
from datalab.uploads.schemas import UploadRequest, invalid_field
from datalab.uploads.tasks import reconcile_upload, record_arrival
from datalab.webhooks.service import upload_status_changed

MAX_FILE_NAME_LENGTH = 255
ALLOWED_EXTENSIONS = {
    "enrollment": (".csv", ".xls", ".xlsx", ".txt", ".tsv", ".zip"),
    "affinity": (".csv",),
    "ematch": (".csv",),
}
SORT_COLUMNS = {
    "productType": Upload.product_type,
    "filePath": Upload.object_key,
    "id": Upload.uid,
    "status": Upload.status,
    "userName": Upload.user_name,
    "recordVolume": Upload.record_volume,
    "uploadDate": Upload.created_at,
}
DEFAULT_PAGE_SIZE = 20
_UNSAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class UploadForm:
    """A new upload record and the presigned POST form for its file."""

    upload: Upload
    url: str
    fields: dict[str, str]


def normalize_product_type(product_type: str) -> str:
    """The canonical product type ('legacy' is affinity), else a 422 naming the valid ones."""
    value = product_type.strip().lower()
    value = PRODUCT_TYPE_ALIASES.get(value, value)
    if value not in PRODUCT_TYPES:
        raise invalid_field(
            "productType",
            f"{product_type!r} is not a product type; use one of {', '.join(PRODUCT_TYPES)} (or legacy)",
        )
    return value


def check_file_name(*, file_name: str, product_type: str) -> tuple[str, str, str]:
    """The file's base name, a safe stem and its extension; a 422 when the product does not take the file."""
    base = re.split(r"[\\/]", file_name.strip())[-1].strip()
    if not base:
        raise invalid_field("fileName", "must not be empty")
    if len(base) > MAX_FILE_NAME_LENGTH:
        raise invalid_field("fileName", f"must be at most {MAX_FILE_NAME_LENGTH} characters")
    if any(ord(char) < 32 for char in base):
        raise invalid_field("fileName", "must not contain control characters")
    suffix = PurePosixPath(base).suffix.lower()
    allowed = ALLOWED_EXTENSIONS[product_type]
    if suffix not in allowed:
        raise invalid_field(
            "fileName", f"{product_type} files must end in {', '.join(allowed)}; {base!r} does not"
        )
    stem = _UNSAFE_STEM.sub("_", base[: -len(suffix)]).strip("._-")[:100] or "file"
    return base, stem, suffix


def create_upload(
    *,
    db: Session,
    store: ObjectStore,
    bucket: str,
    org: OrgContext,
    request: UploadRequest,
    base_url: str,
    ttl_seconds: int,
    max_size: int,
    now: datetime,
) -> UploadForm:
    """Record an announced file in `uploading` and sign the form its bytes must be posted with."""
    product_type = normalize_product_type(request.product_type)
    file_name, stem, suffix = check_file_name(file_name=request.file_name, product_type=product_type)
    if len(request.data_source) > 30:
        raise invalid_field("dataSource", "must be at most 30 characters")
    uid = new_uid()
    key = f"{org.organization.uid}/{product_type}/{uid}/{stem}.{int(now.timestamp())}{suffix}"
    token = secrets.token_urlsafe(32)
    upload = Upload(
        uid=uid,
        organization_id=org.organization.id,
        user_id=org.user.id if org.user else None,
        user_name=org.user.user_name if org.user else "",
        file_name=file_name,
        object_key=key,
        product_type=product_type,
        data_source=request.data_source.strip() or "API",
        file_description=request.file_description,
        form_token=token,
        form_expires_at=now + timedelta(seconds=ttl_seconds),
        created_at=now,
        updated_at=now,
    )
    db.add(upload)
    db.flush()
    record_for(
        db,
        org,
        action="upload.created",
        now=now,
        target=("upload", uid),
        detail={"fileName": file_name, "productType": product_type, "dataSource": upload.data_source},
    )
    form = store.presigned_post(
        bucket=bucket,
        key=key,
        base_url=base_url,
        session_token=token,
        expires_in=ttl_seconds,
        max_size=max_size,
        now=now,
    )
    return UploadForm(upload=upload, url=form["url"], fields=form["fields"])


def get_upload(*, db: Session, org: OrgContext, uid: str) -> Upload:
    """One of the organization's uploads, else upstream's 404 (also for other organizations' ids)."""
    upload = db.scalar(scoped(Upload, org).where(Upload.uid == uid))
    if upload is None:
        raise UploadNotFound(uid)
    return upload


def read_upload(
    *, db: Session, store: ObjectStore, bucket: str, org: OrgContext, uid: str, max_size: int, now: datetime
) -> Upload:
    """One of the organization's uploads, brought up to date first when the store does not report uploads."""
    upload = get_upload(db=db, org=org, uid=uid)
    reconcile_upload(db=db, store=store, bucket=bucket, upload=upload, max_size=max_size, now=now)
    return upload


def list_uploads(
    *,
    db: Session,
    org: OrgContext,
    status: str | None,
    product_type: str | None,
    sort_by: str | None,
    sort_direction: str | None,
    limit: int | None,
    offset: int,
) -> Page[Upload]:
    """The organization's uploads, filtered, sorted (default: newest first) and paged."""
    query = scoped(Upload, org)
    if status is not None:
        if status not in UPLOAD_STATUSES:
            raise InvalidListParameter(
                f"Invalid status {status!r}: valid values are {', '.join(UPLOAD_STATUSES)}",
                code="invalid_status",
            )
        query = query.where(Upload.status == status)
    if product_type is not None:
        try:
            value = normalize_product_type(product_type)
        except InvalidField:
            # A query parameter: a 400 like an unknown status, not the create body's 422 naming "body".
            raise InvalidListParameter(
                f"Invalid productType {product_type!r}: valid values are {', '.join(PRODUCT_TYPES)}, legacy",
                code="invalid_product_type",
            ) from None
        query = query.where(Upload.product_type == value)
    direction = (sort_direction or "DESC").upper()
    if direction not in {"ASC", "DESC"}:
        raise InvalidListParameter("sortDirection must be ASC or DESC", code="invalid_sort_direction")
    if sort_by is not None and sort_by not in SORT_COLUMNS:
        raise InvalidListParameter(f"sortBy must be one of {', '.join(SORT_COLUMNS)}", code="invalid_sort_by")
    column = SORT_COLUMNS[sort_by or "uploadDate"]
    ordered = query.order_by(column.asc() if direction == "ASC" else column.desc(), Upload.id.desc())
    return paginate(db=db, query=ordered, limit=DEFAULT_PAGE_SIZE if limit is None else limit, offset=offset)


@dataclass
class UploadReceiver:
    """The uploads bucket's gate: accepts a verified POST for an upload still in `uploading`, once."""

    session_factory: sessionmaker[Session]
    store: ObjectStore
    bucket: str

    def check(self, *, session_token: str | None, key: str, now: datetime) -> int:
        """The upload id a verified form belongs to, or the S3 error a dead token gets."""
        with transaction(self.session_factory) as db:
            upload = db.scalar(select(Upload).where(Upload.form_token == (session_token or "")))
            if upload is None:
                raise UnknownUploadForm("No upload has this form's token", token=session_token or "")
            if upload.status != UploadStatus.UPLOADING or upload.form_expires_at <= now:
                raise UploadFormExpired("The upload no longer takes a file", token=upload.form_token)
            if upload.object_key != key:
                raise WrongUploadKey("The form's key is not its upload's")
            return upload.id

    def complete(self, *, upload_id: int, writer: ObjectWriter, now: datetime) -> ObjectInfo:
        """Store the object and move the upload to `analyzing` with its size and checksum, atomically."""
        info: ObjectInfo | None = None
        try:
            with transaction(self.session_factory) as db:
                moved = db.execute(
                    update(Upload)
                    .where(Upload.id == upload_id, Upload.status == UploadStatus.UPLOADING.value)
                    .values(
                        status=UploadStatus.ANALYZING.value,
                        uploaded_at=now,
                        updated_at=now,
                        size_bytes=writer.size,
                    )
                )
                if moved.rowcount != 1:  # type: ignore[attr-defined]
                    writer.abort()
                    token = db.scalar(select(Upload.form_token).where(Upload.id == upload_id)) or ""
                    raise UploadFormExpired("The upload no longer takes a file", token=token)
                info = writer.commit()
                db.execute(
                    update(Upload).where(Upload.id == upload_id).values(sha256=info.sha256, etag=info.etag)
                )
                enqueue_stage(db=db, upload_id=upload_id, stage="analyze", now=now)
                record_arrival(db=db, upload=db.get_one(Upload, upload_id), size=writer.size, now=now)
        except BaseException:
            # The record did not move: an object stored under its key would be one nobody accepted.
            if info is not None:
                self.store.delete(bucket=self.bucket, key=info.key)
            raise
        return info


def _status_conflict(upload: Upload, action: str) -> UploadStatusConflict:
    return UploadStatusConflict(upload.status, action)


def cancel_upload(*, db: Session, org: OrgContext, uid: str, now: datetime) -> Upload:
    """Cancel an upload that has not gone past `enqueued`; its pending pipeline work is dropped."""
    upload = get_upload(db=db, org=org, uid=uid)
    previous = upload.status
    moved = db.execute(
        update(Upload)
        .where(Upload.id == upload.id, Upload.status.in_(status_values(CANCELABLE)))
        .values(status=UploadStatus.CANCELED.value, updated_at=now)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        db.refresh(upload)
        raise _status_conflict(upload, "canceled")
    db.refresh(upload)
    drop_waiting_stages(db=db, upload=upload, now=now)
    db.refresh(upload)
    record_for(db, org, action="upload.canceled", now=now, target=("upload", uid))
    upload_status_changed(
        db=db,
        organization_id=upload.organization_id,
        upload_uid=uid,
        from_status=previous,
        status=upload.status,
        now=now,
    )
    return upload


def process_upload(*, db: Session, org: OrgContext, uid: str, body: dict[str, Any], now: datetime) -> Upload:
    """Apply a {layoutField: fileHeader} mapping to an analyzed upload, save it for reuse, queue the file."""
    upload = get_upload(db=db, org=org, uid=uid)
    headers = [str(entry["name"]) for entry in upload.meta.get("headers", [])]
    # A failure can be mapped only when it came from analysis finding no complete mapping.
    waiting = upload.status == UploadStatus.FIELDS_MAPPING_REQUIRED or (
        upload.status == UploadStatus.FAILURE and upload.fields_map is None
    )
    if not waiting or not headers:
        raise _status_conflict(upload, "processed")
    fields_map, values_map = _mapping_body(body)
    problems = _mapping_problems(upload, headers, fields_map)
    if problems:
        raise MappingProblems(problems)
    save_mapping(
        db=db,
        org=org,
        product_type=upload.product_type,
        headers=headers,
        fields_map=fields_map,
        values_map=values_map,
        now=now,
    )
    return _queue_mapped(db, org, upload, fields_map=fields_map, values_map=values_map, now=now)


def _mapping_problems(upload: Upload, headers: list[str], fields_map: dict[str, str]) -> list[dict[str, Any]]:
    """What keeps a mapping from fitting the upload's layout and columns, in upstream's validation shape."""
    layout = load_layout(upload.product_type)
    known_fields = {field.name for field in layout.fields}
    problems = [
        {
            "loc": ["body", name],
            "msg": f"{name} is not a field of the {upload.product_type} layout",
            "type": "value_error",
        }
        for name in fields_map
        if name not in known_fields
    ] + [
        {"loc": ["body", name], "msg": f"the file has no column {header!r}", "type": "value_error"}
        for name, header in fields_map.items()
        if header not in headers
    ]
    missing = missing_required(layout, fields_map)
    if missing:
        problems.append(
            {
                "loc": ["body"],
                "msg": f"required fields left unmapped: {', '.join(missing)}",
                "type": "value_error",
            }
        )
    return problems


def _queue_mapped(
    db: Session,
    org: OrgContext,
    upload: Upload,
    *,
    fields_map: dict[str, str],
    values_map: dict[str, dict[str, str]],
    now: datetime,
) -> Upload:
    """Move a mapped upload to `enqueued` with its mapping, queue cleansing, and record the change."""
    uid = upload.uid
    meta = dict(upload.meta)
    meta["headersMap"] = [
        {**entry, "fileHeader": fields_map.get(str(entry["field"]))} for entry in meta.get("headersMap", [])
    ]
    previous = upload.status
    moved = db.execute(
        update(Upload)
        .where(Upload.id == upload.id, Upload.status == previous)
        .values(
            status=transition(previous, UploadStatus.ENQUEUED).value,
            error=None,
            fields_map=fields_map,
            values_map=values_map,
            meta=meta,
            updated_at=now,
        )
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        db.refresh(upload)
        raise _status_conflict(upload, "processed")
    enqueue_stage(db=db, upload_id=upload.id, stage="cleanse", now=now)
    db.refresh(upload)
    record_for(
        db,
        org,
        action="upload.processing_requested",
        now=now,
        target=("upload", uid),
        detail={"fields": len(fields_map)},
    )
    upload_status_changed(
        db=db,
        organization_id=upload.organization_id,
        upload_uid=uid,
        from_status=previous,
        status=upload.status,
        now=now,
    )
    return upload


def _mapping_body(body: dict[str, Any]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The older API's flat {field: header} body, or {"fieldsMap": {...}, "valuesMap": {...}}."""
    raw_fields = body.get("fieldsMap", body) if isinstance(body.get("fieldsMap"), dict) else body
    raw_values = body.get("valuesMap") if isinstance(body.get("fieldsMap"), dict) else None
    fields_map: dict[str, str] = {}
    for name, header in raw_fields.items():
        if header in (None, ""):
            continue
        if not isinstance(header, str):
            raise invalid_field(str(name), "must be the name of a column of the file")
        fields_map[str(name)] = header
    values_map: dict[str, dict[str, str]] = {}
    for name, values in (raw_values or {}).items():
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise invalid_field("valuesMap", f"{name} must map file values to layout values (strings)")
        values_map[str(name)] = {str(k): v for k, v in values.items()}
    return fields_map, values_map


def open_row_report(
    *, db: Session, org: OrgContext, store: ObjectStore, bucket: str, uid: str
) -> tuple[str, IO[bytes]]:
    """The row report of an upload (its file name and bytes), once cleansing has written it."""
    upload = get_upload(db=db, org=org, uid=uid)
    key = report_key(upload.uid)
    if upload.file_removed_at is not None:
        raise ReportNotFound(
            f"File with id: {uid} has no row report any more: its files were removed at the end of their "
            "retention period.",
        )
    if store.info(bucket=bucket, key=key) is None:
        raise ReportNotFound(
            f"File with id: {uid} has no row report yet: it is written when the file is cleansed "
            f"(status is now {upload.status}).",
        )
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(upload.file_name).stem) or "file"
    return f"{stem}-errors.csv", store.open_stream(bucket=bucket, key=key)


class UploadService(OrgService):
    """The uploads of one organization as one request works with them."""

    def create(self, request: UploadRequest) -> UploadForm:
        """Record an announced file in `uploading` and sign the form its bytes must be posted with."""
        return create_upload(
            db=self.db,
            store=self.store,
            bucket=self.settings.uploads_bucket,
            org=self.org,
            request=request,
            base_url=self.base_url,
            ttl_seconds=self.settings.upload_form_ttl_seconds,
            max_size=self.settings.max_upload_bytes,
            now=self.now,
        )

    def list(
        self,
        *,
        status: str | None = None,
        product_type: str | None = None,
        sort_by: str | None = None,
        sort_direction: str | None = None,
        limit: int | None,
        offset: int,
    ) -> Page[Upload]:
        """The organization's uploads, filtered, sorted (default: newest first) and paged."""
        return list_uploads(
            db=self.db,
            org=self.org,
            status=status,
            product_type=product_type,
            sort_by=sort_by,
            sort_direction=sort_direction,
            limit=limit,
            offset=offset,
        )

    def get(self, uid: str) -> Upload:
        """One of the organization's uploads, else UploadNotFound."""
        return get_upload(db=self.db, org=self.org, uid=uid)

    def read(self, uid: str) -> Upload:
        """One of the organization's uploads, its arrival noticed first when the store does not report it."""
        return read_upload(
            db=self.db,
            store=self.store,
            bucket=self.settings.uploads_bucket,
            org=self.org,
            uid=uid,
            max_size=self.settings.max_upload_bytes,
            now=self.now,
        )

    def process(self, uid: str, body: dict[str, Any]) -> Upload:
        """Apply a mapping to an analyzed upload, save it for reuse, and queue the file."""
        return process_upload(db=self.db, org=self.org, uid=uid, body=body, now=self.now)

    def cancel(self, uid: str) -> Upload:
        """Cancel an upload that has not gone past `enqueued`."""
        return cancel_upload(db=self.db, org=self.org, uid=uid, now=self.now)

    def row_report(self, uid: str) -> tuple[str, IO[bytes]]:
        """The upload's row report: its file name and bytes."""
        return open_row_report(
            db=self.db, org=self.org, store=self.store, bucket=self.settings.uploads_bucket, uid=uid
        )
