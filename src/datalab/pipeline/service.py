"""The pipeline's entry points: stages are queued in the same transaction as the status change."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from procrastinate.schema import SchemaManager
from sqlalchemy import Engine, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from datalab.audit.models import PIPELINE
from datalab.audit.service import record
from datalab.lifecycle import UploadStatus, transition
from datalab.pipeline.models import STAGES, PipelineJob
from datalab.uploads.models import Upload

# Set on a session factory's `info` when procrastinate workers run the stages instead of embedded threads.
QUEUE_INFO_KEY = "pipeline_queue"
PROCRASTINATE_QUEUE = "pipeline"
PROCRASTINATE_TASK = "datalab.run_pipeline_job"

_DEFER = text(
    "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, 0, NULL, NULL, "
    "CAST(:args AS jsonb), CAST(:at AS timestamptz))::procrastinate_job_to_defer_v1])"
)


# Serializes concurrent installs of procrastinate's schema (any fixed 64-bit number would do).
_SCHEMA_LOCK = 0x6461_7461_6C61_62


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL as the plain postgresql:// conninfo psycopg expects."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def ensure_procrastinate_schema(engine: Engine) -> None:
    """Install procrastinate's tables and functions unless they are there (the schema ships with it)."""
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        if connection.scalar(text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")):
            return
        driver = connection.connection.driver_connection
        driver.execute(SchemaManager.get_schema())  # type: ignore[union-attr]


def enqueue_stage(*, db: Session, upload_id: int, stage: str, now: datetime) -> PipelineJob:
    """Queue a stage for an upload: a waiting job is kept, a finished one is queued again."""
    if stage not in STAGES:
        raise ValueError(f"unknown pipeline stage {stage!r}")
    job = db.scalar(select(PipelineJob).where(PipelineJob.upload_id == upload_id, PipelineJob.stage == stage))
    if job is not None and job.state in ("pending", "running"):
        return job
    if job is None:
        job = PipelineJob(upload_id=upload_id, stage=stage, created_at=now, run_after=now)
        db.add(job)
    else:
        job.state, job.attempts, job.run_after, job.finished_at, job.locked_by = "pending", 0, now, None, None
    db.flush()
    defer_job(db=db, job_id=job.id, at=None)
    return job


def defer_job(*, db: Session, job_id: int, at: datetime | None) -> None:
    """Hand a job to procrastinate in the caller's transaction, when procrastinate runs the stages."""
    if db.info.get(QUEUE_INFO_KEY) != "procrastinate":
        return
    db.execute(
        _DEFER,
        {
            "queue": PROCRASTINATE_QUEUE,
            "task": PROCRASTINATE_TASK,
            "args": json.dumps({"job_id": job_id}),
            "at": at,
        },
    )


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
    """Record a status change the pipeline made."""
    record(
        db,
        action="upload.status_changed",
        organization_id=organization_id,
        now=now,
        channel=PIPELINE,
        target=("upload", upload_uid),
        detail={"from": UploadStatus(from_status).value, "to": UploadStatus(status).value},
    )
