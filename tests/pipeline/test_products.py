"""Each product end to end through the HTTP API, down to the production rows it leaves behind, on a live
server: the eMatch export is downloaded by a client that sends no headers of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from datalab.accounts.models import Organization
from datalab.db import utcnow
from datalab.demo.service import demo_students
from datalab.pipeline.staging import staging_for
from datalab.records.models import AffinityRecord, EmatchResult, EnrollmentRecord, EnrollmentTerm
from datalab.records.service import EMATCH_EXPORT_COLUMNS
from datalab.students.models import Student
from datalab.students.service import STUDENT_COLUMNS, load_students
from datalab.uploads.models import Upload
from tests.conftest import ServerFactory
from tests.support.accounts import login_as, unique
from tests.support.exports import bare_client, download_url, parse_csv
from tests.support.factories import add_account, add_organization
from tests.support.server import LiveServer, LoggedIn
from tests.support.uploads import upload_and_wait, upload_row


@pytest.fixture(scope="module")
def working(make_server: ServerFactory) -> LiveServer:
    """A server running two pipeline workers that look for work every 0.1 s."""
    return make_server(pipeline_workers="2", pipeline_poll_seconds="0.1")


@pytest.fixture(scope="module")
def demo(working: LiveServer) -> LoggedIn:
    return working.login()


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30) as client:
        yield client


def _done(
    client: httpx2.Client, server: LiveServer, logged_in: LoggedIn, content: bytes, **extra: Any
) -> dict[str, Any]:
    """Upload a file, wait for it to be `done`, and check its staged rows were cleared."""
    record = upload_and_wait(client, server, logged_in, content, **extra)
    assert (record["status"], record["error"]) == ("done", None), record
    upload_id = upload_row(server, record["id"]).id
    with server.db() as db:
        staged = staging_for(db).count(upload_id)
    assert staged == 0
    return record


def _enrollment(server: LiveServer, entry_year: str) -> list[tuple[str, str, str, str]]:
    """(organization uid, upload uid, UniqueID, EntryTerm) of every enrollment record of an entry year."""
    with server.db() as db:
        rows = db.execute(
            select(Organization.uid, Upload.uid, EnrollmentRecord.unique_id, EnrollmentRecord.entry_term)
            .join(Upload, Upload.id == EnrollmentRecord.upload_id)
            .join(Organization, Organization.id == EnrollmentRecord.organization_id)
            .where(EnrollmentRecord.entry_year == entry_year)
        ).all()
        found = [(org_uid, uid, unique_id, term) for org_uid, uid, unique_id, term in rows]
    return sorted(found)


def _enrollment_record(server: LiveServer, upload_uid: str, unique_id: str) -> object:
    """The record of an upload's enrollment row, parsed."""
    with server.db() as db:
        record = db.scalars(
            select(EnrollmentRecord.record).where(
                EnrollmentRecord.upload_id == upload_row(server, upload_uid).id,
                EnrollmentRecord.unique_id == unique_id,
            )
        ).one()
    return json.loads(record)


def _terms(server: LiveServer, entry_year: str) -> list[tuple[str, str, str]]:
    """(organization uid, upload uid, EntryTerm) of the enrollment terms recorded for an entry year."""
    with server.db() as db:
        rows = db.execute(
            select(Organization.uid, Upload.uid, EnrollmentTerm.entry_term)
            .join(Upload, Upload.id == EnrollmentTerm.upload_id)
            .join(Organization, Organization.id == EnrollmentTerm.organization_id)
            .where(EnrollmentTerm.entry_year == entry_year)
        ).all()
        found = [(org_uid, uid, term) for org_uid, uid, term in rows]
    return sorted(found)


