"""Where an upload's accepted rows wait between `ingesting` and `processing`, on each database.

The stages use one interface, `Staging`, whose implementation `staging_for` chooses from the session's
database: `TableStaging` on PostgreSQL, `FileStaging` on SQLite.

PostgreSQL keeps them in the unlogged `staged_rows` table: loaded by binary COPY from Arrow (the ADBC
PostgreSQL driver) in a transaction of its own, read by processing's `INSERT … SELECT`, and cleared in the
transaction that processes them.

SQLite keeps each upload's staged rows in a database file of its own beside the main one
(`<database file>-staging/<upload id>.sqlite`), attached as `staging` to the transaction that processes
them. A table in the main database would cost three things this avoids: in WAL mode SQLite writes every
page twice (to the log, then into the database); clearing a million rows visits every one of their pages;
and the load would hold the main database's one write lock, or commit in short batches to let requests in.
The file is written without a journal under a `.part` name and renamed into place once complete, so a
load that stops half-way leaves nothing a later stage could take for staged rows; deleting the file
clears it.

Each place also holds the distinct entry terms (year and term) of the upload's rows, gathered while they
load: processing finds the earlier rows a file replaces from these few rows, not from a pass over every
staged row.

The cleansed rows file in the object store is kept until processing has committed: it is the durable
hand-off. Neither staging place is (a file written without syncs; a table whose rows the database's
crash recovery empties), and rows found missing are loaded from it again.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, cast

import polars as pl
import pyarrow as pa
from sqlalchemy import MetaData, Table, delete, exists, func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import SQLITE_PAGE_SIZE, attach_sqlite
from datalab.lifecycle import UploadStatus
from datalab.pipeline.artifacts import STAGED_SCHEMA
from datalab.pipeline.models import StagedRow, StagedTerm
from datalab.uploads.models import Upload

# The schema name of the upload's staging file while it is attached (SQLite).
ATTACHED_SCHEMA = "staging"
# The staged rows and terms as processing reads them from an attached staging file.
_ATTACHED = MetaData()
_ATTACHED_ROWS = cast(Table, StagedRow.__table__).to_metadata(_ATTACHED, schema=ATTACHED_SCHEMA)
_ATTACHED_TERMS = cast(Table, StagedTerm.__table__).to_metadata(_ATTACHED, schema=ATTACHED_SCHEMA)
# The file's tables have the columns of StagedRow and StagedTerm, so that processing reads either place
# the same way; the row number is the rowid (rows go in in file order and are read back in it).
_FILE_TABLES = (
    f"CREATE TABLE {StagedRow.__tablename__} (upload_id INTEGER NOT NULL, row_number INTEGER PRIMARY KEY, "
    "unique_id TEXT NOT NULL, entry_year TEXT NOT NULL, entry_term TEXT NOT NULL, record TEXT NOT NULL)",
    f"CREATE TABLE {StagedTerm.__tablename__} (upload_id INTEGER NOT NULL, entry_year TEXT NOT NULL, "
    "entry_term TEXT NOT NULL)",
)
# Marks a staging file of this layout in its header (SQLite's application_id): files of an earlier one
# are loaded again.
_FILE_LAYOUT = 2
_FILE_SUFFIX = ".sqlite"
_PART_SUFFIX = ".part"
# The statuses of uploads whose staged rows a stage may still read.
_STAGING_STATUSES = (UploadStatus.INGESTING, UploadStatus.PROCESSING)
# The staged rows as PostgreSQL's staging table takes them through binary COPY, which wants each column's
# own type (its integers are 32-bit); strings go as the string views the cleansed rows file holds.
_TABLE_ROWS = pa.schema(
    [
        ("upload_id", pa.int32()),
        ("row_number", pa.int32()),
        *((name, pa.string_view()) for name in STAGED_SCHEMA.names[1:]),
    ]
)
# The columns of a cleansed rows file's batch, as the staging table takes them.
_TABLE_COLUMNS_OF_A_BATCH = list(_TABLE_ROWS)[1:]


@dataclass(frozen=True)
class StagedTables:
    """The tables of an upload's staged rows and of their entry terms, for statements in a transaction."""

    rows: Table
    terms: Table


