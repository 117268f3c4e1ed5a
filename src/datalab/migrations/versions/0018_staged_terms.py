"""The entry terms of staged rows, staged with them (unlogged on PostgreSQL)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 23:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# The uploads whose rows may be staged: between ingest and the end of processing.
_STAGED = "('ingesting', 'processing')"


def upgrade() -> None:
    op.create_table(
        "staged_terms",
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("entry_year", sa.String(length=4), nullable=False),
        sa.Column("entry_term", sa.String(length=14), nullable=False),
        sa.PrimaryKeyConstraint("upload_id", "entry_year", "entry_term", name=op.f("pk_staged_terms")),
        prefixes=["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else [],
    )
    if op.get_bind().dialect.name == "postgresql":
        # Rows staged before this migration have no terms yet: they are staged again, from the cleansed
        # rows file, with their terms.
        op.execute(
            f"DELETE FROM staged_rows WHERE upload_id IN (SELECT id FROM uploads WHERE status IN {_STAGED})"
        )


def downgrade() -> None:
    op.drop_table("staged_terms")
