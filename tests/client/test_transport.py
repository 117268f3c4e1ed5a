"""The transport seam: with httpx2.MockTransport standing in for the network, retries are observable."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest

from datalab.client import ApiError, Client, ConnectionFailed, DownloadError

BASE = "https://datalab.test/v1"
STORE = "https://store.test/datalab-exports"
EXPORT_UID = "6a3c7d52-0d7e-4c55-9f1f-3b1c2f0e8a10"
EXPORTS = [
    {"uid": "11111111-aaaa-4bbb-8ccc-000000000001", "productKey": "prospect", "status": "NotDelivered"},
    {"uid": "11111111-aaaa-4bbb-8ccc-000000000002", "productKey": "aos", "status": "Delivered"},
]

Route = Callable[[httpx2.Request, int], httpx2.Response]


@dataclass
class FakeApi:
    """Answers by "METHOD path" (path without the query); counts the calls and records the sleeps."""

    routes: dict[str, Route]
    calls: list[httpx2.Request] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.calls.append(request)
        route = f"{request.method} {request.url.host}{request.url.path}"
        answer = self.routes.get(route)
        if answer is None:
            return httpx2.Response(404, json={"code": "not_found", "message": route, "detail": route})
        return answer(request, self.count(route))

    def count(self, route: str) -> int:
        """How many calls this route had, this one included."""
        return sum(1 for call in self.calls if f"{call.method} {call.url.host}{call.url.path}" == route)

    def client(self, *, retries: int = 4) -> Client:
        return Client(
            BASE,
            "the-api-key",
            "user@example.edu",
            "the password",
            transport=httpx2.MockTransport(self.handle),
            environ={},
            sleep=self.sleeps.append,
            retries=retries,
        )


def _logged_in(request: httpx2.Request, _: int) -> httpx2.Response:
    body = json.loads(request.content)
    assert body == {"userName": "user@example.edu", "password": "the password", "acceptedTerms": True}
    assert request.headers["x-api-key"] == "the-api-key"
    return httpx2.Response(
        200, json={"sessionToken": "session-1", "user": {"organizations": [{"uid": "org-1"}]}}
    )


def _exports(request: httpx2.Request, _: int) -> httpx2.Response:
    assert request.headers["authorization"] == "Bearer session-1"
    assert request.headers["organization"] == "org-1"
    assert request.headers["x-api-key"] == "the-api-key"
    return httpx2.Response(200, json=EXPORTS, headers={"total-count": str(len(EXPORTS))})


def _failing(status: int, times: int, then: Route, headers: dict[str, str] | None = None) -> Route:
    def answer(request: httpx2.Request, call: int) -> httpx2.Response:
        if call <= times:
            return httpx2.Response(status, text="busy", headers=headers)
        return then(request, call)

    return answer


def test_a_get_answered_503_twice_is_retried_and_succeeds() -> None:
    api = FakeApi(
        {
            "POST datalab.test/v1/login": _logged_in,
            "GET datalab.test/v1/datacenter/exports": _failing(503, 2, _exports),
        }
    )
    with api.client() as client:
        exports = list(client.exports(status="NotDelivered"))

    assert [export.uid for export in exports] == [item["uid"] for item in EXPORTS]
    assert api.count("GET datalab.test/v1/datacenter/exports") == 3
    assert len(api.sleeps) == 2
    assert all(0 < pause <= 30 for pause in api.sleeps)
    assert [call.url.params.get("status") for call in api.calls[1:]] == ["NotDelivered"] * 3


def test_a_get_failing_every_time_raises_api_error_after_the_retries() -> None:
    api = FakeApi(
        {
            "POST datalab.test/v1/login": _logged_in,
            "GET datalab.test/v1/datacenter/exports": _failing(502, 99, _exports),
        }
    )
    with api.client(retries=2) as client, pytest.raises(ApiError) as raised:
        list(client.exports())

    assert raised.value.status == 502
    assert api.count("GET datalab.test/v1/datacenter/exports") == 3
    assert len(api.sleeps) == 2


def test_an_upload_post_answered_503_is_not_retried(tmp_path: Path) -> None:
    api = FakeApi(
        {
            "POST datalab.test/v1/login": _logged_in,
            "POST datalab.test/v1/files/upload": _failing(503, 99, _exports),
        }
    )
    source = tmp_path / "enrollment.csv"
    source.write_bytes(b"UniqueID,EntryYear\r\n1,2026\r\n")

    with api.client() as client, pytest.raises(ApiError) as raised:
        client.upload(source, "enrollment")

    assert raised.value.status == 503
    assert api.count("POST datalab.test/v1/files/upload") == 1
    assert api.sleeps == []
    assert [f"{call.method} {call.url.path}" for call in api.calls] == [
        "POST /v1/login",
        "POST /v1/files/upload",
    ]


def test_retry_after_of_a_429_is_honoured() -> None:
    api = FakeApi(
        {
            "POST datalab.test/v1/login": _logged_in,
            "GET datalab.test/v1/datacenter/exports": _failing(429, 1, _exports, {"Retry-After": "7"}),
        }
    )
    with api.client() as client:
        assert len(list(client.exports())) == 2

    assert api.sleeps == [7.0]
    assert api.count("GET datalab.test/v1/datacenter/exports") == 2


def test_an_unreachable_server_is_connection_failed_after_the_retries() -> None:
    attempts: list[httpx2.Request] = []
    sleeps: list[float] = []

    def refuse(request: httpx2.Request) -> httpx2.Response:
        attempts.append(request)
        raise httpx2.ConnectError("connection refused", request=request)

    with (
        Client(
            BASE,
            "k",
            "u",
            "p",
            transport=httpx2.MockTransport(refuse),
            environ={},
            retries=3,
            sleep=sleeps.append,
        ) as client,
        pytest.raises(ConnectionFailed, match="connection refused"),
    ):
        client.login()

    assert len(attempts) == 4
    assert len(sleeps) == 3


def _download_urls(request: httpx2.Request, call: int) -> httpx2.Response:
    assert request.headers["authorization"] == "Bearer session-1"
    return httpx2.Response(
        200, json={"downloadUrl": f"{STORE}/org-1/prospect/{call}/Prospect.csv?X-Amz-Token={call}"}
    )


CONTENT = b"ID,NAME\r\n1,Ann\r\n2,Bo\r\n"


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (
            {"content-length": str(len(CONTENT) + 100)},
            CONTENT,
            f"received {len(CONTENT)} of {len(CONTENT) + 100} bytes",
        ),
        ({"etag": '"' + "0" * 32 + '"'}, CONTENT, "MD5 does not match"),
        ({}, b"<Error><Code>AccessDenied</Code></Error>", None),
    ],
    ids=["short-body", "md5-mismatch", "forbidden"],
)
def test_a_broken_download_is_retried_with_a_new_url_then_fails_leaving_nothing(
    tmp_path: Path, headers: dict[str, str], body: bytes, reason: str | None
) -> None:
    def store(request: httpx2.Request, _: int) -> httpx2.Response:
        if reason is None:
            return httpx2.Response(403, content=body)
        return httpx2.Response(200, content=body, headers=headers)

    api = FakeApi(
        {
            "POST datalab.test/v1/login": _logged_in,
            f"GET datalab.test/v1/datacenter/exports/{EXPORT_UID}/download": _download_urls,
            **{f"GET store.test/datalab-exports/org-1/prospect/{n}/Prospect.csv": store for n in range(1, 4)},
        }
    )
    dest = tmp_path / "downloads"

    with api.client(retries=2) as client, pytest.raises(DownloadError) as raised:
        client.download(EXPORT_UID, dest)

    assert raised.value.__class__ is DownloadError
    assert reason is None or reason in str(raised.value)
    fetched = [call.url for call in api.calls if call.url.host == "store.test"]
    # Each attempt asked the API for a new one-time URL and used it once.
    assert [url.params["X-Amz-Token"] for url in fetched] == ["1", "2", "3"]
    assert api.count(f"GET datalab.test/v1/datacenter/exports/{EXPORT_UID}/download") == 3
    assert list(dest.iterdir()) == []


def test_a_download_that_breaks_then_completes_keeps_only_the_complete_file(tmp_path: Path) -> None:
    def store(request: httpx2.Request, call: int) -> httpx2.Response:
        if request.url.params["X-Amz-Token"] == "1":
            return httpx2.Response(200, content=CONTENT[:5], headers={"content-length": str(len(CONTENT))})
        return httpx2.Response(
            200,
            content=CONTENT,
            headers={"etag": f'"{hashlib.md5(CONTENT).hexdigest()}"'},  # noqa: S324
        )

    api = FakeApi(
        {
            "POST datalab.test/v1/login": _logged_in,
            f"GET datalab.test/v1/datacenter/exports/{EXPORT_UID}/download": _download_urls,
            **{f"GET store.test/datalab-exports/org-1/prospect/{n}/Prospect.csv": store for n in range(1, 3)},
        }
    )
    with api.client() as client:
        path = client.download(EXPORT_UID, tmp_path)

    assert path == tmp_path / "Prospect.csv"
    assert path.read_bytes() == CONTENT
    assert [p.name for p in tmp_path.iterdir()] == ["Prospect.csv"]
    assert len(api.sleeps) == 1


def test_a_failed_download_does_not_wait_after_its_last_attempt(tmp_path: Path) -> None:
    def store(request: httpx2.Request, _: int) -> httpx2.Response:
        return httpx2.Response(200, content=CONTENT[:5], headers={"content-length": str(len(CONTENT))})

    api = FakeApi(
        {
            "POST datalab.test/v1/login": _logged_in,
            f"GET datalab.test/v1/datacenter/exports/{EXPORT_UID}/download": _download_urls,
            **{f"GET store.test/datalab-exports/org-1/prospect/{n}/Prospect.csv": store for n in range(1, 4)},
        }
    )
    with api.client(retries=2) as client, pytest.raises(DownloadError):
        client.download(EXPORT_UID, tmp_path)

    # Three attempts need two pauses between them; a pause after the last one only delays the error.
    assert len(api.sleeps) == 2


def test_a_download_a_proxy_compressed_anyway_is_stored_decoded(tmp_path: Path) -> None:
    compressed = gzip.compress(CONTENT)

    def store(request: httpx2.Request, _: int) -> httpx2.Response:
        assert request.headers["accept-encoding"] == "identity"
        return httpx2.Response(
            200,
            content=compressed,
            headers={
                "content-encoding": "gzip",
                "content-length": str(len(compressed)),
                "etag": f'"{hashlib.md5(compressed, usedforsecurity=False).hexdigest()}"',
            },
        )

    api = FakeApi(
        {
            "POST datalab.test/v1/login": _logged_in,
            f"GET datalab.test/v1/datacenter/exports/{EXPORT_UID}/download": _download_urls,
            "GET store.test/datalab-exports/org-1/prospect/1/Prospect.csv": store,
        }
    )
    with api.client() as client:
        path = client.download(EXPORT_UID, tmp_path)

    assert path.read_bytes() == CONTENT
    assert api.sleeps == []


def test_an_upload_posts_the_file_with_a_content_length(tmp_path: Path) -> None:
    source = tmp_path / "roster.csv"
    source.write_bytes(b"UniqueID,EntryYear\r\n" + b"00123,2026\r\n" * 10_000)
    posted: list[httpx2.Request] = []

    def create(_request: httpx2.Request, _: int) -> httpx2.Response:
        return httpx2.Response(
            200, json={"id": "file-1", "url": "https://store.test/datalab-uploads", "fields": {"key": "k"}}
        )

    def receive(request: httpx2.Request, _: int) -> httpx2.Response:
        posted.append(request)
        return httpx2.Response(204)

    def record(_request: httpx2.Request, _: int) -> httpx2.Response:
        return httpx2.Response(200, json={"id": "file-1", "fileName": "roster.csv", "status": "analyzing"})

    api = FakeApi(
        {
            "POST datalab.test/v1/login": _logged_in,
            "POST datalab.test/v1/files/upload": create,
            "POST store.test/datalab-uploads": receive,
            "GET datalab.test/v1/files/file-1": record,
        }
    )
    with api.client() as client:
        assert client.upload(source, "enrollment").status == "analyzing"

    (request,) = posted
    assert "transfer-encoding" not in request.headers
    body = request.read()
    assert int(request.headers["content-length"]) == len(body)
    # The file is the last part of the form, after the policy fields.
    assert body.index(b'name="key"') < body.index(b'name="file"')
    assert "authorization" not in request.headers
