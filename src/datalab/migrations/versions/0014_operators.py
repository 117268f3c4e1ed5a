"""operators: the operator role, deactivated organizations, exports published through a form and withdrawn

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import datalab.db

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("is_operator", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deactivated_at", datalab.db.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("published_at", datalab.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("form_token", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("form_expires_at", datalab.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("withdrawn_at", datalab.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_exports_form_token"), ["form_token"])
    # Every export published before forms existed was complete when it was recorded.
    op.execute(sa.text("UPDATE exports SET published_at = created_at"))


def downgrade() -> None:
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_exports_form_token"), type_="unique")
        batch_op.drop_column("withdrawn_at")
        batch_op.drop_column("form_expires_at")
        batch_op.drop_column("form_token")
        batch_op.drop_column("published_at")
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("deactivated_at")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("is_operator")
