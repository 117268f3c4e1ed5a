"""Matching people of an eMatch file against the student database, behind a small interface.

``ProbabilisticMatcher`` (the default) scores candidate students with a Fellegi-Sunter model (splink on
DuckDB) and applies deterministic guards, see ``datalab.students.linkage``. It reads a snapshot of the
student database that is built once per state of the database (a load, an update or a newly trained
model) and reused for every file.

The rule matcher compares normalized forms, strongest rule first: the email address, then first and last
name with the birth date, then first and last name with the 5-digit ZIP. A rule that finds more than one
student is ambiguous and does not match (a wrong match is worse than none).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from datalab.students.linkage import LINK_COLUMNS, StudentIndex, default_model, prepare_table, raw_table
from datalab.students.models import MatchModel, Student


def email_key(email: str) -> str:
    """An email address as compared: trimmed and case-folded."""
    return email.strip().casefold()


@functools.lru_cache(maxsize=100_000)
def _letters(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if char.isalpha())


def name_key(first_name: str, last_name: str) -> str:
    """A name as compared: letters only, accents and case removed (``O'Brien`` and ``obrien`` agree)."""
    first, last = _letters(first_name), _letters(last_name)
    return f"{first}|{last}" if first and last else ""


def zip5(zip_code: str) -> str:
    """The 5-digit US ZIP of a postal code, or "" when it has none."""
    digits = zip_code.strip().split("-", 1)[0]
    return digits if len(digits) == 5 and digits.isdigit() else ""


@dataclass(frozen=True)
class Person:
    """Who an eMatch row describes, as cleansed."""

    first_name: str
    last_name: str
    birth_date: str = ""
    email: str = ""
    zip_code: str = ""
    address: str = ""
    city: str = ""
    phone: str = ""
    hs_code: str = ""
    gender: str = ""


@dataclass(frozen=True)
class Match:
    """The student a person matched, the rule that matched them, how sure and on what evidence.

    ``duplicate_keys`` are other student records of the same person (same email, birth date and ZIP).
    """

    student_id: int
    student_key: str
    rule: str
    probability: float = 1.0
    evidence: str = ""
    duplicate_keys: tuple[str, ...] = field(default=())


class Matcher(Protocol):
    """Finds the student each person is, if any; the answer lists one entry per person, in order."""

    # The match probability a match needs (1 for deterministic rules).
    threshold: float

    def match(self, *, db: Session, people: Sequence[Person]) -> list[Match | None]: ...


class RuleMatcher:
    """Deterministic matching on normalized email, name + birth date, and name + ZIP."""

    threshold = 1.0

    def match(self, *, db: Session, people: Sequence[Person]) -> list[Match | None]:
        """Match a batch of people with one query for the whole batch."""
        emails = {email_key(person.email) for person in people if person.email.strip()}
        names = {name_key(person.first_name, person.last_name) for person in people} - {""}
        if not emails and not names:
            return [None] * len(people)
        candidates = db.scalars(
            select(Student).where(or_(Student.email_key.in_(emails), Student.name_key.in_(names)))
        ).all()
        by_email: dict[str, list[Student]] = {}
        by_name_birth: dict[tuple[str, str], list[Student]] = {}
        by_name_zip: dict[tuple[str, str], list[Student]] = {}
        for student in candidates:
            if student.email_key:
                by_email.setdefault(student.email_key, []).append(student)
            if student.birth_date:
                by_name_birth.setdefault((student.name_key, student.birth_date), []).append(student)
            if student.zip5:
                by_name_zip.setdefault((student.name_key, student.zip5), []).append(student)
        results: list[Match | None] = []
        for person in people:
            name = name_key(person.first_name, person.last_name)
            attempts = (
                ("email", by_email.get(email_key(person.email), []) if person.email.strip() else []),
                ("name_birth_date", by_name_birth.get((name, person.birth_date), []) if name else []),
                ("name_zip", by_name_zip.get((name, zip5(person.zip_code)), []) if name else []),
            )
            found = next(((rule, hits[0]) for rule, hits in attempts if len(hits) == 1), None)
            results.append(
                Match(student_id=found[1].id, student_key=found[1].student_key, rule=found[0])
                if found
                else None
            )
        return results


_SNAPSHOT_COLUMNS = (
    Student.id,
    Student.first_name,
    Student.last_name,
    Student.birth_date,
    Student.email,
    Student.zip_code,
    Student.address,
    Student.city,
    Student.phone,
    Student.hs_code,
    Student.gender,
)
_SNAPSHOT_BATCH = 50_000


def student_snapshot(db: Session) -> pa.Table:
    """Every student as the prepared table the model compares (``unique_id`` is the student's id)."""
    parts = []
    # A Core statement on the session's connection: rows come as plain tuples, without ORM loading.
    # (The option is the statement's: on the connection it would outlive this query.)
    result = db.connection().execute(
        select(*_SNAPSHOT_COLUMNS).order_by(Student.id).execution_options(yield_per=_SNAPSHOT_BATCH)
    )
    for rows in result.partitions():
        columns = list(zip(*rows, strict=True))
        raw = {"unique_id": pa.array(columns[0], pa.int64())}
        for name, values in zip(LINK_COLUMNS[:10], columns[1:], strict=True):
            raw[name] = pa.array(values, pa.string())
        raw["identifier"] = pa.nulls(len(rows), pa.string())
        parts.append(prepare_table(pa.table(raw)))
    if not parts:
        return prepare_table(raw_table([]))
    return pa.concat_tables(parts)


def current_model(db: Session) -> tuple[int, dict[str, Any]]:
    """The model in use: the newest trained one (its id), else the shipped one (id 0)."""
    stored = db.scalars(select(MatchModel).order_by(MatchModel.id.desc()).limit(1)).first()
    if stored is None:
        return 0, default_model()
    settings: dict[str, Any] = json.loads(stored.settings)
    return stored.id, settings


def matching_dir(settings: Any) -> Path:
    """Where the student snapshot is stored under these settings (inside the data directory)."""
    home: Path = settings.home
    return home / "matching"


def snapshot_version(db: Session) -> tuple[int, int, str]:
    """What the snapshot depends on: the model in use, the number of students and their latest update."""
    model_id = db.scalar(select(func.max(MatchModel.id))) or 0
    count, updated = db.execute(select(func.count(Student.id), func.max(Student.updated_at))).one()
    return model_id, int(count), updated.strftime("%Y%m%dT%H%M%S%f") if updated else "none"


def _snapshot_file(directory: Path, version: tuple[int, int, str]) -> Path:
    model_id, count, updated = version
    return directory / f"students-{model_id}-{count}-{updated}.parquet"


def write_snapshot(directory: Path, version: tuple[int, int, str], snapshot: pa.Table) -> Path:
    """Store a snapshot for this state of the database (replacing older ones), for every process to read."""
    directory.mkdir(parents=True, exist_ok=True)
    target = _snapshot_file(directory, version)
    partial = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    pq.write_table(snapshot, partial)
    partial.replace(target)
    for older in directory.glob("students-*.parquet"):
        if older != target:
            older.unlink(missing_ok=True)
    return target


def read_snapshot(db: Session, directory: Path | None) -> tuple[tuple[int, int, str], pa.Table]:
    """The snapshot of the database's current state: the stored file if any, else built (and stored)."""
    version = snapshot_version(db)
    if directory is not None:
        try:
            return version, pq.read_table(_snapshot_file(directory, version))
        except FileNotFoundError:  # not written yet, or replaced by a newer state meanwhile
            pass
    snapshot = student_snapshot(db)
    if directory is not None:
        write_snapshot(directory, version, snapshot)
    return version, snapshot


class ProbabilisticMatcher:
    """splink's Fellegi-Sunter model plus deterministic guards (``datalab.students.linkage``).

    The student snapshot is kept between files and replaced only when the student database or the model
    changed (another count of students, a later update, a newer model). Loading students writes the new
    snapshot to ``snapshot_dir``, where every process finds it instead of rebuilding it from the database.
    Safe to share between threads.
    """

    def __init__(self, *, threshold: float, snapshot_dir: Path | None = None) -> None:
        self.threshold = threshold
        self.snapshot_dir = snapshot_dir
        self._lock = threading.Lock()
        self._version: tuple[Any, ...] | None = None
        self._index: StudentIndex | None = None

    def _current_index(self, db: Session) -> StudentIndex:
        version = snapshot_version(db)
        if self._index is None or version != self._version:
            if self._index is not None:
                self._index.close()
                self._index = None
            version, snapshot = read_snapshot(db, self.snapshot_dir)
            _, settings = current_model(db)
            self._index = StudentIndex(snapshot, settings, threshold=self.threshold)
            self._version = version
        return self._index

    def close(self) -> None:
        """Release the snapshot."""
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None
                self._version = None

    def match(self, *, db: Session, people: Sequence[Person]) -> list[Match | None]:
        """Match people in one linkage run (pass large batches: each run scans the snapshot's blocks)."""
        if not people:
            return []
        raw = raw_table(
            {
                "first_name": p.first_name,
                "last_name": p.last_name,
                "birth_date": p.birth_date,
                "email": p.email,
                "zip_code": p.zip_code,
                "address": p.address,
                "city": p.city,
                "phone": p.phone,
                "hs_code": p.hs_code,
                "gender": p.gender,
            }
            for p in people
        )
        with self._lock:
            index = self._current_index(db)
            decisions = index.link(prepare_table(raw))
        ids = {d.student for d in decisions if d.student is not None}
        ids |= {dup for d in decisions for dup in d.duplicates}
        keys: dict[int, str] = {}
        wanted = sorted(ids)
        for start in range(0, len(wanted), 5000):
            chunk = wanted[start : start + 5000]
            keys.update(
                db.execute(select(Student.id, Student.student_key).where(Student.id.in_(chunk))).all()
            )
        results: list[Match | None] = []
        for decision in decisions:
            if decision.student is None or decision.student not in keys:
                results.append(None)
                continue
            # One person recorded as several students resolves to the lowest key; the others are reported.
            (chosen_key, chosen), *others = sorted(
                (keys[student], student)
                for student in (decision.student, *decision.duplicates)
                if student in keys
            )
            results.append(
                Match(
                    student_id=chosen,
                    student_key=chosen_key,
                    rule="probabilistic",
                    probability=decision.probability,
                    evidence=decision.evidence,
                    duplicate_keys=tuple(key for key, _ in others),
                )
            )
        return results
