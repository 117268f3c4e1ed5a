"""The procrastinate engine of the pipeline queue (PostgreSQL): procrastinate alone holds these jobs.

Everything goes through procrastinate's public API. A stage is deferred on the connection of the
transaction that changes the upload's status (`configure(connection=...)`), so the job exists exactly
when the status change does. Its schema is installed by its schema manager, retries follow its retry
strategy, and the jobs of a worker that stopped sending heartbeats are retried by a periodic task
calling its job manager.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    import procrastinate
    from procrastinate.manager import JobManager

# The queue and task every stage job has; a job's arguments are its upload and stage.
# Set on a session factory's `info`: "procrastinate" when `datalab worker` processes run the stages.
QUEUE_INFO_KEY = "pipeline_queue"
STAGE_QUEUE = "pipeline"
STAGE_TASK = "datalab.run_pipeline_stage"
RECOVERY_TASK = "datalab.retry_stalled_pipeline_jobs"
# Webhook deliveries: a job per attempt, its argument the delivery's id.
WEBHOOK_QUEUE = "webhooks"
WEBHOOK_TASK = "datalab.deliver_webhook"

# Serializes concurrent installs of procrastinate's schema (any fixed 64-bit number would do).
_SCHEMA_LOCK = 0x6461_7461_6C61_62


@functools.cache
def _deferring_app() -> procrastinate.App:
    """The app API processes defer with, always on the caller's connection: its connector's pool is
    never opened. Made on first use, so that servers on the embedded queue never import procrastinate."""
    import procrastinate  # noqa: PLC0415

    return procrastinate.App(connector=procrastinate.SyncPsycopgConnector())


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL as the plain postgresql:// conninfo psycopg expects."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def upload_lock(upload_id: int) -> str:
    """The procrastinate lock of an upload's jobs: one stage of an upload runs at a time."""
    return f"upload-{upload_id}"


def defer_stage(*, db: Session, upload_id: int, stage: str) -> int:
    """Defer a stage to procrastinate in the session's transaction (committed with it, or not at all);
    the job's id."""
    connection = db.connection().connection.driver_connection
    return (
        _deferring_app()
        .configure_task(STAGE_TASK, queue=STAGE_QUEUE, lock=upload_lock(upload_id), connection=connection)
        .defer(upload_id=upload_id, stage=stage)
    )


def cancel_waiting_job(*, db: Session, job_id: int) -> bool:
    """Cancel and delete a job that no worker has taken yet, in the session's transaction.

    False when a worker already runs it (or it is gone): such a job finds its upload canceled and stops.
    """
    connection = db.connection().connection.driver_connection
    return _deferring_app().job_manager.cancel_job_by_id(job_id, delete_job=True, connection=connection)


def defer_delivery(*, db: Session, delivery_id: int, at: datetime | None = None) -> None:
    """Defer an attempt of a webhook delivery (at a time, or now) in the session's transaction."""
    connection = db.connection().connection.driver_connection
    _deferring_app().configure_task(
        WEBHOOK_TASK, queue=WEBHOOK_QUEUE, schedule_at=at, connection=connection
    ).defer(delivery_id=delivery_id)


@contextmanager
def open_job_manager(database_url: str) -> Iterator[JobManager]:
    """procrastinate's job manager on a connection of its own, for reading the queue."""
    import procrastinate  # noqa: PLC0415

    app = procrastinate.App(
        connector=procrastinate.SyncPsycopgConnector(conninfo=libpq_url(database_url), min_size=1, max_size=1)
    )
    with app.open() as opened:
        yield opened.job_manager


def install_schema(engine: Engine) -> None:
    """Install procrastinate's schema with its schema manager, unless it is there.

    Processes starting together wait for one another on an advisory lock held on a connection of ours.
    """
    import procrastinate  # noqa: PLC0415

    app = procrastinate.App(
        connector=procrastinate.SyncPsycopgConnector(
            conninfo=libpq_url(engine.url.render_as_string(hide_password=False)), min_size=1, max_size=1
        )
    )
    with engine.connect() as guard:
        guard.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK})
        try:
            with app.open() as installer:
                if not installer.check_connection():
                    installer.schema_manager.apply_schema()
        finally:
            guard.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK})
            guard.commit()


def recovery_cron(stall_seconds: float) -> str:
    """How often workers look for stalled jobs (a cron with seconds): every half stall timeout, or 30 s."""
    every = min(max(math.floor(stall_seconds / 2), 1), 30)
    return f"* * * * * */{every}"
