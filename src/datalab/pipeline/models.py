"""Pipeline work items: one row per (upload, stage), claimed by whichever runner is configured."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from datalab.db import Base, UTCDateTime, utcnow

STAGES = ("analyze",)


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
