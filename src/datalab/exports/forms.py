"""Exports published through a presigned POST form: the record first, listed once its file is complete.

The flow is the campus upload flow (`uploads/`): the record carries the form's token and expiry and a
server-chosen key; the embedded store's POST endpoint asks `ExportReceiver` before it accepts the file
and lets it make the export visible in the transaction that records it; on S3, which accepts the POST
without telling anyone, the sweeper (and an operator reading the export) looks for the object instead
(`reconcile_export`).
"""

from __future__ import annotations

import io
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from datalab.accounts.models import Organization, User
from datalab.db import new_uid, transaction
from datalab.exports.errors import (
    ExportError,
    ExportFormExpired,
    ExportNotFound,
    ExportWithdrawn,
    UnknownExportForm,
    WrongExportKey,
)
from datalab.exports.models import PRODUCT_KEYS, Export
from datalab.exports.naming import export_file_name
from datalab.exports.service import announce_export, data_rows, record_export_event
from datalab.scoping import OrgContext, across_organizations, scoped
from datalab.storage.base import ObjectInfo, ObjectStore, ObjectWriter

# A form used at the last second is still found; forms abandoned long ago are not looked at forever.
SWEEP_GRACE = timedelta(hours=1)
SWEEP_BATCH = 100


@dataclass(frozen=True)
class ExportForm:
    """A new export awaiting its file, and the presigned POST form the file is posted with."""

    export: Export
    url: str
    fields: dict[str, str]


def _awaiting_record(
    organization: Organization, product_key: str, order_name: str, *, now: datetime, by: User | None
) -> Export:
    """A new export of the organization with its server-chosen key and form token, and no file yet."""
    if product_key not in PRODUCT_KEYS:
        raise ExportError(f"productKey must be one of {', '.join(PRODUCT_KEYS)}, not {product_key!r}")
    file_name = export_file_name(
        product_key=product_key,
        organization_name=organization.name,
        fice=organization.fice,
        order_name=order_name,
        at=now,
    )
    list_path = new_uid()
    return Export(
        organization_id=organization.id,
        product_key=product_key,
        order_name=order_name,
        file_name=file_name,
        object_key=f"{organization.uid}/{product_key}/{list_path}/{file_name}",
        size_bytes=0,
        sha256="",
        quantity=0,
        list_path=list_path,
        created_by=by,
        created_at=now,
        form_token=secrets.token_urlsafe(32),
    )


def create_export_form(
    *,
    db: Session,
    store: ObjectStore,
    bucket: str,
    organization: Organization,
    product_key: str,
    order_name: str,
    base_url: str,
    ttl_seconds: int,
    max_size: int,
    now: datetime,
    by: User | None = None,
) -> ExportForm:
    """Record an export of the organization that is listed once its file arrives through the form."""
    export = _awaiting_record(organization, product_key, order_name, now=now, by=by)
    export.form_expires_at = now + timedelta(seconds=ttl_seconds)
    db.add(export)
    db.flush()
    record_export_event(
        db,
        export,
        "export.form_created",
        now=now,
        actor=by,
        detail={"productKey": product_key, "fileName": export.file_name},
    )
    form = store.presigned_post(
        bucket=bucket,
        key=export.object_key,
        base_url=base_url,
        session_token=export.form_token or "",
        expires_in=ttl_seconds,
        max_size=max_size,
        now=now,
    )
    return ExportForm(export=export, url=form["url"], fields=form["fields"])


class _Chunks(io.RawIOBase):
    """A store's stream read by chunks only: S3's body says it is closed once its last byte is read,
    which a text reader then takes for a closed file before it has parsed those bytes."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _count_records(store: ObjectStore, bucket: str, export: Export) -> int | str:
    """The file's records after its header row, or why it cannot be published."""
    try:
        with store.open_stream(bucket=bucket, key=export.object_key) as stream:
            rows = data_rows(io.BufferedReader(_Chunks(stream)), export.file_name)
            if next(rows, None) is None:
                return f"{export.file_name} is empty: an export needs at least a header row"
            return sum(1 for _ in rows)
    except ExportError as exc:
        return exc.message


def finish_export(
    *, db: Session, store: ObjectStore, bucket: str, export: Export, info: ObjectInfo, now: datetime
) -> None:
    """Publish an export whose file is complete in the store, or refuse a file that is not CSV.

    Either way the form is spent; a refused file is deleted and the reason recorded.
    """
    counted = _count_records(store, bucket, export)
    export.form_token = None
    if isinstance(counted, str):
        store.delete(bucket=bucket, key=export.object_key)
        db.flush()
        record_export_event(
            db,
            export,
            "export.refused",
            now=now,
            actor=export.created_by,
            detail={"fileName": export.file_name, "reason": counted},
            size_bytes=info.size,
        )
        return
    export.size_bytes, export.sha256, export.quantity = info.size, info.sha256, counted
    export.published_at = now
    db.flush()
    announce_export(db, export, actor=export.created_by, now=now)