def test_an_enrollment_file_replaces_the_same_terms_of_its_organization_only(
    client: httpx2.Client, working: LiveServer, demo: LoggedIn
) -> None:
    org = demo.organization_uid
    first = _done(
        client,
        working,
        demo,
        b"UniqueID,EntryYear,EntryTerm,Applied\r\n"
        b"00001,2027,Fall,2026/10/01\r\n"
        b"00002,2027,FA27,2026/10/02\r\n"
        b"00003,2027,Spring,2026/10/03\r\n",
    )
    assert (first["meta"]["loadedRows"], first["meta"]["replacedRows"]) == (3, 0)
    # Another organization's records of the same term are its own business.
    other_organization = add_organization(working, name=unique("Other College"))
    other = login_as(working, add_account(working, organization_uids=[other_organization.uid]))
    theirs = _done(
        client, working, other, b"UniqueID,EntryYear,EntryTerm,Applied\r\n00001,2027,Fall,2026/09/01\r\n"
    )
    assert _enrollment(working, "2027") == sorted(
        [
            (org, first["id"], "00001", "FALL"),
            (org, first["id"], "00002", "FALL"),
            (org, first["id"], "00003", "SPRING"),
            (other_organization.uid, theirs["id"], "00001", "FALL"),
        ]
    )

    second = _done(
        client,
        working,
        demo,
        b"UniqueID,EntryYear,EntryTerm,Enrolled\r\n00001,2027,Fall,2027/08/20\r\n00009,2027,Fall,2027/08/21\r\n",
    )
    assert (second["meta"]["loadedRows"], second["meta"]["replacedRows"]) == (2, 2)
    assert _enrollment(working, "2027") == sorted(
        [
            (org, first["id"], "00003", "SPRING"),
            (org, second["id"], "00001", "FALL"),
            (org, second["id"], "00009", "FALL"),
            (other_organization.uid, theirs["id"], "00001", "FALL"),
        ]
    )
    # the terms each upload still holds: what a later file of the term replaces
    assert _terms(working, "2027") == sorted(
        [
            (org, first["id"], "SPRING"),
            (org, second["id"], "FALL"),
            (other_organization.uid, theirs["id"], "FALL"),
        ]
    )
    assert _enrollment_record(working, second["id"], "00001") == {
        "UniqueID": "00001",
        "EntryTerm": "FALL",
        "EntryYear": "2027",
        "Enrolled": "2027/08/20",
    }


AFFINITY_CSV = (
    b"FirstName,LastName,Address1,City,StateCode,ZipCode,Email\r\n"
    b"Ann,Lee,1 Main St,Boston,Massachusetts,2134,ANN@Example.EDU\r\n"
    b"Bo,Diaz,2 Elm St,Wichita,KS,67202,\r\n"
)


@pytest.mark.parametrize("product_type", ["affinity", "legacy"])
def test_an_affinity_file_adds_its_people(
    client: httpx2.Client, working: LiveServer, demo: LoggedIn, product_type: str
) -> None:
    record = _done(client, working, demo, AFFINITY_CSV, file_name="people.csv", product_type=product_type)
    assert record["productType"] == "affinity"
    assert record["meta"]["loadedRows"] == 2
    upload = upload_row(working, record["id"])
    with working.db() as db:
        rows = db.scalars(
            select(AffinityRecord)
            .where(AffinityRecord.upload_id == upload.id)
            .order_by(AffinityRecord.row_number)
        ).all()
        stored = [
            (row.organization_id, row.row_number, row.unique_id, json.loads(row.record)) for row in rows
        ]
    assert stored == [
        (
            upload.organization_id,
            2,
            "",
            {
                "FirstName": "Ann",
                "LastName": "Lee",
                "Email": "ann@example.edu",
                "Address1": "1 Main St",
                "City": "Boston",
                "StateCode": "MA",
                "ZipCode": "02134",
            },
        ),
        (
            upload.organization_id,
            3,
            "",
            {
                "FirstName": "Bo",
                "LastName": "Diaz",
                "Address1": "2 Elm St",
                "City": "Wichita",
                "StateCode": "KS",
                "ZipCode": "67202",
            },
        ),
    ]


