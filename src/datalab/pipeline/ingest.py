"""The `ingesting` stage: load the cleansed rows into staging with each database's bulk path.

The whole load is one transaction that first clears the upload's staged rows, so a stage run again after
a crash never duplicates a row: either every row of the file is staged and the upload is `processing`,
or nothing changed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from datalab.db import transaction, utcnow
from datalab.pipeline.artifacts import cleansed_key
from datalab.pipeline.cleanse import ROW_COLUMN
from datalab.pipeline.models import StagedRow
from datalab.pipeline.runner import ClaimedJob, StageContext, finish_job
from datalab.pipeline.service import enqueue_stage, move_upload
from datalab.uploads.models import Upload

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

        def column(name: str) -> int | None:
            return positions.get(name)

        unique_id, entry_year, entry_term = column("UniqueID"), column("EntryYear"), column("EntryTerm")
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


def bulk_stage(db: Session, rows: Iterator[tuple[Any, ...]]) -> int:
    """Insert staging rows with PostgreSQL's COPY, or batched executemany elsewhere; returns the count."""
    count = 0
    if db.get_bind().dialect.name == "postgresql":
        driver = db.connection().connection.driver_connection
        with (
            driver.cursor() as cursor,  # type: ignore[union-attr]
            cursor.copy(f"COPY staged_rows ({', '.join(STAGED_COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
    # The DB-API cursor directly: going through the ORM costs more than the insert itself.
    placeholders = ", ".join("?" * len(STAGED_COLUMNS))
    statement = f"INSERT INTO staged_rows ({', '.join(STAGED_COLUMNS)}) VALUES ({placeholders})"
    cursor = db.connection().connection.cursor()
    try:
        while batch := list(islice(rows, BATCH_ROWS)):
            cursor.executemany(statement, batch)
            count += len(batch)
    finally:
        cursor.close()
    return count


def ingest(ctx: StageContext, job: ClaimedJob) -> None:
    """Run the `ingesting` stage of one upload (a no-op when the upload is not waiting for it)."""
    with transaction(ctx.session_factory) as db:
        upload = db.get(Upload, job.upload_id)
        if upload is None or upload.status != "ingesting":
            finish_job(db=db, job=job, now=utcnow())
            return
        db.expunge(upload)
    with (
        ctx.store.readable_path(
            bucket=ctx.uploads_bucket, key=cleansed_key(upload.uid), temp_dir=ctx.temp_dir
        ) as path,
        transaction(ctx.session_factory) as db,
    ):
        db.execute(delete(StagedRow).where(StagedRow.upload_id == upload.id))
        staged = bulk_stage(db, staged_rows(path, upload.id))
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
