"""create_app(settings): wires settings, database, object store and routers into one ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from datalab import __version__
from datalab.accounts.routes import router as accounts_router
from datalab.db import make_engine, make_session_factory, upgrade_database
from datalab.errors import install_error_handlers
from datalab.exports.routes import router as exports_router
from datalab.exports.routes import tickets_router
from datalab.exports.service import ExportDownloads
from datalab.pipeline.runner import EmbeddedRunner
from datalab.pipeline.service import QUEUE_INFO_KEY, ensure_procrastinate_schema
from datalab.pipeline.stages import STAGE_FUNCTIONS, make_stage_context
from datalab.settings import Settings
from datalab.storage.base import ObjectStore
from datalab.storage.local import LocalObjectStore
from datalab.storage.post_endpoint import post_router
from datalab.storage.routes import store_router
from datalab.storage.s3 import S3ObjectStore, make_s3_client
from datalab.storage.sigv4 import Credentials
from datalab.uploads.routes import router as uploads_router
from datalab.uploads.service import UploadReceiver
from datalab.uploads.tasks import UploadSweeper
from datalab.web.routes import STATIC_DIR as WEB_STATIC
from datalab.web.routes import router as web_router

API_DESCRIPTION = """An open, self-hostable implementation of the Data Lab file-exchange API.

Log in with `POST /v1/login` (userName, password, acceptedTerms, header `x-api-key`), then send
`Authorization: Bearer <sessionToken>` and `Organization: <uid>` on every other call.
Errors are JSON: `{"code": ..., "message": ..., "detail": ...}`.
"""


def create_app(settings: Settings, *, migrate: bool = True) -> FastAPI:
    """Build the application for the given settings (migrating the database first unless told not to)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    if migrate:
        upgrade_database(engine)
        if settings.pipeline_queue == "procrastinate":
            ensure_procrastinate_schema(engine)
    session_factory = make_session_factory(engine, info={QUEUE_INFO_KEY: settings.pipeline_queue})
    store = make_store(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = UploadSweeper(
            session_factory=session_factory,
            store=store,
            bucket=settings.uploads_bucket,
            max_size=settings.max_upload_bytes,
            interval_seconds=settings.upload_sweep_interval_seconds,
            canceled_retention=timedelta(hours=settings.canceled_retention_hours),
        )
        sweeper.start()
        runner = None
        if settings.pipeline_workers and settings.pipeline_queue == "embedded":
            runner = EmbeddedRunner(
                context=make_stage_context(settings=settings, session_factory=session_factory, store=store),
                stages=STAGE_FUNCTIONS,
                workers=settings.pipeline_workers,
                poll_seconds=settings.pipeline_poll_seconds,
                lease_seconds=settings.pipeline_lease_seconds,
                max_attempts=settings.pipeline_max_attempts,
            )
            runner.start()
        try:
            yield
        finally:
            if runner is not None:
                runner.stop()
            sweeper.stop()
            engine.dispose()

    app = FastAPI(
        lifespan=lifespan,
        title="Data Lab Service API",
        version=__version__,
        description=API_DESCRIPTION,
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.store = store
    install_error_handlers(app)

    api = APIRouter(prefix="/v1")
    api.include_router(accounts_router)
    api.include_router(exports_router)
    api.include_router(uploads_router)
    app.include_router(api)
    # Data Center before the store's catch-all /{bucket}/{key} routes.
    app.mount("/datacenter/static", StaticFiles(directory=str(WEB_STATIC)), name="datacenter-static")
    app.include_router(web_router)
    if not store.one_time_urls:
        app.include_router(tickets_router)

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
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if isinstance(store, LocalObjectStore):
        downloads = ExportDownloads(
            session_factory=session_factory, store=store, bucket=settings.exports_bucket
        )
        app.include_router(
            store_router(settings=settings, store=store, gates={settings.exports_bucket: downloads})
        )
        receiver = UploadReceiver(
            session_factory=session_factory, store=store, bucket=settings.uploads_bucket
        )
        app.include_router(
            post_router(settings=settings, store=store, gates={settings.uploads_bucket: receiver})
        )
    return app


def make_store(settings: Settings) -> ObjectStore:
    """The object store the settings choose."""
    if settings.storage_backend == "s3":
        client = make_s3_client(region=settings.storage_region, endpoint_url=settings.s3_endpoint_url or None)
        return S3ObjectStore(client=client, spool_dir=settings.home / "tmp")
    return LocalObjectStore(
        root=settings.home / "objects",
        credentials=Credentials(
            access_key_id=settings.storage_access_key_id,
            secret_access_key=settings.storage_secret_access_key,
        ),
        region=settings.storage_region,
    )
