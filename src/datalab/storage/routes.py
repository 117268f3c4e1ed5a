"""The embedded store's S3-compatible endpoint: presigned GETs, answered the way S3 answers them."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from email.utils import format_datetime
from functools import partial
from typing import Protocol

from anyio import to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from datalab.db import utcnow
from datalab.settings import Settings
from datalab.storage.local import LocalObjectStore
from datalab.storage.sigv4 import S3Error, verify_presigned_get
from datalab.storage.streaming import ByteRange, FileStreamResponse, UnsatisfiableRange, parse_range

RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-disposition": "content-disposition",
    "response-content-language": "content-language",
    "response-content-encoding": "content-encoding",
    "response-cache-control": "cache-control",
    "response-expires": "expires",
}


class ObjectGrant(Protocol):
    """Permission to serve one object once, and the hook told how the transfer ended."""

    key: str

    def finish(self, *, bytes_sent: int, complete: bool, now: datetime) -> None:
        """Record the end of the transfer."""
        ...


class ObjectGate(Protocol):
    """Decides whether a verified presigned request may read an object of its bucket."""

    def check(self, *, session_token: str | None, key: str, now: datetime) -> None:
        """Raise the S3Error a request for the object gets, without using the permission up."""
        ...

    def claim(self, *, session_token: str | None, key: str, now: datetime) -> ObjectGrant:
        """A grant for the object, or an S3Error."""
        ...


def s3_error_response(error: S3Error, request_id: str) -> Response:
    """An S3 error document."""
    host_id = base64.b64encode(secrets.token_bytes(48)).decode()
    return Response(
        error.to_xml(request_id=request_id, host_id=host_id),
        status_code=error.status,
        media_type="application/xml",
        headers={"x-amz-request-id": request_id, "x-amz-id-2": host_id},
    )


def store_router(*, settings: Settings, store: LocalObjectStore, gates: dict[str, ObjectGate]) -> APIRouter:
    """Routes GET /<bucket>/<key> for every gated bucket of the embedded store."""
    router = APIRouter(include_in_schema=False)

    def make_handler(bucket: str, gate: ObjectGate) -> Callable[[Request, str], Awaitable[Response]]:
        async def get_object(request: Request, key: str) -> Response:
            request_id = secrets.token_hex(8).upper()
            now = utcnow()
            try:
                verified = verify_presigned_get(
                    method=request.method,
                    host=request.headers.get("host", ""),
                    path=request.url.path,
                    query=request.query_params.multi_items(),
                    headers={name.lower(): value for name, value in request.headers.items()},
                    lookup_secret=settings.storage_secret_for,
                    region=settings.storage_region,
                    now=now,
                )
            except S3Error as error:
                return s3_error_response(error, request_id)
            # Object and range are checked before the URL is claimed (a 404 or 416 must not use it up), but
            # after a look at the ticket: a used or expired URL is refused first, as S3 refuses expired ones.
            try:
                await to_thread.run_sync(
                    partial(gate.check, session_token=verified.session_token, key=key, now=now)
                )
            except S3Error as error:
                return s3_error_response(error, request_id)
            info = store.info(bucket=bucket, key=key)
            if info is None:
                missing = S3Error(
                    status=404,
                    code="NoSuchKey",
                    message="The specified key does not exist.",
                    extras=[("Key", key)],
                )
                return s3_error_response(missing, request_id)
            try:
                byte_range = parse_range(request.headers.get("range"), info.size)
            except UnsatisfiableRange:
                unsatisfiable = S3Error(
                    status=416,
                    code="InvalidRange",
                    message="The requested range is not satisfiable",
                    extras=[
                        ("ActualObjectSize", str(info.size)),
                        ("RangeRequested", request.headers.get("range", "")),
                    ],
                )
                return s3_error_response(unsatisfiable, request_id)
            try:
                grant = await to_thread.run_sync(
                    partial(
                        gate.claim,
                        session_token=verified.session_token,
                        key=key,
                        now=now,
                    )
                )
            except S3Error as error:
                return s3_error_response(error, request_id)
            headers = {
                "x-amz-request-id": request_id,
                "accept-ranges": "bytes",
                "etag": f'"{info.etag}"',
                "last-modified": format_datetime(info.last_modified, usegmt=True),
                "content-type": info.content_type,
            }
            for parameter, header in RESPONSE_OVERRIDES.items():
                if parameter in request.query_params:
                    headers[header] = request.query_params[parameter]
            status = 200
            if byte_range is None:
                byte_range = ByteRange(0, info.size - 1)
            else:
                status = 206
                headers["content-range"] = f"bytes {byte_range.start}-{byte_range.end}/{info.size}"
            whole_object = byte_range.start == 0 and byte_range.length == info.size

            def on_finish(bytes_sent: int, complete: bool) -> None:
                grant.finish(bytes_sent=bytes_sent, complete=complete and whole_object, now=utcnow())

            return FileStreamResponse(
                path=store.path_of(bucket=bucket, key=grant.key),
                byte_range=byte_range,
                status_code=status,
                headers=headers,
                on_finish=on_finish,
            )

        return get_object

    for bucket, gate in gates.items():
        router.add_api_route(f"/{bucket}/{{key:path}}", make_handler(bucket, gate), methods=["GET"])
    return router
