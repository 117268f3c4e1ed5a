"""A webhook receiver on loopback for the tests: it keeps every request and verifies signatures as a
real receiver would."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


@dataclass
class Receiver:
    """An HTTP server on loopback answering 204 on /ok and 500 on /fail, keeping every request."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def on(self, path: str, event_type: str | None = None) -> list[Received]:
        return [
            request
            for request in list(self.requests)
            if request.path == path and event_type in (None, request.headers["x-datalab-event"])
        ]


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A receiver on a free loopback port, stopped on exit."""
    requests: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            requests.append(Received(path=self.path, headers=headers, body=body, at=time.monotonic()))
            self.send_response(204 if self.path == "/ok" else 500)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(server=server, requests=requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def verified(request: Received, secret: str) -> bool:
    """What a receiver does: recompute the signature of "<timestamp>.<body>" and compare in constant time."""
    timestamp = request.headers["x-datalab-timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("sha256=" + expected, request.headers["x-datalab-signature"])
