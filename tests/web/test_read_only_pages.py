"""Data Center pages that only read use read-only database sessions: on SQLite they are served while a
writer holds the database's write lock, instead of waiting for it (up to the busy timeout); through the
in-process app."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.inprocess import InProcessApp
from tests.support.server import Deployment
from tests.web.pages import PageClient, sign_in, start_upload

CSV = b"Student Number,Year\r\n00123,2026\r\n"
# Far below the server's SQLite busy timeout (30 s): a page waiting for the lock would take that long.
PROMPT_SECONDS = 5.0


@contextmanager
def write_lock_held(server: Deployment) -> Iterator[None]:
    """Another connection holds the SQLite database's write lock meanwhile."""
    path = server.database_url.split(":///", 1)[1]
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()


@pytest.fixture(scope="module")
def signed_in(api: InProcessApp) -> Iterator[tuple[PageClient, str]]:
    if not api.database_url.startswith("sqlite"):
        pytest.skip("the write lock is SQLite's")
    assert api.demo is not None
    page = sign_in(api, api.demo.user_name, api.demo.password)
    upload = start_upload(page, CSV, file_name="roster.csv")
    yield page, upload
    page.close()


def test_pages_that_only_read_are_served_while_a_writer_holds_the_lock(
    signed_in: tuple[PageClient, str],
) -> None:
    page, upload = signed_in
    paths = [
        "/datacenter/exports",
        "/datacenter/uploads",
        f"/datacenter/uploads/{upload}",
        f"/datacenter/uploads/{upload}/status",
        f"/datacenter/uploads/{upload}/mapping",
        "/datacenter/mappings",
        "/datacenter/api-keys",
    ]
    expected = {path: page.get(path) for path in paths}
    with write_lock_held(page.server):
        for path in paths:
            started = time.monotonic()
            response = page.get(path)
            elapsed = time.monotonic() - started
            assert response.status_code == 200, (path, response.text)
            assert elapsed < PROMPT_SECONDS, (path, elapsed)
            if path.endswith("/status"):
                assert response.json() == expected[path].json()
            else:
                # The signed-in page itself: its sign-out form carries the session's CSRF token.
                assert page.csrf in response.text, path
