"""Helpers for the export tests: admin commands, published CSV files and download URLs."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import httpx2

from tests.support.accounts import DEMO_FICE
from tests.support.server import Deployment, LoggedIn

# The eight product keys of the documentation, in its order.
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


def admin_json(server: Deployment, *args: str) -> Any:
    """Run the admin command `datalab <args> --json` on the server's data, in this process."""
    return server.admin_json(*args)


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
    server: Deployment, source: Path, *, product: str, org: str = DEMO_FICE, order_name: str = ""
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
    client: httpx2.Client,
    server: Deployment,
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
def bare_client(**options: Any) -> Iterator[httpx2.Client]:
    """An httpx2 client that sends no headers of its own beyond Host (like a plain `curl URL`)."""
    with httpx2.Client(**options) as client:
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
