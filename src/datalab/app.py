"""create_app(settings): wires settings, database, object store and routers into one ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from datalab import __version__
from datalab.accounts.routes import router as accounts_router
from datalab.admin.routes import router as admin_router
from datalab.audit.routes import AuditOriginMiddleware
from datalab.audit.routes import pages as audit_pages
from datalab.audit.routes import router as audit_router
from datalab.digests.routes import router as digests_router
from datalab.errors import install_error_handlers
from datalab.exports.forms import ExportReceiver
from datalab.exports.routes import router as exports_router
from datalab.exports.routes import tickets_router
from datalab.exports.service import ExportDownloads
from datalab.limits import Admission, RequestGate, RequestLimiter
from datalab.operations.metrics import process_exited
from datalab.operations.readiness import Readiness
from datalab.operations.requests import RequestObserver
from datalab.operations.routes import operations_router
from datalab.pipeline.runner import EmbeddedRunner
from datalab.runtime import Runtime, build_runtime
from datalab.settings import Settings
from datalab.storage.local import LocalObjectStore
from datalab.storage.post_endpoint import PostGate, post_router
from datalab.storage.routes import store_router
from datalab.sweeper import Sweeper
from datalab.uploads.routes import router as uploads_router
from datalab.uploads.service import UploadReceiver
from datalab.web.pages import STATIC_DIR as WEB_STATIC
from datalab.web.pages import router as web_router
from datalab.webhooks.routes import pages as webhooks_pages
from datalab.webhooks.routes import router as webhooks_router
from datalab.webhooks.tasks import WebhookSender, sending_for

__all__ = ["create_app"]

# The lifespan state key of the app's Admission (see datalab.limits).
ADMISSION_STATE = "datalab.admission"

API_DESCRIPTION = """An open, self-hostable implementation of the Data Lab file-exchange API.

