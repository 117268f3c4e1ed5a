"""The `ingesting` stage: load the accepted rows into staging with each database's bulk path.

Cleansing wrote them as an Arrow stream of staging rows, one record batch per frame: PostgreSQL gets the
batches through COPY (each written in COPY's text format by polars); SQLite gets each with one executemany.

The upload's staged rows are cleared first and the status moves to `processing` only in the transaction
that ends the load, so a stage run again after a crash never duplicates a row. On PostgreSQL the whole
load is that one transaction (COPY); on SQLite rows go in short batches so that API requests are not
held up by a large file.
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import transaction, utcnow
from datalab.lifecycle import UploadStatus
from datalab.pipeline.artifacts import STAGED_SCHEMA, staged_frames
from datalab.pipeline.keys import cleansed_key
from datalab.pipeline.models import StagedRow
from datalab.pipeline.runner import ClaimedJob, StageContext, finish_job, upload_waiting
from datalab.pipeline.service import enqueue_stage, move_upload
from datalab.pipeline.staging import clear_staged

_COLUMNS = ("upload_id", *STAGED_SCHEMA.names)
# What COPY's text format gives a meaning to, and its escape (the backslash first: the others add one).
_TEXT_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_TEXT_SPECIAL = r"[\\\t\n\r]"


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


def copy_rows(db: Session, upload_id: int, path: Path) -> int:
    """Load the cleansed rows file into PostgreSQL with COPY, in the session's transaction; the count."""
    driver = db.connection().connection.driver_connection
    statement = f"COPY {StagedRow.__tablename__} ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT text)"
    count = 0
    with (
        staged_frames(path) as frames,
        driver.cursor() as cursor,  # type: ignore[union-attr]
        cursor.copy(statement) as copy,
    ):
        for frame in frames:
            copy.write(_copy_text(frame, upload_id))
            count += frame.height
    return count


def insert_rows(factory: sessionmaker[Session], upload_id: int, path: Path) -> int:
    """Insert the cleansed rows file frame by frame, one short transaction each; the count.

    SQLite has one writer at a time: short transactions let API requests in between. Rows of a load that
    stopped half-way are invisible (the status has not moved) and are cleared when the stage runs again.
    """
    # The DB-API cursor directly, with the upload's id written into the statement (one value fewer to
    # bind per row): going through the ORM costs more than the insert itself.
    statement = (
        f"INSERT INTO {StagedRow.__tablename__} ({', '.join(_COLUMNS)}) "
        f"VALUES ({int(upload_id)}, {', '.join('?' * len(STAGED_SCHEMA.names))})"
    )
    count = 0
    with staged_frames(path) as frames:
        for frame in frames:
            with transaction(factory) as db:
                cursor = db.connection().connection.cursor()
                try:
                    cursor.executemany(statement, frame.rows())
                finally:
                    cursor.close()
            count += frame.height
    return count


def ingest(ctx: StageContext, job: ClaimedJob) -> None:
    """Run the `ingesting` stage of one upload (a no-op when the upload is not waiting for it)."""
    with transaction(ctx.session_factory) as db:
        upload = upload_waiting(db=db, job=job, status=UploadStatus.INGESTING)
        if upload is None:
            return
        db.expunge(upload)
        copy = db.get_bind().dialect.name == "postgresql"
        if not copy:
            clear_staged(db, upload.id)
    with (
        ctx.store.readable_path(
            bucket=ctx.uploads_bucket, key=cleansed_key(upload.uid), temp_dir=ctx.temp_dir
        ) as path,
    ):
        staged = 0 if copy else insert_rows(ctx.session_factory, upload.id, path)
        with transaction(ctx.session_factory) as db:
            if copy:
                clear_staged(db, upload.id)
                staged = copy_rows(db, upload.id, path)
            now = utcnow()
            moved = move_upload(
                db=db,
                upload_id=upload.id,
                from_status=UploadStatus.INGESTING,
                status=UploadStatus.PROCESSING,
                now=now,
                meta={**upload.meta, "stagedRows": staged},
            )
            if moved:
                enqueue_stage(db=db, upload_id=upload.id, stage="process", now=now)
            finish_job(db=db, job=job, now=now)
    if moved:
        # The rows are in the database now; the cleansed copy was only the hand-off.
        ctx.store.delete(bucket=ctx.uploads_bucket, key=cleansed_key(upload.uid))
