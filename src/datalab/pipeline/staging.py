"""Clearing an upload's staged rows cheaply on each database."""

from __future__ import annotations

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from datalab.pipeline.models import StagedRow


def _only_upload_staged(db: Session, upload_id: int) -> bool:
    """Whether the rows the transaction sees in staging, if any, are all the upload's."""
    # two index probes (a lone min() or max() is answered from the index's ends)
    lowest = db.scalar(select(func.min(StagedRow.upload_id)))
    highest = db.scalar(select(func.max(StagedRow.upload_id)))
    return lowest is None or lowest == highest == upload_id


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
    """Delete an upload's staged rows in the session's transaction.

    On SQLite, when no other upload has rows staged, the table is cleared by a DELETE without a WHERE
    clause, which SQLite carries out by freeing the table's pages instead of visiting a million rows. It is
    safe there because the transaction holds the database's one write lock: no other load can be adding
    rows. PostgreSQL's concurrent loads may hold rows this transaction cannot see, so it deletes by upload
    (see `clear_processed` for when it need not).
    """
    if db.get_bind().dialect.name == "sqlite" and _only_upload_staged(db, upload_id):
        db.execute(delete(StagedRow), execution_options={"synchronize_session": False})
        return
    db.execute(delete(StagedRow).where(StagedRow.upload_id == upload_id))


def clear_processed(db: Session, upload_id: int) -> None:
    """Delete the staged rows of an upload processed in the session's transaction, which then ends.

    On PostgreSQL, when the table can be locked at once against every other use (no load, no reader) and
    then holds only the upload's rows, it is truncated: deleting a million rows one by one writes each of
    them to the log again. The lock is held only until the transaction ends, moments later; when another
    transaction holds the table, it is not waited for and the rows are deleted by upload.
    """
    if (
        db.get_bind().dialect.name == "postgresql"
        and _staging_taken(db)
        and _only_upload_staged(db, upload_id)
    ):
        db.execute(text(f"TRUNCATE {StagedRow.__tablename__}"))
        return
    clear_staged(db, upload_id)
