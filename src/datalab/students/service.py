"""Loading the student database from CSV files (operator command and demo seed)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from itertools import islice
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, select, text, update
from sqlalchemy.orm import Session

from datalab.layouts import LayoutField
from datalab.layouts.cleansing import RULES, clean_email, clean_phone
from datalab.students.linkage import EMATCH_FIELDS, from_fields, prepare, train_model
from datalab.students.matching import (
    email_key,
    name_key,
    snapshot_version,
    student_snapshot,
    write_snapshot,
    zip5,
)
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
# Core inserts (not ORM ones): a load is a bulk statement per batch.
_STUDENTS_TABLE = cast(Table, Student.__table__)
# Distinct raw values whose cleaned form is remembered during one load (birth dates, ZIPs, codes...).
_CLEANED_CACHE_SIZE = 500_000


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


class _Cleaner:
    """The student columns' cleansing rules, each distinct raw value cleaned once per load."""

    def __init__(self, today: date) -> None:
        self.today = today
        self.cache: dict[tuple[str, str], str] = {}

    def __call__(self, field: LayoutField, raw: str) -> str:
        key = (field.name, raw)
        cleaned = self.cache.get(key)
        if cleaned is None:
            cleaned = RULES[field.rule](raw, field, today=self.today).value
            if len(self.cache) < _CLEANED_CACHE_SIZE:
                self.cache[key] = cleaned
        return cleaned


def _student_values(row: dict[str, str], clean: _Cleaner) -> dict[str, str]:
    first, last = row["FirstName"].strip(), row["LastName"].strip()
    email = clean_email(row.get("Email", ""), _EMAIL, today=clean.today).value
    zip_code = clean(_ZIP, row.get("ZipCode", ""))
    return {
        "first_name": first[:64],
        "last_name": last[:64],
        "birth_date": clean(_BIRTH, row.get("BirthDate", "")),
        "email": email,
        "zip_code": zip_code,
        "state_code": clean(_STATE, row.get("StateCode", ""))[:2],
        "hs_grad_year": clean(_YEAR, row.get("HSGradYear", "")),
        "email_key": email_key(email),
        "name_key": name_key(first, last),
        "zip5": zip5(zip_code),
        "address": row.get("Address1", "").strip()[:150],
        "city": row.get("City", "").strip()[:50],
        "phone": clean_phone(row.get("Phone", ""), _PHONE, today=clean.today).value,
        "hs_code": clean(_HS_CODE, row.get("HSCode", "")),
        "gender": clean(_GENDER, row.get("Gender", "")),
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


_INSERT_COLUMNS = (
    "student_key",
    "first_name",
    "last_name",
    "birth_date",
    "email",
    "zip_code",
    "state_code",
    "hs_grad_year",
    "email_key",
    "name_key",
    "zip5",
    "address",
    "city",
    "phone",
    "hs_code",
    "gender",
    "updated_at",
)


def _insert_students(db: Session, rows: list[dict[str, Any]]) -> None:
    """Insert new students in one bulk operation: COPY on PostgreSQL, one executemany on SQLite."""
    connection = db.connection()
    names = ", ".join(_INSERT_COLUMNS)
    if connection.dialect.name == "postgresql":
        driver = cast(Any, connection.connection.driver_connection)
        with driver.cursor() as cursor, cursor.copy(f"COPY students ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[name] for name in _INSERT_COLUMNS])
        return
    # The driver's executemany with plain tuples; the one timestamp of the batch bound once, as the
    # column's type would.
    bind = _STUDENTS_TABLE.c.updated_at.type.bind_processor(connection.dialect)
    stamps = {id(row["updated_at"]): row["updated_at"] for row in rows}
    bound = {key: bind(value) if bind else value for key, value in stamps.items()}
    placeholders = ", ".join("?" for _ in _INSERT_COLUMNS)
    connection.exec_driver_sql(
        f"INSERT INTO students ({names}) VALUES ({placeholders})",
        [
            tuple(bound[id(row[name])] if name == "updated_at" else row[name] for name in _INSERT_COLUMNS)
            for row in rows
        ],
    )


def load_students(*, db: Session, rows: Iterable[dict[str, str]], now: datetime) -> LoadResult:
    """Insert or update students by StudentKey (text: leading zeros are kept), in bulk statements.

    A key repeated in the file is one student: its last row wins.
    """
    result = LoadResult()
    if db.connection().dialect.name == "sqlite":
        # A page cache large enough for the indexes a million-row load walks (256 MiB; this connection).
        db.execute(text("PRAGMA cache_size = -262144"))
    clean = _Cleaner(now.date())
    iterator = iter(rows)
    while batch := list(islice(iterator, _BATCH)):
        values = {row["StudentKey"].strip(): _student_values(row, clean) for row in batch}
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
            _insert_students(db, new)
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


def read_people_file(path: Path, *, today: date) -> Iterator[dict[str, str]]:
    """The people of an eMatch-shaped CSV (layout field names as headers) as link columns, dates cleaned."""
    clean = _Cleaner(today)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            values = {name: (value or "") for name, value in row.items() if name is not None}
            values["BirthDate"] = clean(_BIRTH, values.get("BirthDate", ""))
            values["ZipCode"] = clean(_ZIP, values.get("ZipCode", ""))
            yield from_fields(values, EMATCH_FIELDS)


def train_and_store(
    *,
    db: Session,
    now: datetime,
    snapshot_dir: Path | None = None,
    people: Iterable[dict[str, str]] | None = None,
) -> TrainResult:
    """Estimate the matching model on the student database and store it (its splink settings JSON).

    ``people`` (link columns, e.g. from ``read_people_file``) adds EM estimation of the m probabilities
    on the pairs they form with the students; without them the m probabilities are the shipped model's.
    With ``snapshot_dir``, the student snapshot the matcher reads is stored there for the new model, so
    that the pipeline does not rebuild it.
    """
    snapshot = student_snapshot(db)
    settings = train_model(snapshot, people=prepare(people) if people is not None else None)
    model = MatchModel(settings=json.dumps(settings), student_count=snapshot.num_rows, trained_at=now)
    db.add(model)
    db.flush()
    if snapshot_dir is not None:
        write_snapshot(snapshot_dir, snapshot_version(db), snapshot)
    return TrainResult(model_id=model.id, student_count=snapshot.num_rows, trained_at=now)
