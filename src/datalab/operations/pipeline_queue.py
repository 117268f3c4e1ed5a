"""The embedded pipeline queue's depth and age, read from `pipeline_jobs` when metrics are scraped.

The table is shared by every server process, so one query at scrape time tells the truth whichever
process claims the jobs; nothing is kept in between. (The procrastinate queue keeps its jobs in its
own tables: with it, these figures stay 0.)
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


class PipelineQueueCollector:
    """A prometheus-client collector querying the queue at each scrape."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterable[Metric]:
        try:
            with self.session_factory() as db:
                counts, oldest_age = queue_snapshot(db, utcnow())
        except SQLAlchemyError:
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