STUDENTS = [
    ("000101", "Ann", "Lee", "2008-04-01", "ann.lee@example.com", "02134", "MA", "2026"),
    ("000102", "Bo", "Diaz", "2008-05-02", "bo@example.com", "67202", "KS", "2026"),
    ("000103", "Cy", "Park", "2007-06-03", "cy@example.com", "10001", "NY", "2025"),
    # Two students nobody can tell apart without an email: same name, birth date and ZIP.
    ("000104", "Sam", "Smith", "2008-07-04", "sam1@example.com", "30301", "GA", "2026"),
    ("000105", "Sam", "Smith", "2008-07-04", "sam2@example.com", "30301", "GA", "2026"),
    # One person recorded twice (same email, birth date and ZIP): a duplicate, not an ambiguity.
    ("000106", "Dee", "Ray", "2008-07-31", "dee.ray@example.com", "60601", "IL", "2026"),
    ("000107", "Dee", "Ray", "2008-07-31", "dee.ray@example.com", "60601", "IL", "2026"),
    # A twin whose brother is not in the database (same family email, birth date and ZIP).
    ("000108", "Liam", "Tran", "2008-03-03", "tran.family@example.com", "73301", "TX", "2026"),
    ("000109", "Michael", "Jordan-Reyes", "2008-09-09", "mjr@example.com", "94105", "CA", "2026"),
]
EMATCH_CSV = (
    b"UniqueID,FirstName,LastName,BirthDate,Email,Address1,ZipCode\r\n"
    # A typo in each name, the email of 000101 (in another case) and its birth date.
    b"U1,Anna,Li,2008-04-01,Ann.Lee@Example.com,,\r\n"
    # 000102's name and birth date, another email.
    b"U2,Bo,Diaz,05/02/2008,bo.d@other.org,,\r\n"
    # 000103's name and ZIP (as ZIP+4), but another birth date and no email: a namesake.
    b"U3,CY,park,2007-01-01,,5 Oak St,10001-1234\r\n"
    # Both Sam Smiths fit equally: ambiguous, so no match.
    b"U4,Sam,Smith,2008-07-04,,7 Pine St,30301\r\n"
    # Nobody.
    b"U5,Zed,Unknown,2009-01-01,zed@example.com,,\r\n"
    # A day-first birth date; the person is recorded twice in the database.
    b"U6,Dee,Ray,31/07/2008,dee.ray@example.com,,60601\r\n"
    # 000108's twin: same family, another first name.
    b"U7,Noah,Tran,2008-03-03,tran.family@example.com,,73301\r\n"
    # A nickname, one part of the compound surname, and a birth date nobody can read (kept, with a warning).
    b"U8,Mike,Reyes,not a date,mjr@example.com,,94105\r\n"
)


def _load_students(server: LiveServer) -> int:
    """Load STUDENTS into the student database: how many were inserted."""
    columns = STUDENT_COLUMNS[:8]
    with server.db() as db:
        loaded = load_students(
            db=db, rows=[dict(zip(columns, row, strict=True)) for row in STUDENTS], now=utcnow()
        )
        db.commit()
    return loaded.inserted


def _ematch_results(server: LiveServer, upload_uid: str) -> list[tuple[Any, ...]]:
    """(row number, UniqueID, matched by, student key, probability) of each row of an eMatch file."""
    upload = upload_row(server, upload_uid)
    with server.db() as db:
        results = db.execute(
            select(
                EmatchResult.row_number,
                EmatchResult.unique_id,
                EmatchResult.matched_by,
                Student.student_key,
                EmatchResult.match_probability,
            )
            .outerjoin(Student, Student.id == EmatchResult.student_id)
            .where(EmatchResult.upload_id == upload.id)
            .order_by(EmatchResult.row_number)
        ).all()
    return [tuple(row) for row in results]


def _exported_matches(
    client: httpx2.Client, server: LiveServer, logged_in: LoggedIn, export_uid: str
) -> list[list[str]]:
    """The data rows of the eMatch export, checked in the organization's list and downloaded."""
    listed = client.get(
        f"{server.base_url}/datacenter/exports", headers=logged_in.headers, params={"productKey": "ematch"}
    )
    assert listed.status_code == 200, listed.text
    (export,) = [item for item in listed.json() if item["uid"] == export_uid]
    assert (export["productKey"], export["quantity"], export["status"]) == ("ematch", 4, "NotDelivered")
    assert export["organizationUid"] == logged_in.organization_uid

    with bare_client() as bare:
        downloaded = bare.get(download_url(client, server, logged_in, export["uid"]))
    assert downloaded.status_code == 200, downloaded.text
    header, *rows = parse_csv(downloaded.text)
    assert header == list(EMATCH_EXPORT_COLUMNS)
    return rows


def _assert_exported_matches(rows: list[list[str]]) -> None:
    """The export holds the four matched people, each with its probability, evidence and duplicates."""
    assert [row[:10] for row in rows] == [
        [
            "U1",
            "Anna",
            "Li",
            "2008/04/01",
            "ann.lee@example.com",
            "",
            "probabilistic",
            "000101",
            "2026",
            "MA",
        ],
        ["U2", "Bo", "Diaz", "2008/05/02", "bo.d@other.org", "", "probabilistic", "000102", "2026", "KS"],
        [
            "U6",
            "Dee",
            "Ray",
            "2008/07/31",
            "dee.ray@example.com",
            "60601",
            "probabilistic",
            "000106",
            "2026",
            "IL",
        ],
        ["U8", "Mike", "Reyes", "", "mjr@example.com", "94105", "probabilistic", "000109", "2026", "CA"],
    ]
    probabilities = [float(row[10]) for row in rows]
    assert all(0.9 <= p <= 1 for p in probabilities)
    evidence = {row[0]: row[11] for row in rows}
    assert "Email exact" in evidence["U1"] and "BirthDate exact" in evidence["U1"]
    assert "FirstName nickname" in evidence["U8"] and "LastName part of compound" in evidence["U8"]
    assert [row[12] for row in rows] == ["", "", "000107", ""]


