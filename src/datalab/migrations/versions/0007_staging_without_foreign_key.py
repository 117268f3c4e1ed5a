"""staging rows without a foreign key: bulk loads skip a per-row check

Staged rows live between `ingesting` and `processing` only, and uploads are never deleted, so the
foreign key to `uploads` guarded nothing while costing PostgreSQL a trigger per loaded row (and keeping
SQLite from clearing the table in one step).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 20:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("staged_rows", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_staged_rows_upload_id_uploads"), type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("staged_rows", schema=None) as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_staged_rows_upload_id_uploads"), "uploads", ["upload_id"], ["id"], ondelete="CASCADE"
        )
