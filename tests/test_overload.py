"""Overload: many simultaneous requests get 200 or a fast 503, never a 500, and service resumes at once.

The live tests run a server with very few request slots so that 128 simultaneous requests overflow
them; the gate's own behaviour (queue order, refusals, disconnected clients) is tested in-process.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest
from prometheus_client import REGISTRY
from uvicorn.config import Config
from uvicorn.server import ServerState

from datalab.app import ADMISSION_STATE
from datalab.limits import Admission, Overloaded, RequestGate, RequestLimiter
from datalab.serving import BoundedHttpToolsProtocol
from tests.conftest import ServerFactory
from tests.support.checks import assert_envelope
from tests.support.server import LiveServer, LoggedIn

SIMULTANEOUS = 128
QUEUE_SECONDS = 0.5


@pytest.fixture(scope="module")
def crowded(make_server: ServerFactory) -> LiveServer:
    return make_server(
        max_concurrent_requests="2", request_queue_seconds=str(QUEUE_SECONDS), own_process=True
    )


@pytest.fixture(scope="module")
def demo(crowded: LiveServer) -> LoggedIn:
    return crowded.login()


def _simultaneous(
    count: int, request: Callable[[httpx2.Client], httpx2.Response]
) -> list[tuple[httpx2.Response, float]]:
    """`count` requests sent at once, each on a client of its own, with how long each took.

    The clients are built before the start (a client's TLS context alone takes milliseconds of CPU):
    the time measured is the server's, not that of 128 clients being set up on a busy machine.
    """
    barrier = threading.Barrier(count)
    clients = [httpx2.Client(timeout=60) for _ in range(count)]

    def one(index: int) -> tuple[httpx2.Response, float]:
        barrier.wait()
        started = time.monotonic()
        response = request(clients[index])
        return response, time.monotonic() - started

    try:
        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(one, range(count)))
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("path", ["/datacenter/exports", "/files"])
def test_128_simultaneous_requests_get_200_or_a_fast_503(
    crowded: LiveServer, demo: LoggedIn, path: str
) -> None:
    def request(client: httpx2.Client) -> httpx2.Response:
        return client.get(crowded.base_url + path, headers=demo.headers)

    results = _simultaneous(SIMULTANEOUS, request)
    statuses = sorted({response.status_code for response, _ in results})
    assert set(statuses) <= {200, 503}, statuses
    for response, elapsed in results:
        if response.status_code == 503:
            assert_envelope(response, 503, "overloaded")
            assert int(response.headers["retry-after"]) >= 1
            # Refused at once or after the longest documented wait, not after a pool timeout.
            assert elapsed < QUEUE_SECONDS + 10
    after = httpx2.get(crowded.base_url + path, headers=demo.headers, timeout=10)
    assert after.status_code == 200, after.text


def test_logins_under_overload_never_fail_with_500(crowded: LiveServer) -> None:
    account = crowded.demo
    assert account is not None
    body = {"userName": account.user_name, "password": account.password, "acceptedTerms": True}

    def request(client: httpx2.Client) -> httpx2.Response:
        return client.post(crowded.base_url + "/login", headers={"x-api-key": account.api_key}, json=body)

    results = _simultaneous(32, request)
    assert {response.status_code for response, _ in results} <= {200, 503}
    assert httpx2.get(crowded.root + "/healthz").status_code == 200
    log = (crowded.home / "server.log").read_text(errors="replace")
    assert "Traceback" not in log


# --- the limiter and the gate, in-process ---------------------------------------------------------------


def test_the_limiter_hands_slots_over_in_arrival_order() -> None:
    async def scenario() -> list[int]:
        limiter = RequestLimiter(slots=1, max_wait=5, max_queue=10)
        held = await limiter.acquire()
        order: list[int] = []

        async def waiter(number: int) -> None:
            granted = await limiter.acquire()
            order.append(number)
            limiter.release(granted)

        tasks = [asyncio.create_task(waiter(number)) for number in range(5)]
        await asyncio.sleep(0.01)
        assert limiter.queued == 5
        limiter.release(held)
        await asyncio.gather(*tasks)
        assert limiter.in_use == 0
        return order

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_the_limiter_refuses_at_once_when_the_queue_is_full_and_after_max_wait_otherwise() -> None:
    async def scenario() -> None:
        limiter = RequestLimiter(slots=1, max_wait=0.05, max_queue=1)
        held = await limiter.acquire()
        queued = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as full:
            await limiter.acquire()
        assert full.value.retry_after >= 1
        with pytest.raises(Overloaded):
            await queued  # waited max_wait, then refused
        assert limiter.queued == 0
        limiter.release(held)
        limiter.release(await limiter.acquire())
        assert limiter.in_use == 0

    asyncio.run(scenario())


Message = dict[str, Any]


async def _call(gate: RequestGate, path: str, messages: list[Message]) -> list[Message]:
    """Send one GET through the gate; what it sent back."""
    sent: list[Message] = []
    incoming = list(messages)

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()  # a client that stays connected and sends nothing more
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    await gate(scope, receive, send)  # type: ignore[arg-type]
    return sent


def test_a_queued_request_whose_client_left_is_never_run() -> None:
    ran: list[str] = []
    release = asyncio.Event

    async def scenario() -> None:
        proceed = release()

        async def app(scope: Message, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
            ran.append(scope["path"])
            if scope["path"] == "/slow":
                await proceed.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        limiter = RequestLimiter(slots=1, max_wait=5, max_queue=10)
        gate = RequestGate(app, limiter=limiter, read_timeout=5, store_prefixes=())  # type: ignore[arg-type]
        request = {"type": "http.request", "body": b"", "more_body": False}
        slow = asyncio.create_task(_call(gate, "/slow", [request]))
        await asyncio.sleep(0.01)
        gone = await _call(gate, "/gone", [request, {"type": "http.disconnect"}])
        assert gone == []
        proceed.set()
        assert (await slow)[0]["status"] == 200
        assert limiter.in_use == 0
        assert limiter.queued == 0

    asyncio.run(scenario())
    assert ran == ["/slow"]


def test_an_overloaded_gate_answers_503_with_retry_after() -> None:
    async def scenario() -> list[Message]:
        async def app(scope: Message, receive: Any, send: Any) -> None:
            raise AssertionError("an overloaded gate does not run the app")

        limiter = RequestLimiter(slots=1, max_wait=0.05, max_queue=0)
        gate = RequestGate(app, limiter=limiter, read_timeout=5, store_prefixes=())  # type: ignore[arg-type]
        held = await limiter.acquire()
        sent = await _call(gate, "/v1/files", [{"type": "http.request", "body": b"", "more_body": False}])
        limiter.release(held)
        return sent

    start, body = asyncio.run(scenario())
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"1"
    assert b'"code":"overloaded"' in body["body"]


# --- refusals the HTTP server answers before the app runs ------------------------------------------------


class _Transport(asyncio.Transport):
    """A connection for uvicorn's protocol in-process: what the server wrote, and whether it closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _answer(written: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = written.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _read_answer(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    status, headers, body = _answer(received)
    while len(body) < int(headers["content-length"]):
        body += connection.recv(65536)
    return status, headers, body


async def _exchange_raw(
    state: dict[str, Any], request: bytes, *, connections: int = 1, max_connections: int | None = None
) -> tuple[_Transport, list[str]]:
    """One request through the server's protocol to an app that records the paths it is called for."""
    called: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        called.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    config = Config(app=app, http=BoundedHttpToolsProtocol, lifespan="off", access_log=False)
    config.load()
    server_state = ServerState()
    protocol = BoundedHttpToolsProtocol(config, server_state, state, asyncio.get_running_loop())
    protocol.max_connections = max_connections
    transport = _Transport()
    protocol.connection_made(transport)
    for _ in range(connections - 1):
        server_state.connections.add(BoundedHttpToolsProtocol(config, server_state, state))
    protocol.data_received(request)
    await asyncio.gather(*server_state.tasks)
    protocol.connection_lost(None)
    return transport, called


def _full_admission() -> tuple[Admission, Callable[[], None]]:
    """An Admission whose one slot is held and whose queue takes nobody; and how to free the slot."""
    limiter = RequestLimiter(slots=1, max_wait=1, max_queue=0)
    granted = limiter.try_acquire()
    assert granted is not None
    return Admission(limiter=limiter, store_prefixes=("/datalab-uploads",)), lambda: limiter.release(granted)


def _refused_early(reason: str) -> float:
    """This process's count of refusals the HTTP server answered itself, for one reason."""
    return REGISTRY.get_sample_value("datalab_http_refused_early_total", {"reason": reason}) or 0.0


def test_the_server_answers_the_gates_refusal_without_calling_the_app() -> None:
    async def scenario() -> None:
        admission, free = _full_admission()
        state = {ADMISSION_STATE: admission}
        request = b"GET /v1/files HTTP/1.1\r\nHost: test\r\n\r\n"
        counted = _refused_early("gate")
        transport, called = await _exchange_raw(state, request)
        assert called == []
        assert _refused_early("gate") == counted + 1
        status, headers, body = _answer(bytes(transport.written))
        assert status == 503
        assert headers["content-type"] == "application/json"
        assert int(headers["retry-after"]) >= 1
        assert json.loads(body)["code"] == "overloaded"
        assert headers.get("connection") != "close"  # a refused GET keeps its connection
        assert admission.limiter.refused == 1
        # Paths that need no database are never refused; once the slot is free, nothing is.
        transport, called = await _exchange_raw(state, b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        assert called == ["/healthz"]
        free()
        transport, called = await _exchange_raw(state, request)
        assert called == ["/v1/files"]
        assert _answer(bytes(transport.written))[0] == 200

    asyncio.run(scenario())


def test_a_refused_request_with_a_body_is_answered_without_reading_it_and_the_connection_closed() -> None:
    async def scenario() -> tuple[_Transport, list[str]]:
        admission, _free = _full_admission()
        head = b"POST /v1/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        # Only the start of the body has arrived: the refusal does not wait for the rest.
        return await _exchange_raw(
            {ADMISSION_STATE: admission}, head + b"Content-Length: 1000\r\n\r\n" + b'{"userName": '
        )

    transport, called = asyncio.run(scenario())
    assert called == []
    status, headers, body = _answer(bytes(transport.written))
    assert (status, headers["connection"]) == (503, "close")
    assert json.loads(body)["code"] == "overloaded"
    assert transport.closed


def test_past_max_connections_the_answer_is_the_json_envelope_and_the_connection_is_closed() -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
    transport, called = asyncio.run(_exchange_raw({}, request, connections=3, max_connections=2))
    assert called == []
    status, headers, body = _answer(bytes(transport.written))
    assert (status, headers["connection"], headers["retry-after"]) == (503, "close", "1")
    envelope = json.loads(body)
    assert set(envelope) == {"code", "message", "detail"}
    assert envelope["code"] == "overloaded"
    assert transport.closed
    transport, called = asyncio.run(_exchange_raw({}, request, connections=2, max_connections=2))
    assert called == ["/healthz"]


def test_a_live_server_past_max_connections_answers_with_the_envelope(make_server: ServerFactory) -> None:
    server = make_server(max_connections="2")
    request = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
    opened: list[socket.socket] = []
    try:
        answers = []
        for _ in range(3):
            # Each connection stays open (kept alive) while the next one is made.
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            opened.append(connection)
            connection.sendall(request)
            answers.append(_read_answer(connection))
    finally:
        for connection in opened:
            connection.close()
    assert [status for status, _headers, _body in answers] == [200, 200, 503]
    _status, headers, body = answers[2]
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == "overloaded"
