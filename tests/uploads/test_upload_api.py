"""The File Upload API, as "How to Use the File Upload API" in docs/spec/api-documentation.md.

The documentation's three requests (create record, upload, check status) are replayed with the production
hosts replaced by the app's; the upload step also runs through the real `curl` binary. Then: the
create response and record, body validation, what a successful upload leaves behind (object, checksums,
pipeline job) and that its form works once, the clients integrations post the form with (requests,
httpx2, a form boto3 signs) and the upload list with its paging, sorting, filters and organization scope.

The requests run through the in-process app, except where a real server matters: the `curl` binary and
`requests` post over a socket, and the same form posted twice at once races two connections.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import pytest
import requests  # type: ignore[import-untyped,unused-ignore]

from tests.support.accounts import login_as, unique
from tests.support.checks import assert_envelope, s3_error
from tests.support.factories import add_account, add_organization, add_upload
from tests.support.inprocess import InProcessApp
from tests.support.server import Deployment, LiveServer, LoggedIn
from tests.support.uploads import (
    FILE_KEYS,
    FORM_FIELD_ORDER,
    SAMPLE_CSV,
    UPLOADS_BUCKET,
    UploadForm,
    assert_stored,
    boto3_post,
    create_upload,
    object_path,
    pipeline_jobs,
    storage_credentials,
    upload_row,
)

DOC_HOST = "https://api-datalab.encoura.org/v1"
# The create-record request body exactly as the documentation prints it (note the lower-case "datasource").
DOC_CREATE_BODY = """{
  "fileName": "file_to_upload.csv",
  "productType": "enrollment",
  "datasource": "API",
  "fileDescription": "Latest enrollment data for Sample University"
}"""
# The order of the --form options of the documentation's upload example; `file` comes last.
DOC_UPLOAD_ORDER = (
    "key",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "policy",
    "x-amz-signature",
    "x-amz-security-token",
)
UPLOAD_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$")
DEFAULT_MAX_UPLOAD = 5 * 1024**3
EXPIRED_TOKEN = "The provided token has expired."


@pytest.fixture
def client(api: InProcessApp) -> httpx2.Client:
    return api.client


@pytest.fixture(scope="module")
def demo(api: InProcessApp) -> LoggedIn:
    return api.login()


@pytest.fixture
def live_client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def live_demo(server: LiveServer) -> LoggedIn:
    return server.login()


def doc_url(deployment: Deployment, documented: str) -> str:
    """A documented API URL with its production host replaced by the deployment's."""
    assert documented.startswith(DOC_HOST), documented
    return deployment.base_url + documented.removeprefix(DOC_HOST)


def md5_hex(content: bytes) -> str:
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


def post_policy_signature(*, secret: str, date: str, region: str, policy_b64: str) -> str:
    """SigV4 POST signature, computed apart from the server's code (docs/reference/s3-presigned.md §1.3)."""
    key = f"AWS4{secret}".encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, policy_b64.encode(), hashlib.sha256).hexdigest()


