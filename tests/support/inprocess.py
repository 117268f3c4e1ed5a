"""The app in the test process behind Starlette's TestClient: the fast tier of the functional tests.

A request is an ASGI call of `create_app(settings)` through the TestClient: no socket, no HTTP parser,
no server thread, so a test of what the API answers costs what the app's work costs. What only a real
server shows (the wire, its process, its concurrency) is tested on a `LiveServer`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from starlette.testclient import TestClient

from tests.support.server import Deployment

# The origin the TestClient addresses the app at.
IN_PROCESS_ROOT = "http://testserver"


@dataclass
class InProcessApp(Deployment):
    """`create_app` on a deployment's data, called through a TestClient while `serving()` is open (its
    lifespan, the sweeper and any pipeline workers, runs for as long)."""

    _client: TestClient | None = None

    @property
    def root(self) -> str:
        return IN_PROCESS_ROOT

    @property
    def client(self) -> TestClient:
        """The TestClient, an httpx2 Client on the app: `client.get("/v1/...")`."""
        assert self._client is not None, "the app is not serving: open serving() first"
        return self._client

    def request(self, method: str, path: str, **options: Any) -> httpx2.Response:
        return self.client.request(method, path, **options)

    @contextmanager
    def serving(self) -> Iterator[TestClient]:
        """Seed the demo unless its credentials are known (a copy of a seeded home), then run the app's
        lifespan and hand out its TestClient; the database is released on exit."""
        from datalab.app import create_app

        if self.demo is None:
            self.seed_demo()
        # The database is a copy of a migrated one: the app starts without migrating it.
        app = create_app(self.settings, migrate=False)
        # The TestClient's event loop also waits for the test's own work: its lag measures the test, not
        # the app's load, so it never sheds requests here (as on a server in a thread of the test process).
        app.state.limiter.watch_loop = lambda: None
        # Redirects are answers to assert, as with any other httpx2 client.
        client = TestClient(app, base_url=self.root, follow_redirects=False)
        try:
            with client:
                self._client = client
                yield client
        finally:
            self._client = None
            self.close_engine()
