"""Replays every request of the documentation's "How to Use the File Export API" over real HTTP.

Each request is written as the documentation (docs/spec/api-documentation.md) prints it, with the
production host replaced by the live server's and the placeholders (<session-token>, organization-uid,
<file-uid>, the example API key) filled in. The compatibility rows 7-11 and 14 of
docs/spec/compatibility.md are checked on the same flow.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest

from tests.support.accounts import DEMO_FICE, USER_KEYS, login_as, unique
from tests.support.checks import assert_envelope, wait_for
from tests.support.exports import (
    EXPORT_KEYS,
    PRODUCT_KEYS,
    SAMPLE_HEADER,
    file_name_of,
    parse_csv,
    publish,
    sample_rows,
    write_csv,
)
from tests.support.factories import add_account, add_organization
from tests.support.server import LiveServer, LoggedIn

DOC_HOST = "https://api-datalab.encoura.org/v1"
DOC_API_KEY = "aNgKsb3PSB4bx9c68iRWeaGfufzj2Vuz6qenwor1"
# docs/spec/compatibility.md, "Known naming conventions": ACT-[ORGANIZATION-NAME]-[MMDDYYYY]-[HMMSS].csv,
# the hour not zero-padded.
ACT_FILE_NAME = re.compile(
    r"^ACT-SAMPLE-UNIVERSITY-(?P<month>0[1-9]|1[0-2])(?P<day>0[1-9]|[12]\d|3[01])(?P<year>\d{4})"
    r"-(?P<hour>1?\d|2[0-3])(?P<minute>[0-5]\d)(?P<second>[0-5]\d)\.csv$"
)


def doc_url(server: LiveServer, documented: str) -> str:
    """A documented URL with its production host replaced by the live server's."""
    assert documented.startswith(DOC_HOST), documented
    return server.base_url + documented.removeprefix(DOC_HOST)


def documented_headers(logged_in: LoggedIn) -> dict[str, str]:
    """The four headers of the documentation's list and download examples, spelled as printed."""
    return {
        "Authorization": f"Bearer {logged_in.token}",
        "Organization": logged_in.organization_uid,
        "x-api-key": logged_in.api_key,
        "Content-Type": "application/json",
    }


def documented_get(server: LiveServer, logged_in: LoggedIn, documented: str) -> httpx2.Response:
    """GET a documented URL with the documented headers on the live server; assert a 200 JSON answer."""
    with httpx2.Client() as client:
        response = client.get(doc_url(server, documented), headers=documented_headers(logged_in))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response


def assert_export_item(item: dict[str, Any]) -> None:
    """The documented shape of one item of the export list."""
    assert set(item) == EXPORT_KEYS, sorted(set(item) ^ EXPORT_KEYS)
    for key in ("uid", "fice", "organizationUid", "productKey", "status", "listPath"):
        assert isinstance(item[key], str), key
    uuid.UUID(item["uid"])
    uuid.UUID(item["organizationUid"])
    uuid.UUID(item["listPath"])
    assert item["productKey"] in PRODUCT_KEYS
    assert item["status"] in {"Delivered", "NotDelivered"}
    assert isinstance(item["purchaseItems"], list)
    assert item["listGenerated"] is True
    assert type(item["quantity"]) is int
    assert item["quantity"] >= 0
    assert type(item["costInPoints"]) is int
    assert type(item["costInDollars"]) in {int, float}
    assert type(item["date"]) is int
    # Epoch milliseconds, not seconds: some time this century.
    assert 946_684_800_000 < item["date"] < 4_102_444_800_000
    assert isinstance(item["deliveries"], list)
    assert set(item["created"]) == {"createdBy", "createdAt"}
    assert set(item["created"]["createdBy"]) == {"uid", "name", "type"}
    assert all(isinstance(value, str) for value in item["created"]["createdBy"].values())
    assert type(item["created"]["createdAt"]) is int
    assert item["isExpired"] in {True, False}
    assert item["overdueEmailSentAt"] is None or type(item["overdueEmailSentAt"]) is int
    assert item["isContinuous"] in {True, False}


@pytest.fixture(scope="module")
def demo(server: LiveServer) -> LoggedIn:
    return server.login()


@pytest.fixture
def score_report(server: LiveServer, tmp_path: Path) -> tuple[dict[str, Any], bytes]:
    """A new, not yet delivered ACT score report of the demo organization, and its bytes."""
    source = write_csv(tmp_path / "scores.csv", SAMPLE_HEADER, sample_rows(23))
    return publish(server, source, product="score-reporter"), source.read_bytes()


