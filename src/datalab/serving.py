"""Running the server: uvicorn (httptools) with bounded headers and read timeouts, in one or more processes.

With `workers` > 1, uvicorn starts that many processes on one socket; each builds the app from the
same DATALAB_* environment (after the parent migrated the database once), so they share the data
directory (SQLite in WAL mode: readers never block, writers take turns) or PostgreSQL.
"""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from datalab.app import ADMISSION_STATE, create_app
from datalab.limits import (
    TOO_MANY_CONNECTIONS_BODY,
    Admission,
    Message,
    Receive,
    Scope,
    Send,
    overloaded_response,
)
from datalab.logs import log_config
from datalab.operations.metrics import REFUSED_EARLY
from datalab.runtime import build_runtime
from datalab.settings import Settings, load_settings

PROTOCOL = "datalab.serving:BoundedHttpToolsProtocol"
FACTORY = "datalab.serving:app_from_environment"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with bounded headers, and refusals answered before the app runs.

    httptools buffers whatever header bytes arrive, and uvicorn sets no deadline for them: a 64 MB
    header would be read whole, and a client trickling a header byte at a time would hold its
    connection forever. Here a request whose line and headers exceed `max_header_bytes` gets 431 and
    the connection is closed; so is one whose headers are not complete `header_timeout` seconds after
    its first byte (or after the connection opened).

    Every request first passes `_refuse_or_run`: past `max_connections` open connections (or requests
    in progress) it gets a 503 envelope and the connection is closed (uvicorn's own
    `limit_concurrency` answers plain text and cannot be told otherwise, so it is not used); and when
    the app's request gate would refuse it (the `Admission` the app's lifespan publishes), it gets the
    gate's 503 here, without the app's middleware, routing or body reading.
    """

    header_timeout: float = 30.0
    max_header_bytes: int = 16 * 1024
    max_connections: int | None = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._app = self.app
        self.app = self._refuse_or_run

    async def _refuse_or_run(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope)
        if refusal is None:
            await self._app(scope, receive, send)
            return
        reason, messages = refusal
        REFUSED_EARLY.labels(reason).inc()
        for message in messages:
            await send(message)

    def _refusal(self, scope: Scope) -> tuple[str, tuple[Message, Message]] | None:
        if scope["type"] != "http":
            return None
        limit = self.max_connections
        # This request's task and connection are counted already: more than the limit is over it.
        if limit is not None and (len(self.connections) > limit or len(self.tasks) > limit):
            return "connections", overloaded_response(1, close=True, body=TOO_MANY_CONNECTIONS_BODY)
        admission = self.app_state.get(ADMISSION_STATE)
        refused = admission.refusal(scope) if isinstance(admission, Admission) else None
        return None if refused is None else ("gate", refused)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._refused = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_overdue)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        idle = self.cycle is None or self.cycle.response_complete
        if self._awaiting_headers and idle and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        awaiting = self._awaiting_headers
        if awaiting:
            self._arm_header_timer()
            self._header_bytes += len(data)
        super().data_received(data)
        if awaiting and self._awaiting_headers and self._header_bytes > self.max_header_bytes:
            self._refuse_headers()

    def _refuse_headers(self) -> None:
        if self._refused:
            return
        self._refused = True
        message = f"The request line and headers are larger than {self.max_header_bytes} bytes"
        body = json.dumps({"code": "headers_too_large", "message": message, "detail": message}).encode()
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        self._disarm_header_timer()
        self.transport.write(head + body)
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm_header_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:
            # Headers that arrived in one piece: refused here, and parsing stops (the parser's error
            # is answered by send_400_response, which stays silent after this answer).
            self._refuse_headers()
            raise ValueError("request headers too large")
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            super().send_400_response(msg)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True
        self._header_bytes = 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


def _prepare_process(settings: Settings) -> None:
    BoundedHttpToolsProtocol.header_timeout = settings.request_read_timeout_seconds
    BoundedHttpToolsProtocol.max_header_bytes = settings.max_header_bytes
    BoundedHttpToolsProtocol.max_connections = settings.max_connections


def _settle_heap() -> None:
    """Exempt what exists once the app is built from garbage collection.

    The app's modules, models and settings are some 200,000 long-lived objects: every full collection
    would walk them all, holding the interpreter for a tenth of a second or more, which under load
    stalls every request. They live as long as the process, so they are moved out of the collector's
    sight (`gc.freeze`); what requests allocate is collected as usual.
    """
    gc.collect()
    gc.freeze()


def app_from_environment() -> FastAPI:
    """The app of one worker process: settings from the environment, database already migrated."""
    settings = load_settings()
    _prepare_process(settings)
    app = create_app(settings, migrate=False)
    _settle_heap()
    return app


def uvicorn_options(settings: Settings, *, host: str, port: int) -> dict[str, Any]:
    """uvicorn's options for these settings (the header limits are set on the protocol class)."""
    trusted = [ip.strip() for ip in settings.forwarded_allow_ips.split(",") if ip.strip()]
    return {
        "host": host,
        "port": port,
        "http": PROTOCOL,
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or None,
        "server_header": False,
        # Every process logs in the configured format; access lines are redacted (datalab.logs).
        "log_config": log_config(settings.log_format),
    }


def serve(settings: Settings, *, host: str, port: int, workers: int = 1) -> None:
    """Migrate the database, then serve on host:port with `workers` processes."""
    options = uvicorn_options(settings, host=host, port=port)
    _prepare_process(settings)
    if workers <= 1:
        app = create_app(settings)
        _settle_heap()
        uvicorn.run(app, **options)
        return
    build_runtime(settings, migrate=True).dispose()  # once, before the workers start
    uvicorn.run(FACTORY, factory=True, workers=workers, **options)
