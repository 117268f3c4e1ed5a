"""Where an upload's accepted rows wait between `ingesting` and `processing`, on each database.

PostgreSQL keeps them in the unlogged `staged_rows` table: loaded by COPY, read by processing's
`INSERT … SELECT`, and cleared in the transaction that processes them.

SQLite keeps each upload's staged rows in a database file of its own beside the main one
(`<database file>-staging/<upload id>.sqlite`), attached as `staging` to the transaction that processes
them. A table in the main database would cost three things this avoids: in WAL mode SQLite writes every
page twice (to the log, then into the database); clearing a million rows visits every one of their pages;
and the load would hold the main database's one write lock, or commit in short batches to let requests in.
The file is written without a journal under a `.part` name and renamed into place once complete, so a
load that stops half-way leaves nothing a later stage could take for staged rows; deleting the file
clears it.

The cleansed rows file in the object store is kept until processing has committed: it is the durable
hand-off. Neither staging place is (a file written without syncs; a table whose rows the database's
crash recovery empties), and rows found missing are loaded from it again.
"""

from __future__ import annotations

import io
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import cast

import polars as pl
from sqlalchemy import MetaData, Table, delete, exists, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from datalab.db import SQLITE_PAGE_SIZE, attach_sqlite
from datalab.pipeline.artifacts import STAGED_SCHEMA
from datalab.pipeline.models import StagedRow

# The schema name of the upload's staging file while it is attached (SQLite).
ATTACHED_SCHEMA = "staging"
# The staged rows as processing reads them from an attached staging file (the columns of StagedRow).
_ATTACHED_TABLE = cast(Table, StagedRow.__table__).to_metadata(MetaData(), schema=ATTACHED_SCHEMA)
# The file's one table has StagedRow's columns, so that processing reads either place the same way; the
# row number is the rowid (rows go in in file order and are read back in it).
_FILE_TABLE = (
    f"CREATE TABLE {StagedRow.__tablename__} (upload_id INTEGER NOT NULL, row_number INTEGER PRIMARY KEY, "
    "unique_id TEXT NOT NULL, entry_year TEXT NOT NULL, entry_term TEXT NOT NULL, record TEXT NOT NULL)"
)
_FILE_SUFFIX = ".sqlite"
_PART_SUFFIX = ".part"
# The columns COPY loads into PostgreSQL's staging table.
_COLUMNS = ("upload_id", *STAGED_SCHEMA.names)
# What COPY's text format gives a meaning to, and its escape (the backslash first: the others add one).
_TEXT_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_TEXT_SPECIAL = r"[\\\t\n\r]"


def uses_staging_files(db: Session) -> bool:
    """Whether the session's database stages rows in files of their own (SQLite)."""
    return db.get_bind().dialect.name == "sqlite"


def staging_dir(db: Session) -> Path:
    """The directory of the staging files of the session's SQLite database."""
    bind = db.get_bind()
    database = bind.engine.url.database
    if not database or database == ":memory:":
        raise ValueError("staging files need a SQLite database in a file")
    main = Path(database).resolve()
    return main.with_name(f"{main.name}-staging")


def staging_file(db: Session, upload_id: int) -> Path:
    """The upload's staging file (SQLite), whether or not it exists yet."""
    return staging_dir(db) / f"{int(upload_id)}{_FILE_SUFFIX}"


def partial_staging_file(db: Session, upload_id: int) -> Path:
    """Where the upload's staging file is written until it is complete (SQLite)."""
    final = staging_file(db, upload_id)
    return final.with_name(final.name + _PART_SUFFIX)