@pytest.mark.parametrize("api_key", ["demo", DOC_API_KEY], ids=["demo-key", "documented-example-key"])
def test_api_key_only_curl_needs_a_session_token(server: LiveServer, api_key: str) -> None:
    # curl -H "x-api-key: <key>" -k "https://api-datalab.encoura.org/v1/datacenter/exports?productKey=score-reporter"
    assert server.demo is not None
    key = server.demo.api_key if api_key == "demo" else api_key
    with httpx2.Client() as client:  # -k (skip TLS verification) has nothing to do over plain http
        response = client.get(
            doc_url(server, f"{DOC_HOST}/datacenter/exports?productKey=score-reporter"),
            headers={"x-api-key": key},
        )
    # An API key alone authenticates nothing: the session token of the Authorization header is missing.
    error = assert_envelope(response, 401, "missing_token")
    assert error["message"] == "Missing Authorization header"
    assert response.headers["www-authenticate"] == "Bearer"


def test_login_request_example(server: LiveServer) -> None:
    # The documented body is not valid JSON (a missing comma, a // comment, no closing brace); the
    # same fields as valid JSON. Invalid bodies are the accounts tests' business.
    assert server.demo is not None
    with httpx2.Client() as client:
        response = client.post(
            doc_url(server, f"{DOC_HOST}/login"),
            headers={"Content-Type": "application/json", "x-api-key": server.demo.api_key},
            content=json.dumps(
                {"userName": server.demo.user_name, "password": server.demo.password, "acceptedTerms": True},
                indent=2,
            ),
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"user", "sessionToken"}
    assert isinstance(body["sessionToken"], str)
    assert body["sessionToken"]
    user = body["user"]
    assert set(user) == USER_KEYS
    uuid.UUID(user["uid"])
    assert user["userName"] == server.demo.user_name
    assert user["type"] == "User"
    assert user["status"] == "Active"
    assert user["organizations"] == [
        {
            "uid": server.demo.organization_uid,
            "name": "Sample University",
            "fice": DEMO_FICE,
            "stateCode": "MO",
        }
    ]
    assert all(set(attribute) == {"key", "value"} for attribute in user["attributes"])


def test_list_request_example(
    server: LiveServer, demo: LoggedIn, score_report: tuple[dict[str, Any], bytes]
) -> None:
    published, _ = score_report
    # curl https://api-datalab.encoura.org/v1/datacenter/exports/?status=NotDelivered&productKey=score-reporter
    #   --header 'Authorization: Bearer <session-token>' --header 'Organization: organization-uid'
    #   --header 'x-api-key: ...' --header 'Content-Type: application/json'
    response = documented_get(
        server, demo, f"{DOC_HOST}/datacenter/exports/?status=NotDelivered&productKey=score-reporter"
    )
    items = response.json()
    assert isinstance(items, list)
    assert int(response.headers["total-count"]) == len(items)
    for item in items:
        assert_export_item(item)
        assert item["productKey"] == "score-reporter"
        assert item["status"] == "NotDelivered"
        assert item["fice"] == DEMO_FICE
        assert item["organizationUid"] == demo.organization_uid
    mine = next(item for item in items if item["uid"] == published["uid"])
    assert mine["quantity"] == 23
    assert mine["deliveries"] == []
    assert mine["purchaseItems"] == []
    assert mine["listPath"] == published["listPath"]
    assert mine["date"] == published["date"]
    assert mine["created"]["createdAt"] == mine["date"]
    assert abs(mine["date"] - datetime.now(UTC).timestamp() * 1000) < 120_000
    assert mine["isExpired"] is False
    assert mine["isContinuous"] is False
    assert mine["costInPoints"] == 0
    assert mine["costInDollars"] == 0


