"""The embedded store's browser-POST endpoint: a presigned POST form, received the way S3 receives it.

The body is parsed as a stream. Every field before the file is checked (signature, policy, conditions,
coverage) before the first file byte is accepted; the file then streams to disk while it is counted and
hashed, so memory stays flat, and it becomes visible only when the upload record moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from datetime import datetime
from functools import partial
from typing import Protocol
from urllib.parse import quote

import anyio
from anyio import to_thread
from fastapi import APIRouter, Request
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header
from starlette.responses import Response

from datalab.db import utcnow
from datalab.deps import public_base_url
from datalab.settings import Settings
from datalab.storage.base import ObjectInfo, ObjectStore, ObjectWriter
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
from datalab.storage.routes import s3_error_response
from datalab.storage.sigv4 import S3Error

WRITE_BATCH = 1024 * 1024
# Part headers are short in every real form; the cap keeps a hostile body from growing them.
MAX_PART_HEADER = 8192


class PostGate(Protocol):
    """Decides whether a verified form may store its object, and records it when it did."""

    def check(self, *, session_token: str | None, key: str, now: datetime) -> int:
        """A ticket for the upload the form belongs to, or an S3Error."""
        ...

    def complete(self, *, upload_id: int, writer: ObjectWriter, now: datetime) -> ObjectInfo:
        """Commit the written object and record it, or raise an S3Error."""
        ...


class _FormReader:
    """State of one POST: the fields read so far, then the file being written."""

    def __init__(self) -> None:
        self.fields: list[tuple[str, str]] = []
        self.pre_file_bytes = 0
        self.part_name: str | None = None
        self.part_value = bytearray()
        self.in_file = False
        self.file_done = False
        self.pending = bytearray()
        self.received = 0
        self.fed = 0
        self.file_offset: int | None = None

    def proposed_size(self, *, content_length: int | None, boundary: str) -> int:
        """The file's size as S3 reports it when refusing it: from Content-Length, not just what was read."""
        if content_length is None or self.file_offset is None:
            return self.received
        closing = len(boundary) + 8  # "\r\n--" + boundary + "--\r\n" after a last file part
        return max(self.received, content_length - self.file_offset - closing)


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


def post_router(*, settings: Settings, store: ObjectStore, gates: dict[str, PostGate]) -> APIRouter:
    """Routes POST /<bucket> (and /<bucket>/) for every bucket that takes browser uploads."""
    router = APIRouter(include_in_schema=False)

    def make_handler(bucket: str, gate: PostGate) -> object:
        async def post_object(request: Request) -> Response:
            request_id = secrets.token_hex(8).upper()
            try:
                info, accepted = await _receive(request, bucket, gate)
            except S3Error as error:
                return s3_error_response(error, request_id)
            location = f"{public_base_url(request, settings)}/{bucket}/{quote(info.key)}"
            return _success_response(
                accepted=accepted, info=info, location=location, bucket=bucket, request_id=request_id
            )

        async def _receive(request: Request, bucket: str, gate: PostGate) -> tuple[ObjectInfo, AcceptedPost]:
            now = utcnow()
            mime, options = parse_options_header(request.headers.get("content-type", ""))
            if mime != "multipart/form-data":
                raise not_multipart_error()
            boundary = options.get("boundary")
            if not boundary:
                raise malformed_post_error()
            try:
                parser = PushMultipartParser(boundary, max_header_size=MAX_PART_HEADER)
            except MultipartError:
                raise malformed_post_error() from None
            form = _FormReader()
            declared_length = request.headers.get("content-length", "")
            content_length = int(declared_length) if declared_length.isdigit() else None
            accepted: AcceptedPost | None = None
            upload_id = 0
            writer: ObjectWriter | None = None
            pipeline: _PipelinedWriter | None = None
            try:
                async for chunk in request.stream():
                    events = _parse(parser, chunk)
                    for index, event in enumerate(events):
                        if isinstance(event, MultipartSegment):
                            if form.in_file or form.file_done:
                                continue
                            if (event.name or "").lower() == "file":
                                form.file_offset = form.fed + len(chunk) - _file_bytes_after(events, index)
                                accepted = check_post_fields(
                                    fields=form.fields,
                                    filename=event.filename,
                                    bucket=bucket,
                                    lookup_secret=settings.storage_secret_for,
                                    region=settings.storage_region,
                                    now=now,
                                    max_size_allowed=settings.max_upload_bytes,
                                )
                                upload_id = await to_thread.run_sync(
                                    partial(
                                        gate.check,
                                        session_token=accepted.session_token,
                                        key=accepted.key,
                                        now=now,
                                    )
                                )
                                writer = store.begin_write(
                                    bucket=bucket,
                                    key=accepted.key,
                                    content_type=accepted.content_type or "binary/octet-stream",
                                )
                                pipeline = _PipelinedWriter(writer)
                                form.in_file = True
                            else:
                                form.part_name = event.name or ""
                                form.part_value = bytearray()
                                form.pre_file_bytes += len(form.part_name) + 64
                        elif event:
                            if form.in_file and pipeline is not None and accepted is not None:
                                form.received += len(event)
                                if accepted.max_size is not None and form.received > accepted.max_size:
                                    raise entity_too_large(
                                        proposed_size=form.proposed_size(
                                            content_length=content_length, boundary=boundary
                                        ),
                                        max_size=accepted.max_size,
                                    )
                                form.pending += event
                                if len(form.pending) >= WRITE_BATCH:
                                    data = bytes(form.pending)
                                    form.pending.clear()
                                    await pipeline.write(data)
                            elif not form.file_done:
                                form.part_value += event
                                form.pre_file_bytes += len(event)
                                if form.pre_file_bytes > MAX_PRE_FILE_BYTES:
                                    raise too_large_fields_error()
                        elif form.in_file:
                            form.in_file = False
                            form.file_done = True
                        elif not form.file_done and form.part_name is not None:
                            form.fields.append((form.part_name, form.part_value.decode("utf-8", "replace")))
                            form.part_name = None
                    form.fed += len(chunk)
                    if form.file_done:
                        break
                if not form.file_done:
                    if form.in_file:
                        raise malformed_post_error()
                    check_post_fields(
                        fields=form.fields,
                        filename=None,
                        bucket=bucket,
                        lookup_secret=settings.storage_secret_for,
                        region=settings.storage_region,
                        now=now,
                        max_size_allowed=settings.max_upload_bytes,
                    )
                    raise missing_file_error()
                assert writer is not None and accepted is not None and pipeline is not None
                if form.pending:
                    await pipeline.write(bytes(form.pending))
                await pipeline.drain()
                if form.received < accepted.min_size:
                    raise entity_too_small(proposed_size=form.received, min_size=accepted.min_size)
                finished = writer
                writer = None
                info = await to_thread.run_sync(
                    partial(gate.complete, upload_id=upload_id, writer=finished, now=utcnow())
                )
                return info, accepted
            finally:
                if writer is not None:
                    with anyio.CancelScope(shield=True):
                        if pipeline is not None:
                            with contextlib.suppress(Exception):
                                await pipeline.drain()
                        await to_thread.run_sync(writer.abort)

        return post_object

    for bucket, gate in gates.items():
        handler = make_handler(bucket, gate)
        router.add_api_route(f"/{bucket}", handler, methods=["POST"])  # type: ignore[arg-type]
        router.add_api_route(f"/{bucket}/", handler, methods=["POST"])  # type: ignore[arg-type]
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