def write_staging_file(db: Session, upload_id: int, frames: Iterable[pl.DataFrame]) -> int:
    """Write the upload's staging file from frames of staging rows (STAGED_SCHEMA); the rows written.

    Any earlier file of the upload, complete or not, is replaced once this one is complete. Each frame goes
    in as Arrow through the ADBC SQLite driver, which binds its values in C: twice as fast as turning the
    rows into Python tuples for sqlite3's executemany.
    """
    # Loaded by the processes that ingest on SQLite only: it brings in pyarrow.dataset (about 0.3 s).
    import adbc_driver_sqlite.dbapi as adbc_sqlite  # noqa: PLC0415

    final = staging_file(db, upload_id)
    part = partial_staging_file(db, upload_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    part.unlink(missing_ok=True)
    count = 0
    with (
        closing(adbc_sqlite.connect(str(part), autocommit=True)) as connection,
        closing(connection.cursor()) as cursor,
    ):
        cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        # Neither a journal nor syncs: the file is scratch until it is renamed complete (see the docstring).
        cursor.execute("PRAGMA journal_mode=OFF")
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("BEGIN")
        cursor.execute(_FILE_TABLE)
        for frame in frames:
            rows = frame.select(pl.lit(upload_id, dtype=pl.Int64).alias("upload_id"), pl.all())
            cursor.adbc_ingest(StagedRow.__tablename__, rows.to_arrow(), mode="append")
            count += frame.height
        # the count in the file's header: a file to trust holds as many rows as its header says
        cursor.execute(f"PRAGMA user_version={count}")
        cursor.execute("COMMIT")
    os.replace(part, final)
    return count


def _file_count(path: Path, *, counted: bool) -> int | None:
    """The rows of a staging file, counted or as its header says; None when there is no such file or it
    cannot be read."""
    if not path.exists():
        return None
    query = f"SELECT count(*) FROM {StagedRow.__tablename__}" if counted else "PRAGMA user_version"
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as connection:
            return int(connection.execute(query).fetchone()[0])
    except sqlite3.DatabaseError:
        return None


def staged_count(db: Session, upload_id: int) -> int:
    """How many rows of the upload are staged."""
    if uses_staging_files(db):
        return _file_count(staging_file(db, upload_id), counted=True) or 0
    staged = db.scalar(select(func.count()).select_from(StagedRow).where(StagedRow.upload_id == upload_id))
    return int(staged or 0)


def staging_complete(db: Session, upload_id: int, expected: int) -> bool:
    """Whether the upload's staged rows are there, as many as ingest counted.

    A staging file is written without syncs: the machine stopping can lose it. PostgreSQL empties an
    unlogged table in its crash recovery (and a standby never has its rows), whole: any row of the upload
    left means all of them are.
    """
    if uses_staging_files(db):
        return _file_count(staging_file(db, upload_id), counted=False) == expected
    return expected == 0 or bool(db.scalar(select(exists().where(StagedRow.upload_id == upload_id))))


@contextmanager
def staged_rows(db: Session, upload_id: int) -> Iterator[Table]:
    """The table the upload's staged rows are in, for statements in the session's transaction.

    On SQLite the upload's staging file is attached for the rest of the connection's use by this session;
    the connection detaches it when it goes back to the pool.
    """
    if not uses_staging_files(db):
        yield cast(Table, StagedRow.__table__)
        return
    path = staging_file(db, upload_id)
    if not path.exists():
        raise FileNotFoundError(f"no staged rows for upload {upload_id}: {path} is missing")
    attach_sqlite(db.connection(), path, ATTACHED_SCHEMA)
    yield _ATTACHED_TABLE


def discard_staging(db: Session, upload_id: int) -> None:
    """Delete the upload's staging file and any partial one (SQLite)."""
    staging_file(db, upload_id).unlink(missing_ok=True)
    partial_staging_file(db, upload_id).unlink(missing_ok=True)


def leftover_staging(db: Session, live: set[int]) -> list[Path]:
    """Staging files (complete or partial) of uploads not in `live`, the uploads ingest or processing may
    still use (SQLite)."""
    folder = staging_dir(db)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        stem = path.name.removesuffix(_PART_SUFFIX).removesuffix(_FILE_SUFFIX)
        if stem.isdigit() and int(stem) not in live:
            found.append(path)
    return found


def _only_upload_staged(db: Session, upload_id: int) -> bool:
    """Whether the rows the transaction sees in staging, if any, are all the upload's."""
    # one pass that stops at the first row of another upload
    return not db.scalar(select(exists().where(StagedRow.upload_id != upload_id)))


def _staging_taken(db: Session) -> bool:
    """Take PostgreSQL's staging table for the rest of the transaction if no one else is using it now."""
    try:
        # A savepoint: a lock refused would otherwise end the transaction. The lock outlives it.
        with db.begin_nested():
            db.execute(text(f"LOCK TABLE {StagedRow.__tablename__} IN ACCESS EXCLUSIVE MODE NOWAIT"))
    except OperationalError:
        return False
    return True


def clear_staged(db: Session, upload_id: int) -> None:
    """Delete an upload's rows from the staging table in the session's transaction (PostgreSQL)."""
    db.execute(delete(StagedRow).where(StagedRow.upload_id == upload_id))


def clear_processed(db: Session, upload_id: int) -> None:
    """Clear the staged rows of an upload processed in the session's transaction, which then ends.

    SQLite: the staging file is deleted (the attached file stays readable until it is detached). Should
    the transaction then fail, the processing run again loads the rows from the cleansed rows file.

    PostgreSQL: when the table can be locked at once against every other use (no load, no reader) and then
    holds only the upload's rows, it is truncated: deleting a million rows one by one writes each of them
    to the log again. The lock is held only until the transaction ends, moments later; when another
    transaction holds the table, it is not waited for and the rows are deleted by upload.
    """
    if uses_staging_files(db):
        discard_staging(db, upload_id)
        return
    if _staging_taken(db) and _only_upload_staged(db, upload_id):
        db.execute(text(f"TRUNCATE {StagedRow.__tablename__}"))
        return
    clear_staged(db, upload_id)


def _text_escaped(name: str) -> pl.Expr:
    column = pl.col(name)
    for special, escape in _TEXT_ESCAPES:
        column = column.str.replace_all(special, escape, literal=True)
    return column


def _copy_text(frame: pl.DataFrame, upload_id: int) -> bytes:
    """The frame's rows in COPY's text format: tab-separated, without CSV's quotes around every record
    and doubling of each of its JSON's quotes (work for polars, bytes to send, and work for the server).
    """
    texts = STAGED_SCHEMA.names[1:]
    # One scan finds the columns with anything to escape (rarely any): escaping costs more than the scan.
    escape = frame.select(pl.col(name).str.contains(_TEXT_SPECIAL).any() for name in texts).row(0)
    buffer = io.BytesIO()
    frame.select(
        pl.lit(upload_id, dtype=pl.Int64).alias(_COLUMNS[0]),
        pl.col("row_number"),
        *(
            _text_escaped(name) if needed else pl.col(name)
            for name, needed in zip(texts, escape, strict=True)
        ),
    ).write_csv(buffer, include_header=False, separator="\t", quote_style="never")
    return buffer.getvalue()


def copy_rows(db: Session, upload_id: int, frames: Iterable[pl.DataFrame]) -> int:
    """COPY frames of staging rows into PostgreSQL's staging table in the session's transaction; the count."""
    driver = db.connection().connection.driver_connection
    statement = f"COPY {StagedRow.__tablename__} ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT text)"
    count = 0
    with driver.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
        for frame in frames:
            copy.write(_copy_text(frame, upload_id))
            count += frame.height
    return count
