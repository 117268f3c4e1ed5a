"""probabilistic matching: stored models, student fields the matcher compares, match scores

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import datalab.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_STUDENT_COLUMNS = (("address", 150), ("city", 50), ("phone", 10), ("hs_code", 6), ("gender", 1))


def upgrade() -> None:
    op.create_table(
        "match_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("student_count", sa.Integer(), nullable=False),
        sa.Column("trained_at", datalab.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_models")),
    )
    with op.batch_alter_table("students", schema=None) as batch_op:
        for name, width in _STUDENT_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.String(length=width), nullable=False, server_default=""))
    with op.batch_alter_table("ematch_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("match_probability", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("evidence", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("ematch_results", schema=None) as batch_op:
        batch_op.drop_column("evidence")
        batch_op.drop_column("match_probability")
    with op.batch_alter_table("students", schema=None) as batch_op:
        for name, _ in reversed(_STUDENT_COLUMNS):
            batch_op.drop_column(name)
    op.drop_table("match_models")
