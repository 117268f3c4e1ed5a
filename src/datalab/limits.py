"""What keeps the server answering under load and hostile input, in front of every route.

`RequestGate` is a pure ASGI middleware that, for each HTTP request:

- refuses a body larger than its route allows (413) — from `Content-Length` before reading a byte, or
  while it streams in — and a body that stalls longer than the read timeout (408);
- admits at most `slots` requests at a time to the routes that use the database, so they can never
  wait on each other for a pool connection or a worker thread. The others wait in a FIFO queue; one
  whose wait would exceed `max_wait` seconds (estimated from recent service times and the event
  loop's lag, or measured) gets a fast 503 with `Retry-After`, and so does every new request while
  the loop runs more than half a second late (the process is out of CPU: refusing is what it can
  still do quickly). A queued request whose client disconnects is dropped, never run.

A slot is given back as soon as the response starts: a route's database transaction is over by then,
so a slow reader of a long download holds no slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from datalab.errors import ApiError, envelope

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KIB = 1024
# Body limits by route (bytes). The object store's POST is bounded by its form's policy instead.
LOGIN_BODY_LIMIT = 16 * KIB
API_BODY_LIMIT = 64 * KIB
MAPPING_BODY_LIMIT = 256 * KIB
PAGE_FORM_LIMIT = 256 * KIB
# The event loop's lag is probed this often; past LAG_SHED_SECONDS of lag new requests are refused.
LAG_PROBE_SECONDS = 0.05
LAG_SHED_SECONDS = 0.5
# Paths that touch no database: never queued.
UNGATED_PREFIXES = ("/healthz", "/docs", "/datacenter/static/", "/v1/openapi.json")
# Monitoring: one short read each (readiness checks are bounded on their own), answered even when busy.
UNGATED_PATHS = frozenset({"/metrics", "/readyz"})


class Overloaded(Exception):
    """No slot will be free within the wait the server allows."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"overloaded; retry after {retry_after} s")
        self.retry_after = retry_after


class RequestLimiter:
    """At most `slots` holders at once; the others wait in FIFO order for at most `max_wait` seconds.

    Lives on one event loop (the server's). The expected wait of a newcomer is its place in the queue
    times the recent mean service time, divided by the number of slots: a request that would wait
    longer than `max_wait` is refused at once instead of timing out later.
    """

    def __init__(self, *, slots: int, max_wait: float, max_queue: int) -> None:
        self.slots = slots
        self.max_wait = max_wait
        self.max_queue = max_queue
        self._free = slots
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._mean_service = 0.005
        self.refused = 0
        # How late the event loop runs a timer: how long a request waited before it even got here.
        self.loop_lag = 0.0
        self._lag_monitor: asyncio.Task[None] | None = None

    @property
    def shed_lag(self) -> float:
        """Loop lag past which new requests are refused at once: the process is out of CPU."""
        return min(LAG_SHED_SECONDS, self.max_wait / 2)

    def watch_loop(self) -> None:
        """Start measuring the event loop's lag (once per loop; called from the loop)."""
        if self._lag_monitor is None or self._lag_monitor.done():
            self._lag_monitor = asyncio.get_running_loop().create_task(self._measure_lag())

    async def _measure_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_PROBE_SECONDS)
            late = max(0.0, loop.time() - started - LAG_PROBE_SECONDS)
            # Up at once, down gradually: one quiet probe does not end an overload.
            self.loop_lag = late if late > self.loop_lag else 0.7 * self.loop_lag + 0.3 * late

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return len(self._waiters)

    @property
    def in_use(self) -> int:
        """Slots held now."""
        return self.slots - self._free

    def _retry_after(self) -> int:
        estimate = self.loop_lag + (len(self._waiters) + 1) * self._mean_service / self.slots
        return max(1, math.ceil(min(estimate, self.max_wait)))

    def overloaded(self) -> Overloaded | None:
        """The refusal a new request would get now, or None when it would get a slot or wait for one.

        Costs a few comparisons: it is asked before any other work is done for a request.
        """
        if self._free > 0 and not self._waiters and self.loop_lag <= self.shed_lag:
            return None
        expected = self.loop_lag + (len(self._waiters) + 1) * self._mean_service / self.slots
        if len(self._waiters) >= self.max_queue or expected > self.max_wait or self.loop_lag > self.shed_lag:
            return Overloaded(self._retry_after())
        return None

    def try_acquire(self) -> float | None:
        """A slot at once (the time it was granted), or None when the request must queue for one.

        Raises Overloaded when the request may not even queue.
        """
        refusal = self.overloaded()
        if refusal is not None:
            self.refused += 1
            raise refusal
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return time.monotonic()
        return None

    async def acquire(self) -> float:
        """Wait for a slot (raises Overloaded); returns the time it was granted (monotonic)."""
        granted = self.try_acquire()
        if granted is not None:
            return granted
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout=self.max_wait)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the wait ended: pass it on.
                self._release_slot()
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                self.refused += 1
                raise Overloaded(self._retry_after()) from None
            raise
        return time.monotonic()

    def release(self, granted_at: float) -> None:
        """Give a slot back; its holding time feeds the service-time estimate."""
        held = time.monotonic() - granted_at
        self._mean_service = 0.9 * self._mean_service + 0.1 * held
        self._release_slot()

    def _release_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the oldest waiter
                return
        self._free += 1


