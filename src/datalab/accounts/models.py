"""Organizations, users, memberships, API keys and login throttling."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datalab.db import Base, UTCDateTime, new_uid, utcnow

USER_STATUSES = ("Active", "Inactive")
# An organization's admins also see its audit trail.
MEMBERSHIP_ROLES = ("member", "admin")


class Organization(Base):
    """An institution (or data provider) whose files are isolated from every other's."""

    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uid)
    name: Mapped[str] = mapped_column(String(200))
    fice: Mapped[str] = mapped_column(String(20), unique=True)
    state_code: Mapped[str] = mapped_column(String(2), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Set by an operator: the organization's users can no longer act in it; its rows are kept.
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class User(Base):
    """A person or service account that logs in with userName + password."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uid)
    user_name: Mapped[str] = mapped_column(String(254))
    # userName compared case-insensitively: the service accounts are email addresses.
    user_name_key: Mapped[str] = mapped_column(String(254), unique=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    type: Mapped[str] = mapped_column(String(30), default="User")
    status: Mapped[str] = mapped_column(String(10), default="Active")
    attributes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    password_hash: Mapped[str] = mapped_column(String(200))
    # Operators administer every organization through /v1/admin and need not belong to any.
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Tokens issued before this instant are refused: deactivation and password changes revoke sessions.
    tokens_valid_after: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", order_by="Membership.position", cascade="all, delete-orphan"
    )

    @property
    def display_name(self) -> str:
        """First and last name, or the userName when the account has none."""
        return f"{self.first_name} {self.last_name}".strip() or self.user_name


class Membership(Base):
    """A user's access to one organization; position orders the login response's list."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "organization_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    role: Mapped[str] = mapped_column(String(10), default="member")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(back_populates="memberships")
    organization: Mapped[Organization] = relationship(lazy="joined")


class ApiKey(Base):
    """A user's API key; only a SHA-256 of the (high-entropy) key is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uid)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(12))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    user: Mapped[User] = relationship(lazy="joined")


class LoginThrottle(Base):
    """Failed-login counter for one userName or client address, shared by every API process."""

    __tablename__ = "login_throttles"

    scope: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
