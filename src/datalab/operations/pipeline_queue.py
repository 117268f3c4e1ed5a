"""The pipeline queue's depth and age, read when metrics are scraped, from whichever engine runs it.

The queue is shared by every process, so one look at scrape time tells the truth whichever process
claims the jobs; nothing is kept in between. The embedded queue is read from `pipeline_jobs`; the
procrastinate queue through its job manager (its public API), with a job's waiting time counted from
the upload's last status change (the transaction that deferred the job) or from the retry time it was
scheduled for, since procrastinate's job records carry no time of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import utcnow
from datalab.pipeline.models import PipelineJob
from datalab.pipeline.pgqueue import STAGE_QUEUE, open_job_manager
from datalab.uploads.models import Upload

log = logging.getLogger(__name__)

# ready: waiting for a worker; scheduled: waiting for its retry time; running: claimed by a worker.
QUEUE_STATES = ("ready", "scheduled", "running")


def queue_snapshot(db: Session, now: datetime) -> tuple[dict[str, int], float]:
    """Jobs per queue state, and how long the oldest ready job has waited (seconds; 0 when none)."""
    state = case(
        (PipelineJob.state == "running", "running"),
        (PipelineJob.run_after <= now, "ready"),
        else_="scheduled",
    ).label("queue_state")
    rows = db.execute(
        select(state, func.count(), func.min(PipelineJob.run_after))
        .where(PipelineJob.state.in_(("pending", "running")))
        .group_by(state)
    ).all()
    counts = dict.fromkeys(QUEUE_STATES, 0)
    oldest_age = 0.0
    for name, count, earliest in rows:
        counts[name] = count
        if name == "ready" and earliest is not None:
            oldest_age = max(0.0, (now - earliest).total_seconds())
    return counts, oldest_age


def procrastinate_snapshot(db: Session, database_url: str, now: datetime) -> tuple[dict[str, int], float]:
    """What queue_snapshot tells, for the stage jobs procrastinate holds."""
    counts = dict.fromkeys(QUEUE_STATES, 0)
    with open_job_manager(database_url) as jobs:
        waiting = jobs.list_jobs(queue=STAGE_QUEUE, status="todo")
        counts["running"] = len(jobs.list_jobs(queue=STAGE_QUEUE, status="doing"))
    ready_since: dict[int, datetime | None] = {}
    for job in waiting:
        if job.scheduled_at is not None and job.scheduled_at > now:
            counts["scheduled"] += 1
            continue
        counts["ready"] += 1
        ready_since[int(str(job.task_kwargs["upload_id"]))] = job.scheduled_at
    if not ready_since:
        return counts, 0.0
    changes = select(Upload.id, Upload.updated_at).where(Upload.id.in_(ready_since))
    changed: dict[int, datetime] = dict(db.execute(changes).all())
    starts = [
        max(filter(None, (changed.get(upload_id), scheduled)), default=now)
        for upload_id, scheduled in ready_since.items()
    ]
    return counts, max(0.0, (now - min(starts)).total_seconds())


class PipelineQueueCollector:
    """A prometheus-client collector querying the queue at each scrape.

    `procrastinate_url` is the database URL when procrastinate runs the queue, else None.
    """

    def __init__(self, session_factory: sessionmaker[Session], procrastinate_url: str | None = None) -> None:
        self.session_factory = session_factory
        self.procrastinate_url = procrastinate_url
        # The failures a scrape survives; procrastinate is only imported by the servers it runs the queue of.
        self.unreadable: tuple[type[Exception], ...] = (SQLAlchemyError, OSError)
        if procrastinate_url is not None:
            from procrastinate.exceptions import ConnectorException  # noqa: PLC0415

            self.unreadable += (ConnectorException,)

    def collect(self) -> Iterable[Metric]:
        try:
            with self.session_factory() as db:
                if self.procrastinate_url is None:
                    counts, oldest_age = queue_snapshot(db, utcnow())
                else:
                    counts, oldest_age = procrastinate_snapshot(db, self.procrastinate_url, utcnow())
        except self.unreadable:
            # The scrape still answers with the processes' metrics; /readyz reports the database.
            log.warning("could not read the pipeline queue for metrics", exc_info=True)
            return []
        jobs = GaugeMetricFamily(
            "datalab_pipeline_jobs",
            "Pipeline jobs by queue state (ready: waiting for a worker; scheduled: waiting for its retry "
            "time; running: claimed by a worker).",
            labels=["state"],
        )
        for name in QUEUE_STATES:
            jobs.add_metric([name], counts[name])
        age = GaugeMetricFamily(
            "datalab_pipeline_oldest_ready_job_age_seconds",
            "How long the oldest ready pipeline job has waited for a worker (0 when none waits).",
            value=oldest_age,
        )
        return [jobs, age]
