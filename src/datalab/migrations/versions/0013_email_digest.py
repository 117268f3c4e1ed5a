"""email digests: which new export goes, or went, to which user; opt-outs; room for encrypted webhook
secrets

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import datalab.db

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _create_entries() -> None:
    op.create_table(
        "email_digest_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("export_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("digest_uid", sa.String(length=36), nullable=True),
        sa.Column("lease_until", datalab.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("locked_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", datalab.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", datalab.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["export_id"],
            ["exports.id"],
            name=op.f("fk_email_digest_entries_export_id_exports"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_email_digest_entries_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_email_digest_entries_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_digest_entries")),
        sa.UniqueConstraint("export_id", "user_id", name=op.f("uq_email_digest_entries_export_id")),
    )
    with op.batch_alter_table("email_digest_entries", schema=None) as batch_op:
        batch_op.create_index("ix_email_digest_entries_due", ["state", "created_at"], unique=False)
        batch_op.create_index("ix_email_digest_entries_digest", ["digest_uid"], unique=False)
        batch_op.create_index(batch_op.f("ix_email_digest_entries_user_id"), ["user_id"], unique=False)


def _create_opt_outs() -> None:
    op.create_table(
        "email_digest_opt_outs",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", datalab.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_email_digest_opt_outs_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_email_digest_opt_outs")),
    )


def upgrade() -> None:
    _create_entries()
    _create_opt_outs()
    # Room for a Fernet token of a secret; the plain secrets are encrypted at startup, with the key.
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.alter_column(
            "secret",
            existing_type=sa.String(length=128),
            type_=sa.String(length=512),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.alter_column(
            "secret",
            existing_type=sa.String(length=512),
            type_=sa.String(length=128),
            existing_nullable=False,
        )
    op.drop_table("email_digest_opt_outs")
    op.drop_table("email_digest_entries")
