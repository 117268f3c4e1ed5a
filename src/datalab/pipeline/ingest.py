"""The `ingesting` stage: load the accepted rows into staging with each database's bulk path.

Cleansing wrote them as an Arrow stream of staging rows, one record batch per frame. Both databases take
the batches as they are read, through an ADBC driver that binds Arrow's columns in C: PostgreSQL into its
staging table by binary COPY, SQLite into the upload's staging file. Both loads are in `staging`; this
stage uses them through its `Staging` interface.

A load replaces the upload's earlier staged rows whole, in a transaction (or a file) of its own, before
the transaction that moves the upload to `processing`: a stage run again after a crash loads them again
and never duplicates a row, and the rows of a load whose upload then failed are discarded by the next
ingest. On SQLite the load holds no lock of the main database; on PostgreSQL it holds none the status
change needs.
"""

from __future__ import annotations

from contextlib import closing

from datalab.db import transaction, utcnow
from datalab.lifecycle import UploadStatus
from datalab.pipeline.artifacts import staged_batches
from datalab.pipeline.keys import cleansed_key
from datalab.pipeline.readers import read_ahead
from datalab.pipeline.runner import ClaimedJob, StageContext, finish_job, upload_waiting
from datalab.pipeline.service import enqueue_stage, move_upload
from datalab.pipeline.staging import Staging, staging_for
from datalab.uploads.models import Upload


def load_staging(ctx: StageContext, staging: Staging, upload: Upload) -> int:
    """Load the upload's cleansed rows into staging in place of any staged before (outside the session's
    transaction, see `staging`); the rows loaded."""
    with (
        ctx.store.readable_path(
            bucket=ctx.uploads_bucket, key=cleansed_key(upload.uid), temp_dir=ctx.temp_dir
        ) as path,
        staged_batches(path) as batches,
        # the next batch is read and decompressed while one is loaded
        closing(read_ahead(batches)) as ahead,
    ):
        return staging.load(upload.id, ahead)


def ingest(ctx: StageContext, job: ClaimedJob) -> None:
    """Run the `ingesting` stage of one upload (a no-op when the upload is not waiting for it)."""
    with transaction(ctx.session_factory) as db:
        upload = upload_waiting(db=db, job=job, status=UploadStatus.INGESTING)
        if upload is None:
            return
        db.expunge(upload)
        staging_for(db).discard_leftovers()
    with ctx.session_factory() as db:
        staged = load_staging(ctx, staging_for(db), upload)
    with transaction(ctx.session_factory) as db:
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
