"""moto's S3 server as a local stand-in for S3, in a thread of the test process.

moto keeps its buckets in the process, shared by every moto server it runs: each test server gets
buckets of its own (`new_buckets`), so tests sharing a server cannot see each other's objects.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

# moto accepts any key; the test process and the servers it starts sign with this one.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client of the moto server."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access line per request on the test's output."""


@dataclass
class MotoServer:
    """A moto S3 server on a free loopback port."""

    endpoint: str
    _server: BaseWSGIServer
    _stopped: bool = False

    def new_buckets(self) -> dict[str, str]:
        """Make an exports and an uploads bucket nobody else uses: the settings naming them."""
        client = s3_client(self.endpoint)
        suffix = secrets.token_hex(4)
        buckets = {"exports_bucket": f"exports-{suffix}", "uploads_bucket": f"uploads-{suffix}"}
        for bucket in buckets.values():
            client.create_bucket(Bucket=bucket)
        return buckets

    def stop(self) -> None:
        """Stop serving and close the port: S3 is down, connections are refused."""
        if not self._stopped:
            self._stopped = True
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def running_moto() -> Iterator[MotoServer]:
    """A moto S3 server serving in a thread until the context exits."""
    server = make_server(
        "127.0.0.1",
        0,
        DomainDispatcherApplication(create_backend_app),
        threaded=True,
        request_handler=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    thread.start()
    moto = MotoServer(endpoint=f"http://127.0.0.1:{server.server_port}", _server=server)
    try:
        yield moto
    finally:
        moto.stop()
        thread.join(timeout=10)
