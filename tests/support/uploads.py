"""Helpers for the upload tests: upload records, multipart forms built part by part, stored objects."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped,unused-ignore]
import httpx2
from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from datalab.accounts.service import create_organization
from datalab.db import make_engine, make_session_factory, utcnow
from datalab.pipeline.models import PipelineJob
from datalab.pipeline.runner import ClaimedJob, EmbeddedRunner, StageContext, StageFunction
from datalab.pipeline.stages import STAGE_FUNCTIONS, make_stage_context
from datalab.runtime import make_store
from datalab.settings import Settings
from datalab.uploads.models import Upload
from tests.support.server import Deployment, LiveServer, LoggedIn

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
    """Every field in the given order, then the file last (docs/spec/compatibility.md row 13)."""
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
    """(stage, state) of every pipeline job of an upload, in the order they were queued."""
    with server.db() as db:
        jobs = db.scalars(
            select(PipelineJob).where(PipelineJob.upload_id == upload_id).order_by(PipelineJob.id)
        )
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


def get_file(client: httpx2.Client, server: LiveServer, logged_in: LoggedIn, uid: str) -> dict[str, Any]:
    """GET /v1/files/{uid}: the upload record as the API shows it."""
    response = client.get(f"{server.base_url}/files/{uid}", headers=logged_in.headers)
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def wait_for_status(
    client: httpx2.Client,
    server: LiveServer,
    logged_in: LoggedIn,
    uid: str,
    *,
    until: frozenset[str] = SETTLED,
    timeout: float = 30,
) -> dict[str, Any]:
    """Poll the upload record until its status is one of `until`; the record."""
    deadline = time.monotonic() + timeout
    while True:
        record = get_file(client, server, logged_in, uid)
        if record["status"] in until:
            return record
        if time.monotonic() >= deadline:
            raise AssertionError(f"upload {uid} stayed in {record['status']}: {record}")
        time.sleep(0.1)


def send_file(
    client: httpx2.Client,
    server: LiveServer,
    logged_in: LoggedIn,
    content: bytes,
    *,
    file_name: str = "roster.csv",
    product_type: str = "enrollment",
    **extra: Any,
) -> str:
    """Create an upload record and POST its file through the presigned form; the upload's id."""
    form = create_upload(
        client, server, logged_in.headers, file_name=file_name, product_type=product_type, **extra
    )
    posted = post_parts(client, form.url, form_parts(form.fields, content, filename=file_name))
    assert posted.status_code == 204, posted.text
    return form.id


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
    uid = send_file(client, server, demo, content, file_name=file_name, product_type=product_type, **extra)
    return wait_for_status(client, server, demo, uid, until=until)


def row_report(client: httpx2.Client, server: LiveServer, logged_in: LoggedIn, uid: str) -> httpx2.Response:
    """GET /v1/files/{uid}/errors: the row report of an upload (or its 404)."""
    return client.get(f"{server.base_url}/files/{uid}/errors", headers=logged_in.headers)


# --- driving the pipeline of an idle server (pipeline_workers=0) one stage at a time, in this process ---


@dataclass(frozen=True)
class StageRun:
    """A pipeline job the stepper ran: the upload's database id and the stage."""

    upload_id: int
    stage: str


def server_settings(server: Deployment, **overrides: Any) -> Settings:
    """The settings the server runs with (from its DATALAB_* environment), with some replaced."""
    values: dict[str, Any] = {
        name.removeprefix("DATALAB_").lower(): value
        for name, value in server.env.items()
        if name.startswith("DATALAB_")
    }
    return Settings(**{**values, **overrides})


class StageStepper:
    """Runs the pending pipeline jobs of an idle server one at a time, recording which job each step ran.

    The stages are the server's own (or replacements), with the context the server would give them:
    same database, same object store, same settings.
    """

    def __init__(
        self,
        *,
        server: LiveServer,
        session_factory: sessionmaker[Session],
        stages: Mapping[str, StageFunction] | None = None,
        max_attempts: int = 1,
        **settings: Any,
    ) -> None:
        self.settings = server_settings(server, **settings)
        self.session_factory = session_factory
        self.context = make_stage_context(
            settings=self.settings, session_factory=session_factory, store=make_store(self.settings)
        )
        self.runs: list[StageRun] = []
        self.runner = EmbeddedRunner(
            context=self.context,
            stages={name: self._recorded(name, stage) for name, stage in (stages or STAGE_FUNCTIONS).items()},
            workers=0,
            poll_seconds=0.1,
            lease_seconds=30,
            max_attempts=max_attempts,
        )

    def _recorded(self, name: str, stage: StageFunction) -> StageFunction:
        def run(context: StageContext, job: ClaimedJob) -> None:
            self.runs.append(StageRun(upload_id=job.upload_id, stage=name))
            stage(context, job)

        return run

    def step(self) -> StageRun | None:
        """Run exactly one claimable job; which one, or None when there was nothing to do."""
        before = len(self.runs)
        if not self.runner.run_one("test-stepper"):
            return None
        assert len(self.runs) == before + 1, self.runs[before:]
        return self.runs[-1]

    def run(self, upload_id: int, stage: str) -> None:
        """Run the next job, which must be this stage of this upload."""
        assert self.step() == StageRun(upload_id=upload_id, stage=stage)

    def drain(self) -> list[StageRun]:
        """Run jobs until none is left; the jobs run."""
        ran = []
        while (run := self.step()) is not None:
            ran.append(run)
        return ran


@contextmanager
def stage_stepper(
    server: LiveServer,
    *,
    stages: Mapping[str, StageFunction] | None = None,
    max_attempts: int = 1,
    **settings: Any,
) -> Iterator[StageStepper]:
    """A StageStepper on the server's database and object store, closed at the end."""
    engine = make_engine(server.database_url)
    try:
        yield StageStepper(
            server=server,
            session_factory=make_session_factory(engine),
            stages=stages,
            max_attempts=max_attempts,
            **settings,
        )
    finally:
        engine.dispose()


def add_analyzing_upload(db: Session, name: str) -> int:
    """A new organization's enrollment upload, `analyzing`, in the session's transaction; its id."""
    organization = create_organization(db=db, name=f"College {name}", fice=name[:6].rjust(6, "0"))
    upload = Upload(
        organization_id=organization.id,
        file_name=name,
        object_key=f"{organization.uid}/enrollment/{name}",
        product_type="enrollment",
        status="analyzing",
        form_token=name,
        form_expires_at=utcnow(),
    )
    db.add(upload)
    db.flush()
    return upload.id