def test_download_request_example_and_plain_fetch(
    server: LiveServer, demo: LoggedIn, score_report: tuple[dict[str, Any], bytes]
) -> None:
    published, content = score_report
    # curl https://api-datalab.encoura.org/v1/datacenter/exports/<file-uid>/download
    #   --header 'Authorization: Bearer <session-token>' --header 'Organization: <organization-uid>'
    #   --header 'x-api-key: ...' --header 'Content-Type: application/json'
    body = documented_get(server, demo, f"{DOC_HOST}/datacenter/exports/{published['uid']}/download").json()
    assert set(body) == {"downloadUrl"}
    url = body["downloadUrl"]
    assert isinstance(url, str)
    assert url.startswith(server.root + "/")

    # Step 4 "is not an API request": a plain GET, no headers at all (compat row 10).
    request = urllib.request.Request(url, method="GET")  # noqa: S310 (http URL of the live server)
    with urllib.request.urlopen(request, timeout=10) as fetched:  # noqa: S310
        assert fetched.status == 200
        downloaded = fetched.read()
        assert fetched.headers["Content-Type"] == "text/csv"
    assert downloaded == content

    # Compat row 11: scripts save the file under the URL's last path segment, URL-decoded.
    saved_as = file_name_of(url)
    assert saved_as == published["fileName"]
    match = ACT_FILE_NAME.match(saved_as)
    assert match, saved_as
    created = datetime.fromtimestamp(published["date"] / 1000, tz=UTC)
    assert saved_as == f"ACT-SAMPLE-UNIVERSITY-{created:%m%d%Y}-{created.hour}{created:%M%S}.csv"

    # The delivery is recorded once the server has handed over the last byte, a moment after the client
    # has it.
    def delivered() -> bool:
        with httpx2.Client() as client:
            after = client.get(
                f"{server.base_url}/datacenter/exports",
                headers=demo.headers,
                params={"status": "Delivered", "productKey": "score-reporter"},
            )
        return published["uid"] in {item["uid"] for item in after.json()}

    assert wait_for(delivered)


def test_documented_short_download_path(
    server: LiveServer, demo: LoggedIn, score_report: tuple[dict[str, Any], bytes]
) -> None:
    published, content = score_report
    # Request URL: http://api-datalab.encoura.org/v1/datacenter/<uid>/download
    with httpx2.Client() as client:
        response = client.get(
            doc_url(server, f"{DOC_HOST}/datacenter/{published['uid']}/download"),
            headers=documented_headers(demo),
        )
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"downloadUrl"}
        url = response.json()["downloadUrl"]
        assert file_name_of(url) == published["fileName"]
        client.headers.clear()
        fetched = client.get(url)
    assert fetched.status_code == 200
    assert fetched.content == content


def test_refresh_token_request_example(server: LiveServer, demo: LoggedIn) -> None:
    # curl https://api-datalab.encoura.org/v1/refresh-token --header 'Authorization: Bearer <session-token>'
    with httpx2.Client() as client:
        response = client.get(
            doc_url(server, f"{DOC_HOST}/refresh-token"), headers={"Authorization": f"Bearer {demo.token}"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"sessionToken"}
        assert isinstance(body["sessionToken"], str)
        # The new token works for the documented list call.
        listed = client.get(
            f"{server.base_url}/datacenter/exports?productKey=score-reporter",
            headers={**documented_headers(demo), "Authorization": f"Bearer {body['sessionToken']}"},
        )
    assert listed.status_code == 200, listed.text


def test_no_product_key_lists_every_product(server: LiveServer, demo: LoggedIn, tmp_path: Path) -> None:
    """Compat row 7: GET /datacenter/exports?status=NotDelivered without productKey."""
    fresh = {
        product: publish(
            server, write_csv(tmp_path / f"{product}.csv", SAMPLE_HEADER, sample_rows(3)), product=product
        )["uid"]
        for product in ("prospect", "affinity", "score-reporter")
    }
    with httpx2.Client() as client:
        not_delivered = client.get(
            f"{server.base_url}/datacenter/exports?status=NotDelivered", headers=demo.headers
        )
        everything = client.get(f"{server.base_url}/datacenter/exports", headers=demo.headers)
    assert not_delivered.status_code == 200, not_delivered.text
    items = not_delivered.json()
    assert all(item["status"] == "NotDelivered" for item in items)
    listed = {item["uid"]: item["productKey"] for item in items}
    assert {uid: listed.get(uid) for uid in fresh.values()} == {uid: key for key, uid in fresh.items()}
    # The demo seeds two files of every product: without productKey all eight are listed.
    assert everything.status_code == 200
    assert {item["productKey"] for item in everything.json()} == set(PRODUCT_KEYS)


def test_nothing_new_is_200_with_an_empty_list(server: LiveServer) -> None:
    """Compat row 8: scripts call .json() unconditionally, so no match is 200 with [] (never 204)."""
    organization = add_organization(server, name=unique("Empty College"))
    logged_in = login_as(server, add_account(server, organization_uids=[organization.uid]))
    with httpx2.Client() as client:
        for query in ("?status=NotDelivered&productKey=score-reporter", "?status=NotDelivered", ""):
            response = client.get(
                f"{server.base_url}/datacenter/exports/{query}", headers=documented_headers(logged_in)
            )
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.content == b"[]"
            assert response.json() == []
            assert response.headers["total-count"] == "0"


@pytest.mark.parametrize(
    "path",
    [
        "/datacenter/exports/{uid}/download",
        "/datacenter/exports/{uid}/download/",
        "/datacenter/{uid}/download",
        "/datacenter/{uid}/download/",
    ],
)
def test_download_paths_with_and_without_trailing_slash(
    server: LiveServer, demo: LoggedIn, score_report: tuple[dict[str, Any], bytes], path: str
) -> None:
    """Compat row 9: both path shapes, with and without a trailing slash, answer directly (no redirect)."""
    published, _ = score_report
    with httpx2.Client(follow_redirects=False) as client:
        response = client.get(server.base_url + path.format(uid=published["uid"]), headers=demo.headers)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"downloadUrl"}
    assert file_name_of(response.json()["downloadUrl"]) == published["fileName"]


