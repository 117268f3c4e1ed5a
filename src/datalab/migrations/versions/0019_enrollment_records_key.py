"""Enrollment records keyed by upload and row number instead of a number of their own

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-08 01:30:00

The key's index also finds an upload's rows, so the upload index goes. On PostgreSQL the table is changed
in place (the key's index is built once, from the rows kept); SQLite copies the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_TABLE = "enrollment_records"
_KEY = "pk_enrollment_records"
_UPLOAD_INDEX = "ix_enrollment_records_upload_id"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(_UPLOAD_INDEX, table_name=_TABLE)
        op.drop_constraint(_KEY, _TABLE, type_="primary")
        # its sequence goes with it
        op.drop_column(_TABLE, "id")
        op.create_primary_key(_KEY, _TABLE, ["upload_id", "row_number"])
        return
    with op.batch_alter_table(_TABLE, recreate="always") as batch:
        batch.drop_index(_UPLOAD_INDEX)
        batch.drop_column("id")
        batch.create_primary_key(_KEY, ["upload_id", "row_number"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(_KEY, _TABLE, type_="primary")
        op.execute(f"ALTER TABLE {_TABLE} ADD COLUMN id BIGSERIAL")
        op.create_primary_key(_KEY, _TABLE, ["id"])
        op.create_index(_UPLOAD_INDEX, _TABLE, ["upload_id"])
        return
    with op.batch_alter_table(_TABLE, recreate="always") as batch:
        batch.drop_constraint(_KEY, type_="primary")
        batch.add_column(sa.Column("id", sa.Integer(), primary_key=True))
        batch.create_index(_UPLOAD_INDEX, ["upload_id"])
