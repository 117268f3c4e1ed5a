"""Shared fixtures: fresh databases (SQLite, or PostgreSQL when configured), in-process apps and live servers.

Functional tests run in one of two tiers, each on a copy of the demo seeded once per session:

- The in-process tier (`api`, `make_app`): the app called through Starlette's TestClient, for request and
  response behaviour: status codes, bodies, headers, validation, authentication, scoping, stored rows.
  Its clock is `server_clock`'s: tests move it rather than sleep.
- The live tier (`server`, `make_server`): a real server on a socket (a thread, or a `datalab serve`
  process), for what only a real server shows: the wire contract (raw bytes, connections, timeouts),
  crashes and restarts, concurrency and overload, browsers, and CLI and SDK clients over the network.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import httpcore2
import pytest
from argon2 import PasswordHasher, profiles

from datalab import db
from datalab.accounts import security
from datalab.runtime import make_store
from datalab.settings import Settings
from tests.support.databases import TEST_DATABASE_URL_ENV, DatabaseFactory, postgres_url
from tests.support.inprocess import InProcessApp
from tests.support.server import DemoAccount, Deployment, LiveServer, MovableClock, server_env, settings_of

if TYPE_CHECKING:
    from tests.support.moto import MotoServer

ServerFactory = Callable[..., LiveServer]
AppFactory = Callable[..., InProcessApp]


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


@pytest.fixture(scope="session", autouse=True)
def cheapest_password_hashes() -> Iterator[None]:
    """Argon2id with argon2-cffi's CHEAPEST parameters in the test process (its servers, seeding, CLI runs).

    The production parameters cost a quarter of a second or more per hash and per login on a shared
    machine, for every seeded server and every login of the suite; the hashes stay argon2id, and a
    hash made elsewhere with other parameters verifies as before (they are read from the hash).
    Server processes of their own keep the production parameters.
    """
    production = security._hasher
    security._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)
    security._dummy_hash.cache_clear()
    yield
    security._hasher = production
    security._dummy_hash.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def one_tls_context() -> Iterator[None]:
    """One default TLS context for every httpx2 client of the test process.

    httpx2 builds a fresh context for each client, parsing the whole CA bundle (about 40 ms of CPU), even
    for a client that only speaks plain HTTP to loopback; the suite creates thousands of clients (each
    `httpx2.get`, each readiness poll of a starting server). A context is made to be shared: the
    settings are httpx2's own defaults, built once.
    """
    production = httpcore2.default_ssl_context
    shared = functools.cache(production)
    httpcore2.default_ssl_context = shared
    yield
    httpcore2.default_ssl_context = production


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(postgres_url(), tmp_path_factory.mktemp("template"))
    yield factory
    factory.drop_all()


@dataclass(frozen=True)
class SeededHome:
    """A server home and database the demo was seeded into once per test session, with its secret key
    (the demo's credentials derive from it) and credentials; each server starts from a copy."""

    home: Path
    database_url: str
    secret_key: str
    demo: DemoAccount


# Settings the seeding depends on (the credentials): a server given one of them seeds its own demo. The
# public URL is only printed (`_copied_demo`); one storing its files elsewhere gets a copy of the seeded
# files (`_copy_seeded_exports`).
_SEEDING_SETTINGS = frozenset({"secret_key"})
# Settings storing the export files elsewhere than the seeded home's objects directory.
_STORE_SETTINGS = frozenset({"storage_backend", "s3_endpoint_url", "exports_bucket"})


@pytest.fixture(scope="session")
def seeded_home(tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory) -> SeededHome:
    """The demo seeded once (16 generated export files, 2,000 students): the costliest part of a
    server's start, done again for a server only when its settings change what is seeded."""
    home = tmp_path_factory.mktemp("seeded")
    database_url = database_factory.migrated_url(home)
    env = server_env(home=home, database_url=database_url)
    template = LiveServer(home=home, database_url=database_url, env=env)
    return SeededHome(
        home=home, database_url=database_url, secret_key=env["DATALAB_SECRET_KEY"], demo=template.seed_demo()
    )


@dataclass(frozen=True)
class _NewHome:
    """Where a new server or in-process app keeps its data, and the environment it runs with."""

    home: Path
    database_url: str
    env: dict[str, str]
    # The seeded demo's credentials when the home is a copy of the seeded one; None: it seeds its own.
    demo: DemoAccount | None


def _new_home(
    tmp_path_factory: pytest.TempPathFactory,
    database_factory: DatabaseFactory,
    seeded: SeededHome,
    environment: dict[str, str] | None,
    settings: dict[str, str],
) -> _NewHome:
    """A home for DATALAB_* settings (and other variables): a copy of the seeded one unless they change
    what is seeded."""
    home = tmp_path_factory.mktemp("server")
    # Pipeline workers only where a test asks for them: the others observe each hand-off as it is left.
    settings = {"pipeline_workers": "0"} | settings
    extra = {f"DATALAB_{name.upper()}": value for name, value in settings.items()} | (environment or {})
    from_seeded = not _SEEDING_SETTINGS & set(settings) and not any(
        name.startswith("DATALAB_") for name in environment or {}
    )
    if from_seeded:
        database_url = database_factory.copy_url(seeded.database_url, home)
        extra = {"DATALAB_SECRET_KEY": seeded.secret_key} | extra
    else:
        database_url = database_factory.migrated_url(home)
    env = server_env(home=home, database_url=database_url, extra=extra)
    if from_seeded:
        _copy_seeded_exports(seeded, home, env, stored_elsewhere=bool(_STORE_SETTINGS & set(settings)))
    return _NewHome(home=home, database_url=database_url, env=env, demo=seeded.demo if from_seeded else None)


def _copy_seeded_exports(
    seeded: SeededHome, home: Path, env: dict[str, str], *, stored_elsewhere: bool
) -> None:
    """The seeded demo's export files, where a server with this environment reads them: a copy of the
    seeded objects directory, or, for one storing them elsewhere, each file put into the store and
    bucket its settings name (as seeding would have put it there)."""
    objects = seeded.home / "objects"
    if not stored_elsewhere:
        shutil.copytree(objects, home / "objects")
        return
    settings = settings_of(env)
    store = make_store(settings)
    seeded_store = make_store(settings.model_copy(update={"storage_backend": "local", "home": seeded.home}))
    bucket = Settings.model_fields["exports_bucket"].default
    files = objects / bucket
    for source in sorted(path for path in files.rglob("*") if path.is_file()):
        key = source.relative_to(files).as_posix()
        info = seeded_store.info(bucket=bucket, key=key)
        assert info is not None, key
        store.put_file(bucket=settings.exports_bucket, key=key, source=source, content_type=info.content_type)


def _copied_demo(new: _NewHome, deployment: Deployment) -> DemoAccount | None:
    """The credentials of a copy of the seeded demo as `datalab demo` prints them for the deployment:
    its API base is under DATALAB_PUBLIC_URL when that is set."""
    if new.demo is None:
        return None
    root = new.env.get("DATALAB_PUBLIC_URL") or deployment.root
    return replace(new.demo, base_url=root + "/v1")


@contextmanager
def _servers(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory, seeded: SeededHome
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
        new = _new_home(tmp_path_factory, database_factory, seeded, environment, settings)
        server = LiveServer(
            home=new.home,
            database_url=new.database_url,
            env=new.env,
            serve_args=serve_args,
            # Other environment variables (and serve arguments) only reach a process of its own.
            own_process=own_process or bool(environment) or bool(serve_args),
        )
        server.demo = _copied_demo(new, server)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def make_app(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory, seeded_home: SeededHome
) -> Iterator[AppFactory]:
    """Open in-process apps (the fast tier: see this module's docstring) with DATALAB_* settings for one
    test module, each on a copy of the seeded demo (or seeding its own when a setting changes what is
    seeded); they are closed when the module is done."""
    with ExitStack() as serving:

        def open_app(**settings: str) -> InProcessApp:
            new = _new_home(tmp_path_factory, database_factory, seeded_home, None, settings)
            app = InProcessApp(home=new.home, database_url=new.database_url, env=new.env)
            app.demo = _copied_demo(new, app)
            serving.enter_context(app.serving())
            return app

        yield open_app


@pytest.fixture(scope="module")
def api(make_app: AppFactory) -> InProcessApp:
    """The test module's in-process demo app: `api.client.get("/v1/...")`, the demo's credentials in
    `api.demo`, its data through `api.db()` and `api.admin_json(...)`."""
    return make_app()


@pytest.fixture(scope="module")
def make_server(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory, seeded_home: SeededHome
) -> Iterator[ServerFactory]:
    """Start servers for one test module; they are stopped when the module is done, which keeps the
    number of live servers (and of their database connections) bounded however long the suite is."""
    with _servers(tmp_path_factory, database_factory, seeded_home) as start:
        yield start


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory, seeded_home: SeededHome
) -> Iterator[LiveServer]:
    """The shared demo server; tests that change accounts or settings start their own."""
    with _servers(tmp_path_factory, database_factory, seeded_home) as start:
        yield start()


@pytest.fixture(scope="session")
def aws_credentials() -> Iterator[dict[str, str]]:
    """moto's credentials in the environment of the test process (and so of the servers it starts)."""
    from tests.support.moto import AWS_ENV

    with pytest.MonkeyPatch.context() as patch:
        for name, value in AWS_ENV.items():
            patch.setenv(name, value)
        yield AWS_ENV


@pytest.fixture(scope="session")
def moto(aws_credentials: dict[str, str]) -> Iterator[MotoServer]:
    """A moto S3 server for the session's tests; each server on it takes buckets of its own
    (`moto.new_buckets()`)."""
    from tests.support.moto import running_moto

    with running_moto() as server:
        yield server


@pytest.fixture
def server_clock(monkeypatch: pytest.MonkeyPatch) -> MovableClock:
    """The clock of every in-process app and server running in the test process, moved forward by the
    test."""
    clock = MovableClock()
    monkeypatch.setattr(db, "clock", clock)
    return clock


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path
