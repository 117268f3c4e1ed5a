"""The `ingesting` stage: load the accepted rows into staging with each database's bulk path.

Cleansing wrote them as a CSV of staging rows: PostgreSQL reads that file itself (COPY, its bytes
streamed as they are); SQLite gets it as polars frames of a few MiB, each inserted with one executemany.

The upload's staged rows are cleared first and the status moves to `processing` only in the transaction
that ends the load, so a stage run again after a crash never duplicates a row. On PostgreSQL the whole
load is that one transaction (COPY); on SQLite rows go in short batches so that API requests are not
held up by a large file.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import transaction, utcnow
from datalab.lifecycle import UploadStatus
from datalab.pipeline.artifacts import cleansed_key
from datalab.pipeline.cleanse import STAGED_COLUMNS
from datalab.pipeline.models import StagedRow
from datalab.pipeline.readers import record_blocks
from datalab.pipeline.runner import ClaimedJob, StageContext, finish_job, upload_waiting
from datalab.pipeline.service import enqueue_stage, move_upload
from datalab.pipeline.staging import clear_staged

COPY_CHUNK = 1024 * 1024
_STAGED_SCHEMA = {
    "upload_id": pl.Int64,
    "row_number": pl.Int64,
    "unique_id": pl.String,
    "entry_year": pl.String,
    "entry_term": pl.String,
    "record": pl.String,
}


def _check_header(path: Path) -> int:
    with path.open("rb") as handle:
        header = handle.readline()
    if header.decode("utf-8").strip() != ",".join(STAGED_COLUMNS):
        raise ValueError(f"{path.name} is not a file of staging rows")
    return len(header)


def copy_rows(db: Session, path: Path) -> int:
    """Stream the staging rows file into PostgreSQL with COPY, in the session's transaction; the count."""
    start = _check_header(path)
    driver = db.connection().connection.driver_connection
    columns = ", ".join(STAGED_COLUMNS)
    statement = (
        f"COPY staged_rows ({columns}) FROM STDIN "
        "(FORMAT csv, FORCE_NOT_NULL (unique_id, entry_year, entry_term, record))"
    )
    with driver.cursor() as cursor, path.open("rb") as handle:  # type: ignore[union-attr]
        handle.seek(start)
        with cursor.copy(statement) as copy:
            while chunk := handle.read(COPY_CHUNK):
                copy.write(chunk)
        return int(cursor.rowcount)


def insert_rows(factory: sessionmaker[Session], upload_id: int, path: Path) -> int:
    """Insert the staging rows file in batches of whole frames, one short transaction each; the count.

    SQLite has one writer at a time: short transactions let API requests in between. Rows of a load that
    stopped half-way are invisible (the status has not moved) and are cleared when the stage runs again.
    """
    start = _check_header(path)
    # The DB-API cursor directly, with the upload's id written into the statement (one value fewer to
    # bind per row): going through the ORM costs more than the insert itself.
    columns = STAGED_COLUMNS[1:]
    statement = (
        f"INSERT INTO {StagedRow.__tablename__} (upload_id, {', '.join(columns)}) "
        f"VALUES ({int(upload_id)}, {', '.join('?' * len(columns))})"
    )
    count = 0
    for block in record_blocks(path, start):
        frame = pl.read_csv(block, has_header=False, schema=_STAGED_SCHEMA, empty_string_is_null=False)
        with transaction(factory) as db:
            cursor = db.connection().connection.cursor()
            try:
                cursor.executemany(statement, frame.drop("upload_id").rows())
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
                staged = copy_rows(db, path)
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
