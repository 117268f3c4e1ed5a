"""A student file loaded column by column: what its rows give one by one, the same rows refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from datalab.db import utcnow
from datalab.students.models import Student
from datalab.students.service import (
    LoadResult,
    StudentFileError,
    load_student_file,
    load_students,
    read_student_file,
)
from tests.support.databases import DatabaseFactory

HEADER = (
    "StudentKey,FirstName,LastName,BirthDate,Email,ZipCode,StateCode,HSGradYear,"
    "Address1,City,Phone,HSCode,Gender"
)
ROWS = (
    "007,Ann,O'Brien,4/1/2008,Ann.OBrien@Example.edu,2134,mass,2026,"
    " 1 Main St ,Boston,(555) 123-4567 x12,12345,f\r\n"
    "008,  Zoë ,Straße,2008-13-01,bad @x,02134-1234,CA,26,,,555-1234,123456,M\r\n"
    '007,Anne,"O,Brien",,ÉLAN@Example.FR,,,,,,,,\r\n'
    '009,"Multi\nLine",Lee,,,,,,,,,,\r\n'
)


def _stored(db: Session) -> list[tuple[object, ...]]:
    columns = [c for c in Student.__table__.columns if c.name not in ("id", "updated_at")]
    return sorted(tuple(getattr(s, c.name) for c in columns) for s in db.scalars(select(Student)))


@pytest.mark.parametrize("blank_line", [False, True], ids=["columnar", "row-reader"])
def test_a_file_loads_as_its_rows_do(
    tmp_path: Path, database_factory: DatabaseFactory, blank_line: bool
) -> None:
    path = tmp_path / "students.csv"
    # a blank line is skipped by the csv module: such a file is read again row by row
    path.write_text("\ufeff" + HEADER + "\r\n" + ROWS + ("\r\n" if blank_line else ""), encoding="utf-8")
    results, stored = [], []
    for load_file in (False, True):
        (tmp_path / str(load_file)).mkdir()
        engine = create_engine(database_factory.migrated_url(tmp_path / str(load_file)))
        try:
            with Session(engine) as db:
                if load_file:
                    results.append(load_student_file(db=db, path=path, now=utcnow()))
                else:
                    results.append(load_students(db=db, rows=read_student_file(path), now=utcnow()))
                db.commit()
                stored.append(_stored(db))
        finally:
            engine.dispose()
    # the repeated key is one student, its last row wins
    assert results == [LoadResult(inserted=3, updated=1)] * 2
    assert stored[0] == stored[1]
    by_key = {row[0]: row for row in stored[1]}
    assert by_key["007"][1:3] == ("Anne", "O,Brien")
    assert by_key["007"][4] == by_key["007"][8] == "élan@example.fr"
    assert by_key["008"][1:3] == ("Zoë", "Straße")
    assert (by_key["008"][5], by_key["008"][9], by_key["008"][10]) == ("02134-1234", "zoe|strasse", "02134")
    assert by_key["009"][1] == "Multi\nLine"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("FirstName,LastName\nAnn,Lee\n", "bad.csv: the header row lacks StudentKey"),
        ("StudentKey,FirstName,LastName,City\n1,a,b,c\n2,a,b\n", "bad.csv, row 3: wrong number of columns"),
        ("StudentKey,FirstName,LastName\n1,a,b\n2,a,b,c\n", "bad.csv, row 3: wrong number of columns"),
        (
            "StudentKey,FirstName,LastName\n1,a,b\n2, ,b\n",
            "bad.csv, row 3: StudentKey, FirstName, LastName are required",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_its_row(
    tmp_path: Path, database_factory: DatabaseFactory, body: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body, encoding="utf-8")
    engine = create_engine(database_factory.migrated_url(tmp_path))
    try:
        with Session(engine) as db, pytest.raises(StudentFileError) as refused:
            load_student_file(db=db, path=path, now=utcnow())
        assert str(refused.value) == message
    finally:
        engine.dispose()
