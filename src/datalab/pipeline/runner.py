"""The embedded pipeline runner: worker threads inside the server claiming jobs from the database.

A job is claimed with one conditional UPDATE (SQLite serializes writers with BEGIN IMMEDIATE; PostgreSQL
picks candidates with FOR UPDATE SKIP LOCKED) and leased: a heartbeat keeps the lease while the stage
runs, and a job whose lease ran out, because its process died, is claimed again. Stages are idempotent,
so running one twice changes nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import transaction, utcnow
from datalab.pipeline.models import PipelineJob
from datalab.storage.base import ObjectStore
from datalab.students.matching import Matcher
from datalab.uploads.models import Upload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker holds the lease of."""

    id: int
    upload_id: int
    stage: str
    attempts: int
    worker_id: str


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
    *, session_factory: sessionmaker[Session], worker_id: str, lease: timedelta, now: datetime
) -> ClaimedJob | None:
    """Take the oldest claimable job (pending, or running with an expired lease), or None."""
    with transaction(session_factory) as db:
        candidates = select(PipelineJob.id).where(_claimable(now)).order_by(PipelineJob.id).limit(1)  # type: ignore[arg-type]
        if db.get_bind().dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        job_id = db.scalar(candidates)
        if job_id is None:
            return None
        row = db.execute(
            update(PipelineJob)
            .where(PipelineJob.id == job_id, _claimable(now))  # type: ignore[arg-type]
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
        return ClaimedJob(id=job_id, upload_id=row[0], stage=row[1], attempts=row[2], worker_id=worker_id)


def finish_job(*, db: Session, job: ClaimedJob, now: datetime) -> None:
    """Mark the job done, in the transaction that made its stage's change."""
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
            db.execute(
                update(PipelineJob)
                .where(PipelineJob.id == job.id, PipelineJob.locked_by == job.worker_id)
                .values(
                    state="pending",
                    last_error=detail,
                    lease_until=None,
                    run_after=now + timedelta(seconds=5 * 2 ** (job.attempts - 1)),
                )
            )
            return
        db.execute(
            update(PipelineJob)
            .where(PipelineJob.id == job.id, PipelineJob.locked_by == job.worker_id)
            .values(state="failed", last_error=detail, lease_until=None, finished_at=now)
        )
        # The person who uploaded gets a reason they can act on, not a stack trace.
        db.execute(
            update(Upload)
            .where(Upload.id == job.upload_id, Upload.status.not_in(("done", "failure", "canceled")))
            .values(
                status="failure",
                updated_at=now,
                error=f"The file could not be processed ({job.stage} failed {job.attempts} times); "
                "please upload it again, and contact support if this keeps happening.",
            )
        )


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
        prefix = f"{socket.gethostname()}:{os.getpid()}"
        self._threads = [
            threading.Thread(
                target=self._work, args=(f"{prefix}:{index}",), name=f"pipeline-{index}", daemon=True
            )
            for index in range(workers)
        ]

    def start(self) -> None:
        """Start the worker threads."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Ask the workers to stop after their current job and wait for them."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def run_one(self, worker_id: str) -> bool:
        """Claim and run one job; False when there was nothing to do."""
        job = claim_job(
            session_factory=self.context.session_factory, worker_id=worker_id, lease=self.lease, now=utcnow()
        )
        if job is None:
            return False
        stage = self.stages.get(job.stage)
        heartbeat_stop = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(job, heartbeat_stop), daemon=True)
        heartbeat.start()
        try:
            if stage is None:
                raise LookupError(f"no stage named {job.stage!r}")
            stage(self.context, job)
        except Exception as exc:
            log.exception("pipeline stage %s of upload %s failed", job.stage, job.upload_id)
            _give_up_or_retry(
                session_factory=self.context.session_factory,
                job=job,
                error=exc,
                max_attempts=self.max_attempts,
                now=utcnow(),
            )
        finally:
            heartbeat_stop.set()
            heartbeat.join()
        return True

    def _heartbeat(self, job: ClaimedJob, stopped: threading.Event) -> None:
        while not stopped.wait(self.lease.total_seconds() / 3):
            try:
                _extend_lease(session_factory=self.context.session_factory, job=job, lease=self.lease)
            except Exception:
                log.exception("could not extend the lease of pipeline job %s", job.id)

    def _work(self, worker_id: str) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_one(worker_id)
            except Exception:
                # The database may be briefly unavailable; keep the worker alive and try again.
                log.exception("pipeline worker %s could not claim work", worker_id)
                busy = False
            if not busy:
                self._stop.wait(self.poll_seconds)
