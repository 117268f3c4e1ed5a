"""What an operator sees of each request: its id (header and log lines) and its metrics.

`RequestObserver` is a pure ASGI middleware, outermost of the app's own, so the request gate's fast
refusals (503, 413, 408) are counted and carry an id too. For each HTTP request it:

- takes the client's `X-Request-ID` when it is 1 to 64 safe characters (letters, digits, `.`, `_`,
  `:`, `-`), else makes one (32 hex digits); returns it in `X-Request-ID` and puts it in the logging
  context, so every log line of the request carries it;
- records the request's duration, status and body bytes in and out under its route template.

The route is the template of the route the router chose; a request answered before one was chosen
(refused by the gate, or matching no route) is `unrouted`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from datalab.logs import REQUEST_ID
from datalab.operations.metrics import HTTP_IN_PROGRESS, observe_request

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
# Requests answered before any route was chosen: refused by the request gate, or matching no route.
UNROUTED = "unrouted"


def request_id_of(scope: Scope) -> str:
    """The client's X-Request-ID when it is well formed, else a new random id."""
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER and _SAFE_REQUEST_ID.fullmatch(value):
            return str(value.decode("ascii"))
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The path template of the route that answered the request, prefixes of included routers and all.

    The router leaves the route it chose in the scope, with its own template (without the prefixes of
    the routers it was included in): the prefix is the shortest start of the path after which the
    route's pattern matches the rest. Prefixes here are fixed text, so no id ever lands in a label.
    A mount leaves no route, only the root path it extended: its template ends in `/{path}`.
    """
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    pattern = getattr(route, "path_regex", None)
    if not isinstance(template, str) or not isinstance(pattern, re.Pattern):
        # A mounted app (static files) is chosen without a route; the mount extends the root path.
        if "app_root_path" in scope:
            return str(scope["root_path"]).removeprefix(str(scope["app_root_path"])) + "/{path}"
        return UNROUTED
    path: str = scope["path"]
    for cut, char in enumerate(path):
        if char == "/" and pattern.match(path[cut:]):
            return path[:cut] + template
    return template


class RequestObserver:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        # Each request runs in a task of its own, with its own copy of the context: nothing to reset.
        REQUEST_ID.set(request_id)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        started = time.perf_counter()
        status = "disconnected"  # until a response starts: a client that left before any answer
        received = sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = str(message["status"])
                message = {**message, "headers": [*message.get("headers", []), header]}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        HTTP_IN_PROGRESS.inc()
        try:
            await self.app(scope, counting_receive, observed_send)
        except Exception:
            if status == "disconnected":
                status = "500"  # answered by the server's error handler, outside this middleware
            raise
        finally:
            HTTP_IN_PROGRESS.dec()
            observe_request(
                method=scope["method"],
                route=route_template(scope),
                status=status,
                seconds=time.perf_counter() - started,
                received=received,
                sent=sent,
            )
