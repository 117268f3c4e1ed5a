"""Shared fixtures: fresh databases (SQLite, or PostgreSQL when configured) and live servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from datalab import db
from tests.support.databases import TEST_DATABASE_URL_ENV, DatabaseFactory, postgres_url
from tests.support.server import LiveServer, MovableClock, server_env

ServerFactory = Callable[..., LiveServer]


def pytest_report_header() -> str:
    url = postgres_url()
    return (
        f"database: PostgreSQL from {TEST_DATABASE_URL_ENV}"
        if url
        else f"database: SQLite (set {TEST_DATABASE_URL_ENV} to run the suite on PostgreSQL)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if postgres_url():
        return
    skip = pytest.mark.skip(reason=f"{TEST_DATABASE_URL_ENV} is not set: PostgreSQL-only test not run")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(postgres_url(), tmp_path_factory.mktemp("template"))
    yield factory
    factory.drop_all()


@contextmanager
def _servers(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[ServerFactory]:
    """A factory of seeded servers with DATALAB_* settings (and other variables), stopped on exit.

    Servers run in a thread of the test process unless `own_process` (or environment variables or
    serve arguments) asks for a `datalab serve` process.
    """
    started: list[LiveServer] = []

    def start(
        environment: dict[str, str] | None = None,
        serve_args: tuple[str, ...] = (),
        own_process: bool = False,
        **settings: str,
    ) -> LiveServer:
        home = tmp_path_factory.mktemp("server")
        database_url = database_factory.migrated_url(home)
        # Pipeline workers only where a test asks for them: the others observe each hand-off as it is left.
        settings.setdefault("pipeline_workers", "0")
        extra = {f"DATALAB_{name.upper()}": value for name, value in settings.items()} | (environment or {})
        server = LiveServer(
            home=home,
            database_url=database_url,
            env=server_env(home=home, database_url=database_url, extra=extra),
            serve_args=serve_args,
            # Other environment variables (and serve arguments) only reach a process of its own.
            own_process=own_process or bool(environment) or bool(serve_args),
        )
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def make_server(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[ServerFactory]:
    """Start servers for one test module; they are stopped when the module is done, which keeps the
    number of live servers (and of their database connections) bounded however long the suite is."""
    with _servers(tmp_path_factory, database_factory) as start:
        yield start


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[LiveServer]:
    """The shared demo server; tests that change accounts or settings start their own."""
    with _servers(tmp_path_factory, database_factory) as start:
        yield start()


@pytest.fixture
def server_clock(monkeypatch: pytest.MonkeyPatch) -> MovableClock:
    """The clock of every server running in the test process, moved forward by the test."""
    clock = MovableClock()
    monkeypatch.setattr(db, "clock", clock)
    return clock


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path
