"""The object store interface every backend implements."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

KEY_PART = re.compile(r"^[^/\x00-\x1f\\]+$")


class InvalidObjectKey(ValueError):
    """An object key that could escape its bucket or is not a clean relative path."""


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one stored object."""

    bucket: str
    key: str
    size: int
    etag: str
    sha256: str
    content_type: str
    last_modified: datetime


PARALLEL_DIGEST_MIN = 256 * 1024
_DIGEST_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="digest")


class StreamDigest:
    """Size, MD5 (S3's ETag of a single-part object) and SHA-256 of bytes as they stream past."""

    def __init__(self) -> None:
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        """Account for the next bytes."""
        self.size += len(chunk)
        if len(chunk) < PARALLEL_DIGEST_MIN:
            self._md5.update(chunk)
            self._sha256.update(chunk)
            return
        # hashlib releases the GIL on large buffers: the two digests of a big chunk run side by side.
        md5_done = _DIGEST_POOL.submit(self._md5.update, chunk)
        self._sha256.update(chunk)
        md5_done.result()

    @property
    def etag(self) -> str:
        """Hex MD5 of everything so far."""
        return self._md5.hexdigest()

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of everything so far."""
        return self._sha256.hexdigest()


class SpoolingWriter:
    """Bytes hashed and counted as they stream into a temporary file; subclasses decide what commit does."""

    def __init__(self, *, bucket: str, key: str, content_type: str, spool_dir: Path, prefix: str) -> None:
        self.bucket = bucket
        self.key = key
        self.content_type = content_type
        fd, name = tempfile.mkstemp(dir=spool_dir, prefix=prefix)
        self.tmp_path = Path(name)
        self.handle: BinaryIO = os.fdopen(fd, "wb")
        self.digest = StreamDigest()

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self.digest.size

    def write(self, chunk: bytes) -> None:
        """Append bytes to the object."""
        self.digest.update(chunk)
        self.handle.write(chunk)

    def abort(self) -> None:
        """Drop everything written; the key is left as it was."""
        self.handle.close()
        self.tmp_path.unlink(missing_ok=True)


def check_key(key: str) -> str:
    """Return the key when every '/'-separated part is a plain name, else raise InvalidObjectKey."""
    if not key or len(key.encode()) > 1024:
        raise InvalidObjectKey("object keys are 1 to 1024 bytes")
    for part in key.split("/"):
        if part in {".", ".."} or not KEY_PART.match(part):
            raise InvalidObjectKey(f"object key part {part!r} is not allowed")
    return key


class ObjectWriter(Protocol):
    """An object being written as a stream; invisible until committed."""

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    def write(self, chunk: bytes) -> None:
        """Append bytes to the object."""
        ...

    def commit(self) -> ObjectInfo:
        """Make the object durable and visible under its key."""
        ...

    def abort(self) -> None:
        """Drop everything written."""
        ...


class ObjectStore(Protocol):
    """Where export and upload files live: the embedded store or S3."""

    # Whether presigned GETs can be single-use and report a finished transfer (only the embedded store).
    one_time_urls: bool
    # Whether a POST to the store records the upload itself (else the bucket is watched for new objects).
    reports_uploads: bool

    def begin_write(self, *, bucket: str, key: str, content_type: str) -> ObjectWriter:
        """Start writing an object as a stream."""
        ...

    def put_file(self, *, bucket: str, key: str, source: Path, content_type: str) -> ObjectInfo:
        """Copy a local file into the store, streaming, and return its size and checksums."""
        ...

    def info(self, *, bucket: str, key: str) -> ObjectInfo | None:
        """The stored object's metadata, or None when it does not exist."""
        ...

    def open_stream(self, *, bucket: str, key: str) -> IO[bytes]:
        """The object's bytes as a readable binary stream; the caller closes it."""
        ...

    def delete(self, *, bucket: str, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""
        ...

    def check_bucket(self, *, bucket: str) -> None:
        """Raise when the bucket cannot be used now (one cheap call, for the readiness probe)."""
        ...

    def readable_path(self, *, bucket: str, key: str, temp_dir: Path) -> AbstractContextManager[Path]:
        """A local file with the object's bytes, for readers that need to seek (spreadsheets, ZIPs)."""
        ...

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
        """A browser POST form ({"url", "fields"}) that stores exactly this key, up to max_size bytes."""
        ...

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
        """A URL that fetches the object with no headers until it expires."""
        ...


def copy_file_into(writer: ObjectWriter, source: Path, *, chunk_size: int = 1024 * 1024) -> ObjectInfo:
    """Stream a local file through a writer and commit it; nothing is left behind on failure."""
    try:
        with source.open("rb") as src:
            while chunk := src.read(chunk_size):
                writer.write(chunk)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise
