"""Loading the student database from CSV files (operator command and demo seed)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from itertools import islice
from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from datalab.layouts import LayoutField
from datalab.layouts.cleansing import (
    clean_birth_date,
    clean_email,
    clean_gender,
    clean_hs_code,
    clean_phone,
    clean_state,
    clean_year,
    clean_zip,
)
from datalab.students.linkage import train_model
from datalab.students.matching import email_key, name_key, student_snapshot, zip5
from datalab.students.models import MatchModel, Student

STUDENT_COLUMNS = (
    "StudentKey",
    "FirstName",
    "LastName",
    "BirthDate",
    "Email",
    "ZipCode",
    "StateCode",
    "HSGradYear",
    "Address1",
    "City",
    "Phone",
    "HSCode",
    "Gender",
)
REQUIRED_COLUMNS = ("StudentKey", "FirstName", "LastName")
_BATCH = 10_000


class StudentFileError(ValueError):
    """A student file that cannot be loaded; the message names the row and the problem."""


@dataclass
class LoadResult:
    """What a load changed."""

    inserted: int = 0
    updated: int = 0


def _field(name: str, width: int, rule: str) -> LayoutField:
    return LayoutField(name=name, width=width, required=False, rule=rule)


_BIRTH = _field("BirthDate", 10, "birth_date")
_EMAIL = _field("Email", 254, "email")
_ZIP = _field("ZipCode", 10, "zip")
_STATE = _field("StateCode", 2, "state")
_YEAR = _field("HSGradYear", 4, "year")
_PHONE = _field("Phone", 10, "phone")
_HS_CODE = _field("HSCode", 6, "hs_code")
_GENDER = _field("Gender", 1, "gender")


def _student_values(row: dict[str, str], today: date) -> dict[str, str]:
    first, last = row["FirstName"].strip(), row["LastName"].strip()
    email = clean_email(row.get("Email", ""), _EMAIL, today=today).value
    zip_code = clean_zip(row.get("ZipCode", ""), _ZIP, today=today).value
    return {
        "first_name": first[:64],
        "last_name": last[:64],
        "birth_date": clean_birth_date(row.get("BirthDate", ""), _BIRTH, today=today).value,
        "email": email,
        "zip_code": zip_code,
        "state_code": clean_state(row.get("StateCode", ""), _STATE, today=today).value[:2],
        "hs_grad_year": clean_year(row.get("HSGradYear", ""), _YEAR, today=today).value,
        "email_key": email_key(email),
        "name_key": name_key(first, last),
        "zip5": zip5(zip_code),
        "address": row.get("Address1", "").strip()[:150],
        "city": row.get("City", "").strip()[:50],
        "phone": clean_phone(row.get("Phone", ""), _PHONE, today=today).value,
        "hs_code": clean_hs_code(row.get("HSCode", ""), _HS_CODE, today=today).value,
        "gender": clean_gender(row.get("Gender", ""), _GENDER, today=today).value,
    }


def read_student_file(path: Path) -> Iterator[dict[str, str]]:
    """The rows of a student CSV (UTF-8, header row naming at least StudentKey, FirstName, LastName)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in REQUIRED_COLUMNS if name not in (reader.fieldnames or [])]
        if missing:
            raise StudentFileError(f"{path.name}: the header row lacks {', '.join(missing)}")
        for row_number, row in enumerate(reader, start=2):
            if None in row or any(value is None for value in row.values()):
                raise StudentFileError(f"{path.name}, row {row_number}: wrong number of columns")
            if not all(row[name].strip() for name in REQUIRED_COLUMNS):
                raise StudentFileError(
                    f"{path.name}, row {row_number}: {', '.join(REQUIRED_COLUMNS)} are required"
                )
            yield row


def load_students(*, db: Session, rows: Iterable[dict[str, str]], now: datetime) -> LoadResult:
    """Insert or update students by StudentKey (text: leading zeros are kept), in bulk statements.

    A key repeated in the file is one student: its last row wins.
    """
    result = LoadResult()
    today = now.date()
    iterator = iter(rows)
    while batch := list(islice(iterator, _BATCH)):
        values = {row["StudentKey"].strip(): _student_values(row, today) for row in batch}
        existing = dict(
            db.execute(
                select(Student.student_key, Student.id).where(Student.student_key.in_(list(values)))
            ).all()
        )
        new = [
            {"student_key": key, "updated_at": now, **fields}
            for key, fields in values.items()
            if key not in existing
        ]
        changed = [
            {"id": existing[key], "updated_at": now, **fields}
            for key, fields in values.items()
            if key in existing
        ]
        if new:
            db.execute(insert(Student), new)
        if changed:
            db.execute(update(Student), changed)
        result.inserted += len(new)
        result.updated += len(batch) - len(new)
    return result


@dataclass
class TrainResult:
    """A newly stored matching model."""

    model_id: int
    student_count: int
    trained_at: datetime


def train_and_store(*, db: Session, now: datetime) -> TrainResult:
    """Estimate the matching model on the student database and store it (its splink settings JSON)."""
    snapshot = student_snapshot(db)
    settings = train_model(snapshot)
    model = MatchModel(settings=json.dumps(settings), student_count=snapshot.num_rows, trained_at=now)
    db.add(model)
    db.flush()
    return TrainResult(model_id=model.id, student_count=snapshot.num_rows, trained_at=now)
