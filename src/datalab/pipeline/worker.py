"""`datalab worker`: pipeline stages run by procrastinate on PostgreSQL, in processes of their own.

API processes defer a procrastinate job in the transaction that changes an upload's status; workers share
nothing with them but PostgreSQL and the object store. Procrastinate alone keeps the jobs' state: it
retries a failed stage with its retry strategy, and a periodic task of every worker retries the jobs
of workers whose heartbeat stopped (a worker killed mid-stage). Stages are idempotent, so a stage run
again after such a crash changes nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import procrastinate
from procrastinate import JobContext, RetryStrategy
from prometheus_client import start_http_server
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import make_engine, make_session_factory, transaction, upgrade_database, utcnow
from datalab.operations.metrics import observe_stage
from datalab.pipeline.models import PipelineJob
from datalab.pipeline.pgqueue import (
    RECOVERY_TASK,
    STAGE_QUEUE,
    STAGE_TASK,
    WEBHOOK_QUEUE,
    WEBHOOK_TASK,
    defer_stage,
    install_schema,
    libpq_url,
    recovery_cron,
)
from datalab.pipeline.runner import ClaimedJob, StageContext, StageFunction, give_up
from datalab.pipeline.service import QUEUE_INFO_KEY
from datalab.pipeline.stages import STAGE_FUNCTIONS, make_stage_context
from datalab.pipeline.staging import preload_bulk_driver
from datalab.runtime import make_store
from datalab.settings import Settings
from datalab.webhooks.sealing import seal_plaintext_secrets
from datalab.webhooks.tasks import attempt_delivery, defer_unfinished, lease_for, make_client, sending_for

log = logging.getLogger(__name__)

# Seconds between a stage's failed attempt and the next: 5, then 10, 15… (procrastinate's linear wait).
RETRY_WAIT_SECONDS = 5


def hand_over_embedded_jobs(session_factory: sessionmaker[Session]) -> int:
    """Defer to procrastinate every stage the embedded queue still holds (the queue engine was switched).

    Each row is closed in the transaction that defers its job, so a stage is never lost nor queued twice.
    A job still leased to a live embedded thread is left to it.
    """
    now = utcnow()
    with transaction(session_factory) as db:
        waiting = db.scalars(
            select(PipelineJob)
            .where(
                or_(
                    PipelineJob.state == "pending",
                    and_(PipelineJob.state == "running", PipelineJob.lease_until < now),
                )
            )
            .with_for_update(skip_locked=True)
        ).all()
        for job in waiting:
            defer_stage(db=db, upload_id=job.upload_id, stage=job.stage)
            job.state, job.finished_at, job.lease_until = "done", now, None
    return len(waiting)


def run_stage_job(
    *, context: StageContext, stages: dict[str, StageFunction], job: ClaimedJob, max_attempts: int
) -> None:
    """Run a procrastinate job's stage; if its last attempt fails, the upload ends in `failure`.

    The error is raised again either way: procrastinate records it and retries the job or fails it.
    """
    started = time.perf_counter()
    try:
        stage = stages.get(job.stage)
        if stage is None:
            raise LookupError(f"no stage named {job.stage!r}")
        stage(context, job)
    except Exception:
        observe_stage(stage=job.stage, failed=True, seconds=time.perf_counter() - started)
        log.exception("pipeline stage %s of upload %s failed", job.stage, job.upload_id)
        if job.attempts >= max_attempts:
            with transaction(context.session_factory) as db:
                give_up(db=db, job=job, now=utcnow())
        raise
    observe_stage(stage=job.stage, failed=False, seconds=time.perf_counter() - started)


def add_webhook_task(
    app: procrastinate.App, *, settings: Settings, session_factory: sessionmaker[Session], name: str
) -> None:
    """Register the task sending one attempt of a webhook delivery.

    A failed attempt defers the next one itself (with the webhook backoff), so procrastinate never
    retries it.
    """

    @app.task(name=WEBHOOK_TASK, queue=WEBHOOK_QUEUE)
    def deliver_webhook(delivery_id: int) -> None:
        with make_client(settings.webhook_timeout_seconds) as client:
            sent = attempt_delivery(
                session_factory=session_factory,
                client=client,
                sending=sending_for(settings),
                sender=name,
                lease=lease_for(settings.webhook_timeout_seconds),
                retry_waits=settings.webhook_retry_seconds,
                delivery_id=delivery_id,
            )
        if not sent:
            defer_unfinished(session_factory=session_factory, delivery_id=delivery_id)


def make_worker_app(
    *, settings: Settings, context: StageContext, stages: dict[str, StageFunction], name: str
) -> procrastinate.App:
    """The worker's procrastinate app: the stage task with its retry strategy, webhook deliveries, and
    stalled-job recovery."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=libpq_url(settings.resolved_database_url))
    )
    max_attempts = settings.pipeline_max_attempts
    stall_seconds = settings.pipeline_lease_seconds

    # procrastinate counts the retries before this run in `attempts`; the strategy's maximum is retries.
    @app.task(
        name=STAGE_TASK,
        queue=STAGE_QUEUE,
        pass_context=True,
        retry=RetryStrategy(
            max_attempts=max_attempts - 1, wait=RETRY_WAIT_SECONDS, linear_wait=RETRY_WAIT_SECONDS
        )
        if max_attempts > 1
        else False,
    )
    def run_pipeline_stage(job_context: JobContext, upload_id: int, stage: str) -> None:
        job = job_context.job
        claimed = ClaimedJob(
            id=job.id or 0,
            upload_id=upload_id,
            stage=stage,
            attempts=job.attempts + 1,
            worker_id=name,
            leased=False,
        )
        run_stage_job(context=context, stages=stages, job=claimed, max_attempts=max_attempts)

    add_webhook_task(app, settings=settings, session_factory=context.session_factory, name=name)

    # Recovery jobs outrank stage jobs, so a free slot of any worker takes them first; the queueing lock
    # keeps at most one waiting while every slot is busy.
    @app.periodic(cron=recovery_cron(stall_seconds), periodic_id="stalled")
    @app.task(name=RECOVERY_TASK, queue=STAGE_QUEUE, priority=100, queueing_lock=RECOVERY_TASK)
    async def retry_stalled_jobs(timestamp: int) -> None:
        for queue, task in ((STAGE_QUEUE, STAGE_TASK), (WEBHOOK_QUEUE, WEBHOOK_TASK)):
            for stalled in await app.job_manager.get_stalled_jobs(
                queue=queue, task_name=task, seconds_since_heartbeat=stall_seconds
            ):
                log.warning("retrying %s: its worker stopped", stalled.call_string)
                await app.job_manager.retry_job(stalled)

    return app


