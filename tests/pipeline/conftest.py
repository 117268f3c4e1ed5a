"""Fixtures for pipeline tests: an in-process app whose embedded runner works, and its client."""

from __future__ import annotations

import httpx2
import pytest

from tests.conftest import AppFactory
from tests.support.inprocess import InProcessApp
from tests.support.server import LoggedIn


@pytest.fixture(scope="module")
def working(make_app: AppFactory) -> InProcessApp:
    """An app running two pipeline workers (threads in its lifespan) that look for work every 0.1 s."""
    return make_app(pipeline_workers="2", pipeline_poll_seconds="0.1")


@pytest.fixture(scope="module")
def demo(working: InProcessApp) -> LoggedIn:
    return working.login()


@pytest.fixture
def client(working: InProcessApp) -> httpx2.Client:
    return working.client
