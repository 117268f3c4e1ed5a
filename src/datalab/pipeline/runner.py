"""The embedded pipeline runner: worker threads inside the server claiming jobs from the database.

A job is claimed with one conditional UPDATE (SQLite serializes writers with BEGIN IMMEDIATE; PostgreSQL
picks candidates with FOR UPDATE SKIP LOCKED) and leased: a heartbeat keeps the lease while the stage
runs, and a job whose lease ran out, because its process died, is claimed again. Stages are idempotent,
so running one twice changes nothing.

Hand-written because it runs on SQLite too, which job queue libraries such as procrastinate do not
support; on PostgreSQL, procrastinate can run the stages instead (`pgqueue`, `worker`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import first_unclaimed, transaction, utcnow
from datalab.lifecycle import TERMINAL, UploadStatus, status_values
from datalab.operations.metrics import observe_stage
from datalab.pipeline.models import PipelineJob
from datalab.pipeline.service import move_upload, record_status_change, wake_on_queued_stages
from datalab.pipeline.staging import preload_bulk_driver
from datalab.storage.base import ObjectStore
from datalab.uploads.models import Upload

if TYPE_CHECKING:
    from datalab.pipeline.readers import ReadError
    from datalab.students.matching import Matcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker runs: a leased `PipelineJob` row, or a procrastinate job (`leased` False).

    `attempts` counts this run: 1 the first time.
    """

    id: int
    upload_id: int
    stage: str
    attempts: int
    worker_id: str
    # A procrastinate job's state is procrastinate's: it marks the job done when the stage returns.
    leased: bool = True


@dataclass(frozen=True)
class StageContext:
    """What a stage needs besides its job: database, object store, temp space, matcher and limits."""

    session_factory: sessionmaker[Session]
    store: ObjectStore
    uploads_bucket: str
    exports_bucket: str
    temp_dir: Path
    matcher: Matcher
    max_rejected_percent: float


StageFunction = Callable[[StageContext, ClaimedJob], None]


def _claimable(now: datetime) -> object:
    return or_(
        and_(PipelineJob.state == "pending", PipelineJob.run_after <= now),
        and_(PipelineJob.state == "running", PipelineJob.lease_until < now),
    )


def claim_job(
    *,
    session_factory: sessionmaker[Session],
    worker_id: str,
    lease: timedelta,
    now: datetime,
) -> ClaimedJob | None:
    """Take the oldest claimable job (pending, or running with an expired lease), or None."""
    with transaction(session_factory) as db:
        candidate = first_unclaimed(
            db,
            select(PipelineJob.id).where(_claimable(now)).order_by(PipelineJob.id).limit(1),  # type: ignore[arg-type]
        )
        if candidate is None:
            return None
        claimed_id = candidate.id
        row = db.execute(
            update(PipelineJob)
            .where(PipelineJob.id == claimed_id, _claimable(now))  # type: ignore[arg-type]
            .values(
                state="running",
                locked_by=worker_id,
                lease_until=now + lease,
                attempts=PipelineJob.attempts + 1,
            )
            .returning(PipelineJob.upload_id, PipelineJob.stage, PipelineJob.attempts)
        ).first()
        if row is None:
            return None
        return ClaimedJob(id=claimed_id, upload_id=row[0], stage=row[1], attempts=row[2], worker_id=worker_id)


def upload_waiting(*, db: Session, job: ClaimedJob, status: str) -> Upload | None:
    """The job's upload if it is in `status`; otherwise the stage has nothing to do: the job is finished."""
    upload = db.get(Upload, job.upload_id)
    if upload is None or upload.status != status:
        finish_job(db=db, job=job, now=utcnow())
        return None
    return upload


def fail_unreadable(*, context: StageContext, job: ClaimedJob, upload: Upload, error: ReadError) -> None:
    """End an upload whose file cannot be read in `failure`, with the reader's code, message and row."""
    with transaction(context.session_factory) as db:
        move_upload(
            db=db,
            upload_id=upload.id,
            from_status=upload.status,
            status=UploadStatus.FAILURE,
            now=utcnow(),
            error=error.message,
            meta={**upload.meta, "errorCode": error.code, "errorRow": error.row},
        )
        finish_job(db=db, job=job, now=utcnow())


def finish_job(*, db: Session, job: ClaimedJob, now: datetime) -> None:
    """Mark the job done, in the transaction that made its stage's change."""
    if not job.leased:
        return
    db.execute(
        update(PipelineJob)
        .where(PipelineJob.id == job.id, PipelineJob.locked_by == job.worker_id)
        .values(state="done", finished_at=now, lease_until=None)
    )


def _extend_lease(*, session_factory: sessionmaker[Session], job: ClaimedJob, lease: timedelta) -> None:
    with transaction(session_factory) as db:
        db.execute(
            update(PipelineJob)
            .where(
                PipelineJob.id == job.id,
                PipelineJob.locked_by == job.worker_id,
                PipelineJob.state == "running",
            )
            .values(lease_until=utcnow() + lease)
        )


