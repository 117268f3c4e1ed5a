"""Malformed and oversized input: every one gets a 4xx with the error envelope, and nothing is stored.

Each case is one a hostile or broken client sent to the server: deep JSON, huge numbers, lone
surrogates, wrong types, out-of-range integers, oversized bodies and headers, slow bodies.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import func, select

from datalab.accounts.models import LoginThrottle
from tests.conftest import ServerFactory
from tests.support.checks import assert_envelope
from tests.support.server import LiveServer, LoggedIn

DEEP = "[" * 5000 + "]" * 5000  # past Python's recursion limit, within every body limit
NESTED_40 = '{"a": ' * 40 + "1" + "}" * 40
HUGE_INTEGER = "9" * 5000
SURROGATE = '"\\ud800"'


@pytest.fixture(scope="module")
def hostile(make_server: ServerFactory) -> LiveServer:
    """A server of its own: these tests count stored rows and measure its database. Its read timeout is
    short, for the tests of clients that stop sending, yet far longer than a loopback client takes
    between the parts of what it sends."""
    return make_server(request_read_timeout_seconds="1", own_process=True)


@pytest.fixture(scope="module")
def demo(hostile: LiveServer) -> LoggedIn:
    return hostile.login()


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30) as client:
        yield client


def _post_raw(
    client: httpx2.Client, url: str, body: str | bytes, headers: dict[str, str] | None = None
) -> httpx2.Response:
    return client.post(url, content=body, headers={"Content-Type": "application/json", **(headers or {})})


def _login_text(user_name: str = '"someone@example.edu"', password: str = '"not-the-password"') -> str:  # noqa: S107
    return f'{{"userName": {user_name}, "password": {password}, "acceptedTerms": true}}'


def _upload_text(**fields: str) -> str:
    values = {"fileName": '"roster.csv"', "productType": '"enrollment"', **fields}
    return "{" + ", ".join(f'"{name}": {value}' for name, value in values.items()) + "}"


def _throttle_rows(server: LiveServer) -> int:
    with server.db() as db:
        return int(db.scalar(select(func.count()).select_from(LoginThrottle)) or 0)


# --- JSON bodies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [DEEP, NESTED_40], ids=["5000-deep", "40-deep"])
def test_deeply_nested_json_is_refused_on_login_upload_and_process(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn, body: str
) -> None:
    login = _post_raw(client, hostile.base_url + "/login", body, {"x-api-key": demo.api_key})
    assert_envelope(login, 400, "invalid_body")
    upload = _post_raw(client, hostile.base_url + "/files/upload", body, demo.headers)
    assert_envelope(upload, 400, "invalid_body")
    process = _post_raw(client, hostile.base_url + "/files/some-id/process", body, demo.headers)
    assert_envelope(process, 400, "invalid_body")


def test_a_json_integer_of_5000_digits_is_refused(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn
) -> None:
    login = _post_raw(
        client, hostile.base_url + "/login", _login_text(password=HUGE_INTEGER), {"x-api-key": demo.api_key}
    )
    assert_envelope(login, 400, "invalid_json")
    upload = _post_raw(
        client, hostile.base_url + "/files/upload", _upload_text(fileDescription=HUGE_INTEGER), demo.headers
    )
    assert_envelope(upload, 400, "invalid_json")
    process = _post_raw(
        client, hostile.base_url + "/files/some-id/process", f'{{"UniqueID": {HUGE_INTEGER}}}', demo.headers
    )
    assert_envelope(process, 400, "invalid_json")


@pytest.mark.parametrize("field", ["userName", "password"])
def test_a_lone_surrogate_in_login_fields_is_refused_and_not_counted(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn, field: str
) -> None:
    before = _throttle_rows(hostile)
    text = _login_text(**{("user_name" if field == "userName" else "password"): SURROGATE})
    response = _post_raw(client, hostile.base_url + "/login", text, {"x-api-key": demo.api_key})
    assert_envelope(response, 400, "invalid_text")
    assert _throttle_rows(hostile) == before


@pytest.mark.parametrize("field", ["fileName", "fileDescription", "dataSource"])
def test_a_lone_surrogate_in_upload_fields_is_refused(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn, field: str
) -> None:
    response = _post_raw(
        client, hostile.base_url + "/files/upload", _upload_text(**{field: SURROGATE}), demo.headers
    )
    assert_envelope(response, 400, "invalid_text")


def test_a_lone_surrogate_in_a_process_field_name_is_refused(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn
) -> None:
    for body in ('{"\\udfff": "Student Number"}', '{"fieldsMap": {"UniqueID": "\\ud800x"}}'):
        response = _post_raw(client, hostile.base_url + "/files/some-id/process", body, demo.headers)
        assert_envelope(response, 400, "invalid_text")


def test_bytes_that_are_not_utf8_are_refused(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn
) -> None:
    body = _upload_text(fileDescription='"caf\xe9"').encode("latin-1")
    response = _post_raw(client, hostile.base_url + "/files/upload", body, demo.headers)
    assert_envelope(response, 400, "invalid_encoding")


@pytest.mark.parametrize(
    "values_map", ['["Gender"]', '"Gender"', "42", '{"Gender": ["M"]}', '{"Gender": "M"}']
)
def test_values_map_of_the_wrong_type_is_422(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn, values_map: str
) -> None:
    body = f'{{"fieldsMap": {{"UniqueID": "Student Number"}}, "valuesMap": {values_map}}}'
    response = _post_raw(client, hostile.base_url + "/files/some-id/process", body, demo.headers)
    error = assert_envelope(response, 422, "validation_error")
    assert error["detail"][0]["loc"] == ["body", "valuesMap"]


# --- field lengths --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "length"),
    [("fileName", 1025), ("fileDescription", 2001), ("dataSource", 31), ("productType", 65)],
)
def test_upload_fields_longer_than_their_limit_are_422(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn, field: str, length: int
) -> None:
    body = _upload_text(**{field: '"' + "x" * length + '"'})
    response = _post_raw(client, hostile.base_url + "/files/upload", body, demo.headers)
    error = assert_envelope(response, 422, "validation_error")
    assert error["detail"][0]["loc"] == ["body", field]


def test_mapping_names_and_values_longer_than_255_are_422(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn
) -> None:
    long = "x" * 256
    for body in (
        f'{{"{long}": "Student Number"}}',
        f'{{"UniqueID": "{long}"}}',
        f'{{"fieldsMap": {{"UniqueID": "a"}}, "valuesMap": {{"Gender": {{"{long}": "M"}}}}}}',
        f'{{"fieldsMap": {{"UniqueID": "a"}}, "valuesMap": {{"Gender": {{"Man": "{long}"}}}}}}',
    ):
        response = _post_raw(client, hostile.base_url + "/files/some-id/process", body, demo.headers)
        assert_envelope(response, 422, "validation_error")


def test_long_user_names_and_passwords_are_refused_and_store_nothing(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn
) -> None:
    before = _throttle_rows(hostile)
    for text, code in (
        (_login_text(user_name='"' + "u" * 255 + '"'), "invalid_user_name"),
        (_login_text(password='"' + "p" * 1025 + '"'), "invalid_password"),
    ):
        response = _post_raw(client, hostile.base_url + "/login", text, {"x-api-key": demo.api_key})
        assert_envelope(response, 400, code)
    assert _throttle_rows(hostile) == before


def test_failed_logins_are_counted_under_a_digest_not_the_user_name(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn
) -> None:
    name = "nobody-by-this-name@example.edu"
    response = _post_raw(
        client, hostile.base_url + "/login", _login_text(user_name=f'"{name}"'), {"x-api-key": demo.api_key}
    )
    assert_envelope(response, 401, "invalid_credentials")
    with hostile.db() as db:
        scopes = list(db.scalars(select(LoginThrottle.scope)))
    assert scopes
    assert all(len(scope) <= 69 for scope in scopes)
    assert not any(name in scope or "127.0.0.1" in scope for scope in scopes)


def _database_bytes(server: LiveServer) -> int:
    if not server.database_url.startswith("sqlite"):
        with server.engine.connect() as connection:
            return int(connection.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one())
    path = Path(server.database_url.split(":///", 1)[1])
    return sum(
        candidate.stat().st_size
        for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
        if candidate.exists()
    )


def test_three_10_mb_user_names_grow_the_database_by_less_than_1_mib(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn
) -> None:
    before = _database_bytes(hostile)
    rows = _throttle_rows(hostile)
    name = '"' + "n" * (10 * 1024 * 1024) + '"'
    for _ in range(3):
        response = _post_raw(
            client, hostile.base_url + "/login", _login_text(user_name=name), {"x-api-key": demo.api_key}
        )
        assert_envelope(response, 413, "body_too_large")
    assert _database_bytes(hostile) - before < 1024 * 1024
    assert _throttle_rows(hostile) == rows


def test_a_data_center_sign_in_with_a_huge_user_name_stores_nothing(hostile: LiveServer) -> None:
    before_rows, before_bytes = _throttle_rows(hostile), _database_bytes(hostile)
    with httpx2.Client(timeout=30) as browser:
        page = browser.get(hostile.root + "/datacenter/signin")
        csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        for _ in range(3):
            response = browser.post(
                hostile.root + "/datacenter/signin",
                data={"userName": "u" * 200_000, "password": "whatever", "csrf_token": csrf},
            )
            assert response.status_code == 401
    assert _throttle_rows(hostile) == before_rows
    assert _database_bytes(hostile) - before_bytes < 1024 * 1024


# --- query parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/files", "/datacenter/exports"])
@pytest.mark.parametrize("offset", [str(2**63), str(2**64 + 1), "9" * 5000])
def test_offsets_past_the_database_range_are_400(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn, path: str, offset: str
) -> None:
    response = client.get(hostile.base_url + path, params={"offset": offset}, headers=demo.headers)
    assert_envelope(response, 400, "invalid_offset")


def test_data_center_uploads_page_refuses_a_huge_offset(client: httpx2.Client, hostile: LiveServer) -> None:
    assert hostile.demo is not None
    signin = client.get(hostile.root + "/datacenter/signin")
    csrf = signin.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    signed_in = client.post(
        hostile.root + "/datacenter/signin",
        data={"userName": hostile.demo.user_name, "password": hostile.demo.password, "csrf_token": csrf},
    )
    assert signed_in.status_code == 303, signed_in.text
    response = client.get(hostile.root + "/datacenter/uploads", params={"offset": str(2**63)})
    assert_envelope(response, 422, "validation_error")
    assert client.get(hostile.root + "/datacenter/uploads", params={"offset": "0"}).status_code == 200


# --- sizes and timeouts on the wire ---------------------------------------------------------------------


def _raw_exchange(server: LiveServer, request: bytes, *, then: bytes = b"", timeout: float = 10) -> bytes:
    """Send bytes on a fresh connection and return what the server answered before closing."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(request)
        if then:
            with contextlib.suppress(OSError):
                sock.sendall(then)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return answer