def _with_terms(batches: Iterable[pa.RecordBatch], into: set[tuple[str, str]]) -> Iterator[pa.RecordBatch]:
    """The batches, each one's distinct (entry year, entry term) added to `into` as it goes by."""
    for batch in batches:
        # polars rather than Arrow's group_by, whose engine takes a third of a second to start in a process
        into.update(pl.DataFrame(batch.select(["entry_year", "entry_term"])).unique().iter_rows())
        yield batch


class Staging(ABC):
    """The staged rows of the session's database, as the stages use them."""

    def __init__(self, db: Session) -> None:
        self._db = db

    # The module of the ADBC driver `load` writes with (see preload_bulk_driver).
    bulk_driver: ClassVar[str]

    @abstractmethod
    def load(self, upload_id: int, batches: Iterable[pa.RecordBatch]) -> int:
        """Stage the upload's rows from record batches of staging rows (STAGED_SCHEMA) in place of any
        staged before, outside the session's transaction (whole, or not at all); the rows staged."""

    @abstractmethod
    def count(self, upload_id: int) -> int:
        """How many rows of the upload are staged."""

    @abstractmethod
    def complete(self, upload_id: int, expected: int) -> bool:
        """Whether the upload's staged rows are there, as many as ingest counted."""

    @abstractmethod
    def tables(self, upload_id: int) -> AbstractContextManager[StagedTables]:
        """The tables the upload's staged rows and terms are in, for statements in the session's
        transaction."""

    @abstractmethod
    def clear_processed(self, upload_id: int) -> None:
        """Clear the staged rows of an upload processed in the session's transaction, which then ends."""

    @abstractmethod
    def discard(self, upload_id: int) -> None:
        """Delete the upload's staged rows."""

    @abstractmethod
    def discard_leftovers(self) -> None:
        """Delete staged rows of uploads that no stage will read again, before an ingest."""


def staging_for(db: Session) -> Staging:
    """The staging of the session's database: files of their own on SQLite, the staging table otherwise."""
    if db.get_bind().dialect.name == "sqlite":
        return FileStaging(db)
    return TableStaging(db)


def _libpq_url(db: Session) -> str:
    """The session's PostgreSQL database as a libpq connection URL."""
    url = db.get_bind().engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _table_rows(batches: Iterable[pa.RecordBatch], upload_id: int) -> Iterator[pa.RecordBatch]:
    """The batches as rows of PostgreSQL's staging table (_TABLE_ROWS), with the upload's id."""
    for batch in batches:
        owner = pa.repeat(pa.scalar(upload_id, pa.int32()), batch.num_rows)
        # the row number to 32 bits; the strings as they are, unless a file of large strings holds them
        columns = [
            column.cast(field.type)
            for column, field in zip(batch.columns, _TABLE_COLUMNS_OF_A_BATCH, strict=True)
        ]
        yield pa.RecordBatch.from_arrays([owner, *columns], schema=_TABLE_ROWS)


def _failures_kept(batches: Iterator[pa.RecordBatch], failures: list[Exception]) -> Iterator[pa.RecordBatch]:
    """The batches; an exception they raise is also added to `failures`."""
    try:
        yield from batches
    except Exception as failure:
        failures.append(failure)
        raise


