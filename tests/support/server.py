"""A real server on a free port, seeded with the demo, for functional tests.

By default the server is uvicorn in a thread of the test process: the same app, protocol and options
as `datalab serve`, on a real socket, without the start-up and imports of two interpreters. Tests that
kill the server, read its log or run several server processes ask for a `datalab serve` process.
What a server and the in-process app (tests.support.inprocess) share, its data, environment, admin
commands and demo credentials, is a `Deployment`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import uvicorn
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from datalab.db import system_time
from datalab.settings import Settings


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class DemoAccount:
    """What `datalab demo --json` printed."""

    api_key: str
    user_name: str
    password: str
    organization_uid: str
    base_url: str


@dataclass
class Deployment(ABC):
    """A server's home, database and DATALAB_* environment, with the demo's credentials: what admin
    commands, factories and database assertions work on, whether requests reach it over a socket
    (`LiveServer`) or as calls in the test process (`InProcessApp`)."""

    home: Path
    database_url: str
    env: dict[str, str]
    demo: DemoAccount | None = None
    _engine: Engine | None = None

    @property
    @abstractmethod
    def root(self) -> str:
        """The URL the deployment answers at, without a trailing slash."""

    @property
    def base_url(self) -> str:
        """The API base, <root>/v1."""
        return self.root + "/v1"

    @abstractmethod
    def request(self, method: str, path: str, **options: Any) -> httpx2.Response:
        """Send a request for path (from the root, e.g. /v1/login) with httpx2's request options."""

    @abstractmethod
    def open_client(self) -> AbstractContextManager[httpx2.Client]:
        """A client on the deployment (relative URLs reach its root) for as long as the context is open."""

    @property
    def settings(self) -> Settings:
        """The settings the deployment runs with (`settings_of` its environment)."""
        return settings_of(self.env)

    def cli(
        self, *args: str, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m datalab <args>` against this server's data."""
        result = subprocess.run(
            [sys.executable, "-m", "datalab", *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=input_text,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"datalab {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def cli_json(self, *args: str) -> Any:
        """Run a command with --json in a process of its own and parse what it printed."""
        return json.loads(self.cli(*args, "--json").stdout)

    def invoke(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """Run the command `datalab <args>` on the server's data (with extra environment variables).

        The command runs in this process (the same Typer app `cli` starts in a subprocess), which saves
        the interpreter start-up and imports of every call; an exception it does not handle is raised.
        """
        from datalab.cli import app

        environment: dict[str, str | None] = {
            name: None for name in os.environ if name.startswith("DATALAB_")
        }
        environment.update(self.env | (env or {}))
        return CliRunner().invoke(app, list(args), env=environment, catch_exceptions=False)

    def admin_json(self, *args: str) -> Any:
        """Run the admin command `datalab <args> --json` in this process and parse what it printed."""
        result = self.invoke(*args, "--json")
        assert result.exit_code == 0, (
            f"datalab {' '.join(args)} failed ({result.exit_code}):\n{result.output}"
        )
        return json.loads(result.stdout)

    def seed_demo(self) -> DemoAccount:
        """Seed the demo with `datalab demo` (idempotent) and keep its credentials."""
        seeded = self.admin_json("demo", "--base-url", self.root)
        self.demo = DemoAccount(
            api_key=seeded["apiKey"],
            user_name=seeded["userName"],
            password=seeded["password"],
            organization_uid=seeded["organizationUid"],
            base_url=seeded["baseUrl"],
        )
        return self.demo

    @property
    def engine(self) -> Engine:
        """An engine on the server's database, for asserting stored rows."""
        if self._engine is None:
            self._engine = create_engine(self.database_url)
        return self._engine

    @contextmanager
    def db(self) -> Iterator[Session]:
        """A read session on the server's database."""
        with Session(self.engine) as session:
            yield session

    def login(
        self, *, user_name: str | None = None, password: str | None = None, api_key: str | None = None
    ) -> LoggedIn:
        """Log in (the demo account by default) and return the headers for org-scoped calls."""
        assert self.demo is not None
        key = api_key or self.demo.api_key
        response = self.request(
            "POST",
            "/v1/login",
            headers={"x-api-key": key},
            json={
                "userName": user_name or self.demo.user_name,
                "password": password or self.demo.password,
                "acceptedTerms": True,
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return LoggedIn(
            token=body["sessionToken"],
            organization_uid=body["user"]["organizations"][0]["uid"],
            api_key=key,
            body=body,
        )

    def close_engine(self) -> None:
        """Release the connections of `engine`."""
        if self._engine is not None:
            self._engine.dispose()


@dataclass
class LiveServer(Deployment):
    """A server (a thread of the test process or a process of its own) on a free port."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Extra `datalab serve` arguments, e.g. ("--workers", "2").
    serve_args: tuple[str, ...] = ()
    # A `datalab serve` process rather than a thread of the test process.
    own_process: bool = False
    _uvicorn: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def root(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, **options: Any) -> httpx2.Response:
        return httpx2.request(method, self.root + path, **options)

    def open_client(self) -> AbstractContextManager[httpx2.Client]:
        return httpx2.Client(base_url=self.root, timeout=30)

    def start(self) -> None:
        """Seed the demo unless its credentials are known (a copy of a seeded home) and start serving;
        returns once /healthz answers."""
        if self.demo is None:
            self.seed_demo()
        if self.own_process:
            self._start_process()
        else:
            self._start_thread()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self._check_running()
            try:
                if httpx2.get(self.root + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not start in 60 s")

    def _start_process(self) -> None:
        with (self.home / "server.log").open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "datalab", "serve", "--port", str(self.port), *self.serve_args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _start_thread(self) -> None:
        from datalab.app import create_app
        from datalab.serving import BoundedHttpToolsProtocol, uvicorn_options

        settings = self.settings
        # The header limits are class attributes, set per process by `datalab serve`: here per server.
        protocol = type(
            "ServerProtocol",
            (BoundedHttpToolsProtocol,),
            {
                "header_timeout": settings.request_read_timeout_seconds,
                "max_header_bytes": settings.max_header_bytes,
                "max_connections": settings.max_connections,
            },
        )
        # The test process keeps its own logging: the server's log configuration is for its own process.
        options = uvicorn_options(settings, host="127.0.0.1", port=self.port) | {
            "http": protocol,
            "log_config": None,
        }
        app = create_app(settings)
        # In the test process the event loop also waits for the test's own work (the GIL, garbage
        # collections): its lag measures the test, not the server's load, so it never sheds requests
        # here. Shedding is tested on servers with a process of their own.
        app.state.limiter.watch_loop = lambda: None
        config = uvicorn.Config(app, access_log=False, **options)
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, name=f"server-{self.port}", daemon=True)
        self._thread.start()

    def _check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{(self.home / 'server.log').read_text()}")
        if self._thread is not None and not self._thread.is_alive():
            raise RuntimeError("server thread exited early")

    def start_worker(self) -> subprocess.Popen[bytes]:
        """Start a `datalab worker` process with this server's settings (logs in worker-<n>.log)."""
        log_path = self.home / f"worker-{len(self.workers)}.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "datalab", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.workers.append(worker)
        return worker

    def kill(self) -> None:
        """End the server process with SIGKILL, as a crash would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Stop the server (thread or processes) and release the database."""
        if self._uvicorn is not None and self._thread is not None:
            self._uvicorn.should_exit = True
            self._thread.join(timeout=30)
        for process in [*self.workers, self.process]:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.close_engine()


@dataclass
class MovableClock:
    """The system time plus an offset tests move forward: what `datalab.db.utcnow` reads while installed.

    It moves servers running in the test process (never a server process of its own).
    """

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return system_time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock `seconds` forward."""
        self.offset += timedelta(seconds=seconds)


@dataclass
class LoggedIn:
    """A logged-in client's credentials."""

    token: str
    organization_uid: str
    api_key: str
    body: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        """The documented header set of an org-scoped call."""
        return {
            "Authorization": f"Bearer {self.token}",
            "Organization": self.organization_uid,
            "x-api-key": self.api_key,
        }


def settings_of(env: dict[str, str]) -> Settings:
    """The settings of a server with this environment: its DATALAB_* variables only (model_validate
    reads no environment)."""
    return Settings.model_validate(
        {
            name.removeprefix("DATALAB_").lower(): value
            for name, value in env.items()
            if name.startswith("DATALAB_")
        }
    )


def server_env(*, home: Path, database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test server: production mode with a real secret."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DATALAB_")}
    env.update(
        {
            "DATALAB_HOME": str(home),
            "DATALAB_DATABASE_URL": database_url,
            "DATALAB_SECRET_KEY": secrets.token_urlsafe(48),
            "PYTHONWARNINGS": "error",
        }
    )
    env.update(extra or {})
    return env
