"""The `ingesting` stage: load the accepted rows into staging with each database's bulk path.

Cleansing wrote them as an Arrow stream of staging rows, one record batch per frame: PostgreSQL gets the
batches through COPY (each written in COPY's text format by polars) into its staging table; SQLite gets
each with one executemany into the upload's staging file (see `staging`).

The status moves to `processing` only once the load is complete (on PostgreSQL, in the load's own
transaction, after the upload's earlier staged rows were deleted in it; a SQLite staging file replaces any
earlier one only when complete), so a stage run again after a crash never duplicates a row.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from datalab.db import transaction, utcnow
from datalab.lifecycle import UploadStatus
from datalab.pipeline.artifacts import staged_frames
from datalab.pipeline.keys import cleansed_key
from datalab.pipeline.runner import ClaimedJob, StageContext, finish_job, upload_waiting
from datalab.pipeline.service import enqueue_stage, move_upload
from datalab.pipeline.staging import (
    clear_staged,
    copy_rows,
    leftover_staging,
    uses_staging_files,
    write_staging_file,
)
from datalab.uploads.models import Upload

# The statuses of uploads whose staged rows a stage may still read.
_STAGING_STATUSES = (UploadStatus.INGESTING, UploadStatus.PROCESSING)


def load_staging(ctx: StageContext, db: Session, upload: Upload) -> int:
    """Load the upload's cleansed rows into staging in place of any staged before; the rows loaded.

    PostgreSQL: in the session's transaction. SQLite: into the upload's staging file, outside it (see
    `staging`).
    """
    with (
        ctx.store.readable_path(
            bucket=ctx.uploads_bucket, key=cleansed_key(upload.uid), temp_dir=ctx.temp_dir
        ) as path,
        staged_frames(path) as frames,
    ):
        if uses_staging_files(db):
            return write_staging_file(db, upload.id, frames)
        clear_staged(db, upload.id)
        return copy_rows(db, upload.id, frames)


def _discard_leftovers(db: Session) -> None:
    """Delete staging files of uploads that no stage will read again (a crash came between a processing
    commit and the file's deletion, or the upload was canceled)."""
    live = set(db.scalars(select(Upload.id).where(Upload.status.in_(_STAGING_STATUSES))))
    for path in leftover_staging(db, live):
        path.unlink(missing_ok=True)


def ingest(ctx: StageContext, job: ClaimedJob) -> None:
    """Run the `ingesting` stage of one upload (a no-op when the upload is not waiting for it)."""
    with transaction(ctx.session_factory) as db:
        upload = upload_waiting(db=db, job=job, status=UploadStatus.INGESTING)
        if upload is None:
            return
        db.expunge(upload)
        in_files = uses_staging_files(db)
        if in_files:
            _discard_leftovers(db)
    with ctx.session_factory() as db:
        # a staging file is written without holding the database's write lock
        staged = load_staging(ctx, db, upload) if in_files else 0
    with transaction(ctx.session_factory) as db:
        if not in_files:
            staged = load_staging(ctx, db, upload)
        now = utcnow()
        moved = move_upload(
            db=db,
            upload_id=upload.id,
            from_status=UploadStatus.INGESTING,
            status=UploadStatus.PROCESSING,
            now=now,
            meta={**upload.meta, "stagedRows": staged},
        )
        if moved:
            enqueue_stage(db=db, upload_id=upload.id, stage="process", now=now)
        finish_job(db=db, job=job, now=now)