class TableStaging(Staging):
    """PostgreSQL's unlogged staging table, loaded by binary COPY from Arrow (the ADBC PostgreSQL driver)."""

    bulk_driver = "adbc_driver_postgresql.dbapi"

    def load(self, upload_id: int, batches: Iterable[pa.RecordBatch]) -> int:
        """Load batches of staging rows into the staging table, with their terms, in a transaction of its own
        that first deletes the upload's earlier staged rows and terms; the count.

        The ADBC PostgreSQL driver writes the batches' columns in COPY's binary format in C, on a
        connection of its own: about half the time of COPY's text format written by polars, sent by
        psycopg and parsed by the server.
        """
        # Loaded by the processes that ingest on PostgreSQL only (see preload_bulk_driver).
        import adbc_driver_postgresql.dbapi as adbc_postgresql  # noqa: PLC0415

        terms: set[tuple[str, str]] = set()
        failures: list[Exception] = []
        rows = pa.RecordBatchReader.from_batches(
            _TABLE_ROWS, _failures_kept(_table_rows(_with_terms(batches, terms), upload_id), failures)
        )
        with (
            closing(adbc_postgresql.connect(_libpq_url(self._db))) as connection,
            closing(connection.cursor()) as cursor,
        ):
            for table in (StagedRow.__tablename__, StagedTerm.__tablename__):
                cursor.execute(f"DELETE FROM {table} WHERE upload_id = $1", parameters=(upload_id,))
            try:
                count = int(cursor.adbc_ingest(StagedRow.__tablename__, rows, mode="append"))
            except adbc_postgresql.Error:
                # the driver reports a failure of the batches' source as its own: the source's is raised
                if failures:
                    raise failures[0] from None
                raise
            if terms:
                cursor.adbc_ingest(
                    StagedTerm.__tablename__, _terms_table(upload_id, terms, pa.int32()), mode="append"
                )
            connection.commit()
        return count

    def count(self, upload_id: int) -> int:
        staged = self._db.scalar(
            select(func.count()).select_from(StagedRow).where(StagedRow.upload_id == upload_id)
        )
        return int(staged or 0)

    def complete(self, upload_id: int, expected: int) -> bool:
        """Whether the upload's staged rows are there: PostgreSQL empties an unlogged table in its crash
        recovery (and a standby never has its rows), whole: any row of the upload left means all of them
        are."""
        return expected == 0 or bool(
            self._db.scalar(select(exists().where(StagedRow.upload_id == upload_id)))
        )

    @contextmanager
    def tables(self, upload_id: int) -> Iterator[StagedTables]:
        yield StagedTables(cast(Table, StagedRow.__table__), cast(Table, StagedTerm.__table__))

    def clear_processed(self, upload_id: int) -> None:
        """Clear the processed upload's staged rows in the session's transaction.

        When the table can be locked at once against every other use (no load, no reader) and then holds
        only the upload's rows, it is truncated: deleting a million rows one by one writes each of them to
        the log again. The lock is held only until the transaction ends, moments later; when another
        transaction holds the table, it is not waited for and the rows are deleted by upload.
        """
        if self._taken() and self._only_upload_staged(upload_id):
            self._db.execute(text(f"TRUNCATE {StagedRow.__tablename__}"))
            self._discard_terms(upload_id)
            return
        self.discard(upload_id)

    def discard(self, upload_id: int) -> None:
        """Delete the upload's rows and terms from the staging tables in the session's transaction."""
        self._db.execute(delete(StagedRow).where(StagedRow.upload_id == upload_id))
        self._discard_terms(upload_id)

    def _discard_terms(self, upload_id: int) -> None:
        self._db.execute(delete(StagedTerm).where(StagedTerm.upload_id == upload_id))

    def discard_leftovers(self) -> None:
        """Delete the staged rows and terms of uploads that no stage will read again (a load that committed
        before its upload failed), found through their terms: every load of rows stages at least one."""
        waiting = select(Upload.id).where(Upload.status.in_(_STAGING_STATUSES))
        leftovers = self._db.scalars(
            select(StagedTerm.upload_id).distinct().where(StagedTerm.upload_id.not_in(waiting))
        ).all()
        if leftovers:
            self._db.execute(delete(StagedRow).where(StagedRow.upload_id.in_(leftovers)))
            self._db.execute(delete(StagedTerm).where(StagedTerm.upload_id.in_(leftovers)))

    def _only_upload_staged(self, upload_id: int) -> bool:
        """Whether the rows the transaction sees in staging, if any, are all the upload's."""
        # one pass that stops at the first row of another upload
        return not self._db.scalar(select(exists().where(StagedRow.upload_id != upload_id)))

    def _taken(self) -> bool:
        """Take the staging table for the rest of the transaction if no one else is using it now."""
        try:
            # A savepoint: a lock refused would otherwise end the transaction. The lock outlives it.
            with self._db.begin_nested():
                self._db.execute(
                    text(f"LOCK TABLE {StagedRow.__tablename__} IN ACCESS EXCLUSIVE MODE NOWAIT")
                )
        except OperationalError:
            return False
        return True