def test_an_ematch_file_is_matched_and_its_matches_published(
    client: httpx2.Client, working: LiveServer, demo: LoggedIn
) -> None:
    assert _load_students(working) == len(STUDENTS)

    record = _done(client, working, demo, EMATCH_CSV, file_name="people.csv", product_type="ematch")
    meta = record["meta"]
    assert (meta["acceptedRows"], meta["rejectedRows"], meta["warnedRows"]) == (8, 0, 1)
    assert (meta["matchedRows"], meta["unmatchedRows"]) == (4, 4)
    assert meta["matchThreshold"] == 0.9
    assert meta["matchBands"]["none"] == 4
    assert meta["matchBands"]["certain"] + meta["matchBands"]["probable"] == 4
    assert meta["duplicateStudentMatches"] == 1

    results = _ematch_results(working, record["id"])
    assert [tuple(row[:4]) for row in results] == [
        (2, "U1", "probabilistic", "000101"),
        (3, "U2", "probabilistic", "000102"),
        (4, "U3", "", None),
        (5, "U4", "", None),
        (6, "U5", "", None),
        (7, "U6", "probabilistic", "000106"),
        (8, "U7", "", None),
        (9, "U8", "probabilistic", "000109"),
    ]
    assert all(row[4] is not None and 0.9 <= row[4] <= 1 for row in results if row[3])

    _assert_exported_matches(_exported_matches(client, working, demo, meta["exportUid"]))


def test_the_demo_matches_its_own_people_with_the_shipped_model(
    client: httpx2.Client, working: LiveServer, demo: LoggedIn
) -> None:
    # The demo's students are the people of its inquiry list: written back as an eMatch file (with a
    # nickname-free typo here and there), each finds its own StudentKey.
    people = list(demo_students(today=utcnow().date()))[:40]
    lines = ["UniqueID,FirstName,LastName,BirthDate,Email,ZipCode"]
    for index, person in enumerate(people):
        first = person["FirstName"] if index % 4 else person["FirstName"].upper()
        last = person["LastName"] if index % 5 else person["LastName"] + "e"
        lines.append(f"D{index},{first},{last},{person['BirthDate']},{person['Email']},{person['ZipCode']}")
    content = ("\r\n".join(lines) + "\r\n").encode()
    record = _done(client, working, demo, content, file_name="demo-people.csv", product_type="ematch")
    assert (record["meta"]["matchedRows"], record["meta"]["unmatchedRows"]) == (40, 0)
    upload = upload_row(working, record["id"])
    with working.db() as db:
        found = dict(
            db.execute(
                select(EmatchResult.unique_id, Student.student_key)
                .join(Student, Student.id == EmatchResult.student_id)
                .where(EmatchResult.upload_id == upload.id)
            ).all()
        )
    assert found == {f"D{index}": person["StudentKey"] for index, person in enumerate(people)}


def test_the_rules_matcher_is_still_there(make_server: ServerFactory, client: httpx2.Client) -> None:
    server = make_server(pipeline_workers="2", pipeline_poll_seconds="0.1", ematch_matcher="rules")
    logged_in = server.login()
    with server.db() as db:
        load_students(
            db=db, rows=[dict(zip(STUDENT_COLUMNS[:8], row, strict=True)) for row in STUDENTS], now=utcnow()
        )
        db.commit()
    record = _done(client, server, logged_in, EMATCH_CSV, file_name="people.csv", product_type="ematch")
    upload = upload_row(server, record["id"])
    with server.db() as db:
        results = db.execute(
            select(EmatchResult.unique_id, EmatchResult.matched_by, Student.student_key)
            .outerjoin(Student, Student.id == EmatchResult.student_id)
            .where(EmatchResult.upload_id == upload.id)
            .order_by(EmatchResult.row_number)
        ).all()
    # Exact rules: the namesake in 000103's ZIP matches, the day-first duplicate is ambiguous, the twin
    # matches by the family email, the nickname does not match by name but by email.
    assert [tuple(row) for row in results] == [
        ("U1", "email", "000101"),
        ("U2", "name_birth_date", "000102"),
        ("U3", "name_zip", "000103"),
        ("U4", "", None),
        ("U5", "", None),
        ("U6", "", None),
        ("U7", "email", "000108"),
        ("U8", "email", "000109"),
    ]
    assert record["meta"]["matchThreshold"] == 1.0
