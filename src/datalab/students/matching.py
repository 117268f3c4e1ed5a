"""Matching people of an eMatch file against the student database, behind a small interface.

The rule matcher compares normalized forms, strongest rule first: the email address, then first and last
name with the birth date, then first and last name with the 5-digit ZIP. A rule that finds more than one
student is ambiguous and does not match (a wrong match is worse than none).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from datalab.students.models import Student


def email_key(email: str) -> str:
    """An email address as compared: trimmed and case-folded."""
    return email.strip().casefold()


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


@dataclass(frozen=True)
class Match:
    """The student a person matched and the rule that matched them."""

    student_id: int
    student_key: str
    rule: str


class Matcher(Protocol):
    """Finds the student each person is, if any; the answer lists one entry per person, in order."""

    def match(self, *, db: Session, people: Sequence[Person]) -> list[Match | None]: ...


class RuleMatcher:
    """Deterministic matching on normalized email, name + birth date, and name + ZIP."""

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
