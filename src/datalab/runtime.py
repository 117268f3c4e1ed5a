"""The process-wide parts every entry point builds on: settings, engine, session factories, store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import make_engine, make_session_factory, upgrade_database
from datalab.pipeline.pgqueue import install_schema
from datalab.pipeline.service import QUEUE_INFO_KEY
from datalab.settings import Settings
from datalab.storage.base import ObjectStore
from datalab.storage.local import LocalObjectStore
from datalab.storage.sigv4 import Credentials
from datalab.webhooks.sealing import SecretBox, seal_plaintext_secrets

# Connections beyond the request slots: pipeline threads have their own, plus the upload sweeper,
# the store's short transactions and delivery records written after a download.
POOL_HEADROOM = 4


@dataclass(frozen=True)
class Runtime:
    """What one server, worker or command process shares between its requests or jobs."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    # Sessions that only read: on SQLite they never take (or wait for) the write lock.
    read_session_factory: sessionmaker[Session]
    store: ObjectStore

    def dispose(self) -> None:
        """Close the database connections."""
        self.engine.dispose()


def build_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    """Open the database (migrated first unless told not to) and the object store the settings choose.

    The pool holds a connection for every request slot, every pipeline worker and some headroom, so
    requests the limiter admitted never wait for one.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    pool_size = settings.max_concurrent_requests + settings.pipeline_workers + POOL_HEADROOM
    engine = make_engine(
        settings.resolved_database_url, pool_size=pool_size, max_overflow=10, pool_timeout=10
    )
    if migrate:
        upgrade_database(engine)
        if settings.pipeline_queue == "procrastinate":
            install_schema(engine)
    info = {QUEUE_INFO_KEY: settings.pipeline_queue}
    session_factory = make_session_factory(engine, info=info)
    if migrate:
        # Secrets stored before they were encrypted: the migrations run without the key.
        seal_plaintext_secrets(session_factory=session_factory, box=SecretBox(settings.encryption_key))
    return Runtime(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        read_session_factory=make_session_factory(engine, info=info, read_only=True),
        store=make_store(settings),
    )


def make_store(settings: Settings) -> ObjectStore:
    """The object store the settings choose."""
    if settings.storage_backend == "s3":
        # boto3 is loaded by the servers storing on S3 only: it adds a tenth of a second to every start.
        from datalab.storage.s3 import S3ObjectStore, make_s3_client  # noqa: PLC0415

        client = make_s3_client(region=settings.storage_region, endpoint_url=settings.s3_endpoint_url or None)
        return S3ObjectStore(client=client, spool_dir=settings.temp_dir)
    return LocalObjectStore(
        root=settings.home / "objects",
        credentials=Credentials(
            access_key_id=settings.storage_access_key_id,
            secret_access_key=settings.storage_secret_access_key,
        ),
        region=settings.storage_region,
    )
