"""The S3 object store: any S3-compatible service through boto3, for deployments that scale out.

S3 signs and serves the forms and URLs itself, so this backend cannot see a download finish or make a
URL single-use, and it learns about uploads by looking at the bucket; see README ("Storage on S3").
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from datalab.storage.base import ObjectInfo, SpoolingWriter, check_key, copy_file_into

SHA256_METADATA = "sha256"


class S3ObjectWriter(SpoolingWriter):
    """An object spooled to a local temporary file while hashed, then uploaded in one managed transfer."""

    def __init__(self, *, store: S3ObjectStore, bucket: str, key: str, content_type: str) -> None:
        super().__init__(
            bucket=bucket, key=key, content_type=content_type, spool_dir=store.spool_dir, prefix="s3-upload-"
        )
        self.store = store

    def commit(self) -> ObjectInfo:
        """Upload the spooled bytes under the key, with their SHA-256 as object metadata."""
        self.handle.close()
        try:
            sha256 = self.digest.sha256
            self.store.client.upload_file(
                str(self.tmp_path),
                self.bucket,
                self.key,
                ExtraArgs={"ContentType": self.content_type, "Metadata": {SHA256_METADATA: sha256}},
            )
        finally:
            self.tmp_path.unlink(missing_ok=True)
        info = self.store.info(bucket=self.bucket, key=self.key)
        if info is None:
            raise RuntimeError(f"s3://{self.bucket}/{self.key} is missing right after its upload")
        return ObjectInfo(
            bucket=info.bucket,
            key=info.key,
            size=self.digest.size,
            etag=self.digest.etag,
            sha256=sha256,
            content_type=info.content_type,
            last_modified=info.last_modified,
        )


class S3ObjectStore:
    """Objects in S3 buckets; forms and URLs signed by boto3 (SigV4) for the configured endpoint."""

    one_time_urls = False
    reports_uploads = False

    def __init__(self, *, client: Any, spool_dir: Path) -> None:
        self.client = client
        self.spool_dir = spool_dir
        spool_dir.mkdir(parents=True, exist_ok=True)

    def begin_write(self, *, bucket: str, key: str, content_type: str) -> S3ObjectWriter:
        """Start writing an object as a stream (spooled locally, uploaded on commit)."""
        return S3ObjectWriter(store=self, bucket=bucket, key=check_key(key), content_type=content_type)

    def put_file(self, *, bucket: str, key: str, source: Path, content_type: str) -> ObjectInfo:
        """Upload a local file, streaming it once to hash it."""
        return copy_file_into(self.begin_write(bucket=bucket, key=key, content_type=content_type), source)

    def info(self, *, bucket: str, key: str) -> ObjectInfo | None:
        """The object's metadata from a HEAD request, or None when it does not exist."""
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=int(head["ContentLength"]),
            etag=str(head.get("ETag", "")).strip('"'),
            sha256=str(head.get("Metadata", {}).get(SHA256_METADATA, "")),
            content_type=str(head.get("ContentType", "binary/octet-stream")),
            last_modified=head["LastModified"],
        )

    @contextmanager
    def readable_path(self, *, bucket: str, key: str, temp_dir: Path) -> Iterator[Path]:
        """The object downloaded to a temporary file, removed afterwards."""
        temp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=temp_dir) as work:
            target = Path(work) / "object"
            self.client.download_file(bucket, key, str(target))
            yield target

    def open_stream(self, *, bucket: str, key: str) -> IO[bytes]:
        """The object's bytes as a readable stream (the GET response body)."""
        body: IO[bytes] = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        return body

    def delete(self, *, bucket: str, key: str) -> None:
        """Remove the object; S3 treats a missing key as deleted."""
        self.client.delete_object(Bucket=bucket, Key=key)

    def check_bucket(self, *, bucket: str) -> None:
        """A HEAD of the bucket: raises when the endpoint, the credentials or the bucket fail."""
        self.client.head_bucket(Bucket=bucket)

    def presigned_post(
        self,
        *,
        bucket: str,
        key: str,
        base_url: str,
        session_token: str,
        expires_in: int,
        max_size: int,
        now: datetime,
    ) -> dict[str, Any]:
        """boto3's SigV4 POST form for exactly this key, with the size range; S3 holds the credentials."""
        form: dict[str, Any] = self.client.generate_presigned_post(
            Bucket=bucket,
            Key=key,
            Conditions=[["content-length-range", 1, max_size]],
            ExpiresIn=expires_in,
        )
        return form

    def presigned_get_url(
        self,
        *,
        bucket: str,
        key: str,
        base_url: str,
        session_token: str,
        expires_in: int,
        now: datetime,
    ) -> str:
        """A boto3 SigV4 presigned GET, valid for expires_in seconds (usable many times, as S3's are)."""
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in
        )
        return url


def make_s3_client(*, region: str, endpoint_url: str | None) -> Any:
    """A boto3 S3 client using the standard AWS credential chain, SigV4, path style for custom endpoints."""
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        retries={"max_attempts": 5, "mode": "standard"},
    )
    return boto3.client("s3", region_name=region, endpoint_url=endpoint_url or None, config=config)
