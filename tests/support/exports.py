"""Helpers for the export tests: admin commands, published CSV files, download URLs and S3 error documents."""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit
from xml.etree import ElementTree

import httpx
from typer.testing import CliRunner

from tests.support.server import LiveServer, LoggedIn

DEMO_FICE = "001024"
DEMO_ORGANIZATION_NAME = "Sample University"
DEMO_DISPLAY_NAME = "API Service Account"
PRODUCT_KEYS = (
    "aos",
    "prospect",
    "affinity",
    "ematch",
    "score-reporter",
    "declared",
    "inquiry",
    "enrollment-marketing",
)
# The export item keys of the documentation's "Get List of Files" response example, no more, no fewer.
EXPORT_KEYS = {
    "uid",
    "fice",
    "organizationUid",
    "productKey",
    "purchaseItems",
    "status",
    "listGenerated",
    "listPath",
    "quantity",
    "costInPoints",
    "costInDollars",
    "date",
    "deliveries",
    "created",
    "isExpired",
    "overdueEmailSentAt",
    "isContinuous",
}
ENVELOPE_KEYS = {"code", "message", "detail"}
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)
ONE_AUTH_MECHANISM = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
    "parameter or the Authorization header should be specified"
)
_used_fices = {DEMO_FICE}


def admin_json(server: LiveServer, *args: str) -> Any:
    """Run the admin command `datalab <args> --json` on the server's data and parse what it printed.

    The command runs in this process (the same Typer app `server.cli_json` starts in a subprocess), which
    saves the interpreter start-up and imports of every call.
    """
    from datalab.cli import app

    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("DATALAB_")}
    env.update(server.env)
    result = CliRunner().invoke(app, [*args, "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, f"datalab {' '.join(args)} failed ({result.exit_code}):\n{result.output}"
    return json.loads(result.stdout)


def unique_fice() -> str:
    """A six-digit FICE code with a leading zero that no other organization of this run has."""
    while True:
        fice = f"0{secrets.randbelow(100_000):05d}"
        if fice not in _used_fices:
            _used_fices.add(fice)
            return fice


@dataclass(frozen=True)
class Account:
    """An organization with one service account and its API key, created through the admin commands."""

    organization_uid: str
    organization_name: str
    fice: str
    user_uid: str
    user_name: str
    password: str
    api_key: str


def create_account(server: LiveServer, *, name: str) -> Account:
    """A new organization (name plus a random suffix) with a user and an API key."""
    fice = unique_fice()
    organization = admin_json(
        server, "admin", "org", "create", "--name", f"{name} {fice}", "--fice", fice, "--state", "KS"
    )
    user_name = f"svc-{secrets.token_hex(4)}@{fice}.example.edu"
    password = secrets.token_urlsafe(16)
    user = admin_json(
        server, "admin", "user", "create", "--user-name", user_name, "--org", fice, "--password", password
    )
    key = admin_json(server, "admin", "apikey", "create", "--user", user_name)
    return Account(
        organization_uid=organization["uid"],
        organization_name=organization["name"],
        fice=fice,
        user_uid=user["uid"],
        user_name=user_name,
        password=password,
        api_key=key["apiKey"],
    )


def login_as(server: LiveServer, account: Account) -> LoggedIn:
    """Log the account in; its headers act in its organization."""
    return server.login(user_name=account.user_name, password=account.password, api_key=account.api_key)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    """Write a CSV file the way export files are written (comma, CRLF, minimal quoting)."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def sample_rows(count: int) -> list[list[str]]:
    """Data rows with the awkward values real files have: commas, quotes, tabs, accents, leading zeros."""
    return [
        [
            f"{index:08d}",
            f"First{index}",
            "O'Brien, Jr." if index % 3 == 0 else f"Last{index}",
            'He said "hi"' if index % 4 == 0 else "Tab\there" if index % 5 == 0 else "plain",
            "José Núñez" if index % 7 == 0 else "",
            f"{(index * 37) % 100:05d}",
        ]
        for index in range(count)
    ]


SAMPLE_HEADER = ("ID", "FIRSTNAME", "LASTNAME", "NOTE", "NICKNAME", "POSTALCODE")


def publish(
    server: LiveServer, source: Path, *, product: str, org: str = DEMO_FICE, order_name: str = ""
) -> dict[str, Any]:
    """Publish a CSV file as a new export with `datalab admin export publish`; the printed export."""
    args = ["admin", "export", "publish", "--org", org, "--product", product]
    if order_name:
        args += ["--order-name", order_name]
    published: dict[str, Any] = admin_json(server, *args, str(source))
    return published


def parse_csv(text: str, *, delimiter: str = ",") -> list[list[str]]:
    """Every row of a delimited text."""
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


def download_url(
    client: httpx.Client,
    server: LiveServer,
    logged_in: LoggedIn,
    uid: str,
    params: Mapping[str, str] | None = None,
) -> str:
    """GET /v1/datacenter/exports/<uid>/download and return the downloadUrl."""
    response = client.get(
        f"{server.base_url}/datacenter/exports/{uid}/download", headers=logged_in.headers, params=params
    )
    assert response.status_code == 200, response.text
    url: str = response.json()["downloadUrl"]
    return url


@contextmanager
def bare_client(**options: Any) -> Iterator[httpx.Client]:
    """An httpx client that sends no headers of its own beyond Host (like a plain `curl URL`)."""
    with httpx.Client(**options) as client:
        client.headers.clear()
        yield client


def file_name_of(url: str) -> str:
    """The last path segment of a URL, URL-decoded: the name integration scripts save the file under."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def query_of(url: str) -> dict[str, str]:
    """The query parameters of a URL."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def with_query(url: str, **changes: str) -> str:
    """The URL with some query parameters replaced, order kept."""
    parts = urlsplit(url)
    pairs = [(name, changes.get(name, value)) for name, value in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def with_file_name(url: str, file_name: str) -> str:
    """The URL with its last path segment replaced."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rsplit("/", 1)[0] + "/" + file_name))


def s3_error(response: httpx.Response, *, status: int, code: str, message: str) -> list[tuple[str, str]]:
    """Assert an S3 XML error document with this status, Code and Message; its elements in order."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/xml"
    root = ElementTree.fromstring(response.content)  # noqa: S314 (our own server's answer)
    assert root.tag == "Error"
    elements = [(child.tag, child.text or "") for child in root]
    fields = dict(elements)
    assert fields.get("Code") == code, response.text
    assert fields.get("Message") == message, response.text
    assert [name for name, _ in elements][:2] == ["Code", "Message"]
    assert [name for name, _ in elements][-2:] == ["RequestId", "HostId"]
    assert fields["RequestId"] == response.headers["x-amz-request-id"]
    return elements


def assert_envelope(response: httpx.Response, status: int, code: str) -> str:
    """Assert the JSON error envelope with this status and code; return its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == ENVELOPE_KEYS, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    assert body["message"]
    assert body["detail"] == body["message"]
    message: str = body["message"]
    return message


def wait_for(condition: Callable[[], bool], *, timeout: float = 3.0) -> bool:
    """Poll until the condition holds or the timeout passes; whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