def create_as_documented(client: httpx2.Client, deployment: Deployment, demo: LoggedIn) -> dict[str, Any]:
    # curl https://api-datalab.encoura.org/v1/files/upload --header 'Authorization: Bearer XXXX'
    #   --header 'Organization: ...' --header 'x-api-key: ...' --header 'Content-Type: application/json'
    #   --data '{ "fileName": "file_to_upload.csv", "productType": "enrollment", "datasource": "API", ... }'
    response = client.post(
        doc_url(deployment, f"{DOC_HOST}/files/upload"),
        headers={
            "Authorization": f"Bearer {demo.token}",
            "Organization": demo.organization_uid,
            "x-api-key": demo.api_key,
            "Content-Type": "application/json",
        },
        content=DOC_CREATE_BODY,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert list(body) == ["id", "url", "fields"]
    assert list(body["fields"]) == FORM_FIELD_ORDER
    assert body["url"] == f"{deployment.root}/{UPLOADS_BUCKET}"
    return body


def assert_upload_accepted(
    headers: dict[str, str], body: bytes, deployment: Deployment, key: str, content: bytes
) -> None:
    """The store's success answer: 204, empty body, no Content-Type, S3's ETag and Location."""
    assert body == b""
    assert "content-type" not in headers, headers
    assert headers["etag"] == f'"{md5_hex(content)}"'
    assert headers["location"] == f"{deployment.root}/{UPLOADS_BUCKET}/{quote(key)}"
    assert_stored(deployment, key, content)


def check_status_as_documented(
    client: httpx2.Client, deployment: Deployment, demo: LoggedIn, uid: str, key: str
) -> dict[str, Any]:
    # curl https://api-datalab.encoura.org/v1/files/fc618a01-... --header 'Authorization: Bearer eyJ...'
    #   --header 'Organization: 03f104b8-...'   (no x-api-key: the documentation's example omits it)
    response = client.get(
        doc_url(deployment, f"{DOC_HOST}/files/{uid}"),
        headers={"Authorization": f"Bearer {demo.token}", "Organization": demo.organization_uid},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    record: dict[str, Any] = response.json()
    assert set(record) == FILE_KEYS, sorted(set(record) ^ FILE_KEYS)
    assert record["id"] == uid
    assert record["fileName"] == "file_to_upload.csv"
    assert record["filePath"] == key
    assert record["productType"] == "enrollment"
    assert record["status"] == "analyzing"
    assert deployment.demo is not None
    assert record["userName"] == deployment.demo.user_name
    assert UPLOAD_DATE.fullmatch(record["uploadDate"]), record["uploadDate"]
    uploaded = datetime.fromisoformat(record["uploadDate"]).replace(tzinfo=UTC)
    assert abs(uploaded - datetime.now(UTC)) < timedelta(minutes=2)
    assert type(record["recordVolume"]) is int
    assert record["recordVolume"] == 0
    assert record["meta"] == {}
    assert record["fieldsMap"] is None
    assert record["valuesMap"] is None
    assert record["dataSource"] == "API"
    assert record["error"] is None
    return record


# ---------------------------------------------------------------------------------------------------------
# The documentation, replayed.


def test_documented_flow_with_httpx2(client: httpx2.Client, api: InProcessApp, demo: LoggedIn) -> None:
    created = create_as_documented(client, api, demo)
    fields = created["fields"]
    # The upload: every field the create call returned, in the documented order, then the file last.
    response = client.post(
        created["url"],
        data={name: fields[name] for name in DOC_UPLOAD_ORDER},
        files={"file": ("file_to_upload.csv", SAMPLE_CSV, "text/csv")},
    )
    assert response.status_code == 204, response.text
    assert_upload_accepted(dict(response.headers), response.content, api, fields["key"], SAMPLE_CSV)
    check_status_as_documented(client, api, demo, created["id"], fields["key"])


def test_documented_upload_with_curl(
    live_client: httpx2.Client, server: LiveServer, live_demo: LoggedIn, tmp_path: Path
) -> None:
    created = create_as_documented(live_client, server, live_demo)
    fields = created["fields"]
    source = tmp_path / "file_to_upload.csv"
    source.write_bytes(SAMPLE_CSV)
    # curl <url> --form 'key="..."' --form 'x-amz-algorithm="AWS4-HMAC-SHA256"' ... --form 'file=@"<path>"'
    # The documentation's placeholders (" ASIATQG4WZH0X7T5..... ") have spaces inside the quotes; real values
    # do not, so the quoting is kept and the spaces are not.
    command = ["curl", created["url"]]
    for name in DOC_UPLOAD_ORDER:
        command += ["--form", f'{name}="{fields[name]}"']
    command += ["--form", f'file=@"{source}"']
    # Only so the answer can be read: quiet progress, and the status line and headers on stdout.
    command += ["--silent", "--show-error", "--include"]
    result = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.split(" ")[1] == "204", result.stdout
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert_upload_accepted(headers, body, server, fields["key"], SAMPLE_CSV)
    check_status_as_documented(live_client, server, live_demo, created["id"], fields["key"])


# ---------------------------------------------------------------------------------------------------------
# Creating a record.


def test_create_response_and_new_record(client: httpx2.Client, api: InProcessApp, demo: LoggedIn) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    response = client.post(
        api.base_url + "/files/upload",
        headers=demo.headers,
        json={"fileName": "Fall 2025 roster.csv", "productType": "enrollment"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["id", "url", "fields"]
    fields: dict[str, str] = body["fields"]
    assert list(fields) == FORM_FIELD_ORDER
    assert all(isinstance(value, str) and value for value in fields.values())
    uid = body["id"]
    assert str(uuid.UUID(uid)) == uid
    assert body["url"] == f"{api.root}/{UPLOADS_BUCKET}"

    # The key is the server's choice: the organization, the product, the record, a safe stem and a stamp.
    match = re.fullmatch(
        rf"{demo.organization_uid}/enrollment/{uid}/Fall_2025_roster\.(?P<stamp>\d{{10}})\.csv", fields["key"]
    )
    assert match, fields["key"]
    assert abs(int(match["stamp"]) - before.timestamp()) < 120

    access_key_id, secret = storage_credentials(api)
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert re.fullmatch(r"\d{8}T\d{6}Z", fields["x-amz-date"])
    date = fields["x-amz-date"][:8]
    assert fields["x-amz-credential"] == f"{access_key_id}/{date}/us-east-1/s3/aws4_request"
    token = fields["x-amz-security-token"]
    assert fields["x-amz-signature"] == post_policy_signature(
        secret=secret, date=date, region="us-east-1", policy_b64=fields["policy"]
    )
    policy = json.loads(base64.b64decode(fields["policy"], validate=True))
    assert set(policy) == {"expiration", "conditions"}
    expiration = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    signed_at = datetime.strptime(fields["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert expiration - signed_at == timedelta(seconds=600)
    assert signed_at >= before
    conditions = policy["conditions"]
    assert ["content-length-range", 1, DEFAULT_MAX_UPLOAD] in conditions
    for name in ("key", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-security-token"):
        assert {name: fields[name]} in conditions, name
    assert {"bucket": UPLOADS_BUCKET} in conditions
    assert len(conditions) == 7

    record = client.get(f"{api.base_url}/files/{uid}", headers=demo.headers).json()
    assert record["status"] == "uploading"
    assert record["fileName"] == "Fall 2025 roster.csv"
    assert record["filePath"] == fields["key"]
    assert record["dataSource"] == "API"
    row = upload_row(api, uid)
    assert row.form_token == token
    assert row.size_bytes is None
    assert row.sha256 is None
    assert pipeline_jobs(api, row.id) == []
    assert not object_path(api, fields["key"]).exists()


def test_the_record_is_committed_before_the_form_is_answered(
    client: httpx2.Client, api: InProcessApp, demo: LoggedIn
) -> None:
    # A client may post the file over another connection the moment it has the form (the store's gate then
    # looks the record up in its own transaction), so the record must exist when the answer arrives.
    for _ in range(10):
        form = create_upload(client, api, demo.headers)
        assert upload_row(api, form.id).status == "uploading"


def test_create_with_get_and_a_json_body(client: httpx2.Client, api: InProcessApp, demo: LoggedIn) -> None:
    # The documentation names the create call "Request GET URL"; GET with the same JSON body works too.
    response = client.request(
        "GET",
        doc_url(api, f"{DOC_HOST}/files/upload"),
        headers={**demo.headers, "Content-Type": "application/json"},
        content=DOC_CREATE_BODY,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["id", "url", "fields"]
    assert list(body["fields"]) == FORM_FIELD_ORDER
    record = client.get(f"{api.base_url}/files/{body['id']}", headers=demo.headers).json()
    assert record["status"] == "uploading"
    assert record["fileName"] == "file_to_upload.csv"
    assert record["dataSource"] == "API"
    assert upload_row(api, body["id"]).file_description == "Latest enrollment data for Sample University"


def test_jwt_scheme_without_api_key_and_unknown_fields(
    client: httpx2.Client, api: InProcessApp, demo: LoggedIn
) -> None:
    # Compatibility row 12: `Authorization: JWT`, Organization, no x-api-key, an extra originalFileName.
    response = client.post(
        api.base_url + "/files/upload",
        headers={"Authorization": f"JWT {demo.token}", "Organization": demo.organization_uid},
        json={
            "fileName": "affinity_list.csv",
            "productType": "affinity",
            "fileDescription": "Nightly affinity list",
            "originalFileName": "C:/exports/affinity list (final).csv",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    record = client.get(f"{api.base_url}/files/{body['id']}", headers=demo.headers).json()
    assert record["fileName"] == "affinity_list.csv"
    assert record["productType"] == "affinity"
    assert record["dataSource"] == "API"
    assert "/affinity/" in body["fields"]["key"]
    assert body["fields"]["key"].endswith(".csv")


@pytest.mark.parametrize("product_type", ["legacy", "Legacy"])
def test_legacy_product_type_is_stored_as_affinity(
    client: httpx2.Client, api: InProcessApp, demo: LoggedIn, product_type: str
) -> None:
    form = create_upload(client, api, demo.headers, file_name="alumni.csv", product_type=product_type)
    assert form.key.startswith(f"{demo.organization_uid}/affinity/{form.id}/")
    record = client.get(f"{api.base_url}/files/{form.id}", headers=demo.headers).json()
    assert record["productType"] == "affinity"
    assert upload_row(api, form.id).product_type == "affinity"


# ---------------------------------------------------------------------------------------------------------
# Validation of the create body.


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        pytest.param({"fileName": "a.csv"}, "productType", "field required", id="productType-missing"),
        pytest.param({"productType": "enrollment"}, "fileName", "field required", id="fileName-missing"),
        pytest.param(
            {"fileName": "a.csv", "productType": "transcripts"},
            "productType",
            "'transcripts' is not a product type; use one of enrollment, affinity, ematch (or legacy)",
            id="productType-unknown",
        ),
        pytest.param(
            {"fileName": "a.csv", "productType": None}, "productType", "field required", id="productType-null"
        ),
        pytest.param(
            {"fileName": "", "productType": "enrollment"},
            "fileName",
            "must not be empty",
            id="fileName-empty",
        ),
        pytest.param(
            {"fileName": "  ", "productType": "enrollment"},
            "fileName",
            "must not be empty",
            id="fileName-blank",
        ),
        pytest.param(
            {"fileName": "exports/", "productType": "enrollment"},
            "fileName",
            "must not be empty",
            id="fileName-only-a-directory",
        ),
        pytest.param(
            {"fileName": "a" * 296 + ".csv", "productType": "enrollment"},
            "fileName",
            "must be at most 255 characters",
            id="fileName-300-chars",
        ),
        pytest.param(
            {"fileName": 12, "productType": "enrollment"},
            "fileName",
            "must be a string",
            id="fileName-number",
        ),
        pytest.param(
            {"fileName": "list.xlsx", "productType": "affinity"},
            "fileName",
            "affinity files must end in .csv; 'list.xlsx' does not",
            id="affinity-xlsx",
        ),
        pytest.param(
            {"fileName": "students.zip", "productType": "ematch"},
            "fileName",
            "ematch files must end in .csv; 'students.zip' does not",
            id="ematch-zip",
        ),
        pytest.param(
            {"fileName": "roster.pdf", "productType": "enrollment"},
            "fileName",
            "enrollment files must end in .csv, .xls, .xlsx, .txt, .tsv, .zip; 'roster.pdf' does not",
            id="enrollment-pdf",
        ),
        pytest.param(
            {"fileName": "a.csv", "productType": "enrollment", "dataSource": "x" * 31},
            "dataSource",
            "must be at most 30 characters",
            id="dataSource-too-long",
        ),
    ],
)
def test_invalid_body_fields_get_422(
    client: httpx2.Client, api: InProcessApp, demo: LoggedIn, body: dict[str, Any], field: str, message: str
) -> None:
    response = client.post(api.base_url + "/files/upload", headers=demo.headers, json=body)
    envelope = assert_envelope(response, 422, "validation_error")
    assert envelope["detail"] == [{"loc": ["body", field], "msg": message, "type": "value_error"}]
    assert envelope["message"] == f"{field}: {message}"


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        pytest.param(
            '{"fileName": "a.csv", "productType": "enrollment"',
            "invalid_json",
            "The request body is not valid JSON (Expecting ',' delimiter at line 1 column 50)",
            id="truncated",
        ),
        pytest.param(
            "fileName=a.csv&productType=enrollment",
            "invalid_json",
            "The request body is not valid JSON (Expecting value at line 1 column 1)",
            id="form-encoded",
        ),
        pytest.param(
            "",
            "invalid_body",
            "The request body is empty: send a JSON object with fileName and productType",
            id="empty",
        ),
        pytest.param(
            '["a.csv", "enrollment"]', "invalid_body", "The request body must be a JSON object", id="array"
        ),
    ],
)
def test_unreadable_body_gets_400(
    client: httpx2.Client, api: InProcessApp, demo: LoggedIn, body: str, code: str, message: str
) -> None:
    response = client.post(
        api.base_url + "/files/upload",
        headers={**demo.headers, "Content-Type": "application/json"},
        content=body,
    )
    envelope = assert_envelope(response, 400, code)
    assert envelope["message"] == message
    assert envelope["detail"] == message


@pytest.mark.parametrize(
    ("file_name", "suffix"),
    [
        ("enrollment.zip", ".zip"),
        ("enrollment.xlsx", ".xlsx"),
        ("enrollment.xls", ".xls"),
        ("enrollment.txt", ".txt"),
        ("enrollment.tsv", ".tsv"),
        ("enrollment.csv", ".csv"),
        ("ENROLLMENT.XLSX", ".xlsx"),
    ],
)
def test_enrollment_takes_every_documented_format(
    client: httpx2.Client, api: InProcessApp, demo: LoggedIn, file_name: str, suffix: str
) -> None:
    form = create_upload(client, api, demo.headers, file_name=file_name, product_type="enrollment")
    assert form.key.endswith(suffix)
    assert upload_row(api, form.id).file_name == file_name


@pytest.mark.parametrize(
    ("file_name", "base"),
    [
        ("../../etc/passwd.csv", "passwd.csv"),
        ("C:\\x\\y.csv", "y.csv"),
        ("/var/../../../tmp/..%2F..%2Fz.csv", "..%2F..%2Fz.csv"),
    ],
)
def test_path_like_file_names_get_a_server_chosen_key(
    client: httpx2.Client, api: InProcessApp, demo: LoggedIn, file_name: str, base: str
) -> None:
    form = create_upload(client, api, demo.headers, file_name=file_name, product_type="enrollment")
    prefix = f"{demo.organization_uid}/enrollment/{form.id}/"
    assert form.key.startswith(prefix)
    name = form.key.removeprefix(prefix)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.\d{10}\.csv", name), name
    assert ".." not in form.key.split("/")
    assert "\\" not in form.key
    assert "%" not in form.key
    assert upload_row(api, form.id).file_name == base

    response = client.post(form.url, data=form.fields, files={"file": (file_name, SAMPLE_CSV, "text/csv")})
    assert response.status_code == 204, response.text
    organization_root = api.home / "objects" / UPLOADS_BUCKET / demo.organization_uid
    assert object_path(api, form.key).resolve().is_relative_to(organization_root.resolve())
    assert_stored(api, form.key, SAMPLE_CSV)


# ---------------------------------------------------------------------------------------------------------
# After a successful upload.


def test_successful_upload_stores_checksums_and_queues_analysis(
    client: httpx2.Client, api: InProcessApp, demo: LoggedIn
) -> None:
    form = create_upload(client, api, demo.headers, file_name="students.csv", product_type="ematch")
    content = SAMPLE_CSV * 50
    before = datetime.now(UTC)
    response = client.post(form.url, data=form.fields, files={"file": ("students.csv", content, "text/csv")})
    assert response.status_code == 204, response.text
    assert_stored(api, form.key, content)

    row = upload_row(api, form.id)
    assert row.status == "analyzing"
    assert row.size_bytes == len(content)
    assert row.sha256 == hashlib.sha256(content).hexdigest()
    assert row.etag == md5_hex(content)
    assert row.uploaded_at is not None
    assert before - timedelta(seconds=1) <= row.uploaded_at <= datetime.now(UTC)
    assert pipeline_jobs(api, row.id) == [("analyze", "pending")]

    # The form works once: posting it again is refused as S3 refuses an expired session token.
    again = client.post(
        form.url, data=form.fields, files={"file": ("students.csv", b"other,bytes\n", "text/csv")}
    )
    error = s3_error(again, status=400, code="ExpiredToken", message=EXPIRED_TOKEN)
    assert error["Token-0"] == form.fields["x-amz-security-token"]
    assert_stored(api, form.key, content)
    row = upload_row(api, form.id)
    assert row.size_bytes == len(content)
    assert row.sha256 == hashlib.sha256(content).hexdigest()
    assert pipeline_jobs(api, row.id) == [("analyze", "pending")]


def test_the_same_form_posted_twice_at_once_stores_one_file(
    server: LiveServer, live_demo: LoggedIn, live_client: httpx2.Client
) -> None:
    form = create_upload(live_client, server, live_demo.headers)
    contents = [b"first," * 200_000, b"second," * 200_000]

    def post(content: bytes) -> tuple[int, bytes]:
        with httpx2.Client(timeout=30) as own:
            response = own.post(form.url, data=form.fields, files={"file": ("a.csv", content, "text/csv")})
            return response.status_code, response.content

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(post, contents))
    statuses = [status for status, _ in results]
    assert sorted(statuses) == [204, 400], results
    winner = contents[statuses.index(204)]
    loser_body = results[statuses.index(400)][1]
    assert b"<Code>ExpiredToken</Code>" in loser_body
    assert_stored(server, form.key, winner)
    row = upload_row(server, form.id)
    assert row.sha256 == hashlib.sha256(winner).hexdigest()
    assert pipeline_jobs(server, row.id) == [("analyze", "pending")]
    leftovers = [path.name for path in object_path(server, form.key).parent.iterdir()]
    assert leftovers == [object_path(server, form.key).name]


# ---------------------------------------------------------------------------------------------------------
# The clients integrations post the form with.


def test_requests_upload_as_aws_documents_it(
    live_client: httpx2.Client, server: LiveServer, live_demo: LoggedIn, tmp_path: Path
) -> None:
    form = create_upload(live_client, server, live_demo.headers, file_name="upload.csv")
    source = tmp_path / "upload.csv"
    source.write_bytes(SAMPLE_CSV)
    with source.open("rb") as f:
        response = requests.post(form.url, data=form.fields, files={"file": f}, timeout=30)
    with response:
        assert response.status_code == 204, response.text
        assert response.content == b""
        assert "content-type" not in response.headers
    assert_stored(server, form.key, SAMPLE_CSV)
    assert upload_row(server, form.id).status == "analyzing"


def test_httpx2_multipart_upload(
    client: httpx2.Client, api: InProcessApp, demo: LoggedIn, tmp_path: Path
) -> None:
    form = create_upload(client, api, demo.headers, file_name="upload.tsv")
    content = SAMPLE_CSV.replace(b",", b"\t")
    source = tmp_path / "upload.tsv"
    source.write_bytes(content)
    with source.open("rb") as f:
        response = client.post(form.url, data=form.fields, files={"file": f})
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_stored(api, form.key, content)
    assert upload_row(api, form.id).status == "analyzing"


def test_a_form_boto3_signs_is_accepted(client: httpx2.Client, api: InProcessApp, demo: LoggedIn) -> None:
    form: UploadForm = create_upload(client, api, demo.headers, file_name="boto.csv")
    # boto3_post asserts boto3 addresses the form to the uploads bucket of the embedded store.
    fields = boto3_post(api, key=form.key, token=form.fields["x-amz-security-token"])
    assert fields["key"] == form.key
    assert fields["policy"] != form.fields["policy"]
    response = client.post(
        f"{api.root}/{UPLOADS_BUCKET}", data=fields, files={"file": ("boto.csv", SAMPLE_CSV, "text/csv")}
    )
    assert response.status_code == 204, response.text
    assert_stored(api, form.key, SAMPLE_CSV)
    assert upload_row(api, form.id).status == "analyzing"


# ---------------------------------------------------------------------------------------------------------
# The upload list, and other organizations' uploads.


@dataclass(frozen=True)
class Listing:
    """A fresh organization with five uploads; the first has been uploaded."""

    logged_in: LoggedIn
    ids: list[str]  # in creation order
    products: list[str]

    def newest_first(self) -> list[str]:
        return self.ids[::-1]


@pytest.fixture(scope="module")
def listing(api: InProcessApp) -> Listing:
    organization = add_organization(api, name=unique("Upload List College"))
    account = add_account(api, organization_uids=[organization.uid])
    logged_in = login_as(api, account)
    products = ["enrollment", "affinity", "enrollment", "ematch", "legacy"]
    first = create_upload(api.client, api, logged_in.headers, file_name="file0.csv", product_type=products[0])
    response = api.client.post(
        first.url, data=first.fields, files={"file": ("f.csv", SAMPLE_CSV, "text/csv")}
    )
    assert response.status_code == 204, response.text
    # The others are only announced: they are written straight into the database.
    announced = [
        add_upload(api, account=account, file_name=f"file{index}.csv", product_type=product)
        for index, product in enumerate(products[1:], start=1)
    ]
    return Listing(logged_in=logged_in, ids=[first.id, *announced], products=products)


def list_files(client: httpx2.Client, api: InProcessApp, listing: Listing, **params: str) -> httpx2.Response:
    return client.get(api.base_url + "/files", headers=listing.logged_in.headers, params=params)


def listed_ids(response: httpx2.Response) -> list[str]:
    assert response.status_code == 200, response.text
    items = response.json()
    assert isinstance(items, list)
    return [item["id"] for item in items]


def test_list_shows_the_organizations_uploads_newest_first(
    client: httpx2.Client, api: InProcessApp, listing: Listing
) -> None:
    response = list_files(client, api, listing)
    assert listed_ids(response) == listing.newest_first()
    assert response.headers["total-count"] == "5"
    items = response.json()
    for item in items:
        assert set(item) == FILE_KEYS, sorted(set(item) ^ FILE_KEYS)
        assert UPLOAD_DATE.fullmatch(item["uploadDate"])
    by_id = {item["id"]: item for item in items}
    assert by_id[listing.ids[0]]["status"] == "analyzing"
    assert by_id[listing.ids[4]]["productType"] == "affinity"
    assert [by_id[uid]["status"] for uid in listing.ids[1:]] == ["uploading"] * 4
    # The Swagger path with a trailing slash answers the same.
    slash = client.get(api.base_url + "/files/", headers=listing.logged_in.headers)
    assert listed_ids(slash) == listing.newest_first()


@pytest.mark.parametrize(
    ("limit", "offset", "window"),
    [
        ("2", None, slice(0, 2)),
        ("2", "0", slice(0, 2)),
        ("2", "2", slice(2, 4)),
        ("2", "4", slice(4, 6)),
        ("10", "5", slice(5, 5)),
        (None, "3", slice(3, None)),
        ("0", None, slice(0, 0)),
        ("", "", slice(0, None)),
    ],
)
def test_list_paging(
    client: httpx2.Client,
    api: InProcessApp,
    listing: Listing,
    limit: str | None,
    offset: str | None,
    window: slice,
) -> None:
    params = {name: value for name, value in (("limit", limit), ("offset", offset)) if value is not None}
    response = list_files(client, api, listing, **params)
    assert listed_ids(response) == listing.newest_first()[window]
    assert response.headers["total-count"] == "5"


@pytest.mark.parametrize(
    ("direction", "newest_first"),
    [("ASC", False), ("DESC", True), ("asc", False), ("desc", True)],
)
def test_list_sorted_by_upload_date(
    client: httpx2.Client, api: InProcessApp, listing: Listing, direction: str, newest_first: bool
) -> None:
    response = list_files(client, api, listing, sortBy="uploadDate", sortDirection=direction)
    expected = listing.newest_first() if newest_first else listing.ids
    assert listed_ids(response) == expected
    paged = list_files(
        client, api, listing, sortBy="uploadDate", sortDirection=direction, limit="2", offset="1"
    )
    assert listed_ids(paged) == expected[1:3]
    assert paged.headers["total-count"] == "5"


@pytest.mark.parametrize(
    ("params", "positions"),
    [
        ({"status": "analyzing"}, [0]),
        ({"status": "uploading"}, [4, 3, 2, 1]),
        ({"status": "done"}, []),
        ({"productType": "affinity"}, [4, 1]),
        ({"productType": "legacy"}, [4, 1]),
        ({"productType": "enrollment"}, [2, 0]),
        ({"productType": "enrollment", "status": "uploading"}, [2]),
        ({"productType": "ematch", "sortDirection": "ASC", "limit": "1"}, [3]),
    ],
)
def test_list_filters(
    client: httpx2.Client, api: InProcessApp, listing: Listing, params: dict[str, str], positions: list[int]
) -> None:
    response = list_files(client, api, listing, **params)
    assert listed_ids(response) == [listing.ids[position] for position in positions]
    assert response.headers["total-count"] == str(len(positions))


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"sortDirection": "sideways"}, "invalid_sort_direction"),
        ({"sortBy": "size"}, "invalid_sort_by"),
        ({"sortBy": "uploaddate"}, "invalid_sort_by"),
        ({"limit": "-1"}, "invalid_limit"),
        ({"limit": "ten"}, "invalid_limit"),
        ({"limit": "1001"}, "invalid_limit"),
        ({"offset": "-2"}, "invalid_offset"),
        ({"status": "bogus"}, "invalid_status"),
        ({"productType": "transcripts"}, "invalid_product_type"),
    ],
)
def test_list_invalid_parameters_get_400(
    client: httpx2.Client, api: InProcessApp, listing: Listing, params: dict[str, str], code: str
) -> None:
    envelope = assert_envelope(list_files(client, api, listing, **params), 400, code)
    assert envelope["detail"] == envelope["message"]


def test_other_organizations_upload_is_not_found(
    client: httpx2.Client, api: InProcessApp, demo: LoggedIn, listing: Listing
) -> None:
    form = create_upload(client, api, demo.headers)
    mine = client.get(f"{api.base_url}/files/{form.id}", headers=demo.headers)
    assert mine.status_code == 200

    message = f"File with id: {form.id} is NOT found."
    theirs = client.get(f"{api.base_url}/files/{form.id}", headers=listing.logged_in.headers)
    assert theirs.status_code == 404
    assert theirs.json() == {"code": "file_not_found", "message": message, "detail": message}
    assert form.id not in listed_ids(list_files(client, api, listing))
    # And the other way round: the demo organization sees none of theirs.
    their_id = listing.ids[0]
    back = client.get(f"{api.base_url}/files/{their_id}", headers=demo.headers)
    assert back.status_code == 404
    assert back.json()["detail"] == f"File with id: {their_id} is NOT found."
    unknown = str(uuid.uuid4())
    missing = client.get(f"{api.base_url}/files/{unknown}", headers=demo.headers)
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"File with id: {unknown} is NOT found."
