"""The data provider's student database, which eMatch files are matched against."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from datalab.db import Base, UTCDateTime, utcnow


class Student(Base):
    """A student known to the provider; the *_key columns are the normalized forms the matcher compares."""

    __tablename__ = "students"
    __table_args__ = (
        Index("ix_students_name_birth", "name_key", "birth_date"),
        Index("ix_students_name_zip", "name_key", "zip5"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The provider's identifier, text so that leading zeros survive.
    student_key: Mapped[str] = mapped_column(String(50), unique=True)
    first_name: Mapped[str] = mapped_column(String(64))
    last_name: Mapped[str] = mapped_column(String(64))
    birth_date: Mapped[str] = mapped_column(String(10), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    zip_code: Mapped[str] = mapped_column(String(10), default="")
    state_code: Mapped[str] = mapped_column(String(2), default="")
    hs_grad_year: Mapped[str] = mapped_column(String(4), default="")
    email_key: Mapped[str] = mapped_column(String(254), default="", index=True)
    name_key: Mapped[str] = mapped_column(String(130), default="")
    zip5: Mapped[str] = mapped_column(String(5), default="")
    # Optional fields the probabilistic matcher compares when both sides have them.
    address: Mapped[str] = mapped_column(String(150), default="")
    city: Mapped[str] = mapped_column(String(50), default="")
    phone: Mapped[str] = mapped_column(String(10), default="")
    hs_code: Mapped[str] = mapped_column(String(6), default="")
    gender: Mapped[str] = mapped_column(String(1), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MatchModel(Base):
    """A trained matching model: splink's settings JSON, when it was trained and on how many students.

    The newest row is the model in use; without any, the model shipped with the package is.
    """

    __tablename__ = "match_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    settings: Mapped[str] = mapped_column(Text)
    student_count: Mapped[int] = mapped_column(Integer)
    trained_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
