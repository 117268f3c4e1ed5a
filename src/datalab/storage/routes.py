"""The embedded store's S3-compatible endpoint: presigned GETs, answered the way S3 answers them."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from functools import partial
from typing import Protocol

from anyio import to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from datalab.db import utcnow
from datalab.domain_errors import DomainError
from datalab.settings import Settings
from datalab.storage.base import ObjectInfo
from datalab.storage.errors import (
    GATE_FAILURES,
    FormTokenExpired,
    FormTokenUnknown,
    LinkExpired,
    LinkUsed,
    ObjectMissing,
)
from datalab.storage.local import LocalObjectStore
from datalab.storage.s3_auth import (
    S3Error,
    access_denied,
    expired_error,
    expired_token,
    invalid_range,
    invalid_token,
    no_such_key,
)
from datalab.storage.sigv4 import VerifiedGet, verify_presigned_get
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
        """Raise the failure (`storage.errors`) a request for the object gets, without using it up."""
        ...

    def claim(self, *, session_token: str | None, key: str, now: datetime) -> ObjectGrant:
        """A grant for the object, or the failure (`storage.errors`) saying why not."""
        ...


def s3_error_for(failure: DomainError) -> S3Error:
    """The S3 error a gate's failure is answered with; anything else a gate refuses is AccessDenied."""
    if isinstance(failure, ObjectMissing):
        return no_such_key(failure.key)
    if isinstance(failure, LinkExpired | LinkUsed):
        # S3 has no "already used" error: a used one-time URL is answered like an expired one.
        return expired_error(
            expires_at=failure.expires_at,
            now=failure.refused_at,
            expires_in=int((failure.expires_at - failure.issued_at).total_seconds()),
        )
    if isinstance(failure, FormTokenUnknown):
        return invalid_token(failure.token)
    if isinstance(failure, FormTokenExpired):
        return expired_token(failure.token)
    return access_denied("Access Denied")


def s3_error_response(error: S3Error, request_id: str) -> Response:
    """An S3 error document."""
    host_id = base64.b64encode(secrets.token_bytes(48)).decode()
    return Response(
        error.to_xml(request_id=request_id, host_id=host_id),
        status_code=error.status,
        media_type="application/xml",
        headers={"x-amz-request-id": request_id, "x-amz-id-2": host_id},
    )


@dataclass(frozen=True)
class ObjectEndpoint:
    """GET /<bucket>/<key> of one gated bucket of the embedded store."""

    settings: Settings
    store: LocalObjectStore
    bucket: str
    gate: ObjectGate

    async def get_object(self, request: Request, key: str) -> Response:
        """Serve the object to a presigned GET, or S3's error document."""
        return await PresignedGet(endpoint=self, request=request, key=key).respond()


class PresignedGet:
    """One presigned GET, answered in S3's order: signature, ticket, object, range, then the one-time claim.

    Object and range are checked before the URL is claimed (a 404 or 416 must not use it up), but after a
    look at the ticket: a used or expired URL is refused first, as S3 refuses expired ones.
    """

    def __init__(self, *, endpoint: ObjectEndpoint, request: Request, key: str) -> None:
        self.endpoint = endpoint
        self.request = request
        self.key = key
        self.request_id = secrets.token_hex(8).upper()
        self.now = utcnow()

    async def respond(self) -> Response:
        """The object's bytes (whole or the range asked for), or the error of the first check that fails."""
        try:
            verified = self.verify_signature()
            await self.check_ticket(verified)
            info = self.object_info()
            byte_range = self.byte_range(info)
            grant = await self.claim(verified)
        except S3Error as error:
            return s3_error_response(error, self.request_id)
        except GATE_FAILURES as failure:
            return s3_error_response(s3_error_for(failure), self.request_id)
        return self.stream(info, byte_range, grant)

    def verify_signature(self) -> VerifiedGet:
        """The URL's signature and expiry, checked as S3 checks them."""
        settings = self.endpoint.settings
        return verify_presigned_get(
            method=self.request.method,
            host=self.request.headers.get("host", ""),
            path=self.request.url.path,
            query=self.request.query_params.multi_items(),
            headers={name.lower(): value for name, value in self.request.headers.items()},
            lookup_secret=settings.storage_secret_for,
            region=settings.storage_region,
            now=self.now,
        )

    async def check_ticket(self, verified: VerifiedGet) -> None:
        """Whether the URL's ticket still allows this object, without using it up."""
        check = partial(
            self.endpoint.gate.check, session_token=verified.session_token, key=self.key, now=self.now
        )
        await to_thread.run_sync(check)

    def object_info(self) -> ObjectInfo:
        """The stored object's metadata."""
        info = self.endpoint.store.info(bucket=self.endpoint.bucket, key=self.key)
        if info is None:
            raise no_such_key(self.key)
        return info

    def byte_range(self, info: ObjectInfo) -> ByteRange | None:
        """The single range the Range header asks for, None for the whole object."""
        try:
            return parse_range(self.request.headers.get("range"), info.size)
        except UnsatisfiableRange:
            raise invalid_range(size=info.size, requested=self.request.headers.get("range", "")) from None

    async def claim(self, verified: VerifiedGet) -> ObjectGrant:
        """Use the URL up: from here on, only this request may read the object through it."""
        claim = partial(
            self.endpoint.gate.claim, session_token=verified.session_token, key=self.key, now=self.now
        )
        return await to_thread.run_sync(claim)

    def headers(self, info: ObjectInfo) -> dict[str, str]:
        """S3's response headers, with the response-* overrides the URL carries."""
        headers = {
            "x-amz-request-id": self.request_id,
            "accept-ranges": "bytes",
            "etag": f'"{info.etag}"',
            "last-modified": format_datetime(info.last_modified, usegmt=True),
            "content-type": info.content_type,
        }
        for parameter, header in RESPONSE_OVERRIDES.items():
            if parameter in self.request.query_params:
                headers[header] = self.request.query_params[parameter]
        return headers

    def stream(self, info: ObjectInfo, byte_range: ByteRange | None, grant: ObjectGrant) -> Response:
        """Stream the bytes and tell the grant how the transfer ended; only a whole object is complete."""
        headers = self.headers(info)
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
            path=self.endpoint.store.path_of(bucket=self.endpoint.bucket, key=grant.key),
            byte_range=byte_range,
            status_code=status,
            headers=headers,
            on_finish=on_finish,
        )


def store_router(*, settings: Settings, store: LocalObjectStore, gates: dict[str, ObjectGate]) -> APIRouter:
    """Routes GET /<bucket>/<key> for every gated bucket of the embedded store."""
    router = APIRouter(include_in_schema=False)
    for bucket, gate in gates.items():
        endpoint = ObjectEndpoint(settings=settings, store=store, bucket=bucket, gate=gate)
        router.add_api_route(f"/{bucket}/{{key:path}}", endpoint.get_object, methods=["GET"])
    return router
