"""The one-time signed download URL: single use, expiry, tampering, S3-shaped errors, ranges, aborted and
concurrent transfers, row slices and other file types, against live servers."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx2
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from datalab.exports.models import Delivery, DownloadTicket, Export
from tests.support.checks import ONE_AUTH_MECHANISM, SIGNATURE_MISMATCH, assert_envelope, s3_error, wait_for
from tests.support.exports import (
    SAMPLE_HEADER,
    bare_client,
    download_url,
    file_name_of,
    parse_csv,
    publish,
    query_of,
    sample_rows,
    with_file_name,
    with_query,
    write_csv,
)
from tests.support.factories import add_export
from tests.support.server import LiveServer, LoggedIn, MovableClock

ServerFactory = Callable[..., LiveServer]
EXPIRED = "Request has expired"
ROWS = 40
BIG_BYTES = 30 * 1024 * 1024


@dataclass(frozen=True)
class Published:
    """An export this module published, with the file it was published from."""

    uid: str
    file_name: str
    content: bytes

    @property
    def rows(self) -> list[list[str]]:
        return parse_csv(self.content.decode())


def publish_sample(
    server: LiveServer, directory: Path, *, rows: int = ROWS, product: str = "prospect"
) -> Published:
    source = write_csv(directory / f"{product}-{rows}.csv", SAMPLE_HEADER, sample_rows(rows))
    published = publish(server, source, product=product, order_name="Download Test")
    return Published(uid=published["uid"], file_name=published["fileName"], content=source.read_bytes())


def url_for(server: LiveServer, logged_in: LoggedIn, uid: str, **params: str) -> str:
    with httpx2.Client() as client:
        return download_url(client, server, logged_in, uid, params)


def fetch(url: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    """A plain GET of a signed URL, the body read."""
    with bare_client(timeout=30) as client:
        return client.get(url, headers=headers)


def export_state(server: LiveServer, uid: str) -> tuple[str, int]:
    """The stored status of an export and its number of deliveries."""
    with server.db() as db:
        export = db.scalars(select(Export).where(Export.uid == uid)).one()
        count = db.scalar(select(func.count()).select_from(Delivery).where(Delivery.export_id == export.id))
        return export.status, int(count or 0)


def stays_undelivered(server: LiveServer, uid: str, seconds: float = 0.3) -> bool:
    """Whether the export stays NotDelivered without deliveries for a while (checked repeatedly)."""
    return not wait_for(lambda: export_state(server, uid) != ("NotDelivered", 0), timeout=seconds)


def answering() -> float:
    """How many requests the servers in this process are answering now."""
    return REGISTRY.get_sample_value("datalab_http_requests_in_progress") or 0.0


def answered(before: float) -> bool:
    """Whether the servers in this process came back to answering `before` requests (what they were
    answering before the requests since): a transfer's end is recorded before its request is done, so
    from then on its delivery, if any, is stored."""
    return wait_for(lambda: answering() <= before, timeout=30)


def ticket_of(server: LiveServer, url: str) -> DownloadTicket:
    with server.db() as db:
        ticket: DownloadTicket = db.scalars(
            select(DownloadTicket).where(DownloadTicket.token == query_of(url)["X-Amz-Security-Token"])
        ).one()
        db.expunge(ticket)
        return ticket


@pytest.fixture(scope="module")
def demo(server: LiveServer) -> LoggedIn:
    return server.login()


@pytest.fixture(scope="module")
def stocked(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """An export of the demo organization that the tests of this module download again and again."""
    return publish_sample(server, tmp_path_factory.mktemp("stocked"))


@pytest.fixture
def fresh(server: LiveServer, tmp_path: Path) -> Published:
    """A new, not yet delivered export of the demo organization."""
    return publish_sample(server, tmp_path, rows=30, product="ematch")


def test_url_works_once(server: LiveServer, demo: LoggedIn, stocked: Published) -> None:
    url = url_for(server, demo, stocked.uid)
    first = fetch(url)
    assert first.status_code == 200
    assert first.content == stocked.content
    second = fetch(url)
    error = s3_error(second, status=403, code="AccessDenied", message=EXPIRED)
    assert list(error) == [
        "Code",
        "Message",
        "X-Amz-Expires",
        "Expires",
        "ServerTime",
        "RequestId",
        "HostId",
    ]
    assert error["X-Amz-Expires"] == query_of(url)["X-Amz-Expires"] == "60"


def test_url_works_the_moment_it_is_issued(server: LiveServer, demo: LoggedIn, stocked: Published) -> None:
    """Scripts fetch the URL right after they get it: it must already be usable."""
    with httpx2.Client() as client, bare_client() as bare:
        for _ in range(25):
            url = download_url(client, server, demo, stocked.uid)
            response = bare.get(url)
            assert response.status_code == 200, response.text
            assert response.content == stocked.content


def test_expired_url(make_server: ServerFactory, server_clock: MovableClock) -> None:
    short_lived = make_server(download_url_ttl_seconds="1")
    logged_in = short_lived.login()
    with httpx2.Client() as client:
        uid = client.get(
            f"{short_lived.base_url}/datacenter/exports?productKey=score-reporter", headers=logged_in.headers
        ).json()[0]["uid"]
        url = download_url(client, short_lived, logged_in, uid)
    assert query_of(url)["X-Amz-Expires"] == "1"
    server_clock.advance(2.2)
    response = fetch(url)
    error = s3_error(response, status=403, code="AccessDenied", message=EXPIRED)
    assert list(error)[2:5] == ["X-Amz-Expires", "Expires", "ServerTime"]
    signed_at = datetime.strptime(query_of(url)["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    expires = signed_at + timedelta(seconds=1)
    assert error["X-Amz-Expires"] == "1"
    assert error["Expires"] == expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    server_time = datetime.strptime(error["ServerTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert server_time > expires
    assert abs((server_time - server_clock()).total_seconds()) < 5
    # Refused before it was claimed: nothing was served, nothing recorded.
    assert ticket_of(short_lived, url).claimed_at is None
    assert export_state(short_lived, uid) == ("NotDelivered", 0)


def flip(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


def signature_tampered(url: str) -> str:
    return with_query(url, **{"X-Amz-Signature": flip(query_of(url)["X-Amz-Signature"])})


def path_tampered(url: str) -> str:
    return with_file_name(url, "ACT-OTHER-UNIVERSITY-01012025-80030.csv")


def expires_tampered(url: str) -> str:
    return with_query(url, **{"X-Amz-Expires": "3600"})


def date_tampered(url: str) -> str:
    # Another second of the same day: the credential scope stays valid, the signature does not.
    amz_date = query_of(url)["X-Amz-Date"]
    seconds = (int(amz_date[13:15]) + 1) % 60
    return with_query(url, **{"X-Amz-Date": f"{amz_date[:13]}{seconds:02d}Z"})


def token_tampered(url: str) -> str:
    return with_query(url, **{"X-Amz-Security-Token": flip(query_of(url)["X-Amz-Security-Token"])})


@pytest.mark.parametrize(
    "tamper",
    [signature_tampered, path_tampered, expires_tampered, date_tampered, token_tampered],
    ids=["signature", "path", "X-Amz-Expires", "X-Amz-Date", "X-Amz-Security-Token"],
)
def test_tampered_url_does_not_match_its_signature(
    server: LiveServer, demo: LoggedIn, stocked: Published, tamper: Callable[[str], str]
) -> None:
    url = url_for(server, demo, stocked.uid)
    tampered = tamper(url)
    assert tampered != url
    error = s3_error(fetch(tampered), status=403, code="SignatureDoesNotMatch", message=SIGNATURE_MISMATCH)
    assert error["AWSAccessKeyId"] == query_of(url)["X-Amz-Credential"].split("/")[0]
    assert error["SignatureProvided"] == query_of(tampered)["X-Amz-Signature"]
    assert error["StringToSign"].startswith("AWS4-HMAC-SHA256\n")
    assert error["CanonicalRequest"].startswith("GET\n")
    # A refused request does not use the URL up.
    untouched = fetch(url)
    assert untouched.status_code == 200
    assert untouched.content == stocked.content


@pytest.mark.parametrize("scheme", ["Bearer", "JWT"])
def test_authorization_header_on_a_signed_url(
    server: LiveServer, demo: LoggedIn, stocked: Published, scheme: str
) -> None:
    """A client that forwards its API session header gets S3's 400, and the URL survives the attempt."""
    url = url_for(server, demo, stocked.uid)
    authorization = f"{scheme} {demo.token}"
    error = s3_error(
        fetch(url, headers={"Authorization": authorization}),
        status=400,
        code="InvalidArgument",
        message=ONE_AUTH_MECHANISM,
    )
    assert list(error.items())[2:4] == [("ArgumentName", "Authorization"), ("ArgumentValue", authorization)]
    assert ticket_of(server, url).claimed_at is None
    plain = fetch(url)
    assert plain.status_code == 200
    assert plain.content == stocked.content


