"""The pipeline's entry points: stages are queued in the same transaction as the status change.

One queue interface, two engines, chosen per session factory (`QUEUE_INFO_KEY` in its `info`): the
embedded queue keeps a `PipelineJob` row per (upload, stage) for the server's own threads; procrastinate
(PostgreSQL) gets a job of its own from `pgqueue` and keeps every piece of its state itself.
"""

from __future__ import annotations

import threading
import weakref
from datetime import datetime
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from datalab.audit.models import PIPELINE
from datalab.audit.service import record
from datalab.lifecycle import UploadStatus, transition
from datalab.pipeline.models import STAGES, PipelineJob
from datalab.pipeline.pgqueue import QUEUE_INFO_KEY, cancel_waiting_job, defer_stage
from datalab.uploads.models import Upload
from datalab.webhooks.service import upload_status_changed

__all__ = [
    "QUEUE_INFO_KEY",
    "drop_waiting_stages",
    "enqueue_embedded",
    "enqueue_stage",
    "move_upload",
    "record_status_change",
    "wake_on_queued_stages",
]


# The wake-up events of this process's embedded runners: each is set when a transaction that queued a
# stage commits, so that idle workers look for the job at once rather than at their next poll.
_runner_wake_ups: weakref.WeakSet[threading.Event] = weakref.WeakSet()
_QUEUED_KEY = "embedded_stage_queued"


def wake_on_queued_stages(wake_up: threading.Event) -> None:
    """Set `wake_up` whenever a transaction of this process that queued an embedded stage commits."""
    _runner_wake_ups.add(wake_up)


@event.listens_for(Session, "after_commit")
def _announce_queued_stage(session: Session) -> None:
    if session.info.pop(_QUEUED_KEY, False):
        for wake_up in list(_runner_wake_ups):
            wake_up.set()


@event.listens_for(Session, "after_rollback")
def _forget_queued_stage(session: Session) -> None:
    session.info.pop(_QUEUED_KEY, None)


def enqueue_stage(*, db: Session, upload_id: int, stage: str, now: datetime) -> None:
    """Queue a stage for an upload in the caller's transaction, with the session's queue engine."""
    if stage not in STAGES:
        raise ValueError(f"unknown pipeline stage {stage!r}")
    if db.info.get(QUEUE_INFO_KEY) == "procrastinate":
        job_id = defer_stage(db=db, upload_id=upload_id, stage=stage)
        db.execute(update(Upload).where(Upload.id == upload_id).values(queue_job_id=job_id))
    else:
        enqueue_embedded(db=db, upload_id=upload_id, stage=stage, now=now)


def drop_waiting_stages(*, db: Session, upload: Upload, now: datetime) -> None:
    """Drop the upload's stages no worker has started, in the caller's transaction (a canceled upload).

    Both engines are cleared: a server may have queued the upload before its queue engine was changed.
    A stage already running finds the upload canceled and ends without doing anything.
    """
    db.execute(
        update(PipelineJob)
        .where(PipelineJob.upload_id == upload.id, PipelineJob.state == "pending")
        .values(state="done", finished_at=now)
    )
    if upload.queue_job_id is not None and db.get_bind().dialect.name == "postgresql":
        cancel_waiting_job(db=db, job_id=upload.queue_job_id)
        db.execute(update(Upload).where(Upload.id == upload.id).values(queue_job_id=None))


def enqueue_embedded(*, db: Session, upload_id: int, stage: str, now: datetime) -> PipelineJob:
    """Queue a stage for the embedded runner: a waiting job is kept, a finished one is queued again."""
    job = db.scalar(select(PipelineJob).where(PipelineJob.upload_id == upload_id, PipelineJob.stage == stage))
    if job is not None and job.state in ("pending", "running"):
        return job
    if job is None:
        job = PipelineJob(upload_id=upload_id, stage=stage, created_at=now, run_after=now)
        db.add(job)
    else:
        job.state, job.attempts, job.run_after, job.finished_at, job.locked_by = "pending", 0, now, None, None
    db.flush()
    db.info[_QUEUED_KEY] = True
    return job


def move_upload(
    *, db: Session, upload_id: int, from_status: str, status: str, now: datetime, **values: Any
) -> bool:
    """Change an upload's status if it is still `from_status` (False when something else moved it), and
    record the change in the audit trail.

    The move must be one the lifecycle has (InvalidTransitionError otherwise).
    """
    new = transition(from_status, status)
    moved = db.execute(
        update(Upload)
        .where(Upload.id == upload_id, Upload.status == UploadStatus(from_status).value)
        .values(status=new.value, updated_at=now, **values)
        .returning(Upload.organization_id, Upload.uid)
    ).first()
    if moved is None:
        return False
    record_status_change(
        db=db, organization_id=moved[0], upload_uid=moved[1], from_status=from_status, status=new, now=now
    )
    return True


def record_status_change(
    *, db: Session, organization_id: int, upload_uid: str, from_status: str, status: str, now: datetime
) -> None:
    """Record a status change the pipeline made, and queue its webhook deliveries."""
    record(
        db,
        action="upload.status_changed",
        organization_id=organization_id,
        now=now,
        channel=PIPELINE,
        target=("upload", upload_uid),
        detail={"from": UploadStatus(from_status).value, "to": UploadStatus(status).value},
    )
    upload_status_changed(
        db=db,
        organization_id=organization_id,
        upload_uid=upload_uid,
        from_status=UploadStatus(from_status).value,
        status=UploadStatus(status).value,
        now=now,
    )
