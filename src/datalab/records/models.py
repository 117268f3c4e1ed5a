"""Production rows made from processed uploads: enrollment funnel records, affinity people, eMatch results."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from datalab.db import Base, OrgOwned, UTCDateTime, utcnow


class _ImportedRow(OrgOwned):
    """Columns every production row shares: where it came from, its record key and the cleansed record.

    The organization and upload ids carry no foreign keys: processing writes these rows a million at a
    time, and PostgreSQL checks a foreign key with a trigger per row (two keys doubled the time of an
    enrollment file's `INSERT ... SELECT`). Nothing is lost by it: the rows are written only by the
    processing stage, from the upload row it holds in the same transaction, and neither uploads nor
    organizations are ever deleted (retention deletes files, deactivation keeps the organization).
    """

    organization_id: Mapped[int] = mapped_column(Integer)
    upload_id: Mapped[int] = mapped_column(Integer)
    # The record's row in the file as a spreadsheet shows it (the header is row 1).
    row_number: Mapped[int] = mapped_column(Integer)
    unique_id: Mapped[str] = mapped_column(String(50), default="")
    # The cleansed record as a JSON object of its non-blank layout fields.
    record: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class _NumberedRow(_ImportedRow):
    """A production row with a number of its own; its upload's rows are found through an index."""

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)

    @declared_attr
    def upload_id(cls) -> Mapped[int]:  # noqa: N805
        return mapped_column(Integer, index=True)


class EnrollmentRecord(_ImportedRow, Base):
    """An institution's funnel record for one student and entry term; a newer file replaces the term.

    Keyed by its upload and row number: the key's index also finds an upload's rows. A number of its own
    cost a second index and a sequence call per row, a quarter of a million-row file's `INSERT ... SELECT`
    on PostgreSQL. The rows of a term are found through EnrollmentTerm and that key, not through an index
    of their own by organization and term: keeping that index cost as much as the rest of a file's insert.
    """

    __tablename__ = "enrollment_records"
    __table_args__ = (PrimaryKeyConstraint("upload_id", "row_number"),)

    entry_year: Mapped[str] = mapped_column(String(4), default="")
    entry_term: Mapped[str] = mapped_column(String(14), default="")


class EnrollmentTerm(OrgOwned, Base):
    """An entry term that an upload's enrollment records hold: a later file of the term replaces them."""

    __tablename__ = "enrollment_terms"
    __table_args__ = (
        UniqueConstraint("upload_id", "entry_year", "entry_term"),
        Index("ix_enrollment_terms_org_term", "organization_id", "entry_year", "entry_term"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id"))
    entry_year: Mapped[str] = mapped_column(String(4))
    entry_term: Mapped[str] = mapped_column(String(14))


class AffinityRecord(_ImportedRow, Base):
    """A person an institution sent in an affinity file, keyed by its upload and row number (as an
    EnrollmentRecord is)."""

    __tablename__ = "affinity_records"
    __table_args__ = (PrimaryKeyConstraint("upload_id", "row_number"),)


class EmatchResult(_NumberedRow, Base):
    """One person of an eMatch file and the student it matched, if any."""

    __tablename__ = "ematch_results"

    student_id: Mapped[int | None] = mapped_column(
        ForeignKey("students.id", ondelete="SET NULL"), nullable=True, index=True
    )
    # Which rule matched (email, name_birth_date, name_zip), or "" when nothing did.
    matched_by: Mapped[str] = mapped_column(String(30), default="")
    # How likely the match is (the probabilistic matcher's score; 1 for a rule), and which fields agreed.
    match_probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    evidence: Mapped[str] = mapped_column(Text, default="")
