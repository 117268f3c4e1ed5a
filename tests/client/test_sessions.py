"""Session tokens on a server whose tokens live 30 s: the client refreshes, or logs in again on a 401."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from datalab.client import Client
from tests.conftest import ServerFactory
from tests.support.client import stored_exports
from tests.support.server import LiveServer, MovableClock

TOKEN_TTL_SECONDS = 30


class RecordingTransport(httpx2.BaseTransport):
    """The real network, with a note of each API call's method, path and status (no mock)."""

    def __init__(self) -> None:
        self.network = httpx2.HTTPTransport()
        self.seen: list[str] = []
        self.tokens: list[str] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.network.handle_request(request)
        if request.url.path.startswith("/v1/"):
            self.seen.append(
                f"{request.method} {request.url.path.removeprefix('/v1')} {response.status_code}"
            )
            self.tokens.append(request.headers.get("authorization", ""))
        return response

    def close(self) -> None:
        self.network.close()

    def since(self, mark: int) -> list[str]:
        """The calls after the first `mark` ones, download URLs' paths shortened."""
        return [
            " ".join(
                ["GET", "/download-url", status]
                if path.endswith("/download") and method == "GET"
                else [method, path, status]
            )
            for method, path, status in (call.split(" ") for call in self.seen[mark:])
        ]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def short_tokens(make_server: ServerFactory) -> LiveServer:
    return make_server(session_token_ttl_seconds=str(TOKEN_TTL_SECONDS))


def _client(
    server: LiveServer, transport: RecordingTransport, clock: Callable[[], float] = time.monotonic
) -> Client:
    assert server.demo is not None
    return Client(
        server.base_url,
        server.demo.api_key,
        server.demo.user_name,
        server.demo.password,
        environ={},
        transport=transport,
        clock=clock,
    )


@pytest.fixture
def recorded() -> Iterator[RecordingTransport]:
    transport = RecordingTransport()
    yield transport
    transport.close()


def test_a_token_near_its_end_is_refreshed_without_a_new_login(
    short_tokens: LiveServer, recorded: RecordingTransport
) -> None:
    clock = FakeClock()
    with _client(short_tokens, recorded, clock) as client:
        assert len(list(client.exports())) == 16
        first_token = recorded.tokens[-1]
        # Half of a 30 s token's life later (by the client's clock) it asks for a new one, while the
        # server still accepts the old one.
        clock.now += TOKEN_TTL_SECONDS / 2 + 1
        assert len(list(client.exports())) == 16

    assert recorded.since(0) == [
        "POST /login 200",
        "GET /datacenter/exports 200",
        "GET /refresh-token 200",
        "GET /datacenter/exports 200",
    ]
    assert recorded.tokens[2] == first_token
    assert recorded.tokens[3] not in {"", first_token}


def test_a_client_outliving_its_token_keeps_working(
    short_tokens: LiveServer, recorded: RecordingTransport, server_clock: MovableClock, tmp_path: Path
) -> None:
    """Two clients outlive their tokens (the server's clock and theirs moved past the token's life), each
    recovers its own way.

    `steady`'s clock moves with the server's: its refresh comes too late (the token has expired), so it
    logs in again. `unaware` has a clock that never moves: it sends the expired token, gets a 401 and
    logs in again.
    """
    other = RecordingTransport()
    steady_clock = FakeClock()
    export = next(e for e in stored_exports(short_tokens).values() if e.product_key == "aos")
    try:
        with (
            _client(short_tokens, recorded, steady_clock) as steady,
            _client(short_tokens, other, FakeClock()) as unaware,
        ):
            assert len(list(steady.exports())) == 16
            assert len(list(unaware.exports())) == 16
            steady_clock.now += TOKEN_TTL_SECONDS + 2
            server_clock.advance(TOKEN_TTL_SECONDS + 2)
            assert len(list(steady.exports())) == 16
            assert steady.download(export.uid, tmp_path / "steady").read_bytes() == export.content
            assert len(list(unaware.exports())) == 16
            assert unaware.download(export.uid, tmp_path / "unaware").read_bytes() == export.content
    finally:
        other.close()

    assert recorded.since(2) == [
        "GET /refresh-token 401",
        "POST /login 200",
        "GET /datacenter/exports 200",
        "GET /download-url 200",
    ]
    assert other.since(2) == [
        "GET /datacenter/exports 401",
        "POST /login 200",
        "GET /datacenter/exports 200",
        "GET /download-url 200",
    ]