def test_response_headers(server: LiveServer, demo: LoggedIn, stocked: Published) -> None:
    response = fetch(url_for(server, demo, stocked.uid))
    assert response.status_code == 200
    assert response.content == stocked.content
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["content-type"] == "text/csv"
    assert response.headers["etag"] == f'"{hashlib.md5(response.content, usedforsecurity=False).hexdigest()}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert "last-modified" in response.headers
    assert "content-encoding" not in response.headers


def test_range_is_partial_and_not_a_delivery(server: LiveServer, demo: LoggedIn, fresh: Published) -> None:
    size = len(fresh.content)
    url = url_for(server, demo, fresh.uid)
    before = answering()
    response = fetch(url, headers={"Range": "bytes=0-99"})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 0-99/{size}"
    assert response.headers["content-length"] == "100"
    assert response.content == fresh.content[:100]
    assert answered(before)
    assert stays_undelivered(server, fresh.uid)

    url = url_for(server, demo, fresh.uid)
    before = answering()
    suffix = fetch(url, headers={"Range": "bytes=-50"})
    assert suffix.status_code == 206
    assert suffix.headers["content-range"] == f"bytes {size - 50}-{size - 1}/{size}"
    assert suffix.content == fresh.content[-50:]
    assert answered(before)
    assert stays_undelivered(server, fresh.uid)

    # A whole download afterwards is the delivery.
    whole = fetch(url_for(server, demo, fresh.uid))
    assert whole.status_code == 200
    assert wait_for(lambda: export_state(server, fresh.uid) == ("Delivered", 1))