def test_list_with_and_without_trailing_slash(server: LiveServer, demo: LoggedIn) -> None:
    """Compat row 9: /datacenter/exports and /datacenter/exports/ are the same list."""
    with httpx2.Client(follow_redirects=False) as client:
        bare = client.get(f"{server.base_url}/datacenter/exports?productKey=inquiry", headers=demo.headers)
        slashed = client.get(
            f"{server.base_url}/datacenter/exports/?productKey=inquiry", headers=demo.headers
        )
    assert bare.status_code == slashed.status_code == 200
    assert bare.json() == slashed.json()
    assert len(bare.json()) >= 2


def test_standard_export_file_name(server: LiveServer, demo: LoggedIn, tmp_path: Path) -> None:
    """Compat row 11 for the other products: [FileType]_[YYYYMMDD]_[FICE]_[OrderName].csv."""
    source = write_csv(tmp_path / "affinity.csv", SAMPLE_HEADER, sample_rows(2))
    published = publish(server, source, product="affinity", order_name="Affinity Search Jan2025")
    created = datetime.fromtimestamp(published["date"] / 1000, tz=UTC)
    with httpx2.Client() as client:
        response = client.get(
            f"{server.base_url}/datacenter/exports/{published['uid']}/download", headers=demo.headers
        )
    assert response.status_code == 200, response.text
    saved_as = file_name_of(response.json()["downloadUrl"])
    assert saved_as == f"Affinity_{created:%Y%m%d}_{DEMO_FICE}_Affinity_Search_Jan2025.csv"
    assert saved_as == published["fileName"]


@pytest.mark.parametrize(
    "params",
    [{"fileType": "csv"}, {"filetype": "csv"}, {"format": "xml", "foo": "bar"}, {"fileType": "csv", "x": ""}],
    ids=["fileType", "filetype", "unknown", "fileType+blank-unknown"],
)
def test_unused_download_params_are_ignored(
    server: LiveServer,
    demo: LoggedIn,
    score_report: tuple[dict[str, Any], bytes],
    params: dict[str, str],
) -> None:
    """Compat row 14: fileType=csv / filetype=csv and unknown params change nothing."""
    published, content = score_report
    with httpx2.Client() as client:
        response = client.get(
            f"{server.base_url}/datacenter/exports/{published['uid']}/download",
            headers=demo.headers,
            params=params,
        )
        assert response.status_code == 200, response.text
        url = response.json()["downloadUrl"]
        client.headers.clear()
        fetched = client.get(url)
    assert file_name_of(url) == published["fileName"]
    assert "/derived/" not in urlsplit(url).path
    assert fetched.status_code == 200
    assert fetched.content == content


def test_unknown_list_params_are_ignored(server: LiveServer, demo: LoggedIn) -> None:
    with httpx2.Client() as client:
        plain = client.get(f"{server.base_url}/datacenter/exports?productKey=declared", headers=demo.headers)
        extra = client.get(
            f"{server.base_url}/datacenter/exports?productKey=declared&fileType=csv&filetype=csv&foo=bar",
            headers=demo.headers,
        )
    assert plain.status_code == extra.status_code == 200
    assert plain.json() == extra.json()


def test_csv_content_is_what_was_published(
    server: LiveServer, demo: LoggedIn, score_report: tuple[dict[str, Any], bytes]
) -> None:
    """The downloaded file parses back to the published header and rows, awkward values included."""
    published, content = score_report
    with httpx2.Client() as client:
        url = client.get(
            f"{server.base_url}/datacenter/exports/{published['uid']}/download", headers=demo.headers
        ).json()["downloadUrl"]
        client.headers.clear()
        fetched = client.get(url)
    assert fetched.status_code == 200
    rows = parse_csv(fetched.content.decode())
    assert rows == [list(SAMPLE_HEADER), *sample_rows(23)]
    assert fetched.content == content
