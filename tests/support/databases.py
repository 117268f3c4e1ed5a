"""Fresh databases for tests: a SQLite file, or a new PostgreSQL database when one is configured."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import procrastinate
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from datalab.pipeline.pgqueue import STAGE_QUEUE, STAGE_TASK, libpq_url

TEST_DATABASE_URL_ENV = "DATALAB_TEST_DATABASE_URL"


def postgres_url() -> str | None:
    """The PostgreSQL URL tests may create databases with, if configured."""
    return os.environ.get(TEST_DATABASE_URL_ENV) or None


class DatabaseFactory:
    """Hands out empty databases and drops the PostgreSQL ones at the end."""

    def __init__(self, base_url: str | None) -> None:
        self.base_url = base_url
        self.created: list[str] = []

    def new_url(self, directory: Path) -> str:
        """An empty database's URL: a new SQLite file in directory, or a new PostgreSQL database."""
        if self.base_url is None:
            return f"sqlite:///{directory / 'datalab.db'}"
        name = "datalab_test_" + secrets.token_hex(6)
        admin = create_engine(self.base_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.created.append(name)
        return make_url(self.base_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        """Drop every PostgreSQL database this factory created."""
        if self.base_url is None:
            return
        admin = create_engine(self.base_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for name in self.created:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def queued_stage_jobs(database_url: str) -> list[tuple[str, dict[str, object]]]:
    """(status, arguments) of the pipeline stage jobs procrastinate holds, read through its job manager."""
    app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=libpq_url(database_url)))
    with app.open() as opened:
        jobs = sorted(
            opened.job_manager.list_jobs(queue=STAGE_QUEUE, task=STAGE_TASK), key=lambda job: job.id or 0
        )
        return [(str(job.status), dict(job.task_kwargs)) for job in jobs]