def test_client_closing_once_it_has_every_byte_is_a_delivery(
    server: LiveServer, demo: LoggedIn, fresh: Published
) -> None:
    """curl and urllib close the connection the moment the body is in: that is still a delivery."""
    response = fetch(url_for(server, demo, fresh.uid), headers={"Connection": "close"})
    assert response.status_code == 200
    assert response.content == fresh.content
    assert wait_for(lambda: export_state(server, fresh.uid) == ("Delivered", 1))


def test_range_beyond_the_object(server: LiveServer, demo: LoggedIn, fresh: Published) -> None:
    size = len(fresh.content)
    wanted = f"bytes={size}-{size + 100}"
    url = url_for(server, demo, fresh.uid)
    error = s3_error(
        fetch(url, headers={"Range": wanted}),
        status=416,
        code="InvalidRange",
        message="The requested range is not satisfiable",
    )
    assert list(error.items())[2:4] == [("ActualObjectSize", str(size)), ("RangeRequested", wanted)]
    assert stays_undelivered(server, fresh.uid)
    # An unsatisfiable range is refused before the URL is claimed: it still serves the whole file.
    retry = fetch(url)
    assert retry.status_code == 200
    assert retry.content == fresh.content
    # Once used, the URL is refused as expired whatever the range asks for.
    s3_error(
        fetch(url, headers={"Range": wanted}),
        status=403,
        code="AccessDenied",
        message="Request has expired",
    )


def test_concurrent_uses_of_one_url(server: LiveServer, demo: LoggedIn, stocked: Published) -> None:
    url = url_for(server, demo, stocked.uid)
    parties = 8
    barrier = threading.Barrier(parties)

    def one() -> tuple[int, bytes, str]:
        with bare_client(timeout=30) as client:
            barrier.wait(timeout=10)
            response = client.get(url)
            return response.status_code, response.content, response.headers["content-type"]

    with ThreadPoolExecutor(max_workers=parties) as pool:
        results = list(pool.map(lambda _: one(), range(parties)))
    assert sorted(status for status, _, _ in results) == [200] + [403] * (parties - 1)
    for status, content, content_type in results:
        if status == 200:
            assert content == stocked.content
        else:
            assert content_type == "application/xml"
            assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in content


@dataclass(frozen=True)
class BigExport:
    server: LiveServer
    logged_in: LoggedIn
    uid: str
    size: int
    sha256: str


