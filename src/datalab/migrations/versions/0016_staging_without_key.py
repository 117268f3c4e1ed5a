"""Staged rows without a key or an index, unlogged on PostgreSQL; SQLite stages rows in a file per upload

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# The uploads whose rows may be staged: between ingest and the end of processing.
_STAGED = "('ingesting', 'processing')"


def _requeue_staged_uploads_for_cleansing() -> None:
    """SQLite no longer reads this table: uploads with rows in it are cleansed again from their file (the
    cleansed rows file that loaded them was deleted once they were staged)."""
    op.execute(
        "UPDATE pipeline_jobs SET state = 'pending', attempts = 0, run_after = CURRENT_TIMESTAMP, "
        "locked_by = NULL, lease_until = NULL, finished_at = NULL, last_error = NULL "
        f"WHERE stage = 'cleanse' AND upload_id IN (SELECT id FROM uploads WHERE status IN {_STAGED})"
    )
    op.execute(f"UPDATE uploads SET status = 'enqueued' WHERE status IN {_STAGED}")
    op.execute("DELETE FROM staged_rows")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _requeue_staged_uploads_for_cleansing()
    with op.batch_alter_table("staged_rows", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("uq_staged_rows_upload_id"), type_="unique")
        batch_op.drop_constraint(op.f("pk_staged_rows"), type_="primary")
        batch_op.drop_column("id")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE staged_rows SET UNLOGGED")


def downgrade() -> None:
    op.execute("DELETE FROM staged_rows")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE staged_rows SET LOGGED")
        op.execute("ALTER TABLE staged_rows ADD COLUMN id BIGSERIAL")
    with op.batch_alter_table("staged_rows", schema=None) as batch_op:
        if op.get_bind().dialect.name == "sqlite":
            batch_op.add_column(sa.Column("id", sa.Integer(), nullable=False))
        batch_op.create_primary_key(op.f("pk_staged_rows"), ["id"])
        batch_op.create_unique_constraint(op.f("uq_staged_rows_upload_id"), ["upload_id", "row_number"])
