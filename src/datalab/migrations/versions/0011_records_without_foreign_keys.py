"""production records without foreign keys to organizations and uploads: bulk processing skips a per-row check

Processing moves a file's rows into these tables with one `INSERT ... SELECT`; PostgreSQL checked both
keys with a trigger per row, which doubled the statement's time. The rows are written only by processing,
from an upload it holds, and uploads and organizations are never deleted.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_TABLES = ("enrollment_records", "affinity_records", "ematch_results")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(op.f(f"fk_{table}_upload_id_uploads"), type_="foreignkey")
            batch_op.drop_constraint(op.f(f"fk_{table}_organization_id_organizations"), type_="foreignkey")


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_foreign_key(
                op.f(f"fk_{table}_organization_id_organizations"),
                "organizations",
                ["organization_id"],
                ["id"],
                ondelete="CASCADE",
            )
            batch_op.create_foreign_key(
                op.f(f"fk_{table}_upload_id_uploads"), "uploads", ["upload_id"], ["id"], ondelete="CASCADE"
            )
