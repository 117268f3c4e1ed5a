"""Enrollment terms per upload replace the index of every enrollment record by organization and term

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrollment_terms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("entry_year", sa.String(length=4), nullable=False),
        sa.Column("entry_term", sa.String(length=14), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_enrollment_terms_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["upload_id"], ["uploads.id"], name=op.f("fk_enrollment_terms_upload_id_uploads")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollment_terms")),
        sa.UniqueConstraint(
            "upload_id", "entry_year", "entry_term", name=op.f("uq_enrollment_terms_upload_id")
        ),
    )
    op.create_index(
        "ix_enrollment_terms_org_term",
        "enrollment_terms",
        ["organization_id", "entry_year", "entry_term"],
        unique=False,
    )
    op.execute(
        "INSERT INTO enrollment_terms (organization_id, upload_id, entry_year, entry_term) "
        "SELECT DISTINCT organization_id, upload_id, entry_year, entry_term FROM enrollment_records"
    )
    op.drop_index("ix_enrollment_records_org_term", table_name="enrollment_records")


def downgrade() -> None:
    op.create_index(
        "ix_enrollment_records_org_term",
        "enrollment_records",
        ["organization_id", "entry_year", "entry_term"],
        unique=False,
    )
    op.drop_index("ix_enrollment_terms_org_term", table_name="enrollment_terms")
    op.drop_table("enrollment_terms")