@dataclass(frozen=True)
class RoutePolicy:
    """How the gate treats one request: its body limit (None: unbounded here) and whether it queues."""

    body_limit: int | None
    gated: bool


def _is_operator_file(method: str, path: str) -> bool:
    """An operator's request whose body is a file: a student CSV, or an export sent whole."""
    trimmed = path.rstrip("/")
    return (
        method == "POST"
        and path.startswith("/v1/admin/")
        and trimmed.endswith(("/students", "/exports/file"))
    )


def route_policy(
    method: str, path: str, *, store_prefixes: tuple[str, ...], file_body_limit: int = API_BODY_LIMIT
) -> RoutePolicy:
    """The body limit and admission rule of a request, by its method and path (`file_body_limit`: the
    setting bounding the operator routes whose body is a file)."""
    if path in UNGATED_PATHS or path.startswith(UNGATED_PREFIXES):
        return RoutePolicy(body_limit=API_BODY_LIMIT, gated=False)
    if path.startswith(store_prefixes):
        # The store's POST streams the file to disk under its policy's content-length-range, and uses
        # the database only for two short transactions: it is neither capped here nor queued.
        if method == "POST":
            return RoutePolicy(body_limit=None, gated=False)
        return RoutePolicy(body_limit=API_BODY_LIMIT, gated=True)
    if path.rstrip("/") == "/v1/login":
        return RoutePolicy(body_limit=LOGIN_BODY_LIMIT, gated=True)
    if path.startswith("/v1/files/") and path.rstrip("/").endswith("/process"):
        return RoutePolicy(body_limit=MAPPING_BODY_LIMIT, gated=True)
    if path.startswith("/datacenter"):
        return RoutePolicy(body_limit=PAGE_FORM_LIMIT, gated=True)
    if _is_operator_file(method, path):
        return RoutePolicy(body_limit=file_body_limit, gated=True)
    return RoutePolicy(body_limit=API_BODY_LIMIT, gated=True)