def give_up(*, db: Session, job: ClaimedJob, now: datetime) -> None:
    """End the job's upload in `failure` after its last attempt.

    The person who uploaded gets a reason they can act on, not a stack trace; the change is recorded
    in the audit trail like every status the pipeline sets.
    """
    previous = db.execute(
        select(Upload.organization_id, Upload.uid, Upload.status).where(
            Upload.id == job.upload_id, Upload.status.not_in(status_values(TERMINAL))
        )
    ).first()
    if previous is None:
        return
    failed = db.execute(
        update(Upload)
        .where(Upload.id == job.upload_id, Upload.status == previous.status)
        .values(
            status=UploadStatus.FAILURE.value,
            updated_at=now,
            error=f"The file could not be processed ({job.stage} failed {job.attempts} times); "
            "please upload it again, and contact support if this keeps happening.",
        )
    )
    if failed.rowcount != 1:  # type: ignore[attr-defined]
        return
    record_status_change(
        db=db,
        organization_id=previous.organization_id,
        upload_uid=previous.uid,
        from_status=previous.status,
        status=UploadStatus.FAILURE,
        now=now,
    )


def _give_up_or_retry(
    *,
    session_factory: sessionmaker[Session],
    job: ClaimedJob,
    error: Exception,
    max_attempts: int,
    now: datetime,
) -> None:
    detail = f"{type(error).__name__}: {error}"[:2000]
    with transaction(session_factory) as db:
        if job.attempts < max_attempts:
            run_after = now + timedelta(seconds=5 * 2 ** (job.attempts - 1))
            db.execute(
                update(PipelineJob)
                .where(PipelineJob.id == job.id, PipelineJob.locked_by == job.worker_id)
                .values(state="pending", last_error=detail, lease_until=None, run_after=run_after)
            )
            return
        db.execute(
            update(PipelineJob)
            .where(PipelineJob.id == job.id, PipelineJob.locked_by == job.worker_id)
            .values(state="failed", last_error=detail, lease_until=None, finished_at=now)
        )
        give_up(db=db, job=job, now=now)


def run_claimed(
    *,
    context: StageContext,
    stages: dict[str, StageFunction],
    job: ClaimedJob,
    lease: timedelta,
    max_attempts: int,
) -> None:
    """Run a claimed job's stage while a heartbeat keeps its lease; a failure is retried or given up."""
    stopped = threading.Event()

    def heartbeat() -> None:
        while not stopped.wait(lease.total_seconds() / 3):
            try:
                _extend_lease(session_factory=context.session_factory, job=job, lease=lease)
            except Exception:
                log.exception("could not extend the lease of pipeline job %s", job.id)

    beating = threading.Thread(target=heartbeat, name=f"lease-{job.id}", daemon=True)
    beating.start()
    started = time.perf_counter()
    failed = False
    try:
        stage = stages.get(job.stage)
        if stage is None:
            raise LookupError(f"no stage named {job.stage!r}")
        stage(context, job)
    except Exception as exc:
        failed = True
        log.exception("pipeline stage %s of upload %s failed", job.stage, job.upload_id)
        _give_up_or_retry(
            session_factory=context.session_factory,
            job=job,
            error=exc,
            max_attempts=max_attempts,
            now=utcnow(),
        )
    finally:
        observe_stage(
            stage=job.stage if job.stage in stages else "unknown",
            failed=failed,
            seconds=time.perf_counter() - started,
        )
        stopped.set()
        beating.join()


class EmbeddedRunner:
    """Worker threads running pipeline stages until stopped."""

    def __init__(
        self,
        *,
        context: StageContext,
        stages: dict[str, StageFunction],
        workers: int,
        poll_seconds: float,
        lease_seconds: float,
        max_attempts: int,
    ) -> None:
        self.context = context
        self.stages = stages
        self.poll_seconds = poll_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self._stop = threading.Event()
        self._wake_up = threading.Event()
        wake_on_queued_stages(self._wake_up)
        prefix = f"{socket.gethostname()}:{os.getpid()}"
        self._threads = [
            threading.Thread(
                target=self._work, args=(f"{prefix}:{index}",), name=f"pipeline-{index}", daemon=True
            )
            for index in range(workers)
        ]

    def start(self) -> None:
        """Start the worker threads."""
        preload_bulk_driver(self.context.session_factory)
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Ask the workers to stop after their current job and wait for them."""
        self._stop.set()
        self._wake_up.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def run_one(self, worker_id: str) -> bool:
        """Claim and run one job; False when there was nothing to do."""
        job = claim_job(
            session_factory=self.context.session_factory, worker_id=worker_id, lease=self.lease, now=utcnow()
        )
        if job is None:
            return False
        run_claimed(
            context=self.context,
            stages=self.stages,
            job=job,
            lease=self.lease,
            max_attempts=self.max_attempts,
        )
        return True

    def _work(self, worker_id: str) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_one(worker_id)
            except Exception:
                # The database may be briefly unavailable; keep the worker alive and try again.
                log.exception("pipeline worker %s could not claim work", worker_id)
                busy = False
            if not busy and self._wake_up.wait(self.poll_seconds):
                self._wake_up.clear()
