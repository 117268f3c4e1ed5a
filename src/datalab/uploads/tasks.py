"""Background work for uploads on stores that do not report uploads themselves (S3).

S3 accepts the POST without telling us, so the server looks: a periodic sweep of `uploading` records,
and a look when a record is read. It then reads the object itself to check size and checksum instead
of trusting the store's own enforcement of the form.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from datalab.accounts.models import User
from datalab.audit.service import record
from datalab.db import transaction, utcnow
from datalab.lifecycle import UploadStatus
from datalab.pipeline.service import enqueue_stage
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


def purge_canceled_files(
    *,
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    bucket: str,
    cutoff: datetime,
    now: datetime,
) -> int:
    """Remove the files of uploads canceled before the cutoff; returns how many were removed."""
    with transaction(session_factory) as db:
        expired = db.execute(
            across_organizations(Upload)
            .where(
                Upload.status == UploadStatus.CANCELED.value,
                Upload.file_removed_at.is_(None),
                Upload.updated_at < cutoff,
            )
            .order_by(Upload.updated_at)
            .limit(SWEEP_BATCH)
            .with_only_columns(Upload.id, Upload.object_key)
        ).all()
    for upload_id, key in expired:
        store.delete(bucket=bucket, key=key)
        with transaction(session_factory) as db:
            db.execute(update(Upload).where(Upload.id == upload_id).values(file_removed_at=now))
    return len(expired)


class UploadSweeper:
    """A daemon thread that, every interval until stopped, finds arrived uploads (on stores that do not
    report them) and removes the files of uploads canceled longer ago than the retention period."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        bucket: str,
        max_size: int,
        interval_seconds: float,
        canceled_retention: timedelta,
    ) -> None:
        self.session_factory = session_factory
        self.canceled_retention = canceled_retention
        self.store = store
        self.bucket = bucket
        self.max_size = max_size
        self.interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upload-sweeper", daemon=True)

    def start(self) -> None:
        """Begin sweeping in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current sweep."""
        self._stop.set()
        self._thread.join(timeout=30)

    def sweep_once(self, *, now: datetime) -> None:
        """One round of the sweeper's work."""
        if not self.store.reports_uploads:
            sweep_uploads(
                session_factory=self.session_factory,
                store=self.store,
                bucket=self.bucket,
                max_size=self.max_size,
                now=now,
            )
        purge_canceled_files(
            session_factory=self.session_factory,
            store=self.store,
            bucket=self.bucket,
            cutoff=now - self.canceled_retention,
            now=now,
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            try:
                self.sweep_once(now=utcnow())
            except Exception:
                # A store or database hiccup must not end the sweeper; the next round retries.
                log.exception("upload sweep failed")