class BodyTooLarge(ApiError):
    """The body grew past its route's limit while it was read (raised where the app reads it: a 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "body_too_large",
            f"The request body is larger than this operation accepts ({limit} bytes)",
            headers={"Connection": "close"},
        )


class BodyReadTimeout(ApiError):
    """The client stopped sending its body (a 408)."""

    def __init__(self) -> None:
        super().__init__(
            408,
            "request_timeout",
            "The request body was not received in time",
            headers={"Connection": "close"},
        )


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


class RequestGate:
    """The ASGI middleware described in the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RequestLimiter,
        read_timeout: float,
        store_prefixes: tuple[str, ...],
        file_body_limit: int = API_BODY_LIMIT,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.read_timeout = read_timeout
        self.store_prefixes = store_prefixes
        self.file_body_limit = file_body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = route_policy(
            scope["method"],
            scope["path"],
            store_prefixes=self.store_prefixes,
            file_body_limit=self.file_body_limit,
        )
        declared = _declared_length(scope)
        if policy.body_limit is not None and declared is not None and declared > policy.body_limit:
            await self._refuse_body(scope, send, policy.body_limit)
            return
        buffered: list[Message] = []
        granted_at: float | None = None
        if policy.gated:
            self.limiter.watch_loop()
            try:
                admitted = await self._admit(receive, buffered)
            except Overloaded as overloaded:
                for message in overloaded_response(overloaded.retry_after, close=_has_body(scope)):
                    await send(message)
                return
            if admitted is None:
                return  # the client left while its request was queued: nothing to do for it
            granted_at = admitted
        await self._run(scope, receive, send, policy, buffered, granted_at)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        policy: RoutePolicy,
        buffered: list[Message],
        granted_at: float | None,
    ) -> None:
        limit = policy.body_limit
        received = sum(len(message.get("body", b"")) for message in buffered)
        if limit is not None and received > limit:
            await self._refuse_body(scope, send, limit)
            if granted_at is not None:
                self.limiter.release(granted_at)
            return

        async def bounded_receive() -> Message:
            nonlocal received
            if buffered:
                return buffered.pop(0)
            try:
                message = await asyncio.wait_for(receive(), timeout=self.read_timeout)
            except TimeoutError:
                raise BodyReadTimeout from None
            received += len(message.get("body", b""))
            if limit is not None and received > limit:
                raise BodyTooLarge(limit)
            return message

        holding = granted_at
        started = False

        async def releasing_send(message: Message) -> None:
            nonlocal holding, started
            if message["type"] == "http.response.start":
                started = True
                if holding is not None:
                    self.limiter.release(holding)
                    holding = None
            await send(message)

        try:
            await self.app(scope, bounded_receive, releasing_send)
        except (BodyTooLarge, BodyReadTimeout) as error:
            # Read outside the app's error handling (e.g. by a streaming body): answered here.
            if started:
                raise
            await _respond(scope, send, error.status, error.code, error.message, {})
        finally:
            if holding is not None:
                self.limiter.release(holding)

    async def _admit(self, receive: Receive, buffered: list[Message]) -> float | None:
        """A slot (its grant time), or None when the client disconnected while waiting for one.

        A free slot is taken, or a refusal raised, without creating a task. While queued, the request's
        first messages are read (and kept for the app) to notice a disconnect; a body still streaming
        in is left alone.
        """
        granted = self.limiter.try_acquire()
        if granted is not None:
            return granted
        slot = asyncio.ensure_future(self.limiter.acquire())
        listener: asyncio.Future[Message] | None = asyncio.ensure_future(receive())
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = {slot} if listener is None else {slot, listener}
                done, _pending = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if listener is not None and listener in done:
                    message = listener.result()
                    listener = None
                    if message["type"] == "http.disconnect":
                        await _cancel_slot(slot, self.limiter)
                        return None
                    buffered.append(message)
                    if not message.get("more_body", False):
                        listener = asyncio.ensure_future(receive())
                if slot in done:
                    return slot.result()
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    message = await listener
                    buffered.append(message)

    async def _refuse_body(self, scope: Scope, send: Send, limit: int) -> None:
        error = BodyTooLarge(limit)
        await _respond(scope, send, error.status, error.code, error.message, {})


async def _cancel_slot(slot: asyncio.Future[float], limiter: RequestLimiter) -> None:
    if slot.done():
        if not slot.cancelled() and slot.exception() is None:
            limiter.release(slot.result())
        return
    slot.cancel()
    with contextlib.suppress(asyncio.CancelledError, Overloaded):
        granted = await slot
        limiter.release(granted)


def _envelope_bytes(message: str) -> bytes:
    return json.dumps(
        {"code": "overloaded", "message": message, "detail": message}, separators=(",", ":")
    ).encode()


OVERLOADED_BODY = _envelope_bytes("The server is busy; retry after the time in Retry-After")
TOO_MANY_CONNECTIONS_BODY = _envelope_bytes(
    "The server has too many open connections; retry after the time in Retry-After"
)


def overloaded_response(
    retry_after: int, *, close: bool, body: bytes = OVERLOADED_BODY
) -> tuple[Message, Message]:
    """The ASGI messages of a 503 envelope (its body encoded once): refusing must cost little.

    `close` asks for the connection to be closed, so that a body the client sends is never read.
    """
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    return (
        {"type": "http.response.start", "status": 503, "headers": headers},
        {"type": "http.response.body", "body": body, "more_body": False},
    )


@dataclass(frozen=True)
class Admission:
    """The gate's admission rule, for the HTTP server to apply before the app is even called.

    Under overload most requests are refused; each refusal the server answers itself (the app's
    middleware, routing and response classes never run, and the body is never read) leaves more of
    the process's CPU for the requests it admits.
    """

    limiter: RequestLimiter
    store_prefixes: tuple[str, ...]

    def refusal(self, scope: Scope) -> tuple[Message, Message] | None:
        """The 503 a new request gets now, or None when it goes on to the app."""
        if not route_policy(scope["method"], scope["path"], store_prefixes=self.store_prefixes).gated:
            return None
        overloaded = self.limiter.overloaded()
        if overloaded is None:
            return None
        self.limiter.refused += 1
        return overloaded_response(overloaded.retry_after, close=_has_body(scope))


async def _respond(
    scope: Scope, send: Send, status: int, code: str, message: str, headers: dict[str, str]
) -> None:
    """An error envelope sent straight from the gate; the connection is closed when a body is left unread."""
    if _has_body(scope):
        headers = {**headers, "Connection": "close"}
    response = envelope(status, code, message, headers=headers)
    await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
