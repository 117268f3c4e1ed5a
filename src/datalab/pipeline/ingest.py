"""The `ingesting` stage: load the accepted rows into staging with each database's bulk path.

Cleansing wrote them as an Arrow stream of staging rows, one record batch per frame: PostgreSQL gets the
batches through COPY (each written in COPY's text format by polars) into its staging table; SQLite gets
each with one executemany into the upload's staging file (see `staging`).

The status moves to `processing` only once the load is complete (on PostgreSQL, in the load's own
transaction, after the upload's earlier staged rows were deleted in it; a SQLite staging file replaces any
earlier one only when complete), so a stage run again after a crash never duplicates a row.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session

from datalab.db import transaction, utcnow
from datalab.lifecycle import UploadStatus
from datalab.pipeline.artifacts import STAGED_SCHEMA, staged_frames
from datalab.pipeline.keys import cleansed_key
from datalab.pipeline.models import StagedRow
from datalab.pipeline.runner import ClaimedJob, StageContext, finish_job, upload_waiting
from datalab.pipeline.service import enqueue_stage, move_upload
from datalab.pipeline.staging import clear_staged, leftover_staging, uses_staging_files, write_staging_file
from datalab.uploads.models import Upload

_COLUMNS = ("upload_id", *STAGED_SCHEMA.names)
# The statuses of uploads whose staged rows a stage may still read.
_STAGING_STATUSES = (UploadStatus.INGESTING, UploadStatus.PROCESSING)
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


def load_staging(ctx: StageContext, db: Session, upload: Upload) -> int:
    """Load the upload's cleansed rows into staging in place of any staged before; the rows loaded.

    PostgreSQL: in the session's transaction. SQLite: into the upload's staging file, outside it (see
    `staging`).
    """
    with (
        ctx.store.readable_path(
            bucket=ctx.uploads_bucket, key=cleansed_key(upload.uid), temp_dir=ctx.temp_dir
        ) as path,
        staged_frames(path) as frames,
    ):
        if uses_staging_files(db):
            return write_staging_file(db, upload.id, frames)
        clear_staged(db, upload.id)
        return copy_rows(db, upload.id, frames)


def _discard_leftovers(db: Session) -> None:
    """Delete staging files of uploads that no stage will read again (a crash came between a processing
    commit and the file's deletion, or the upload was canceled)."""
    live = set(db.scalars(select(Upload.id).where(Upload.status.in_(_STAGING_STATUSES))))
    for path in leftover_staging(db, live):
        path.unlink(missing_ok=True)


def ingest(ctx: StageContext, job: ClaimedJob) -> None:
    """Run the `ingesting` stage of one upload (a no-op when the upload is not waiting for it)."""
    with transaction(ctx.session_factory) as db:
        upload = upload_waiting(db=db, job=job, status=UploadStatus.INGESTING)
        if upload is None:
            return
        db.expunge(upload)
        in_files = uses_staging_files(db)
        if in_files:
            _discard_leftovers(db)
    with ctx.session_factory() as db:
        # a staging file is written without holding the database's write lock
        staged = load_staging(ctx, db, upload) if in_files else 0
    with transaction(ctx.session_factory) as db:
        if not in_files:
            staged = load_staging(ctx, db, upload)
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
