"""The `processing` stage: move the staged rows into the product's production tables, then `done`.

One transaction does it all (production rows, clearing staging, the status), so a crash leaves either
the finished result or the staged rows to process again.
"""

from __future__ import annotations

from typing import Any

from datalab.db import transaction, utcnow
from datalab.lifecycle import UploadStatus
from datalab.pipeline.runner import ClaimedJob, StageContext, finish_job, upload_waiting
from datalab.pipeline.service import move_upload
from datalab.pipeline.staging import clear_processed
from datalab.records.service import Outputs, apply_affinity, apply_ematch, apply_enrollment


def process(ctx: StageContext, job: ClaimedJob) -> None:
    """Run the `processing` stage of one upload (a no-op when the upload is not waiting for it)."""
    with transaction(ctx.session_factory) as db:
        upload = upload_waiting(db=db, job=job, status=UploadStatus.PROCESSING)
        if upload is None:
            return
        now = utcnow()
        outcome: dict[str, Any]
        if upload.product_type == "enrollment":
            outcome = apply_enrollment(db=db, upload=upload, now=now)
        elif upload.product_type == "affinity":
            outcome = apply_affinity(db=db, upload=upload, now=now)
        else:
            outputs = Outputs(
                store=ctx.store, exports_bucket=ctx.exports_bucket, temp_dir=ctx.temp_dir, matcher=ctx.matcher
            )
            outcome = apply_ematch(db=db, upload=upload, outputs=outputs, now=now)
        clear_processed(db, upload.id)
        move_upload(
            db=db,
            upload_id=upload.id,
            from_status=UploadStatus.PROCESSING,
            status=UploadStatus.DONE,
            now=now,
            meta={**upload.meta, **outcome},
        )
        finish_job(db=db, job=job, now=utcnow())
