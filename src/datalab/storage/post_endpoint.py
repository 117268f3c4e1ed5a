"""The embedded store's browser-POST endpoint: a presigned POST form, received the way S3 receives it.

The body is parsed as a stream. Every field before the file is checked (signature, policy, conditions,
coverage) before the first file byte is accepted; the file then streams to disk while it is counted and
hashed, so memory stays flat, and it becomes visible only when the upload record moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import NoReturn, Protocol
from urllib.parse import quote

import anyio
from anyio import to_thread
from fastapi import APIRouter, Request
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header
from starlette.responses import Response

from datalab.db import utcnow
from datalab.settings import Settings
from datalab.storage.base import ObjectInfo, ObjectStore, ObjectWriter
from datalab.storage.errors import GATE_FAILURES
from datalab.storage.post_policy import (
    MAX_PRE_FILE_BYTES,
    AcceptedPost,
    check_post_fields,
    entity_too_large,
    entity_too_small,
    malformed_post_error,
    missing_file_error,
    not_multipart_error,
    post_response_xml,
    redirect_location,
    too_large_fields_error,
)
from datalab.storage.routes import s3_error_for, s3_error_response
from datalab.storage.s3_auth import S3Error

WRITE_BATCH = 1024 * 1024
# Part headers are short in every real form; the cap keeps a hostile body from growing them.
MAX_PART_HEADER = 8192


class PostGate(Protocol):
    """Decides whether a verified form may store its object, and records it when it did."""

    def check(self, *, session_token: str | None, key: str, now: datetime) -> int:
        """The id of the upload the form belongs to, or the failure (`storage.errors`) saying why not."""
        ...

    def complete(self, *, upload_id: int, writer: ObjectWriter, now: datetime) -> ObjectInfo:
        """Commit the written object and record it, or raise the failure (`storage.errors`) saying why not."""
        ...


class _PipelinedWriter:
    """Writes each batch in a worker thread while the next one is parsed; one write in flight at a time."""

    def __init__(self, writer: ObjectWriter) -> None:
        self.writer = writer
        self._in_flight: asyncio.Future[None] | None = None

    async def write(self, data: bytes) -> None:
        """Wait for the previous batch, then start writing this one."""
        await self.drain()
        self._in_flight = asyncio.ensure_future(to_thread.run_sync(self.writer.write, data))

    async def drain(self) -> None:
        """Wait until every batch handed over is written."""
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            await in_flight


class _IncomingFile:
    """The file part being stored: the form that allowed it, and its bytes as they are counted and written."""

    def __init__(
        self, *, accepted: AcceptedPost, upload_id: int, writer: ObjectWriter, declared_size: int | None
    ) -> None:
        self.accepted = accepted
        self.upload_id = upload_id
        self.writer = writer
        # Set once the gate took the writer over to commit it: from then on it is the gate's to abort.
        self.handed_over = False
        self.pipeline = _PipelinedWriter(writer)
        self.pending = bytearray()
        self.received = 0
        self.declared_size = declared_size

    async def take(self, data: bytes) -> None:
        """Count the bytes, refuse them past the allowed size, and write them in batches."""
        self.received += len(data)
        max_size = self.accepted.max_size
        if max_size is not None and self.received > max_size:
            raise entity_too_large(proposed_size=self.proposed_size(), max_size=max_size)
        self.pending += data
        if len(self.pending) >= WRITE_BATCH:
            batch = bytes(self.pending)
            self.pending.clear()
            await self.pipeline.write(batch)

    def proposed_size(self) -> int:
        """The file's size as S3 reports it when refusing it: from Content-Length, not just what was read."""
        if self.declared_size is None:
            return self.received
        return max(self.received, self.declared_size)

    async def flush(self) -> None:
        """Write what is pending and wait until every byte is written."""
        if self.pending:
            await self.pipeline.write(bytes(self.pending))
        await self.pipeline.drain()