def _awaiting(db: Session, export_id: int) -> Export | None:
    """The export, locked, when it still waits for its file."""
    return db.scalar(
        select(Export)
        .where(Export.id == export_id, Export.published_at.is_(None), Export.form_token.is_not(None))
        .with_for_update(of=Export)
    )


@dataclass
class ExportReceiver:
    """The embedded exports bucket's POST gate: accepts a verified form for an export awaiting its file."""

    session_factory: sessionmaker[Session]
    store: ObjectStore
    bucket: str

    def check(self, *, session_token: str | None, key: str, now: datetime) -> int:
        """The export id a verified form belongs to, or the S3 error a dead token gets."""
        with transaction(self.session_factory) as db:
            export = db.scalar(select(Export).where(Export.form_token == (session_token or "")))
            if export is None:
                raise UnknownExportForm("No export has this form's token", token=session_token or "")
            if export.withdrawn_at is not None or (export.form_expires_at or now) <= now:
                raise ExportFormExpired("The export no longer takes a file", token=session_token or "")
            if export.object_key != key:
                raise WrongExportKey("The form's key is not its export's")
            return export.id

    def complete(self, *, upload_id: int, writer: ObjectWriter, now: datetime) -> ObjectInfo:
        """Store the object and publish the export (`upload_id` is the export's id), in one transaction."""
        info: ObjectInfo | None = None
        try:
            with transaction(self.session_factory) as db:
                export = _awaiting(db, upload_id)
                if export is None:
                    raise ExportFormExpired("The export no longer takes a file", token="")
                info = writer.commit()
                finish_export(db=db, store=self.store, bucket=self.bucket, export=export, info=info, now=now)
        except BaseException:
            # Nothing was published: the bytes written, or the object stored, are nobody's.
            if info is None:
                writer.abort()
            else:
                self.store.delete(bucket=self.bucket, key=info.key)
            raise
        return info


def reconcile_export(*, db: Session, store: ObjectStore, bucket: str, export: Export, now: datetime) -> None:
    """On a store that does not report arrivals (S3): publish the export once its object is there."""
    if store.reports_uploads or export.published_at is not None or export.form_token is None:
        return
    info = store.info(bucket=bucket, key=export.object_key)
    if info is None or _awaiting(db, export.id) is None:
        return
    finish_export(db=db, store=store, bucket=bucket, export=export, info=info, now=now)


def sweep_exports(
    *, session_factory: sessionmaker[Session], store: ObjectStore, bucket: str, now: datetime
) -> int:
    """Reconcile the oldest exports awaiting their file through a live form; how many were published."""
    with transaction(session_factory) as db:
        ids = list(
            db.scalars(
                across_organizations(Export)
                .where(
                    Export.published_at.is_(None),
                    Export.form_token.is_not(None),
                    Export.form_expires_at > now - SWEEP_GRACE,
                )
                .order_by(Export.created_at)
                .limit(SWEEP_BATCH)
                .with_only_columns(Export.id)
            )
        )
    published = 0
    for export_id in ids:
        with transaction(session_factory) as db:
            export = db.get(Export, export_id)
            if export is None:
                continue
            reconcile_export(db=db, store=store, bucket=bucket, export=export, now=now)
            published += export.published_at is not None
    return published


def withdraw_export(*, db: Session, export: Export, now: datetime, by: User | None = None) -> Export:
    """Withdraw an export: no longer listed to its organization, its download URLs refused, its file kept
    for the audit trail's sake until retention removes it."""
    moved = db.execute(
        update(Export).where(Export.id == export.id, Export.withdrawn_at.is_(None)).values(withdrawn_at=now)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise ExportWithdrawn(export.uid)
    db.refresh(export)
    record_export_event(
        db,
        export,
        "export.withdrawn",
        now=now,
        actor=by,
        detail={"fileName": export.file_name, "productKey": export.product_key},
    )
    return export


def find_export(*, db: Session, organization: Organization, uid: str) -> Export:
    """Any export of the organization by uid, whatever its state (for operators)."""
    export = db.scalar(
        scoped(Export, OrgContext(user=None, organization=organization)).where(Export.uid == uid)
    )
    if export is None:
        raise ExportNotFound(uid)
    return export