@pytest.fixture(scope="module")
def big(make_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> BigExport:
    """A ~30 MB export on a server of its own, published straight into its database.

    Its rows are about 1 kB: the size is what the tests need, and writing the file and counting its
    records (the publication does) cost per row.
    """
    own = make_server()
    source = tmp_path_factory.mktemp("big") / "big.csv"
    line = "{:09d},Student {:09d},{}\r\n"
    filler = "x" * 1000
    rows = BIG_BYTES // len(line.format(0, 0, filler))
    with source.open("w", newline="", encoding="utf-8") as out:
        out.write("ID,NAME,FILLER\r\n")
        out.writelines(line.format(index, index, filler) for index in range(rows))
    uid = add_export(own, source, product="prospect", order_name="Big File")
    content = source.read_bytes()
    assert len(content) >= BIG_BYTES - 1024
    return BigExport(
        server=own,
        logged_in=own.login(),
        uid=uid,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
    )


def test_aborted_transfer_is_not_a_delivery(big: BigExport) -> None:
    url = url_for(big.server, big.logged_in, big.uid)
    before = answering()
    received = 0
    with bare_client(timeout=30) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(big.size)
        for chunk in response.iter_raw():
            received += len(chunk)
            if received >= 1024 * 1024:
                break
    assert 1024 * 1024 <= received < big.size
    assert ticket_of(big.server, url).claimed_at is not None
    assert answered(before)
    assert stays_undelivered(big.server, big.uid)


def test_full_transfer_is_one_delivery(big: BigExport) -> None:
    url = url_for(big.server, big.logged_in, big.uid)
    digest = hashlib.sha256()
    received = 0
    with bare_client(timeout=60) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            digest.update(chunk)
            received += len(chunk)
    assert received == big.size
    assert digest.hexdigest() == big.sha256
    assert wait_for(lambda: export_state(big.server, big.uid)[0] == "Delivered")
    time.sleep(0.2)
    with big.server.db() as db:
        export = db.scalars(select(Export).where(Export.uid == big.uid)).one()
        assert export.status == "Delivered"
        deliveries = db.scalars(select(Delivery).where(Delivery.export_id == export.id)).all()
        assert [(row.bytes_sent, row.method, row.file_type) for row in deliveries] == [
            (big.size, "API", "csv")
        ]


@pytest.mark.parametrize(
    ("params", "first", "last"),
    [
        ({"skip": "5", "limit": "10"}, 5, 15),
        ({"limit": "3"}, 0, 3),
        ({"skip": "35"}, 35, ROWS),
        ({"skip": "0", "limit": "0"}, 0, 0),
        ({"skip": "100", "limit": "5"}, ROWS, ROWS),
        ({"limit": "5000"}, 0, ROWS),
        ({"skip": "2", "limit": "4", "fileType": "csv"}, 2, 6),
    ],
    ids=["skip+limit", "limit", "skip", "limit-0", "skip-past-end", "limit-past-end", "with-fileType"],
)
def test_limit_and_skip_serve_a_slice(
    server: LiveServer, demo: LoggedIn, stocked: Published, params: dict[str, str], first: int, last: int
) -> None:
    url = url_for(server, demo, stocked.uid, **params)
    assert file_name_of(url) == stocked.file_name
    response = fetch(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv"
    header, *rows = stocked.rows
    assert parse_csv(response.text) == [header, *rows[first:last]]
    # The derived file is served once and then removed from the store (just after the ticket forgets it).
    stored = server.home / "objects" / unquote(urlsplit(url).path).lstrip("/")
    assert wait_for(lambda: ticket_of(server, url).derived_key is None and not stored.exists())


@pytest.mark.parametrize("name", ["fileType", "filetype"])
def test_file_type_txt_is_tab_separated(
    server: LiveServer, demo: LoggedIn, stocked: Published, name: str
) -> None:
    url = url_for(server, demo, stocked.uid, **{name: "txt"})
    assert file_name_of(url) == stocked.file_name.removesuffix(".csv") + ".txt"
    response = fetch(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/tab-separated-values"
    assert parse_csv(response.text, delimiter="\t") == stocked.rows
    assert b"\t" in response.content.splitlines()[0]


def test_unavailable_file_type(server: LiveServer, demo: LoggedIn, stocked: Published) -> None:
    with httpx2.Client() as client:
        response = client.get(
            f"{server.base_url}/datacenter/exports/{stocked.uid}/download",
            headers=demo.headers,
            params={"fileType": "pdf"},
        )
    message = assert_envelope(response, 400, "invalid_file_type")["message"]
    assert "'pdf'" in message
    assert "csv" in message
    assert "txt" in message


@pytest.mark.parametrize(
    ("params", "code", "mentions"),
    [
        ({"skip": "-1"}, "invalid_skip", "skip"),
        ({"skip": "abc"}, "invalid_skip", "skip"),
        ({"limit": "-1"}, "invalid_limit", "limit"),
        ({"limit": "ten"}, "invalid_limit", "limit"),
    ],
)
def test_bad_limit_or_skip(
    server: LiveServer, demo: LoggedIn, stocked: Published, params: dict[str, str], code: str, mentions: str
) -> None:
    with httpx2.Client() as client:
        response = client.get(
            f"{server.base_url}/datacenter/exports/{stocked.uid}/download",
            headers=demo.headers,
            params=params,
        )
    message = assert_envelope(response, 400, code)["message"]
    assert mentions in message
