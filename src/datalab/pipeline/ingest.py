"""The `ingesting` stage: load the cleansed rows into staging with each database's bulk path.

The upload's staged rows are cleared first and the status moves to `processing` only in the transaction
that ends the load, so a stage run again after a crash never duplicates a row. On PostgreSQL the whole
load is that one transaction (COPY); on SQLite rows go in short batches so that API requests are not
held up by a large file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import transaction, utcnow
from datalab.pipeline.artifacts import cleansed_key
from datalab.pipeline.cleanse import ROW_COLUMN
from datalab.pipeline.models import StagedRow
from datalab.pipeline.runner import ClaimedJob, StageContext, finish_job, upload_waiting
from datalab.pipeline.service import enqueue_stage, move_upload

BATCH_ROWS = 5000
STAGED_COLUMNS = ("upload_id", "row_number", "unique_id", "entry_year", "entry_term", "record")


def staged_rows(path: Path, upload_id: int) -> Iterator[tuple[int, int, str, str, str, str]]:
    """The cleansed CSV's rows as staging tuples, the record holding the non-blank fields as JSON."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if header[0] != ROW_COLUMN:
            raise ValueError(f"{path.name} is not a cleansed file")
        fields = header[1:]
        positions = {name: index for index, name in enumerate(fields)}
        unique_id, entry_year, entry_term = (
            positions.get(name) for name in ("UniqueID", "EntryYear", "EntryTerm")
        )
        for row in reader:
            values = row[1:]
            record = json.dumps(
                {name: value for name, value in zip(fields, values, strict=True) if value},
                separators=(",", ":"),
                ensure_ascii=False,
            )
            yield (
                upload_id,
                int(row[0]),
                values[unique_id] if unique_id is not None else "",
                values[entry_year] if entry_year is not None else "",
                values[entry_term] if entry_term is not None else "",
                record,
            )


def copy_rows(db: Session, rows: Iterator[tuple[Any, ...]]) -> int:
    """Stream staging rows into PostgreSQL with COPY, in the session's transaction; returns the count."""
    count = 0
    driver = db.connection().connection.driver_connection
    with (
        driver.cursor() as cursor,  # type: ignore[union-attr]
        cursor.copy(f"COPY staged_rows ({', '.join(STAGED_COLUMNS)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def insert_rows(factory: sessionmaker[Session], rows: Iterator[tuple[Any, ...]]) -> int:
    """Insert staging rows in batches, one short transaction each; returns the count.

    SQLite has one writer at a time: short transactions let API requests in between. Rows of a load that
    stopped half-way are invisible (the status has not moved) and are cleared when the stage runs again.
    """
    # The DB-API cursor directly: going through the ORM costs more than the insert itself.
    placeholders = ", ".join("?" * len(STAGED_COLUMNS))
    statement = f"INSERT INTO staged_rows ({', '.join(STAGED_COLUMNS)}) VALUES ({placeholders})"
    count = 0
    while batch := list(islice(rows, BATCH_ROWS)):
        with transaction(factory) as db:
            cursor = db.connection().connection.cursor()
            try:
                cursor.executemany(statement, batch)
            finally:
                cursor.close()
        count += len(batch)
    return count


def ingest(ctx: StageContext, job: ClaimedJob) -> None:
    """Run the `ingesting` stage of one upload (a no-op when the upload is not waiting for it)."""
    with transaction(ctx.session_factory) as db:
        upload = upload_waiting(db=db, job=job, status="ingesting")
        if upload is None:
            return
        db.expunge(upload)
        copy = db.get_bind().dialect.name == "postgresql"
        if not copy:
            db.execute(delete(StagedRow).where(StagedRow.upload_id == upload.id))
    with (
        ctx.store.readable_path(
            bucket=ctx.uploads_bucket, key=cleansed_key(upload.uid), temp_dir=ctx.temp_dir
        ) as path,
    ):
        rows = staged_rows(path, upload.id)
        staged = 0 if copy else insert_rows(ctx.session_factory, rows)
        with transaction(ctx.session_factory) as db:
            if copy:
                db.execute(delete(StagedRow).where(StagedRow.upload_id == upload.id))
                staged = copy_rows(db, rows)
            now = utcnow()
            moved = move_upload(
                db=db,
                upload_id=upload.id,
                from_status="ingesting",
                status="processing",
                now=now,
                meta={**upload.meta, "stagedRows": staged},
            )
            if moved:
                enqueue_stage(db=db, upload_id=upload.id, stage="process", now=now)
            finish_job(db=db, job=job, now=now)
    if moved:
        # The rows are in the database now; the cleansed copy was only the hand-off.
        ctx.store.delete(bucket=ctx.uploads_bucket, key=cleansed_key(upload.uid))
