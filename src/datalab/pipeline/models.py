"""Pipeline work items of the embedded queue: one row per (upload, stage), claimed by its runner threads."""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from datalab.db import Base, UTCDateTime, utcnow

# The stages in order; each one queues the next in the transaction that ends it.
STAGES = ("analyze", "cleanse", "ingest", "process")


class PipelineJob(Base):
    """A stage of an upload's processing waiting to run (or run): the durable hand-off between steps."""

    __tablename__ = "pipeline_jobs"
    __table_args__ = (UniqueConstraint("upload_id", "stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(30))
    # pending -> running -> done, or back to pending for a retry, or failed after the last attempt.
    state: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Who runs the job and until when: a job whose lease ran out (its worker died) is taken again.
    locked_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class StagedRow(Base):
    """An accepted, cleansed row waiting in staging between `ingesting` and `processing` (PostgreSQL; see
    `datalab.pipeline.staging`).

    The table has neither a key nor an index: keeping them up to date was half the cost of loading a
    million rows, and every read of staging is a whole upload's rows, in one pass. The mapper identifies a
    row by its upload and row number. On PostgreSQL the table is UNLOGGED (set by its migration): its rows
    are not written to the write-ahead log a second time, and the crash recovery that empties it is
    made up for by loading the cleansed rows file again.
    """

    __tablename__ = "staged_rows"

    # No foreign key: a check per row would dominate bulk loads, and uploads are never deleted.
    upload_id: Mapped[int] = mapped_column(Integer)
    # The record's row in the file as a spreadsheet shows it (the header is row 1).
    row_number: Mapped[int] = mapped_column(Integer)
    unique_id: Mapped[str] = mapped_column(String(50), default="")
    entry_year: Mapped[str] = mapped_column(String(4), default="")
    entry_term: Mapped[str] = mapped_column(String(14), default="")
    # The cleansed record as a JSON object of its non-blank layout fields.
    record: Mapped[str] = mapped_column(Text)

    __mapper_args__ = MappingProxyType({"primary_key": (upload_id, row_number)})


class StagedTerm(Base):
    """An entry term (year and term) that an upload's staged rows hold, staged with them: processing finds
    the earlier rows a file replaces from these few rows rather than from a pass over every staged row.
    UNLOGGED on PostgreSQL, like StagedRow, and emptied with it by crash recovery."""

    __tablename__ = "staged_terms"

    upload_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_year: Mapped[str] = mapped_column(String(4), primary_key=True)
    entry_term: Mapped[str] = mapped_column(String(14), primary_key=True)
