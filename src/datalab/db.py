"""Database engine, sessions, the declarative base and migrations."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, TypeVarTuple

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    MetaData,
    Row,
    Select,
    TypeDecorator,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

Columns = TypeVarTuple("Columns")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Execution option marking a read-only engine view (see make_session_factory).
READ_ONLY_OPTION = "datalab_read_only"
# Pages of new SQLite databases, in bytes (SQLite's default is 4096). Moving a file's million rows into
# the production tables writes and indexes a quarter as many pages, in about 30% less time; reading one
# row copies 16 KiB instead of 4 KiB from the operating system's cache.
SQLITE_PAGE_SIZE = 16384
# A pooled SQLite connection's `info` key: the schemas attach_sqlite attached to it.
_ATTACHED_KEY = "datalab_attached"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class OrgOwned:
    """Mixin of every organization-owned table; query such rows only through datalab.scoping.scoped."""

    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))


class MaybeOrgOwned:
    """Mixin of tables whose rows belong to one organization or to none (system-wide records); query
    them only through datalab.scoping as well. Rows outlive nothing: organizations are never deleted."""

    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), nullable=True)


def system_time() -> datetime:
    """The system clock's time, UTC, timezone-aware."""
    return datetime.now(UTC)


# Where `utcnow` reads the time; tests of expiry move it forward instead of sleeping.
clock: Callable[[], datetime] = system_time


def utcnow() -> datetime:
    """The current time, UTC, timezone-aware."""
    return clock()


def new_uid() -> str:
    """A new public identifier (UUID4 text), the shape upstream uses for every uid."""
    return str(uuid.uuid4())


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself, so it can be IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Only a new database takes it (before its first table): see SQLITE_PAGE_SIZE.
        cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: sqlite3.Connection | None, record: Any) -> None:
        # A database attached for one unit of work (see attach_sqlite) is not left on a pooled connection.
        for schema in record.info.pop(_ATTACHED_KEY, ()):
            if dbapi_connection is not None:
                dbapi_connection.execute(f"DETACH DATABASE {schema}")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that reads and then writes fails at once (SQLITE_BUSY) when another
        # writer committed in between; taking the write lock up front makes writers wait their turn.
        # Read-only sessions (READ_ONLY_OPTION) begin deferred: in WAL mode they never wait for a writer
        # and never make one wait.
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def attach_sqlite(connection: Connection, path: Path, schema: str) -> None:
    """Attach a SQLite database file to the connection as `schema` until it goes back to the pool."""
    connection.exec_driver_sql(f"ATTACH DATABASE ? AS {schema}", (str(path),))
    connection.info.setdefault(_ATTACHED_KEY, []).append(schema)


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20, pool_timeout: float = 30) -> Engine:
    """Create the engine for a database URL, with the per-backend settings this project relies on.

    `pool_size` connections are kept open; up to `max_overflow` more are opened under load, and a
    checkout waits at most `pool_timeout` seconds for one (the request limiter keeps requests from
    ever getting there).
    """
    pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout}
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        in_memory = not path or path == ":memory:"
        if not in_memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            **({} if in_memory else pool),
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def make_session_factory(
    engine: Engine, *, info: dict[str, Any] | None = None, read_only: bool = False
) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit; `info` is copied into every session.

    A read-only factory's transactions never take SQLite's write lock (they begin deferred); a session
    from it that writes anyway fails rather than waits, so use it only where nothing is written.
    """
    if not read_only:
        return sessionmaker(bind=engine, expire_on_commit=False, info=info or {})
    bind = engine.execution_options(**{READ_ONLY_OPTION: True})
    return sessionmaker(bind=bind, expire_on_commit=False, info={**(info or {}), READ_ONLY_OPTION: True})


def is_read_only(session: Session) -> bool:
    """Whether the session came from a read-only factory (and must not write)."""
    return bool(session.info.get(READ_ONLY_OPTION))


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def first_unclaimed(db: Session, candidates: Select[*Columns]) -> Row[*Columns] | None:
    """The first row of a queue's candidates that no other worker is claiming right now, or None.

    On PostgreSQL the row is locked and rows locked by other transactions are skipped, so concurrent
    claimers each get a different one; SQLite's single writer needs no lock. The caller still claims it
    with a conditional UPDATE (its due condition again), which a lost race leaves without a row.
    """
    if db.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    return db.execute(candidates).first()


class TransactionLock(IntEnum):
    """What a transaction may need to do alone (see hold_lock); the values are PostgreSQL advisory lock
    classes, never reused."""

    # An organization's enrollment terms: a file replaces the rows that earlier files hold of its terms.
    ENROLLMENT_TERMS = 1


def hold_lock(db: Session, lock: TransactionLock, key: int) -> None:
    """Wait until no other transaction holds the lock on `key`, then hold it until this one ends.

    On PostgreSQL an advisory transaction lock (a lock class and a key; no row is locked, so nothing
    else waits for it). SQLite's write transactions run one at a time already (BEGIN IMMEDIATE).
    """
    if db.get_bind().dialect.name == "postgresql":
        db.execute(select(func.pg_advisory_xact_lock(int(lock), key)))


def upgrade_database(engine: Engine) -> None:
    """Apply every pending migration to the database behind the engine."""
    # Loaded when migrating only: the server processes started on a migrated database never need it.
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
