"""`datalab worker`: pipeline stages run by procrastinate on PostgreSQL, in processes of their own.

API processes queue a procrastinate job in the transaction that changes an upload's status; workers share
nothing with them but PostgreSQL and the object store. A worker that dies is noticed by its missing
heartbeat: its jobs are retried by the next worker's stalled-job recovery, and the pipeline job's lease
makes sure a stage never runs twice at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from datetime import timedelta

import procrastinate
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from datalab.app import make_store
from datalab.db import make_engine, make_session_factory, transaction, upgrade_database
from datalab.pipeline.models import PipelineJob
from datalab.pipeline.runner import run_queued_job
from datalab.pipeline.service import (
    PROCRASTINATE_QUEUE,
    PROCRASTINATE_TASK,
    QUEUE_INFO_KEY,
    defer_job,
    ensure_procrastinate_schema,
    libpq_url,
)
from datalab.pipeline.stages import STAGE_FUNCTIONS, make_stage_context
from datalab.settings import Settings

log = logging.getLogger(__name__)


def requeue_unfinished(session_factory: sessionmaker[Session]) -> int:
    """Queue again every unfinished pipeline job that procrastinate has no waiting or running job for."""
    with transaction(session_factory) as db:
        queued = {
            int(job_id)
            for job_id in db.scalars(
                text(
                    "SELECT args->>'job_id' FROM procrastinate_jobs "
                    "WHERE task_name = :task AND status IN ('todo', 'doing')"
                ),
                {"task": PROCRASTINATE_TASK},
            )
        }
        unfinished = db.scalars(
            select(PipelineJob.id).where(PipelineJob.state.in_(("pending", "running")))
        ).all()
        missing = [job_id for job_id in unfinished if job_id not in queued]
        for job_id in missing:
            defer_job(db=db, job_id=job_id, at=None)
    return len(missing)


def run_worker(*, settings: Settings) -> None:
    """Run pipeline stages from procrastinate's queue until stopped (SIGINT or SIGTERM)."""
    engine = make_engine(settings.resolved_database_url)
    upgrade_database(engine)
    ensure_procrastinate_schema(engine)
    session_factory = make_session_factory(engine, info={QUEUE_INFO_KEY: "procrastinate"})
    requeued = requeue_unfinished(session_factory)
    if requeued:
        log.info("queued %s unfinished pipeline jobs again", requeued)
    context = make_stage_context(
        settings=settings, session_factory=session_factory, store=make_store(settings)
    )
    lease = timedelta(seconds=settings.pipeline_lease_seconds)
    name = f"{socket.gethostname()}:{os.getpid()}"
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=libpq_url(settings.resolved_database_url))
    )

    @app.task(name=PROCRASTINATE_TASK, queue=PROCRASTINATE_QUEUE)
    def run_pipeline_job(job_id: int) -> None:
        run_queued_job(
            context=context,
            stages=STAGE_FUNCTIONS,
            job_id=job_id,
            worker_id=f"{name}:{uuid.uuid4().hex[:8]}",
            lease=lease,
            max_attempts=settings.pipeline_max_attempts,
        )

    async def recover_stalled_jobs() -> None:
        while True:
            try:
                for job in await app.job_manager.get_stalled_jobs(
                    queue=PROCRASTINATE_QUEUE, seconds_since_heartbeat=lease.total_seconds()
                ):
                    log.warning("retrying pipeline job %s of a worker that stopped", job.id)
                    await app.job_manager.retry_job(job)
            except Exception:
                log.exception("stalled-job recovery failed; trying again")
            await asyncio.sleep(lease.total_seconds() / 2)

    async def work() -> None:
        async with app.open_async():
            recovery = asyncio.create_task(recover_stalled_jobs())
            try:
                await app.run_worker_async(
                    queues=[PROCRASTINATE_QUEUE],
                    name=name,
                    concurrency=max(settings.pipeline_workers, 1),
                    update_heartbeat_interval=lease.total_seconds() / 3,
                    stalled_worker_timeout=lease.total_seconds(),
                    fetch_job_polling_interval=settings.pipeline_poll_seconds,
                    delete_jobs="successful",
                )
            finally:
                recovery.cancel()

    try:
        asyncio.run(work())
    finally:
        engine.dispose()