def _file_count(path: Path, *, counted: bool) -> int | None:
    """The rows of a staging file, counted or as its header says (None for a file of another layout); None
    when there is no such file or it cannot be read."""
    if not path.exists():
        return None
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as connection:
            if counted:
                return int(
                    connection.execute(f"SELECT count(*) FROM {StagedRow.__tablename__}").fetchone()[0]
                )
            (layout,) = connection.execute("PRAGMA application_id").fetchone()
            (rows,) = connection.execute("PRAGMA user_version").fetchone()
    except sqlite3.DatabaseError:
        return None
    return int(rows) if layout == _FILE_LAYOUT else None


def _terms_table(upload_id: int, terms: set[tuple[str, str]], id_type: pa.DataType) -> pa.Table:
    years, names = zip(*sorted(terms), strict=True)
    return pa.table(
        {
            "upload_id": pa.array([upload_id] * len(terms), id_type),
            "entry_year": pa.array(years, pa.string()),
            "entry_term": pa.array(names, pa.string()),
        }
    )


def _damaged_file(error: DBAPIError) -> bool:
    """Whether SQLite refused a database file as damaged or as not a database at all."""
    code = getattr(error.orig, "sqlite_errorcode", None)
    # extended result codes keep the primary code in their low byte
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class FileStaging(Staging):
    """SQLite's staging files, one per upload, written before the status moves."""

    bulk_driver = "adbc_driver_sqlite.dbapi"

    @property
    def directory(self) -> Path:
        """The directory of the staging files of the session's SQLite database."""
        database = self._db.get_bind().engine.url.database
        if not database or database == ":memory:":
            raise ValueError("staging files need a SQLite database in a file")
        main = Path(database).resolve()
        return main.with_name(f"{main.name}-staging")

    def file(self, upload_id: int) -> Path:
        """The upload's staging file, whether or not it exists yet."""
        return self.directory / f"{int(upload_id)}{_FILE_SUFFIX}"

    def partial_file(self, upload_id: int) -> Path:
        """Where the upload's staging file is written until it is complete."""
        final = self.file(upload_id)
        return final.with_name(final.name + _PART_SUFFIX)

    def load(self, upload_id: int, batches: Iterable[pa.RecordBatch]) -> int:
        """Write the upload's staging file from batches of staging rows; the rows written.

        Any earlier file of the upload, complete or not, is replaced once this one is complete. Each batch
        goes in as it was read, through the ADBC SQLite driver, which binds its values in C: twice as fast
        as turning the rows into Python tuples for sqlite3's executemany (and a round trip through polars
        would copy every string twice).
        """
        # Loaded by the processes that ingest on SQLite only (see preload_bulk_driver).
        import adbc_driver_sqlite.dbapi as adbc_sqlite  # noqa: PLC0415

        final = self.file(upload_id)
        part = self.partial_file(upload_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)
        count = 0
        with (
            closing(adbc_sqlite.connect(str(part), autocommit=True)) as connection,
            closing(connection.cursor()) as cursor,
        ):
            cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
            # Neither a journal nor syncs: the file is scratch until it is renamed complete (see the module's
            # docstring).
            cursor.execute("PRAGMA journal_mode=OFF")
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("BEGIN")
            for table in _FILE_TABLES:
                cursor.execute(table)
            terms: set[tuple[str, str]] = set()
            for batch in _with_terms(batches, terms):
                owner = pa.repeat(pa.scalar(upload_id, pa.int64()), batch.num_rows)
                cursor.adbc_ingest(
                    StagedRow.__tablename__, batch.add_column(0, "upload_id", owner), mode="append"
                )
                count += batch.num_rows
            if terms:
                cursor.adbc_ingest(
                    StagedTerm.__tablename__, _terms_table(upload_id, terms, pa.int64()), mode="append"
                )
            # the count in the file's header: a file to trust holds as many rows as its header says
            cursor.execute(f"PRAGMA user_version={count}")
            cursor.execute(f"PRAGMA application_id={_FILE_LAYOUT}")
            cursor.execute("COMMIT")
        os.replace(part, final)
        return count

    def count(self, upload_id: int) -> int:
        return _file_count(self.file(upload_id), counted=True) or 0

    def complete(self, upload_id: int, expected: int) -> bool:
        """Whether the upload's staging file holds as many rows as its header says and ingest counted: it
        is written without syncs, and the machine stopping can lose it."""
        return _file_count(self.file(upload_id), counted=False) == expected

    @contextmanager
    def tables(self, upload_id: int) -> Iterator[StagedTables]:
        """The upload's staging file, attached for the rest of the connection's use by this session; the
        connection detaches it when it goes back to the pool.

        A file the machine stopping tore can keep an intact header over lost pages: SQLite then finds it
        damaged, and it is deleted, so that the stage's next attempt loads the rows again.
        """
        path = self.file(upload_id)
        if not path.exists():
            raise FileNotFoundError(f"no staged rows for upload {upload_id}: {path} is missing")
        attach_sqlite(self._db.connection(), path, ATTACHED_SCHEMA)
        try:
            yield StagedTables(_ATTACHED_ROWS, _ATTACHED_TERMS)
        except DBAPIError as exc:
            if _damaged_file(exc):
                self.discard(upload_id)
            raise

    def clear_processed(self, upload_id: int) -> None:
        """Delete the staging file (the attached file stays readable until it is detached). Should the
        transaction then fail, the processing run again loads the rows from the cleansed rows file."""
        self.discard(upload_id)

    def discard(self, upload_id: int) -> None:
        """Delete the upload's staging file and any partial one."""
        self.file(upload_id).unlink(missing_ok=True)
        self.partial_file(upload_id).unlink(missing_ok=True)

    def leftovers(self, live: set[int]) -> list[Path]:
        """Staging files (complete or partial) of uploads not in `live`, the uploads ingest or processing
        may still use."""
        folder = self.directory
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            stem = path.name.removesuffix(_PART_SUFFIX).removesuffix(_FILE_SUFFIX)
            if stem.isdigit() and int(stem) not in live:
                found.append(path)
        return found

    def discard_leftovers(self) -> None:
        """Delete staging files of uploads that no stage will read again (a crash came between a processing
        commit and the file's deletion, or the upload was canceled)."""
        live = set(self._db.scalars(select(Upload.id).where(Upload.status.in_(_STAGING_STATUSES))))
        for path in self.leftovers(live):
            path.unlink(missing_ok=True)


def preload_bulk_driver(session_factory: sessionmaker[Session]) -> None:
    """Import the ADBC driver the database's staging loads with, on a thread of its own.

    The import takes about 0.4 s (it brings in pyarrow.dataset and pandas): a process that runs pipeline
    stages does it as it starts rather than in the first file's ingest. Other processes never import it.
    """
    with session_factory() as db:
        driver = staging_for(db).bulk_driver
    threading.Thread(target=importlib.import_module, args=(driver,), name="preload", daemon=True).start()
