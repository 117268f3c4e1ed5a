"""Background work for uploads: arrivals on stores that do not report them, and removing old files.

S3 accepts the POST without telling us, so the server looks: a periodic sweep of `uploading` records,
and a look when a record is read. It then reads the object itself to check size and checksum instead
of trusting the store's own enforcement of the form. Files of uploads that ended long enough ago are
removed (`purge_files`), their records kept.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from datalab.accounts.models import User
from datalab.audit.service import record
from datalab.db import transaction
from datalab.lifecycle import UploadStatus
from datalab.pipeline.keys import cleansed_key, report_key
from datalab.pipeline.service import enqueue_stage
from datalab.retention import DueFiles, remove_due_files
from datalab.scoping import across_organizations
from datalab.storage.base import ObjectStore, StreamDigest
from datalab.uploads.models import Upload
from datalab.webhooks.service import upload_status_changed

log = logging.getLogger(__name__)
READ_CHUNK = 1024 * 1024
SWEEP_BATCH = 100
# A form used at the last second is still found; forms abandoned long ago are not re-checked forever.
SWEEP_GRACE = timedelta(hours=1)


def reconcile_upload(
    *, db: Session, store: ObjectStore, bucket: str, upload: Upload, max_size: int, now: datetime
) -> None:
    """Move an `uploading` record on once its object arrived: to `analyzing`, or `failure` if it is bad."""
    if store.reports_uploads or upload.status != UploadStatus.UPLOADING:
        return
    info = store.info(bucket=bucket, key=upload.object_key)
    if info is None:
        return
    digest = StreamDigest()
    with store.open_stream(bucket=bucket, key=upload.object_key) as stream:
        while chunk := stream.read(READ_CHUNK):
            digest.update(chunk)
    problem = None
    if digest.size != info.size:
        problem = f"the stored object changed while it was verified ({digest.size} of {info.size} bytes read)"
    elif not 1 <= digest.size <= max_size:
        problem = f"the file is {digest.size} bytes; uploads must be 1 to {max_size} bytes"
    values: dict[str, object] = {
        "updated_at": now,
        "uploaded_at": now,
        "size_bytes": digest.size,
        "sha256": digest.sha256,
        "etag": digest.etag,
    }
    if problem is None:
        values["status"] = UploadStatus.ANALYZING.value
    else:
        values.update(status=UploadStatus.FAILURE.value, error=f"Upload rejected: {problem}.")
    moved = db.execute(
        update(Upload)
        .where(Upload.id == upload.id, Upload.status == UploadStatus.UPLOADING.value)
        .values(**values)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return
    if problem is None:
        enqueue_stage(db=db, upload_id=upload.id, stage="analyze", now=now)
    else:
        store.delete(bucket=bucket, key=upload.object_key)
    db.refresh(upload)
    record_arrival(db=db, upload=upload, size=digest.size, now=now, problem=problem)


def record_arrival(
    *, db: Session, upload: Upload, size: int, now: datetime, problem: str | None = None
) -> None:
    """Record that an upload's file arrived (from its uploader), accepted or refused with a reason, and
    queue the webhook deliveries of its move out of `uploading`."""
    record(
        db,
        action="upload.received" if problem is None else "upload.refused",
        organization_id=upload.organization_id,
        now=now,
        actor=db.get(User, upload.user_id) if upload.user_id is not None else None,
        target=("upload", upload.uid),
        detail={"fileName": upload.file_name} | ({"reason": problem} if problem else {}),
        size_bytes=size,
    )
    upload_status_changed(
        db=db,
        organization_id=upload.organization_id,
        upload_uid=upload.uid,
        from_status=UploadStatus.UPLOADING.value,
        status=(UploadStatus.ANALYZING if problem is None else UploadStatus.FAILURE).value,
        now=now,
    )


def sweep_uploads(
    *, session_factory: sessionmaker[Session], store: ObjectStore, bucket: str, max_size: int, now: datetime
) -> int:
    """Reconcile the oldest `uploading` records; returns how many moved on."""
    with transaction(session_factory) as db:
        ids = list(
            db.scalars(
                across_organizations(Upload)
                .where(
                    Upload.status == UploadStatus.UPLOADING.value, Upload.form_expires_at > now - SWEEP_GRACE
                )
                .order_by(Upload.created_at)
                .limit(SWEEP_BATCH)
                .with_only_columns(Upload.id)
            )
        )
    moved = 0
    for upload_id in ids:
        with transaction(session_factory) as db:
            upload = db.scalar(select(Upload).where(Upload.id == upload_id))
            if upload is None:
                continue
            reconcile_upload(db=db, store=store, bucket=bucket, upload=upload, max_size=max_size, now=now)
            moved += upload.status != UploadStatus.UPLOADING
    return moved


def purge_files(
    *,
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    bucket: str,
    statuses: tuple[UploadStatus, ...],
    cutoff: datetime,
    now: datetime,
) -> int:
    """Remove the files (upload and row report) of uploads in `statuses` since before the cutoff; how many.

    The record stays, with the time its files were removed; the audit trail says so.
    """
    return remove_due_files(
        session_factory=session_factory,
        store=store,
        bucket=bucket,
        due=across_organizations(Upload)
        .where(
            Upload.status.in_([status.value for status in statuses]),
            Upload.file_removed_at.is_(None),
            Upload.updated_at < cutoff,
        )
        .order_by(Upload.updated_at)
        .limit(SWEEP_BATCH)
        .with_only_columns(Upload.id, Upload.uid, Upload.organization_id, Upload.object_key),
        due_files=lambda row: DueFiles(
            record_id=row.id,
            uid=row.uid,
            organization_id=row.organization_id,
            keys=(row.object_key, report_key(row.uid), cleansed_key(row.uid)),
        ),
        mark_removed=lambda upload_id: (
            update(Upload).where(Upload.id == upload_id).values(file_removed_at=now)
        ),
        action="upload.files_removed",
        now=now,
    )
