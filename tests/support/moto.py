"""moto's S3 server as a local stand-in for S3: started on a free port with the two buckets made."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import httpx2

from tests.support.server import free_port

BUCKETS = ("datalab-exports", "datalab-uploads")


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client of the moto server (moto accepts any key)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@contextmanager
def running_moto() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A moto S3 server with the exports and uploads buckets: its endpoint and its process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port := free_port())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx2.get(endpoint + "/moto-api/", timeout=1)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "moto did not start"
                time.sleep(0.1)
        client = s3_client(endpoint)
        for bucket in BUCKETS:
            client.create_bucket(Bucket=bucket)
        yield endpoint, process
    finally:
        process.terminate()
        process.wait(timeout=10)
