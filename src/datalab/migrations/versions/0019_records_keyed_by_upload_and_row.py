"""Enrollment and affinity records keyed by upload and row number instead of a number of their own

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

# The tables whose rows processing copies from staging.
_TABLES = ("enrollment_records", "affinity_records")


def upgrade() -> None:
    for table in _TABLES:
        _keyed_by_upload_and_row(table)


def downgrade() -> None:
    for table in _TABLES:
        _numbered(table)


def _keyed_by_upload_and_row(table: str) -> None:
    key, upload_index = f"pk_{table}", f"ix_{table}_upload_id"
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(upload_index, table_name=table)
        op.drop_constraint(key, table, type_="primary")
        # its sequence goes with it
        op.drop_column(table, "id")
        op.create_primary_key(key, table, ["upload_id", "row_number"])
        return
    with op.batch_alter_table(table, recreate="always") as batch:
        batch.drop_index(upload_index)
        batch.drop_column("id")
        batch.create_primary_key(key, ["upload_id", "row_number"])


def _numbered(table: str) -> None:
    key, upload_index = f"pk_{table}", f"ix_{table}_upload_id"
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(key, table, type_="primary")
        op.execute(f"ALTER TABLE {table} ADD COLUMN id BIGSERIAL")
        op.create_primary_key(key, table, ["id"])
        op.create_index(upload_index, table, ["upload_id"])
        return
    with op.batch_alter_table(table, recreate="always") as batch:
        batch.drop_constraint(key, type_="primary")
        batch.add_column(sa.Column("id", sa.Integer(), primary_key=True))
        batch.create_index(upload_index, ["upload_id"])
