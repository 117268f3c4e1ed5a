"""Fixtures for pipeline tests: a server whose embedded runner works, and a client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from tests.conftest import ServerFactory
from tests.support.server import LiveServer, LoggedIn


@pytest.fixture(scope="module")
def working(make_server: ServerFactory) -> LiveServer:
    """A server running two pipeline workers that look for work every 0.1 s."""
    return make_server(pipeline_workers="2", pipeline_poll_seconds="0.1")


@pytest.fixture(scope="module")
def demo(working: LiveServer) -> LoggedIn:
    return working.login()


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30) as client:
        yield client
