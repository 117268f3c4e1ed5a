"""Synthetic upload files in the Standard Import Layout, for trying the pipeline and measuring it."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

ENROLLMENT_HEADER = (
    "UniqueID",
    "FirstName",
    "LastName",
    "Email",
    "CellPhoneNumber",
    "Address1",
    "City",
    "StateCode",
    "ZipCode",
    "Gender",
    "BirthDate",
    "EntryTerm",
    "EntryYear",
    "HSGradYear",
    "StudentType",
    "Inquired",
    "Applied",
    "Admitted",
    "Enrolled",
    "GPA",
    "HSCode",
    "ACTScore",
)
_FIRST = ("Ann", "Bo", "Carla", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivan", "June", "Kofi", "Lena")
_LAST = ("Lee", "Nguyen", "Garcia", "Smith", "O'Brien", "Kowalski", "Haddad", "Okafor", "Müller", "Rossi")
_STATES = (
    ("MA", "02134"),
    ("NJ", "07030"),
    ("MO", "63130"),
    ("TX", "78701"),
    ("CA", "94110"),
    ("PR", "00901"),
)
_TERMS = ("Fall", "Spring", "Summer")


def enrollment_rows(*, count: int, seed: int, entry_year: int = 2026) -> Iterator[list[str]]:
    """Deterministic enrollment records with the values real files carry (leading zeros, mixed formats)."""
    rng = random.Random(seed)
    for index in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        state, zip_code = rng.choice(_STATES)
        applied = rng.random() < 0.7
        yield [
            f"{index:08d}",
            first,
            last,
            f"{first.lower()}.{index}@example.edu",
            f"({rng.randint(200, 989)}) 555-{rng.randint(0, 9999):04d}",
            f"{rng.randint(1, 9999)} Main St",
            "Springfield",
            state,
            zip_code,
            # about 2% of the values are ones a person typed wrong: they are reported, not loaded
            rng.choice(("M", "F", "Female", "male", "", *(("X",) if rng.random() < 0.1 else ()))),
            f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/{rng.randint(2006, 2009)}",
            rng.choice(_TERMS),
            "" if rng.random() < 0.01 else str(entry_year),
            str(entry_year),
            rng.choice(("First-Year", "Transfer")),
            f"{entry_year - 1}-{rng.randint(1, 9):02d}-{rng.randint(1, 28):02d}",
            f"{entry_year - 1}-11-{rng.randint(1, 28):02d}" if applied else "",
            f"{entry_year}-03-{rng.randint(1, 28):02d}" if applied and rng.random() < 0.6 else "",
            "",
            f"{rng.uniform(2.0, 4.0):.2f}",
            f"{rng.randint(0, 999999):06d}",
            str(rng.randint(14, 36)),
        ]


def write_enrollment_csv(path: Path, *, count: int, seed: int = 1) -> int:
    """Write `count` synthetic enrollment records as a UTF-8 CSV; returns the record count."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(ENROLLMENT_HEADER)
        writer.writerows(enrollment_rows(count=count, seed=seed))
    return count
