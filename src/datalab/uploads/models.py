"""Upload records: a file an organization sends in, and its way through the pipeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datalab.accounts.models import Organization
from datalab.db import Base, OrgOwned, UTCDateTime, new_uid, utcnow
from datalab.lifecycle import UploadStatus

PRODUCT_TYPES = ("enrollment", "affinity", "ematch")
# The older API calls affinity files "legacy".
PRODUCT_TYPE_ALIASES = {"legacy": "affinity"}
# The statuses in lifecycle order (datalab.lifecycle defines them and the moves between them).
UPLOAD_STATUSES = tuple(status.value for status in UploadStatus)


class Upload(OrgOwned, Base):
    """An uploaded (or announced) file; the object key is chosen by the server, never by the file name."""

    __tablename__ = "uploads"
    __table_args__ = (Index("ix_uploads_org_status", "organization_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uid)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    user_name: Mapped[str] = mapped_column(String(254), default="")
    file_name: Mapped[str] = mapped_column(String(255))
    object_key: Mapped[str] = mapped_column(String(1024), unique=True)
    product_type: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(30), default=UploadStatus.UPLOADING.value)
    data_source: Mapped[str] = mapped_column(String(30), default="API")
    file_description: Mapped[str] = mapped_column(Text, default="")
    record_volume: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fields_map: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    values_map: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The text encoding the reader chose (None for spreadsheets), kept so a person can check it.
    encoding: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # The form's temporary-credential token: identifies the upload a POST to the store belongs to.
    form_token: Mapped[str] = mapped_column(String(64), unique=True)
    form_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    etag: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # procrastinate's job for the upload's next stage (that engine only): cancelled with the upload.
    queue_job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # When the file of a canceled upload was removed from the store, after the retention period.
    file_removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    organization: Mapped[Organization] = relationship(lazy="joined")


class FieldMapping(OrgOwned, Base):
    """An organization's saved mapping of a file's headers to a product's layout, reused by later uploads."""

    __tablename__ = "field_mappings"
    __table_args__ = (UniqueConstraint("organization_id", "product_type", "header_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uid)
    product_type: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200), default="")
    # The file's header set, normalized and sorted: a later file with the same headers reuses the mapping.
    header_key: Mapped[str] = mapped_column(String(64))
    headers: Mapped[list[str]] = mapped_column(JSON, default=list)
    fields_map: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    values_map: Mapped[dict[str, dict[str, str]]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
