"""Checks the functional tests share: the JSON error envelope, S3 XML error documents and polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree

import httpx2

ENVELOPE_KEYS = {"code", "message", "detail"}
# Messages of S3 error documents, as S3 words them.
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)
ONE_AUTH_MECHANISM = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
    "parameter or the Authorization header should be specified"
)


def assert_envelope(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the response is the JSON error envelope with this status and code; return the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == ENVELOPE_KEYS, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    assert body["message"].strip()
    if code == "validation_error":
        # The one exception to detail == message: validation errors keep the upstream list of problems.
        assert isinstance(body["detail"], list), body
    else:
        assert body["detail"] == body["message"]
    if status == 401:
        assert response.headers.get("www-authenticate") == "Bearer"
    return body


def s3_error(response: httpx2.Response, *, status: int, code: str, message: str) -> dict[str, str]:
    """Assert an S3 XML error document with this status, Code and Message; its elements by name, in order."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/xml"
    root = ElementTree.fromstring(response.content)  # noqa: S314 (our own server's answer)
    assert root.tag == "Error"
    elements = [(child.tag, child.text or "") for child in root]
    names = [name for name, _ in elements]
    assert names[:2] == ["Code", "Message"], names
    assert names[-2:] == ["RequestId", "HostId"], names
    assert len(set(names)) == len(names), names
    values = dict(elements)
    assert values["Code"] == code, response.text
    assert values["Message"] == message, response.text
    assert values["RequestId"] == response.headers["x-amz-request-id"]
    return values


def wait_for(condition: Callable[[], bool], *, timeout: float = 3.0) -> bool:
    """Poll until the condition holds or the timeout passes; whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
