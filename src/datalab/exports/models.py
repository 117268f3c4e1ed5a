"""Export files, their deliveries and one-time download tickets."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, ColumnElement, ForeignKey, Index, Integer, Numeric, String, and_
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datalab.accounts.models import Organization, User
from datalab.db import Base, OrgOwned, UTCDateTime, new_uid, utcnow

PRODUCT_KEYS = (
    "aos",
    "prospect",
    "affinity",
    "ematch",
    "score-reporter",
    "declared",
    "inquiry",
    "enrollment-marketing",
)
EXPORT_STATUSES = ("Delivered", "NotDelivered")


class Export(OrgOwned, Base):
    """A file published to an organization for download, e.g. a prospect list or ACT score report."""

    __tablename__ = "exports"
    __table_args__ = (Index("ix_exports_org_status_date", "organization_id", "status", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uid)
    product_key: Mapped[str] = mapped_column(String(40))
    order_name: Mapped[str] = mapped_column(String(200), default="")
    file_name: Mapped[str] = mapped_column(String(255))
    object_key: Mapped[str] = mapped_column(String(1024), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    cost_in_points: Mapped[int] = mapped_column(Integer, default=0)
    cost_in_dollars: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    status: Mapped[str] = mapped_column(String(20), default="NotDelivered")
    list_path: Mapped[str] = mapped_column(String(36), default=new_uid)
    is_continuous: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    overdue_email_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When retention deleted the file: the record stays, for operators and the audit trail only.
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When the file was complete in the store: an export published through a form is listed from then on.
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The presigned POST form an operator's file is posted with, until the file arrives.
    form_token: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    form_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When an operator withdrew it: no longer listed to the organization, downloads refused.
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    organization: Mapped[Organization] = relationship(lazy="joined")
    created_by: Mapped[User | None] = relationship(lazy="joined")
    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="export", order_by="Delivery.delivered_at", cascade="all, delete-orphan"
    )


class Delivery(Base):
    """One complete transfer of an export's bytes to a user."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uid)
    export_id: Mapped[int] = mapped_column(ForeignKey("exports.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    method: Mapped[str] = mapped_column(String(20), default="API")
    file_type: Mapped[str] = mapped_column(String(10), default="csv")
    bytes_sent: Mapped[int] = mapped_column(BigInteger)
    delivered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    export: Mapped[Export] = relationship(back_populates="deliveries")
    user: Mapped[User | None] = relationship(lazy="joined")


class DownloadTicket(Base):
    """A one-time download URL: issued by the API, consumed by the first request that presents it."""

    __tablename__ = "download_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    export_id: Mapped[int] = mapped_column(ForeignKey("exports.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    method: Mapped[str] = mapped_column(String(20), default="API")
    file_type: Mapped[str] = mapped_column(String(10), default="csv")
    # Set when the URL serves a derived file (a row slice or another format) instead of the stored object.
    derived_key: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    export: Mapped[Export] = relationship(lazy="joined")


def listed_to_organization() -> ColumnElement[bool]:
    """The exports an organization sees: complete, not withdrawn, not expired under retention."""
    return and_(Export.published_at.is_not(None), Export.withdrawn_at.is_(None), Export.expired_at.is_(None))
