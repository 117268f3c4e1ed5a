"""The S3 backend against moto's S3 server on loopback.

moto checks no signature, policy or size, so these tests prove the happy paths and this server's own
checks (one-time ticket, size verification); the store's rejection paths are proven on the embedded store.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from datalab.exports.models import Delivery, Export
from datalab.pipeline.models import PipelineJob
from datalab.uploads.models import Upload
from tests.conftest import ServerFactory
from tests.support.checks import s3_error, wait_for
from tests.support.moto import MotoServer, s3_client
from tests.support.server import LiveServer


@pytest.fixture(scope="module")
def moto_endpoint(moto: MotoServer) -> str:
    return moto.endpoint


def _client(endpoint: str) -> Any:
    return s3_client(endpoint)


@pytest.fixture(scope="module")
def s3_server(make_server: ServerFactory, moto: MotoServer) -> LiveServer:
    return make_server(
        storage_backend="s3",
        s3_endpoint_url=moto.endpoint,
        **moto.new_buckets(),
        upload_sweep_interval_seconds="1",
        max_upload_bytes="1000",
    )


def _headers(server: LiveServer) -> dict[str, str]:
    return server.login().headers


def test_demo_exports_live_in_s3(s3_server: LiveServer, moto_endpoint: str) -> None:
    listing = _client(moto_endpoint).list_objects_v2(Bucket=s3_server.settings.exports_bucket)
    keys = [item["Key"] for item in listing.get("Contents", [])]
    response = httpx2.get(s3_server.base_url + "/datacenter/exports", headers=_headers(s3_server))
    assert response.status_code == 200
    assert len(response.json()) == 16
    assert len(keys) == 16
    assert all(key.startswith(s3_server.demo.organization_uid + "/") for key in keys)  # type: ignore[union-attr]


def test_download_ticket_redirects_once_and_records_the_delivery(
    s3_server: LiveServer, moto_endpoint: str
) -> None:
    headers = _headers(s3_server)
    exports = httpx2.get(
        s3_server.base_url + "/datacenter/exports", params={"productKey": "score-reporter"}, headers=headers
    ).json()
    export = exports[0]
    url = httpx2.get(
        f"{s3_server.base_url}/datacenter/exports/{export['uid']}/download", headers=headers
    ).json()["downloadUrl"]
    assert url.startswith(s3_server.root + "/download/")
    with s3_server.db() as db:
        stored = db.scalar(select(Export).where(Export.uid == export["uid"]))
        assert stored is not None
        object_key, file_name = stored.object_key, stored.file_name
    assert url.rsplit("/", 1)[1] == file_name
    renamed = url.rsplit("/", 1)[0] + "/someone-elses.csv"
    s3_error(httpx2.get(renamed), status=403, code="AccessDenied", message="Access Denied")

    with httpx2.Client(follow_redirects=False) as client:
        redirect = client.get(url)
    assert redirect.status_code == 307
    assert redirect.headers["location"].startswith(moto_endpoint + f"/{s3_server.settings.exports_bucket}/")
    body = httpx2.get(redirect.headers["location"]).content
    expected = (
        _client(moto_endpoint)
        .get_object(Bucket=s3_server.settings.exports_bucket, Key=object_key)["Body"]
        .read()
    )
    assert body == expected

    with s3_server.db() as db:
        stored = db.scalar(select(Export).where(Export.uid == export["uid"]))
        assert stored is not None
        assert stored.status == "Delivered"
        deliveries = list(db.scalars(select(Delivery).where(Delivery.export_id == stored.id)))
    assert [(d.method, d.bytes_sent) for d in deliveries] == [("API", len(expected))]

    s3_error(httpx2.get(url), status=403, code="AccessDenied", message="Request has expired")


def test_a_derived_download_reads_its_export_from_s3(s3_server: LiveServer, moto_endpoint: str) -> None:
    headers = _headers(s3_server)
    export = httpx2.get(
        s3_server.base_url + "/datacenter/exports", params={"productKey": "score-reporter"}, headers=headers
    ).json()[-1]
    answer = httpx2.get(
        f"{s3_server.base_url}/datacenter/exports/{export['uid']}/download",
        params={"fileType": "txt", "skip": "1", "limit": "2"},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    with httpx2.Client(follow_redirects=True) as client:
        body = client.get(answer.json()["downloadUrl"]).content
    with s3_server.db() as db:
        object_key = db.scalars(select(Export.object_key).where(Export.uid == export["uid"])).one()
    source = (
        _client(moto_endpoint)
        .get_object(Bucket=s3_server.settings.exports_bucket, Key=object_key)["Body"]
        .read()
    )
    rows = [line.split(",") for line in source.decode("utf-8-sig").splitlines() if line]
    expected = [rows[0], *rows[2:4]]
    assert body.decode("utf-8").splitlines() == ["\t".join(row) for row in expected]


def _create_upload(server: LiveServer, headers: dict[str, str], name: str) -> dict[str, Any]:
    response = httpx2.post(
        server.base_url + "/files/upload",
        headers=headers,
        json={"fileName": name, "productType": "enrollment", "datasource": "API"},
    )
    assert response.status_code == 200, response.text
    form: dict[str, Any] = response.json()
    return form


def _post_form(form: dict[str, Any], content: bytes) -> httpx2.Response:
    return httpx2.post(form["url"], data=form["fields"], files={"file": ("x.csv", content, "text/csv")})


def test_upload_reaches_analyzing_when_its_status_is_read(s3_server: LiveServer, moto_endpoint: str) -> None:
    headers = _headers(s3_server)
    form = _create_upload(s3_server, headers, "students.csv")
    assert form["url"] == f"{moto_endpoint}/{s3_server.settings.uploads_bucket}"
    assert list(form["fields"])[:4] == ["key", "x-amz-algorithm", "x-amz-credential", "x-amz-date"]
    before = httpx2.get(f"{s3_server.base_url}/files/{form['id']}", headers=headers).json()
    assert before["status"] == "uploading"

    content = b"UniqueID,FirstName\n00123,Ann\n"
    assert _post_form(form, content).status_code == 204
    after = httpx2.get(f"{s3_server.base_url}/files/{form['id']}", headers=headers).json()
    assert after["status"] == "analyzing"
    with s3_server.db() as db:
        upload = db.scalar(select(Upload).where(Upload.uid == form["id"]))
        assert upload is not None
        assert upload.size_bytes == len(content)
        assert upload.sha256 == hashlib.sha256(content).hexdigest()
        jobs = list(db.scalars(select(PipelineJob.stage).where(PipelineJob.upload_id == upload.id)))
    assert jobs == ["analyze"]


def test_sweeper_notices_uploads_nobody_asked_about(s3_server: LiveServer) -> None:
    form = _create_upload(s3_server, _headers(s3_server), "swept.csv")
    assert _post_form(form, b"UniqueID\n1\n").status_code == 204

    def analyzing() -> bool:
        with s3_server.db() as db:
            return db.scalar(select(Upload.status).where(Upload.uid == form["id"])) == "analyzing"

    assert wait_for(analyzing, timeout=10)


def test_server_verifies_the_size_itself(s3_server: LiveServer, moto_endpoint: str) -> None:
    headers = _headers(s3_server)
    form = _create_upload(s3_server, headers, "too_big.csv")
    # moto ignores the form's content-length-range; the server's own check must catch it.
    assert _post_form(form, b"x" * 1500).status_code == 204
    record = httpx2.get(f"{s3_server.base_url}/files/{form['id']}", headers=headers).json()
    assert record["status"] == "failure"
    assert record["error"] == "Upload rejected: the file is 1500 bytes; uploads must be 1 to 1000 bytes."
    listing = _client(moto_endpoint).list_objects_v2(
        Bucket=s3_server.settings.uploads_bucket, Prefix=form["fields"]["key"]
    )
    assert listing.get("KeyCount", 0) == 0


def test_the_pipeline_reads_uploads_from_s3(
    make_server: ServerFactory, moto: MotoServer, moto_endpoint: str
) -> None:
    server = make_server(
        storage_backend="s3",
        s3_endpoint_url=moto_endpoint,
        **moto.new_buckets(),
        upload_sweep_interval_seconds="1",
        pipeline_workers="1",
        pipeline_poll_seconds="0.1",
    )
    headers = _headers(server)
    form = _create_upload(server, headers, "from_s3.csv")
    assert _post_form(form, b"UniqueID,EntryYear,Applied\n00077,2026,2025/10/01\n").status_code == 204

    def done() -> bool:
        record = httpx2.get(f"{server.base_url}/files/{form['id']}", headers=headers).json()
        return bool(record["status"] == "done")

    assert wait_for(done, timeout=30)
    record = httpx2.get(f"{server.base_url}/files/{form['id']}", headers=headers).json()
    assert record["meta"]["data"] == [{"UniqueID": "00077", "EntryYear": "2026", "Applied": "2025/10/01"}]
    assert (record["meta"]["acceptedRows"], record["meta"]["loadedRows"]) == (1, 1)
    # The row report stays beside the upload in the bucket; the cleansed hand-off file is gone.
    keys = {
        item["Key"]
        for item in _client(moto_endpoint).list_objects_v2(
            Bucket=server.settings.uploads_bucket, Prefix="pipeline/"
        )["Contents"]
    }
    assert keys == {f"pipeline/{form['id']}/errors.csv"}
    report = httpx2.get(f"{server.base_url}/files/{form['id']}/errors", headers=headers)
    assert report.status_code == 200
    assert report.text == "row,column,field,value,severity,code,message\r\n"
