"""Helpers for the upload tests: upload records, multipart forms built part by part, stored objects."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped,unused-ignore]
import httpx2
from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]
from sqlalchemy import select

from datalab.pipeline.models import PipelineJob
from datalab.settings import Settings
from datalab.uploads.models import Upload
from tests.support.server import LiveServer, LoggedIn

UPLOADS_BUCKET = "datalab-uploads"
# The fields of the create-record response, in the order the documentation's example lists them.
FORM_FIELD_ORDER = [
    "key",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-security-token",
    "policy",
    "x-amz-signature",
]
# The keys of the documentation's "Check File Status" response example, no more, no fewer.
FILE_KEYS = {
    "id",
    "fileName",
    "filePath",
    "productType",
    "status",
    "userName",
    "uploadDate",
    "recordVolume",
    "meta",
    "fieldsMap",
    "valuesMap",
    "dataSource",
    "error",
}
SAMPLE_CSV = b"ID,FIRSTNAME,LASTNAME\r\n00000001,Ana,O'Brien\r\n00000002,Jos\xc3\xa9,N\xc3\xba\xc3\xb1ez\r\n"


@dataclass(frozen=True)
class Part:
    """One part of a multipart/form-data body; a file part has a filename."""

    name: str
    value: bytes
    filename: str | None = None
    content_type: str | None = None


def field(name: str, value: str) -> Part:
    """A plain form field."""
    return Part(name, value.encode("utf-8"))


def file_part(content: bytes, *, filename: str = "file_to_upload.csv", name: str = "file") -> Part:
    """The file part of a POST form."""
    return Part(name, content, filename=filename, content_type="text/csv")


def form_parts(
    fields: Mapping[str, str] | Iterable[tuple[str, str]], content: bytes, *, filename: str = "data.csv"
) -> list[Part]:
    """Every field in the given order, then the file last (compatibility row 13)."""
    pairs = fields.items() if isinstance(fields, Mapping) else fields
    return [*(field(name, value) for name, value in pairs), file_part(content, filename=filename)]


def _part_head(part: Part, boundary: str) -> bytes:
    disposition = f'form-data; name="{part.name}"'
    if part.filename is not None:
        disposition += f'; filename="{part.filename}"'
    lines = [f"--{boundary}", f"Content-Disposition: {disposition}"]
    if part.content_type is not None:
        lines.append(f"Content-Type: {part.content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def new_boundary() -> str:
    """A multipart boundary no test content contains."""
    return "----datalab-test-" + secrets.token_hex(12)


def encode_multipart(parts: Sequence[Part], *, boundary: str | None = None) -> tuple[bytes, str]:
    """The body and Content-Type of a multipart/form-data request with exactly these parts, in order."""
    boundary = boundary or new_boundary()
    body = b"".join(_part_head(part, boundary) + part.value + b"\r\n" for part in parts)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def streamed_multipart(
    fields: Mapping[str, str], chunks: Iterable[bytes], *, boundary: str, filename: str = "big.csv"
) -> Iterator[bytes]:
    """A multipart body as an iterator: the fields, then the file's chunks as they are produced."""
    head, _ = encode_multipart([field(name, value) for name, value in fields.items()], boundary=boundary)
    yield head.removesuffix(f"--{boundary}--\r\n".encode())
    yield _part_head(file_part(b"", filename=filename), boundary)
    yield from chunks
    yield f"\r\n--{boundary}--\r\n".encode()


@dataclass(frozen=True)
class UploadForm:
    """A created upload record: its id and the presigned POST form of its file."""

    id: str
    url: str
    fields: dict[str, str]

    @property
    def key(self) -> str:
        """The object key the server chose."""
        return self.fields["key"]


