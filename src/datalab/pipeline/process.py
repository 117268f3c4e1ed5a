"""The `processing` stage: move the staged rows into the product's production tables, then `done`.

One transaction does it all (production rows, clearing staging, the status), so a crash leaves either
the finished result or the staged rows to process again (or, on SQLite, a staging file to load again from
the cleansed rows file, which is deleted only once the transaction has committed).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from datalab.db import transaction, utcnow
from datalab.lifecycle import UploadStatus
from datalab.pipeline.ingest import load_staging
from datalab.pipeline.keys import cleansed_key
from datalab.pipeline.runner import ClaimedJob, StageContext, finish_job, upload_waiting
from datalab.pipeline.service import move_upload
from datalab.pipeline.staging import Staging, staging_for
from datalab.records.service import Outputs, apply_affinity, apply_ematch, apply_enrollment
from datalab.uploads.models import Upload


def _apply(ctx: StageContext, db: Session, staging: Staging, upload: Upload) -> dict[str, Any]:
    """Move the upload's staged rows into its product's tables; what processing did, for `meta`."""
    if not staging.complete(upload.id, int(upload.meta["stagedRows"])):
        load_staging(ctx, staging, upload)
    now = utcnow()
    with staging.tables(upload.id) as staged:
        if upload.product_type == "enrollment":
            return apply_enrollment(db=db, upload=upload, staged=staged.rows, terms=staged.terms, now=now)
        if upload.product_type == "affinity":
            return apply_affinity(db=db, upload=upload, staged=staged.rows, now=now)
        outputs = Outputs(
            store=ctx.store, exports_bucket=ctx.exports_bucket, temp_dir=ctx.temp_dir, matcher=ctx.matcher
        )
        return apply_ematch(db=db, upload=upload, staged=staged.rows, outputs=outputs, now=now)


def process(ctx: StageContext, job: ClaimedJob) -> None:
    """Run the `processing` stage of one upload (a no-op when the upload is not waiting for it)."""
    with transaction(ctx.session_factory) as db:
        upload = upload_waiting(db=db, job=job, status=UploadStatus.PROCESSING)
        if upload is None:
            return
        staging = staging_for(db)
        outcome = _apply(ctx, db, staging, upload)
        move_upload(
            db=db,
            upload_id=upload.id,
            from_status=UploadStatus.PROCESSING,
            status=UploadStatus.DONE,
            now=utcnow(),
            meta={**upload.meta, **outcome},
        )
        finish_job(db=db, job=job, now=utcnow())
        # last: a SQLite staging file is deleted at once, not when the transaction commits
        staging.clear_processed(upload.id)
    # The rows are in the production tables now; the cleansed copy was the hand-off.
    ctx.store.delete(bucket=ctx.uploads_bucket, key=cleansed_key(upload.uid))