def test_a_200_mb_login_body_is_refused_before_it_is_read(hostile: LiveServer, demo: LoggedIn) -> None:
    head = (
        b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"x-api-key: "
        + demo.api_key.encode()
        + b"\r\nContent-Length: "
        + str(200 * 1024 * 1024).encode()
        + b"\r\n\r\n"
    )
    answer = _raw_exchange(hostile, head, then=b'{"userName": "')
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"code":"body_too_large"' in answer


def test_a_chunked_body_is_cut_off_at_the_limit(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"userName": "'
        for _ in range(64):
            yield b"u" * 1024

    response = client.post(hostile.base_url + "/login", content=chunks(), headers={"x-api-key": demo.api_key})
    assert_envelope(response, 413, "body_too_large")


def test_a_50_mb_process_body_is_refused_without_echoing_it(
    client: httpx2.Client, hostile: LiveServer, demo: LoggedIn
) -> None:
    body = '{"' + "F" * (50 * 1024 * 1024) + '": "x"}'
    response = _post_raw(client, hostile.base_url + "/files/some-id/process", body, demo.headers)
    assert_envelope(response, 413, "body_too_large")
    assert len(response.content) < 1024


def test_headers_larger_than_the_limit_get_431(hostile: LiveServer) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024) + b"\r\n\r\n"
    answer = _raw_exchange(hostile, request)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"code": "headers_too_large"' in answer


def test_a_client_that_never_finishes_its_headers_is_disconnected(hostile: LiveServer) -> None:
    started = time.monotonic()
    answer = _raw_exchange(hostile, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", timeout=30)
    assert answer == b""
    assert time.monotonic() - started < 25  # closed by the server (1 s deadline here), not by our timeout


def test_a_body_that_stops_arriving_gets_408(hostile: LiveServer, demo: LoggedIn) -> None:
    head = (
        b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"x-api-key: " + demo.api_key.encode() + b"\r\nContent-Length: 100\r\n\r\n"
    )
    answer = _raw_exchange(hostile, head, then=b'{"userName": ', timeout=30)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"code":"request_timeout"' in answer


def _no_server_errors(server: LiveServer) -> list[str]:
    log = (server.home / "server.log").read_text(errors="replace")
    # Access lines are JSON: the status is a field of its own.
    return [line for line in log.splitlines() if '"status": 500' in line or "Traceback" in line]


def test_no_input_above_made_the_server_fail(hostile: LiveServer) -> None:
    assert _no_server_errors(hostile) == []
    assert httpx2.get(hostile.root + "/healthz").status_code == 200
    assert hostile.process is not None
    assert hostile.process.poll() is None
