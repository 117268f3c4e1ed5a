"""The embedded object store: files on local disk, served by this app's S3-compatible endpoint.

Meant for a single machine (a sandbox or a small deployment); use S3 when API processes scale out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from datalab.storage.base import ObjectInfo, check_key
from datalab.storage.sigv4 import Credentials, presign_get_url

COPY_CHUNK = 1024 * 1024


class LocalObjectStore:
    """Objects under <root>/<bucket>/<key>, metadata in a JSON file beside each under <root>/.meta."""

    def __init__(self, *, root: Path, credentials: Credentials, region: str) -> None:
        self.root = root
        self.credentials = credentials
        self.region = region

    def _object_path(self, bucket: str, key: str) -> Path:
        return self.root / check_key(bucket) / check_key(key)

    def _meta_path(self, bucket: str, key: str) -> Path:
        return self.root / ".meta" / check_key(bucket) / (check_key(key) + ".json")

    def put_file(self, *, bucket: str, key: str, source: Path, content_type: str) -> ObjectInfo:
        """Copy a local file into the store, streaming, and return its size and checksums."""
        target = self._object_path(bucket, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        md5 = hashlib.md5(usedforsecurity=False)
        sha256 = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                while chunk := src.read(COPY_CHUNK):
                    md5.update(chunk)
                    sha256.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            info = ObjectInfo(
                bucket=bucket,
                key=key,
                size=size,
                etag=md5.hexdigest(),
                sha256=sha256.hexdigest(),
                content_type=content_type,
                last_modified=datetime.now(UTC).replace(microsecond=0),
            )
            self._write_meta(info)
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return info

    def _write_meta(self, info: ObjectInfo) -> None:
        meta_path = self._meta_path(info.bucket, info.key)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "size": info.size,
            "etag": info.etag,
            "sha256": info.sha256,
            "content_type": info.content_type,
            "last_modified": info.last_modified.isoformat(),
        }
        fd, tmp_name = tempfile.mkstemp(dir=meta_path.parent, prefix=".incoming-")
        with os.fdopen(fd, "w") as out:
            json.dump(payload, out)
        os.replace(tmp_name, meta_path)

    def info(self, *, bucket: str, key: str) -> ObjectInfo | None:
        """The stored object's metadata, or None when it does not exist."""
        try:
            payload = json.loads(self._meta_path(bucket, key).read_text())
        except FileNotFoundError:
            return None
        if not self._object_path(bucket, key).is_file():
            return None
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=int(payload["size"]),
            etag=str(payload["etag"]),
            sha256=str(payload["sha256"]),
            content_type=str(payload["content_type"]),
            last_modified=datetime.fromisoformat(payload["last_modified"]),
        )

    def open_read(self, *, bucket: str, key: str) -> Path:
        """A local path to read the object from."""
        return self._object_path(bucket, key)

    def delete(self, *, bucket: str, key: str) -> None:
        """Remove the object and its metadata; a missing object is not an error."""
        for path in (self._object_path(bucket, key), self._meta_path(bucket, key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

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
        """A SigV4 presigned GET URL on this app's store endpoint, path style."""
        credentials = Credentials(
            access_key_id=self.credentials.access_key_id,
            secret_access_key=self.credentials.secret_access_key,
            session_token=session_token,
        )
        return presign_get_url(
            endpoint=base_url.rstrip("/"),
            path=f"/{bucket}/{key}",
            credentials=credentials,
            region=self.region,
            expires_in=expires_in,
            now=now,
        )