def _success_response(
    *, accepted: AcceptedPost, info: ObjectInfo, location: str, bucket: str, request_id: str
) -> Response:
    headers = {"etag": f'"{info.etag}"', "location": location, "x-amz-request-id": request_id}
    if accepted.success_action_redirect:
        target = redirect_location(
            redirect=accepted.success_action_redirect, bucket=bucket, key=info.key, etag=f'"{info.etag}"'
        )
        if target is not None:
            return Response(status_code=303, headers={**headers, "location": target})
    if accepted.success_action_status == 201:
        body = post_response_xml(location=location, bucket=bucket, key=info.key, etag=f'"{info.etag}"')
        return Response(body, status_code=201, media_type="application/xml", headers=headers)
    return Response(status_code=accepted.success_action_status, headers=headers)


@dataclass(frozen=True)
class PostEndpoint:
    """POST /<bucket> of one bucket that takes browser uploads."""

    settings: Settings
    store: ObjectStore
    bucket: str
    gate: PostGate

    async def post_object(self, request: Request) -> Response:
        """Store the form's file and answer as S3 does, or answer S3's error document."""
        request_id = secrets.token_hex(8).upper()
        try:
            info, accepted = await PostReceiver(endpoint=self, request=request).receive()
        except S3Error as error:
            return s3_error_response(error, request_id)
        except GATE_FAILURES as failure:
            return s3_error_response(s3_error_for(failure), request_id)
        location = f"{self.settings.base_url(str(request.base_url))}/{self.bucket}/{quote(info.key)}"
        return _success_response(
            accepted=accepted, info=info, location=location, bucket=self.bucket, request_id=request_id
        )


