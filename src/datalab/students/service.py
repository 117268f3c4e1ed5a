"""Loading the student database from CSV files (operator command and demo seed)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from itertools import islice
from pathlib import Path
from typing import Any, cast

import polars as pl
from sqlalchemy import Table, bindparam, func, select, text
from sqlalchemy.orm import Session

from datalab.accounts.models import User
from datalab.audit.service import record
from datalab.domain_errors import InvalidInput
from datalab.layouts import LayoutField
from datalab.layouts.cleansing import RULES
from datalab.pipeline.columnar import ColumnCleaner
from datalab.pipeline.readers import NOT_BLANK, WHITESPACE, column_names, parse_block, record_blocks
from datalab.pipeline.readers import _Fallback as _BlockTooLong
from datalab.students.linkage import EMATCH_FIELDS, from_fields, prepare, train_model
from datalab.students.matching import (
    _letters,
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
# A quoted field running on longer than this: the file is read by the row reader (which refuses it).
_MAX_RECORD_BYTES = 1024 * 1024
_STUDENTS_TABLE = cast(Table, Student.__table__)
# Distinct raw values whose cleaned form is remembered during one load (birth dates, ZIPs, codes...).
_CLEANED_CACHE_SIZE = 500_000


class StudentFileError(InvalidInput):
    """A student file that cannot be loaded; the message names the row and the problem."""

    code = "invalid_student_file"


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


class _NotColumnar(Exception):
    """polars cannot read this file exactly as read_student_file does (or the file has an error to name)."""


def _file_frames(path: Path) -> Iterator[pl.DataFrame]:
    """The rows of a student CSV as frames of text columns named as in STUDENT_COLUMNS, a few MiB each.

    Raises _NotColumnar for anything read_student_file would refuse or might read differently.
    """
    with path.open("rb") as stream:
        first_line = stream.readline()
    try:
        header_text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _NotColumnar from None
    header_rows = list(csv.reader(io.StringIO(header_text, newline="")))
    if len(header_rows) != 1 or not first_line.endswith(b"\n"):
        # a header spread over lines, or a file of one line: the row reader decides
        raise _NotColumnar
    header = header_rows[0]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise StudentFileError(f"{path.name}: the header row lacks {', '.join(missing)}")
    names = column_names(len(header))
    # csv.DictReader: a name repeated in the header takes the value of its last column
    position = {name: index for index, name in enumerate(header)}
    pick = [pl.col(names[position[name]]).alias(name) for name in STUDENT_COLUMNS if name in position]
    required = [pl.col(name).str.contains(NOT_BLANK) for name in REQUIRED_COLUMNS]
    try:
        for block in record_blocks(path, len(first_line), max_record=_MAX_RECORD_BYTES):
            try:
                frame = parse_block(block, names, ",")
            except pl.exceptions.PolarsError:
                raise _NotColumnar from None
            # polars reads a short row (and a blank line, which the row reader skips) as blank fields: every
            # row has all its fields when the separators outside the values number width - 1 a row
            inside = frame.select(
                pl.sum_horizontal(pl.all().str.count_matches(",", literal=True)).sum()
            ).item()
            if block.count(b",") - inside != frame.height * (len(names) - 1):
                raise _NotColumnar
            # a blank required value: the row reader names the row
            frame = frame.select(pick)
            if not frame.select(pl.all_horizontal(required).all()).item():
                raise _NotColumnar
            yield frame
    except _BlockTooLong:
        raise _NotColumnar from None


def _row_frames(rows: Iterable[dict[str, str]]) -> Iterator[pl.DataFrame]:
    """Rows (dicts by column name; an absent column is blank) as frames of STUDENT_COLUMNS."""
    iterator = iter(rows)
    while batch := list(islice(iterator, _BATCH)):
        yield pl.DataFrame(
            {name: [row.get(name) or "" for row in batch] for name in STUDENT_COLUMNS},
            schema=dict.fromkeys(STUDENT_COLUMNS, pl.String),
        )


def _per_value(series: pl.Series, function: Callable[[str], str]) -> pl.Series:
    """The function applied to each distinct value of a text column once."""
    distinct = series.unique()
    return series.replace_strict(
        distinct, [function(value) for value in distinct.to_list()], return_dtype=pl.String
    )


def _casefolded(series: pl.Series) -> pl.Series:
    # str.casefold: lower-casing is the same for ASCII; other text goes through Python
    other = series.str.contains(r"[^\x00-\x7f]")
    lowered = series.str.to_lowercase()
    if not other.any():
        return lowered
    return lowered.scatter(
        other.arg_true(),
        pl.Series([value.casefold() for value in series.filter(other).to_list()], dtype=pl.String),
    )


class _StudentColumns:
    """The stored columns of a frame of raw STUDENT_COLUMNS, cleaned by the rules of the row reader."""

    def __init__(self, today: date) -> None:
        self.cleaners = {
            field.name: ColumnCleaner(field, None, today)
            for field in (_BIRTH, _EMAIL, _ZIP, _STATE, _YEAR, _PHONE, _HS_CODE, _GENDER)
        }

    def __call__(self, raw: pl.DataFrame) -> pl.DataFrame:
        def column(name: str) -> pl.Series:
            if name in raw.columns:
                return raw.get_column(name).fill_null("")
            return pl.Series(name, [""] * raw.height, dtype=pl.String)

        def cleaned(name: str) -> pl.Series:
            return self.cleaners[name].clean(column(name))[0]

        def trimmed(name: str) -> pl.Series:
            return column(name).str.strip_chars(WHITESPACE)

        first, last = trimmed("FirstName"), trimmed("LastName")
        email, zip_code = cleaned("Email"), cleaned("ZipCode")
        first_letters, last_letters = _per_value(first, _letters), _per_value(last, _letters)
        keys = pl.DataFrame({"first": first_letters, "last": last_letters}).select(
            pl.when((pl.col("first") != "") & (pl.col("last") != ""))
            .then(pl.concat_str([pl.col("first"), pl.lit("|"), pl.col("last")]))
            .otherwise(pl.lit(""))
        )
        return pl.DataFrame(
            {
                "student_key": trimmed("StudentKey"),
                "first_name": first.str.slice(0, 64),
                "last_name": last.str.slice(0, 64),
                "birth_date": cleaned("BirthDate"),
                "email": email,
                "zip_code": zip_code,
                "state_code": cleaned("StateCode").str.slice(0, 2),
                "hs_grad_year": cleaned("HSGradYear"),
                "email_key": _casefolded(email.str.strip_chars(WHITESPACE)),
                "name_key": keys.to_series(),
                "zip5": _per_value(zip_code, zip5),
                "address": trimmed("Address1").str.slice(0, 150),
                "city": trimmed("City").str.slice(0, 50),
                "phone": cleaned("Phone"),
                "hs_code": cleaned("HSCode"),
                "gender": cleaned("Gender"),
            }
        )


_COLUMNS = (
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
)
_SET = ", ".join(f"{name} = excluded.{name}" for name in (*_COLUMNS[1:], "updated_at"))


def _upsert_postgresql(db: Session, frames: Iterable[pl.DataFrame], now: datetime) -> int:
    """COPY (CSV written by polars) into a temporary table, then one INSERT ... ON CONFLICT DO UPDATE."""
    connection = db.connection()
    names = ", ".join(_COLUMNS)
    # dropped at commit; a load that starts again (see load_student_file) starts from an empty table
    connection.exec_driver_sql("DROP TABLE IF EXISTS students_load")
    connection.exec_driver_sql(
        f"CREATE TEMPORARY TABLE students_load (row_number bigint, "
        f"{', '.join(f'{name} text' for name in _COLUMNS)}) ON COMMIT DROP"
    )
    driver = cast(Any, connection.connection.driver_connection)
    clean = _StudentColumns(now.date())
    rows = 0
    for raw in frames:
        values = clean(raw).with_row_index("row_number", offset=rows)
        rows += values.height
        data = io.BytesIO()
        values.write_csv(data, include_header=False)
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY students_load (row_number, {names}) FROM STDIN (FORMAT csv)") as copy,
        ):
            copy.write(data.getbuffer())
    # a key repeated in the file is one student: its last row wins (a sort of the load in memory)
    connection.exec_driver_sql("SET LOCAL work_mem = '256MB'")
    db.execute(
        text(
            f"INSERT INTO students ({names}, updated_at) "
            f"SELECT DISTINCT ON (student_key) {names}, :now FROM students_load "
            f"ORDER BY student_key, row_number DESC "
            f"ON CONFLICT (student_key) DO UPDATE SET {_SET}"
        ).bindparams(bindparam("now", type_=_STUDENTS_TABLE.c.updated_at.type)),
        {"now": now},
    )
    connection.exec_driver_sql("RESET work_mem")
    connection.exec_driver_sql("DROP TABLE students_load")
    return rows


def _upsert_sqlite(db: Session, frames: Iterable[pl.DataFrame], now: datetime) -> int:
    """One executemany of INSERT ... ON CONFLICT DO UPDATE per frame, in file order (the last row wins)."""
    connection = db.connection()
    # A page cache large enough for the indexes a million-row load walks (256 MiB; this connection).
    connection.exec_driver_sql("PRAGMA cache_size = -262144")
    # the load's one timestamp bound once, as the column's type would
    bind = _STUDENTS_TABLE.c.updated_at.type.bind_processor(connection.dialect)
    stamp = bind(now) if bind else now
    placeholders = ", ".join("?" for _ in range(len(_COLUMNS) + 1))
    statement = (
        f"INSERT INTO students ({', '.join(_COLUMNS)}, updated_at) VALUES ({placeholders}) "
        f"ON CONFLICT (student_key) DO UPDATE SET {_SET}"
    )
    clean = _StudentColumns(now.date())
    rows = 0
    for raw in frames:
        values = clean(raw)
        rows += values.height
        connection.exec_driver_sql(statement, [(*row, stamp) for row in values.iter_rows()])
    return rows


def _load_frames(db: Session, frames: Iterable[pl.DataFrame], now: datetime) -> int:
    if db.connection().dialect.name == "postgresql":
        return _upsert_postgresql(db, frames, now)
    return _upsert_sqlite(db, frames, now)


def _student_count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Student)) or 0


def load_students(*, db: Session, rows: Iterable[dict[str, str]], now: datetime) -> LoadResult:
    """Insert or update students by StudentKey (text: leading zeros are kept), in bulk statements.

    A key repeated in the rows is one student: its last row wins.
    """
    before = _student_count(db)
    total = _load_frames(db, _row_frames(rows), now)
    inserted = _student_count(db) - before
    return LoadResult(inserted=inserted, updated=total - inserted)


def load_student_file(
    *, db: Session, path: Path, now: datetime, by: User | None = None, name: str | None = None
) -> LoadResult:
    """Load a student CSV (see read_student_file) with load_students' rules, column by column.

    StudentFileError names the first row the file cannot be loaded from; the caller's transaction is then
    to be rolled back (all or nothing).
    """
    before = _student_count(db)
    try:
        total = _load_frames(db, _file_frames(path), now)
    except _NotColumnar:
        # the row reader reads the file again from its start, raising what it finds; the rows already
        # written are written again with the same values
        total = _load_frames(db, _row_frames(read_student_file(path)), now)
    inserted = _student_count(db) - before
    record(
        db,
        action="students.loaded",
        organization_id=None,
        now=now,
        actor=by,
        target=("students", ""),
        detail={"file": name or path.name, "inserted": inserted, "updated": total - inserted},
    )
    return LoadResult(inserted=inserted, updated=total - inserted)


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
    pairs: int,
    by: User | None = None,
) -> TrainResult:
    """Estimate the matching model on the student database and store it (its splink settings JSON),
    the u probabilities on at most ``pairs`` random pairs.

    ``people`` (link columns, e.g. from ``read_people_file``) adds EM estimation of the m probabilities
    on the pairs they form with the students; without them the m probabilities are the shipped model's.
    With ``snapshot_dir``, the student snapshot the matcher reads is stored there for the new model, so
    that the pipeline does not rebuild it.
    """
    snapshot = student_snapshot(db)
    settings = train_model(snapshot, people=prepare(people) if people is not None else None, pairs=pairs)
    model = MatchModel(settings=json.dumps(settings), student_count=snapshot.num_rows, trained_at=now)
    db.add(model)
    db.flush()
    record(
        db,
        action="students.model_trained",
        organization_id=None,
        now=now,
        actor=by,
        target=("match_model", str(model.id)),
        detail={"students": snapshot.num_rows, "withPeople": people is not None},
    )
    if snapshot_dir is not None:
        write_snapshot(snapshot_dir, snapshot_version(db), snapshot)
    return TrainResult(model_id=model.id, student_count=snapshot.num_rows, trained_at=now)


def load_and_train(
    *,
    db: Session,
    path: Path,
    now: datetime,
    snapshot_dir: Path,
    train: bool,
    pairs: int,
    by: User | None = None,
    name: str | None = None,
) -> tuple[LoadResult, TrainResult | None]:
    """Load a student CSV (all or nothing), then train the matcher on the result when asked (the u
    probabilities on at most ``pairs`` random pairs)."""
    result = load_student_file(db=db, path=path, now=now, by=by, name=name)
    if not train:
        return result, None
    db.flush()
    return result, train_and_store(db=db, now=now, snapshot_dir=snapshot_dir, pairs=pairs, by=by)
