"""The embedded object store: files on local disk, served by this app's S3-compatible endpoint.

Meant for a single machine (a sandbox or a small deployment); use S3 when API processes scale out.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from datalab.storage.base import ObjectInfo, SpoolingWriter, check_key, copy_file_into
from datalab.storage.post_policy import presigned_post
from datalab.storage.sigv4 import Credentials, presign_get_url


class LocalObjectWriter(SpoolingWriter):
    """An object streaming to a temporary file beside its target, renamed into place on commit."""

    def __init__(
        self, *, store: LocalObjectStore, bucket: str, key: str, content_type: str, target: Path
    ) -> None:
        super().__init__(
            bucket=bucket, key=key, content_type=content_type, spool_dir=target.parent, prefix=".incoming-"
        )
        self.store = store
        self.target = target

    def commit(self) -> ObjectInfo:
        """Make the object durable and visible under its key."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        info = ObjectInfo(
            bucket=self.bucket,
            key=self.key,
            size=self.digest.size,
            etag=self.digest.etag,
            sha256=self.digest.sha256,
            content_type=self.content_type,
            last_modified=datetime.now(UTC).replace(microsecond=0),
        )
        self.store._write_meta(info)
        os.replace(self.tmp_path, self.target)
        return info


class LocalObjectStore:
    """Objects under <root>/<bucket>/<key>, metadata in a JSON file beside each under <root>/.meta."""

    one_time_urls = True
    reports_uploads = True

    def __init__(self, *, root: Path, credentials: Credentials, region: str) -> None:
        self.root = root
        self.credentials = credentials
        self.region = region

    def _object_path(self, bucket: str, key: str) -> Path:
        return self.root / check_key(bucket) / check_key(key)

    def _meta_path(self, bucket: str, key: str) -> Path:
        return self.root / ".meta" / check_key(bucket) / (check_key(key) + ".json")

    def begin_write(self, *, bucket: str, key: str, content_type: str) -> LocalObjectWriter:
        """Start writing an object; nothing is visible under the key until the writer commits."""
        target = self._object_path(bucket, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        return LocalObjectWriter(store=self, bucket=bucket, key=key, content_type=content_type, target=target)

    def put_file(self, *, bucket: str, key: str, source: Path, content_type: str) -> ObjectInfo:
        """Copy a local file into the store, streaming, and return its size and checksums."""
        return copy_file_into(self.begin_write(bucket=bucket, key=key, content_type=content_type), source)

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

    def path_of(self, *, bucket: str, key: str) -> Path:
        """The file holding the object (the store's endpoint serves it from there)."""
        return self._object_path(bucket, key)

    @contextmanager
    def readable_path(self, *, bucket: str, key: str, temp_dir: Path) -> Iterator[Path]:
        """The object's own file: no copy is needed on local disk."""
        yield self._object_path(bucket, key)

    def open_stream(self, *, bucket: str, key: str) -> IO[bytes]:
        """The object's bytes as a readable binary stream."""
        return self._object_path(bucket, key).open("rb")

    def delete(self, *, bucket: str, key: str) -> None:
        """Remove the object and its metadata; a missing object is not an error."""
        for path in (self._object_path(bucket, key), self._meta_path(bucket, key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def check_bucket(self, *, bucket: str) -> None:
        """Raise OSError when the bucket's directory cannot be listed or written (a missing one is made,
        as the first write would)."""
        directory = self.root / check_key(bucket)
        directory.mkdir(parents=True, exist_ok=True)
        with os.scandir(directory) as entries:
            next(entries, None)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(f"the bucket directory {directory} is not writable")

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
        """A SigV4 POST form for this app's store endpoint, path style, with temporary-credential token."""
        return presigned_post(
            url=f"{base_url.rstrip('/')}/{bucket}",
            bucket=bucket,
            key=key,
            credentials=self._temporary_credentials(session_token),
            region=self.region,
            expires_in=expires_in,
            now=now,
            conditions=[["content-length-range", 1, max_size]],
        )

    def _temporary_credentials(self, session_token: str) -> Credentials:
        return Credentials(
            access_key_id=self.credentials.access_key_id,
            secret_access_key=self.credentials.secret_access_key,
            session_token=session_token,
        )

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
        return presign_get_url(
            endpoint=base_url.rstrip("/"),
            path=f"/{bucket}/{key}",
            credentials=self._temporary_credentials(session_token),
            region=self.region,
            expires_in=expires_in,
            now=now,
        )