def create_upload(
    client: httpx2.Client,
    server: LiveServer,
    headers: Mapping[str, str],
    *,
    file_name: str = "roster.csv",
    product_type: str = "enrollment",
    **extra: Any,
) -> UploadForm:
    """POST /v1/files/upload and return the record's id and form."""
    response = client.post(
        server.base_url + "/files/upload",
        headers=dict(headers),
        json={"fileName": file_name, "productType": product_type, **extra},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return UploadForm(id=body["id"], url=body["url"], fields=body["fields"])


def post_parts(client: httpx2.Client, url: str, parts: Sequence[Part]) -> httpx2.Response:
    """POST a multipart body made of exactly these parts to the store."""
    body, content_type = encode_multipart(parts)
    return client.post(url, content=body, headers={"Content-Type": content_type})


def object_path(server: LiveServer, key: str) -> Path:
    """Where the embedded store keeps an uploaded object."""
    return server.home / "objects" / UPLOADS_BUCKET / key


def assert_stored(server: LiveServer, key: str, content: bytes) -> None:
    """The object exists under its key with exactly these bytes."""
    assert object_path(server, key).read_bytes() == content


def assert_nothing_stored(server: LiveServer, key: str) -> None:
    """No object under the key, and no half-written file beside where it would be."""
    path = object_path(server, key)
    assert not path.exists(), path
    assert not (server.home / "objects" / ".meta" / UPLOADS_BUCKET / (key + ".json")).exists()
    if path.parent.exists():
        assert list(path.parent.iterdir()) == [], list(path.parent.iterdir())


def upload_row(server: LiveServer, uid: str) -> Upload:
    """The upload record as the server's database holds it now."""
    with server.db() as db:
        return db.scalars(select(Upload).where(Upload.uid == uid)).one()


def pipeline_jobs(server: LiveServer, upload_id: int) -> list[tuple[str, str]]:
    """(stage, state) of every pipeline job of an upload."""
    with server.db() as db:
        jobs = db.scalars(select(PipelineJob).where(PipelineJob.upload_id == upload_id))
        return [(job.stage, job.state) for job in jobs]


def assert_still_uploading(server: LiveServer, form: UploadForm) -> None:
    """The record did not move: still `uploading`, no size or checksum, nothing queued, nothing stored."""
    row = upload_row(server, form.id)
    assert row.status == "uploading"
    assert row.size_bytes is None
    assert row.sha256 is None
    assert row.uploaded_at is None
    assert pipeline_jobs(server, row.id) == []
    assert_nothing_stored(server, form.key)


def storage_credentials(server: LiveServer) -> tuple[str, str]:
    """The embedded store's access key id and secret, derived from the server's secret key."""
    settings = Settings(secret_key=server.env["DATALAB_SECRET_KEY"])
    return settings.storage_access_key_id, settings.storage_secret_access_key


def boto3_post(server: LiveServer, *, key: str, token: str) -> dict[str, str]:
    """Fields of a form boto3 signs with the store's derived credentials, carrying this session token."""
    access_key_id, secret = storage_credentials(server)
    s3 = boto3.client(
        "s3",
        endpoint_url=server.root,
        region_name="us-east-1",
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    try:
        post = s3.generate_presigned_post(
            Bucket=UPLOADS_BUCKET,
            Key=key,
            Fields={"x-amz-security-token": token},
            Conditions=[{"x-amz-security-token": token}],
        )
    finally:
        s3.close()
    assert post["url"] == f"{server.root}/{UPLOADS_BUCKET}"
    return dict(post["fields"])


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


# Statuses a file stays in until something outside the pipeline happens.
SETTLED = frozenset({"fields_mapping_required", "done", "failure", "canceled"})


def upload_and_wait(
    client: httpx2.Client,
    server: LiveServer,
    demo: LoggedIn,
    content: bytes,
    *,
    file_name: str = "roster.csv",
    product_type: str = "enrollment",
    until: frozenset[str] = SETTLED,
    **extra: Any,
) -> dict[str, Any]:
    """Upload a file through the documented flow and poll its record until its status is one of `until`."""
    form = create_upload(
        client, server, demo.headers, file_name=file_name, product_type=product_type, **extra
    )
    assert (
        post_parts(client, form.url, form_parts(form.fields, content, filename=file_name)).status_code == 204
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        record: dict[str, Any] = client.get(f"{server.base_url}/files/{form.id}", headers=demo.headers).json()
        if record["status"] in until:
            return record
        time.sleep(0.1)
    raise AssertionError(f"upload {form.id} stayed in {record['status']}")