def run_worker(*, settings: Settings) -> None:
    """Run pipeline stages from procrastinate's queue until stopped (SIGINT or SIGTERM)."""
    engine = make_engine(settings.resolved_database_url)
    upgrade_database(engine)
    install_schema(engine)
    session_factory = make_session_factory(engine, info={QUEUE_INFO_KEY: "procrastinate"})
    seal_plaintext_secrets(session_factory=session_factory, box=sending_for(settings).box)
    handed_over = hand_over_embedded_jobs(session_factory)
    if handed_over:
        log.info("deferred %s stages the embedded queue held", handed_over)
    context = make_stage_context(
        settings=settings, session_factory=session_factory, store=make_store(settings)
    )
    preload_bulk_driver(session_factory)
    name = f"{socket.gethostname()}:{os.getpid()}"
    app = make_worker_app(settings=settings, context=context, stages=STAGE_FUNCTIONS, name=name)
    stall_seconds = settings.pipeline_lease_seconds
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)

    async def work() -> None:
        async with app.open_async():
            await app.run_worker_async(
                queues=[STAGE_QUEUE, WEBHOOK_QUEUE],
                name=name,
                concurrency=max(settings.pipeline_workers, 1),
                update_heartbeat_interval=stall_seconds / 3,
                stalled_worker_timeout=stall_seconds,
                fetch_job_polling_interval=settings.pipeline_poll_seconds,
                delete_jobs="successful",
            )

    try:
        asyncio.run(work())
    finally:
        engine.dispose()
