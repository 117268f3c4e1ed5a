"""`/metrics` (Prometheus) and `/readyz` (database and object store), for the people who run the server.

Who may read `/metrics`: with `DATALAB_METRICS_TOKEN` set, a client sending it as a bearer token
(compared in constant time), from anywhere; without it, loopback clients only. Neither route waits in
the request gate's queue (see `datalab.limits`), so a busy server still answers its monitoring.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated, Literal

from anyio import to_thread
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import Response

from datalab.errors import ErrorOut, envelope, error_responses, forbidden, unauthorized
from datalab.operations.metrics import exposition
from datalab.operations.pipeline_queue import PipelineQueueCollector
from datalab.operations.readiness import Readiness
from datalab.settings import Settings

METRICS_CONTENT = {"text/plain": {"schema": {"type": "string"}}}


class ReadyOut(BaseModel):
    """Every check passed."""

    status: Literal["ready"] = "ready"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_metrics_access(*, settings: Settings, authorization: str | None, client_host: str) -> None:
    """Raise 401 (token configured, not sent or wrong) or 403 (no token, client not on loopback)."""
    token = settings.metrics_token
    if token:
        scheme, _, supplied = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(supplied.strip().encode(), token.encode()):
            raise unauthorized(
                "/metrics needs the bearer token set in DATALAB_METRICS_TOKEN", code="invalid_metrics_token"
            )
        return
    if not _is_loopback(client_host):
        raise forbidden(
            "/metrics answers loopback clients only unless DATALAB_METRICS_TOKEN is set",
            code="metrics_forbidden",
        )


def operations_router(
    *, settings: Settings, read_session_factory: sessionmaker[Session], readiness: Readiness
) -> APIRouter:
    """The router of `/metrics` and `/readyz`."""
    router = APIRouter(tags=["Operations"])
    queue = PipelineQueueCollector(
        read_session_factory,
        settings.resolved_database_url if settings.pipeline_queue == "procrastinate" else None,
    )
    _add_metrics(router, settings=settings, queue=queue)
    _add_readyz(router, readiness=readiness)
    return router


def _add_metrics(router: APIRouter, *, settings: Settings, queue: PipelineQueueCollector) -> None:
    @router.get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics of every server process",
        response_class=Response,
        responses={
            200: {"description": "The metrics in Prometheus' text format", "content": METRICS_CONTENT},
            **error_responses(
                401,
                403,
                s401="DATALAB_METRICS_TOKEN is set and the request did not send it as a bearer token",
                s403="DATALAB_METRICS_TOKEN is not set and the client is not on loopback",
            ),
        },
    )
    async def metrics(
        request: Request,
        authorization: Annotated[
            str | None, Header(description="`Bearer <DATALAB_METRICS_TOKEN>` when that setting is set")
        ] = None,
        accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Response:
        """Request latency, bytes, logins, pipeline stages and queue depth (see README, "Metrics")."""
        check_metrics_access(
            settings=settings,
            authorization=authorization,
            client_host=request.client.host if request.client else "",
        )
        body, content_type = await to_thread.run_sync(exposition, accept, [queue])
        return Response(body, media_type=content_type)


def _add_readyz(router: APIRouter, *, readiness: Readiness) -> None:
    @router.get(
        "/readyz",
        operation_id="readyz",
        summary="Readiness: the database and the object store answer",
        response_model=ReadyOut,
        responses={
            503: {
                "model": ErrorOut,
                "description": "not_ready: a check failed; detail lists each check (database, store) "
                "with its status",
            }
        },
    )
    async def readyz() -> ReadyOut | JSONResponse:
        """200 when a trivial query and a call on the uploads bucket both succeed, else 503."""
        results = await readiness.run()
        failed = [result for result in results if result.error is not None]
        if not failed:
            return ReadyOut()
        message = "Not ready: " + "; ".join(f"{result.name} check {result.error}" for result in failed)
        return envelope(503, "not_ready", message, [result.as_detail() for result in results])
