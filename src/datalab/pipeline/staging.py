"""Clearing an upload's staged rows cheaply on each database."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from datalab.pipeline.models import StagedRow


def clear_staged(db: Session, upload_id: int) -> None:
    """Delete an upload's staged rows in the session's transaction.

    On SQLite, when no other upload has rows staged, the table is cleared by a DELETE without a WHERE
    clause, which SQLite carries out by freeing the table's pages instead of visiting a million rows. It is
    safe there because the transaction holds the database's one write lock: no other load can be adding
    rows. PostgreSQL's concurrent loads may hold rows this transaction cannot see, so it always deletes
    by upload.
    """
    if db.get_bind().dialect.name == "sqlite":
        # two index probes (SQLite answers a lone min() or max() from the index's ends)
        lowest = db.scalar(select(func.min(StagedRow.upload_id)))
        highest = db.scalar(select(func.max(StagedRow.upload_id)))
        if lowest is None or lowest == highest == upload_id:
            db.execute(delete(StagedRow), execution_options={"synchronize_session": False})
            return
    db.execute(delete(StagedRow).where(StagedRow.upload_id == upload_id))
