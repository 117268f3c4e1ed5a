"""Which new export is to be, or was, mailed to which user."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from datalab.db import Base, OrgOwned, UTCDateTime

# An entry waits `pending`, is `sending` while a sender holds its lease, and ends `sent`, or `skipped`
# when it was published while no SMTP server was set.
DIGEST_STATES = ("pending", "sending", "sent", "skipped")


class DigestEntry(OrgOwned, Base):
    """One export in one user's next (or past) digest of their organization's new exports."""

    __tablename__ = "email_digest_entries"
    __table_args__ = (
        UniqueConstraint("export_id", "user_id"),
        Index("ix_email_digest_entries_due", "state", "created_at"),
        Index("ix_email_digest_entries_digest", "digest_uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    export_id: Mapped[int] = mapped_column(ForeignKey("exports.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(10), default="pending")
    # The digest (its Message-ID) the entry was claimed for or sent in.
    digest_uid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class DigestOptOut(Base):
    """A user who asked for no digest e-mail."""

    __tablename__ = "email_digest_opt_outs"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
