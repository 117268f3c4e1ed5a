"""Fixtures of the client tests: a server of their own whose pipeline works, and an SDK client on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from datalab.client import Client
from tests.conftest import ServerFactory
from tests.support.server import LiveServer


@pytest.fixture(scope="module")
def api(make_server: ServerFactory) -> LiveServer:
    """A demo server for the client tests (they deliver its exports), with two pipeline workers."""
    return make_server(pipeline_workers="2", pipeline_poll_seconds="0.1")


@pytest.fixture
def client(api: LiveServer) -> Iterator[Client]:
    """An SDK client with the demo account's credentials, given explicitly (not from the environment)."""
    assert api.demo is not None
    with Client(
        api.base_url, api.demo.api_key, api.demo.user_name, api.demo.password, environ={}, timeout=30
    ) as client:
        yield client