Log in with `POST /v1/login` (userName, password, acceptedTerms, header `x-api-key`), then send
`Authorization: Bearer <sessionToken>` and `Organization: <uid>` on every other call.
Errors are JSON: `{"code": ..., "message": ..., "detail": ...}`. Every response carries `X-Request-ID`
(the request's own when it sent one of 1 to 64 letters, digits, `.`, `_`, `:` or `-`); quote it when
reporting a problem. Operators: `/metrics` (Prometheus) and `/readyz` (database and object store).
"""


def start_webhook_sender(settings: Settings, session_factory: sessionmaker[Session]) -> WebhookSender | None:
    """The webhook sender thread, started next to the embedded pipeline workers (None where they do not
    run: procrastinate workers send, or another process does)."""
    if not settings.pipeline_workers or settings.pipeline_queue != "embedded":
        return None
    sender = WebhookSender(
        session_factory=session_factory,
        sending=sending_for(settings),
        timeout_seconds=settings.webhook_timeout_seconds,
        retry_waits=settings.webhook_retry_seconds,
        poll_seconds=settings.webhook_poll_seconds,
    )
    sender.start()
    return sender


def _stage_runner(runtime: Runtime) -> Callable[[], EmbeddedRunner] | None:
    """What makes the embedded pipeline runner, when this server runs the pipeline's stages.

    The stages are imported here, while the app is built (before `datalab.serving` freezes the heap),
    and only by the servers running them: their packages (polars, pyarrow, splink, duckdb) take longer
    to import than the rest of the server.
    """
    settings = runtime.settings
    if not settings.pipeline_workers or settings.pipeline_queue != "embedded":
        return None
    from datalab.pipeline.stages import STAGE_FUNCTIONS, make_stage_context  # noqa: PLC0415

    def new_runner() -> EmbeddedRunner:
        return EmbeddedRunner(
            context=make_stage_context(
                settings=settings, session_factory=runtime.session_factory, store=runtime.store
            ),
            stages=STAGE_FUNCTIONS,
            workers=settings.pipeline_workers,
            poll_seconds=settings.pipeline_poll_seconds,
            lease_seconds=settings.pipeline_lease_seconds,
            max_attempts=settings.pipeline_max_attempts,
        )

    return new_runner


def _lifespan(
    runtime: Runtime, readiness: Readiness, admission: Admission
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any]]]:
    """What runs beside the requests: the sweeper, the embedded pipeline runner, the webhook sender."""
    settings, session_factory = runtime.settings, runtime.session_factory
    new_runner = _stage_runner(runtime)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        sweeper = Sweeper(session_factory=session_factory, store=runtime.store, settings=settings)
        # Threads for sync routes: every admitted request can have one, with room for streaming bodies.
        to_thread.current_default_thread_limiter().total_tokens = max(
            40, 2 * settings.max_concurrent_requests
        )
        sweeper.start()
        runner = None if new_runner is None else new_runner()
        if runner is not None:
            runner.start()
        sender = start_webhook_sender(settings, session_factory)
        try:
            # Lifespan state: the HTTP server (datalab.serving) refuses overloaded requests with it.
            yield {ADMISSION_STATE: admission}
        finally:
            if sender is not None:
                sender.stop()
            if runner is not None:
                runner.stop()
            sweeper.stop()
            readiness.close()
            runtime.dispose()
            process_exited()

    return lifespan


def _readiness(runtime: Runtime) -> Readiness:
    def database_answers() -> None:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    bucket = runtime.settings.uploads_bucket
    return Readiness(
        {"database": database_answers, "store": lambda: runtime.store.check_bucket(bucket=bucket)},
        timeout=runtime.settings.readiness_timeout_seconds,
    )


def _include_api_and_pages(app: FastAPI, runtime: Runtime) -> None:
    api = APIRouter(prefix="/v1")
    for router in (
        accounts_router,
        exports_router,
        uploads_router,
        audit_router,
        webhooks_router,
        digests_router,
        admin_router,
    ):
        api.include_router(router)
    app.include_router(api)
    # Data Center before the store's catch-all /{bucket}/{key} routes.
    app.mount("/datacenter/static", StaticFiles(directory=str(WEB_STATIC)), name="datacenter-static")
    app.include_router(web_router)
    app.include_router(audit_pages)
    app.include_router(webhooks_pages)
    if not runtime.store.one_time_urls:
        app.include_router(tickets_router)


def _include_docs(app: FastAPI) -> None:
    # Swagger UI's assets are served from the installed package: the docs work offline.
    app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="swagger-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/v1/openapi.json",
            title="Data Lab Service API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}


def _include_embedded_store(app: FastAPI, runtime: Runtime) -> None:
    """The embedded store's S3 endpoints: presigned GETs of exports, presigned POSTs of both buckets."""
    settings, session_factory, store = runtime.settings, runtime.session_factory, runtime.store
    if not isinstance(store, LocalObjectStore):
        return
    downloads = ExportDownloads(session_factory=session_factory, store=store, bucket=settings.exports_bucket)
    app.include_router(
        store_router(settings=settings, store=store, gates={settings.exports_bucket: downloads})
    )
    receiver = UploadReceiver(session_factory=session_factory, store=store, bucket=settings.uploads_bucket)
    publisher = ExportReceiver(session_factory=session_factory, store=store, bucket=settings.exports_bucket)
    gates: dict[str, PostGate] = {settings.uploads_bucket: receiver, settings.exports_bucket: publisher}
    app.include_router(post_router(settings=settings, store=store, gates=gates))


def create_app(settings: Settings, *, migrate: bool = True) -> FastAPI:
    """Build the application for the given settings (migrating the database first unless told not to)."""
    runtime = build_runtime(settings, migrate=migrate)
    limiter = RequestLimiter(
        slots=settings.max_concurrent_requests,
        max_wait=settings.request_queue_seconds,
        max_queue=settings.request_queue_max,
    )
    readiness = _readiness(runtime)
    store_prefixes = (f"/{settings.exports_bucket}", f"/{settings.uploads_bucket}", "/download/")
    admission = Admission(limiter=limiter, store_prefixes=store_prefixes)
    app = FastAPI(
        lifespan=_lifespan(runtime, readiness, admission),
        title="Data Lab Service API",
        version=__version__,
        description=API_DESCRIPTION,
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = runtime.engine
    app.state.runtime = runtime
    app.state.session_factory = runtime.session_factory
    app.state.read_session_factory = runtime.read_session_factory
    app.state.store = runtime.store
    app.state.limiter = limiter
    install_error_handlers(app)
    app.add_middleware(
        RequestGate,
        limiter=limiter,
        read_timeout=settings.request_read_timeout_seconds,
        store_prefixes=store_prefixes,
        file_body_limit=settings.admin_file_max_bytes,
    )
    app.add_middleware(AuditOriginMiddleware)
    # Outermost: the gate's own refusals get a request id and are counted.
    app.add_middleware(RequestObserver)
    _include_api_and_pages(app, runtime)
    _include_docs(app)
    app.include_router(
        operations_router(
            settings=settings, read_session_factory=runtime.read_session_factory, readiness=readiness
        )
    )
    _include_embedded_store(app, runtime)
    return app
