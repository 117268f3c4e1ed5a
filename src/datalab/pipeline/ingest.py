"""The `ingesting` stage: load the accepted rows into staging with each database's bulk path.

Cleansing wrote them as an Arrow stream of staging rows, one record batch per frame: PostgreSQL gets the
batches through COPY (each written in COPY's text format by polars) into its staging table; SQLite gets
each as Arrow through the ADBC SQLite driver into the upload's staging file. Both loads are in `staging`;
this stage uses them through its `Staging` interface.

The status moves to `processing` only once the load is complete (on PostgreSQL, in the load's own
transaction, after the upload's earlier staged rows were deleted in it; a SQLite staging file replaces any
earlier one only when complete), so a stage run again after a crash never duplicates a row.
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
    """Load the upload's cleansed rows into staging in place of any staged before; the rows loaded.

    PostgreSQL: in the transaction of the staging's session. SQLite: into the upload's staging file,
    outside it (see `staging`).
    """
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
        staging = staging_for(db)
        staging.discard_leftovers()
        in_status_transaction = staging.loads_in_status_transaction
    with ctx.session_factory() as db:
        # a staging file is written without holding the database's write lock
        staged = 0 if in_status_transaction else load_staging(ctx, staging_for(db), upload)
    with transaction(ctx.session_factory) as db:
        if in_status_transaction:
            staged = load_staging(ctx, staging_for(db), upload)
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
