"""Fresh databases for tests: a SQLite file, or a new PostgreSQL database when one is configured.

Migrated databases are copies of one template migrated once per test session (a SQLite file copied,
a PostgreSQL database created from a template database), not migrated again for every test.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import procrastinate
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from datalab.db import make_engine, upgrade_database
from datalab.pipeline.pgqueue import STAGE_QUEUE, STAGE_TASK, libpq_url

TEST_DATABASE_URL_ENV = "DATALAB_TEST_DATABASE_URL"


def postgres_url() -> str | None:
    """The PostgreSQL URL tests may create databases with, if configured."""
    return os.environ.get(TEST_DATABASE_URL_ENV) or None


class DatabaseFactory:
    """Hands out empty or migrated databases and drops the PostgreSQL ones at the end."""

    def __init__(self, base_url: str | None, template_directory: Path | None = None) -> None:
        self.base_url = base_url
        self.created: list[str] = []
        # Where the SQLite template is written (a new temporary directory if not given).
        self.template_directory = template_directory
        self._template: str | None = None

    def new_url(self, directory: Path) -> str:
        """An empty database's URL: a new SQLite file in directory, or a new PostgreSQL database."""
        if self.base_url is None:
            return f"sqlite:///{directory / 'datalab.db'}"
        return self._create_database()

    def migrated_url(self, directory: Path) -> str:
        """A migrated database's URL: a copy of the template in directory, or a database made from it."""
        template = self._migrated_template()
        if self.base_url is None:
            return _sqlite_copy(template, directory)
        return self._create_database(template=template)

    def copy_url(self, url: str, directory: Path) -> str:
        """A copy of a database this factory handed out, which nothing is connected to any more: its SQLite
        file copied into directory, or a new PostgreSQL database made from it."""
        database = make_url(url).database
        assert database is not None
        if self.base_url is None:
            return _sqlite_copy(database, directory)
        return self._create_database(template=database)

    def _migrated_template(self) -> str:
        """The template (a SQLite path or a PostgreSQL database name), migrated on first use."""
        if self._template is None:
            directory = self.template_directory or Path(tempfile.mkdtemp(prefix="datalab-template-"))
            url = self.new_url(directory)
            engine = make_engine(url)
            try:
                upgrade_database(engine)
            finally:
                engine.dispose()
            database = make_url(url).database
            assert database is not None
            self._template = database
        return self._template

    def _create_database(self, template: str | None = None) -> str:
        name = "datalab_test_" + secrets.token_hex(6)
        admin = create_engine(self.base_url or "", isolation_level="AUTOCOMMIT")
        clause = f' TEMPLATE "{template}"' if template else ""
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
        admin.dispose()
        self.created.append(name)
        return make_url(self.base_url or "").set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        """Drop every PostgreSQL database this factory created."""
        if self.base_url is None:
            return
        admin = create_engine(self.base_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for name in self.created:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _sqlite_copy(source: str, directory: Path) -> str:
    """The URL of a copy of the SQLite database at source, made in directory by SQLite's backup API.

    Copying the file alone would miss what still sits in its write-ahead log (the pages of transactions
    not yet checkpointed into the file, when a connection to it is still open somewhere in the process).
    """
    target = directory / "datalab.db"
    with closing(sqlite3.connect(source)) as origin, closing(sqlite3.connect(target)) as copy:
        origin.backup(copy)
    return f"sqlite:///{target}"


def queued_stage_jobs(database_url: str) -> list[tuple[str, dict[str, object]]]:
    """(status, arguments) of the pipeline stage jobs procrastinate holds, read through its job manager."""
    app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=libpq_url(database_url)))
    with app.open() as opened:
        jobs = sorted(
            opened.job_manager.list_jobs(queue=STAGE_QUEUE, task=STAGE_TASK), key=lambda job: job.id or 0
        )
        return [(str(job.status), dict(job.task_kwargs)) for job in jobs]