class PostReceiver:
    """One browser POST, read as a stream: the fields up to the file part, checked, then the file stored.

    For each chunk of the body the multipart parser yields a part's headers (a segment), bytes of the
    current part, or None where a part ends.
    """

    def __init__(self, *, endpoint: PostEndpoint, request: Request) -> None:
        self.endpoint = endpoint
        self.request = request
        self.now = utcnow()
        declared_length = request.headers.get("content-length", "")
        self.content_length = int(declared_length) if declared_length.isdigit() else None
        self.boundary = ""
        self.fields: list[tuple[str, str]] = []
        self.pre_file_bytes = 0
        self.part_name: str | None = None
        self.part_value = bytearray()
        self.fed = 0
        self.file: _IncomingFile | None = None
        self.file_done = False

    async def receive(self) -> tuple[ObjectInfo, AcceptedPost]:
        """Read the body, store the file, and return it with the form that allowed it."""
        parser = self.open_parser()
        try:
            file = await self.read_body(parser)
            return await self.store(file)
        finally:
            await self.abort_unfinished()

    def open_parser(self) -> PushMultipartParser:
        """A streaming parser for the body's boundary; anything but multipart/form-data is refused."""
        mime, options = parse_options_header(self.request.headers.get("content-type", ""))
        if mime != "multipart/form-data":
            raise not_multipart_error()
        boundary = options.get("boundary")
        if not boundary:
            raise malformed_post_error()
        try:
            parser = PushMultipartParser(boundary, max_header_size=MAX_PART_HEADER)
        except MultipartError:
            raise malformed_post_error() from None
        self.boundary = boundary
        return parser

    async def read_body(self, parser: PushMultipartParser) -> _IncomingFile:
        """Feed the body to the parser until the file part has ended; the file streams to the store."""
        async for chunk in self.request.stream():
            events = _parse(parser, chunk)
            for index, event in enumerate(events):
                if isinstance(event, MultipartSegment):
                    await self.start_part(event, self.fed + len(chunk) - _file_bytes_after(events, index))
                elif event:
                    await self.take_bytes(event)
                else:
                    self.end_part()
            self.fed += len(chunk)
            if self.file_done:
                break
        if self.file is None or not self.file_done:
            self.refuse_incomplete()
        return self.file

    async def start_part(self, segment: MultipartSegment, file_offset: int) -> None:
        """Begin a field, or at the file part check the form and open the object; later parts are ignored."""
        if self.file is not None:
            return
        if (segment.name or "").lower() == "file":
            self.file = await self.open_file(segment.filename, file_offset)
        else:
            self.part_name = segment.name or ""
            self.part_value = bytearray()
            self.pre_file_bytes += len(self.part_name) + 64

    async def take_bytes(self, data: bytes) -> None:
        """Bytes of the file, or of a field, whose total before the file is capped as S3 caps it."""
        if self.file is not None and not self.file_done:
            await self.file.take(data)
        elif not self.file_done:
            self.part_value += data
            self.pre_file_bytes += len(data)
            if self.pre_file_bytes > MAX_PRE_FILE_BYTES:
                raise too_large_fields_error()

    def end_part(self) -> None:
        """The end of the file part, or of a field, which is then kept."""
        if self.file is not None and not self.file_done:
            self.file_done = True
        elif not self.file_done and self.part_name is not None:
            self.fields.append((self.part_name, self.part_value.decode("utf-8", "replace")))
            self.part_name = None

    def check_fields(self, filename: str | None) -> AcceptedPost:
        """The fields read so far, checked as S3 checks a form before the file."""
        settings = self.endpoint.settings
        return check_post_fields(
            fields=self.fields,
            filename=filename,
            bucket=self.endpoint.bucket,
            lookup_secret=settings.storage_secret_for,
            region=settings.storage_region,
            now=self.now,
            max_size_allowed=settings.max_upload_bytes,
        )

    async def open_file(self, filename: str | None, file_offset: int) -> _IncomingFile:
        """Check the form and the upload it belongs to, then start writing the object."""
        accepted = self.check_fields(filename)
        gate_check = partial(
            self.endpoint.gate.check, session_token=accepted.session_token, key=accepted.key, now=self.now
        )
        upload_id = await to_thread.run_sync(gate_check)
        writer = self.endpoint.store.begin_write(
            bucket=self.endpoint.bucket,
            key=accepted.key,
            content_type=accepted.content_type or "binary/octet-stream",
        )
        declared_size = None
        if self.content_length is not None:
            closing = len(self.boundary) + 8  # "\r\n--" + boundary + "--\r\n" after a last file part
            declared_size = self.content_length - file_offset - closing
        return _IncomingFile(
            accepted=accepted, upload_id=upload_id, writer=writer, declared_size=declared_size
        )

    def refuse_incomplete(self) -> NoReturn:
        """A body that ended inside the file is malformed; one without a file is checked, then refused."""
        if self.file is not None:
            raise malformed_post_error()
        self.check_fields(None)
        raise missing_file_error()

    async def store(self, file: _IncomingFile) -> tuple[ObjectInfo, AcceptedPost]:
        """Write the last bytes, check the minimum size, and hand the object to the gate to commit."""
        await file.flush()
        if file.received < file.accepted.min_size:
            raise entity_too_small(proposed_size=file.received, min_size=file.accepted.min_size)
        file.handed_over = True
        complete = partial(
            self.endpoint.gate.complete, upload_id=file.upload_id, writer=file.writer, now=utcnow()
        )
        return await to_thread.run_sync(complete), file.accepted

    async def abort_unfinished(self) -> None:
        """Drop a file that was not handed to the gate, even when the request was cancelled."""
        file = self.file
        if file is None or file.handed_over:
            return
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                await file.pipeline.drain()
            await to_thread.run_sync(file.writer.abort)


def post_router(*, settings: Settings, store: ObjectStore, gates: dict[str, PostGate]) -> APIRouter:
    """Routes POST /<bucket> (and /<bucket>/) for every bucket that takes browser uploads."""
    router = APIRouter(include_in_schema=False)
    for bucket, gate in gates.items():
        endpoint = PostEndpoint(settings=settings, store=store, bucket=bucket, gate=gate)
        router.add_api_route(f"/{bucket}", endpoint.post_object, methods=["POST"])
        router.add_api_route(f"/{bucket}/", endpoint.post_object, methods=["POST"])
    return router


def _file_bytes_after(events: list[MultipartSegment | bytes | None], index: int) -> int:
    """File bytes a chunk holds after the file part's headers (up to its end when that is in the chunk)."""
    total = 0
    for event in events[index + 1 :]:
        if event is None or isinstance(event, MultipartSegment):
            break
        total += len(event)
    return total


def _parse(parser: PushMultipartParser, chunk: bytes) -> list[MultipartSegment | bytes | None]:
    try:
        return list(parser.parse(chunk))
    except MultipartError:
        raise malformed_post_error() from None
