"""The `analyzing` stage end to end: upload through the API, let the embedded runner work, read the record."""

from __future__ import annotations

import io
import json

import httpx2
import openpyxl
import pytest
from sqlalchemy import select

from datalab.pipeline.models import PipelineJob
from datalab.records.models import EnrollmentRecord
from datalab.uploads.models import Upload
from tests.support.inprocess import InProcessApp
from tests.support.server import LoggedIn
from tests.support.uploads import upload_and_wait

ENROLLMENT_CSV = (
    b"UniqueID,FirstName,LastName,EntryTerm,EntryYear,Applied,ZipCode\r\n"
    b"00123,Ann,Lee,Fall,2026,2025/11/02,02134\r\n"
    b"00124,Bo,,Spring,2026,2025/12/01,\r\n"
)


def test_a_file_named_after_the_layout_goes_through_with_its_meta(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    record = upload_and_wait(client, working, demo, ENROLLMENT_CSV)
    assert record["status"] == "done", record
    assert record["error"] is None
    assert record["recordVolume"] == 2
    meta = record["meta"]
    assert meta["totalRows"] == 2
    assert meta["headers"][:3] == [
        {"name": "UniqueID", "emptyRows": 0},
        {"name": "FirstName", "emptyRows": 0},
        {"name": "LastName", "emptyRows": 1},
    ]
    assert meta["data"][0]["UniqueID"] == "00123"
    assert meta["data"][0]["ZipCode"] == "02134"
    assert len(meta["data"]) == 2
    by_field = {entry["field"]: entry for entry in meta["headersMap"]}
    assert by_field["UniqueID"] == {"field": "UniqueID", "fileHeader": "UniqueID", "isRequired": True}
    assert by_field["EntryYear"]["isRequired"] is True
    assert by_field["Email"]["fileHeader"] is None
    assert record["fieldsMap"]["ZipCode"] == "ZipCode"
    assert record["valuesMap"] == {}
    with working.db() as db:
        upload = db.scalar(select(Upload).where(Upload.uid == record["id"]))
        assert upload is not None
        assert upload.encoding == "utf-8"
        jobs = list(
            db.scalars(select(PipelineJob).where(PipelineJob.upload_id == upload.id).order_by(PipelineJob.id))
        )
    assert [(job.stage, job.state, job.attempts) for job in jobs] == [
        ("analyze", "done", 1),
        ("cleanse", "done", 1),
        ("ingest", "done", 1),
        ("process", "done", 1),
    ]


def test_headers_match_case_and_punctuation_insensitively(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    content = b"unique id|first_name|ENTRY YEAR|Entry-Term|applied\n7|Al|2026|FA26|2025-10-01\n"
    record = upload_and_wait(client, working, demo, content, file_name="pipes.txt")
    assert record["status"] == "done", record
    assert record["fieldsMap"] == {
        "UniqueID": "unique id",
        "FirstName": "first_name",
        "EntryTerm": "Entry-Term",
        "EntryYear": "ENTRY YEAR",
        "Applied": "applied",
    }
    # The columns found by their normalized names are the ones whose values were loaded.
    with working.db() as db:
        upload = db.scalars(select(Upload).where(Upload.uid == record["id"])).one()
        stored = db.scalars(select(EnrollmentRecord).where(EnrollmentRecord.upload_id == upload.id)).one()
    assert json.loads(stored.record) == {
        "UniqueID": "7",
        "FirstName": "Al",
        "EntryTerm": "FALL",
        "EntryYear": "2026",
        "Applied": "2025/10/01",
    }


def test_an_api_upload_without_a_complete_mapping_fails_naming_the_fields(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    content = b"Student Number,Given Name\n1,Ann\n"
    record = upload_and_wait(client, working, demo, content, datasource="API")
    assert record["status"] == "failure"
    assert record["error"].startswith("Required fields are not mapped to any column of the file: UniqueID, ")
    assert "EntryYear" in record["error"]
    assert record["meta"]["totalRows"] == 1


def test_a_person_s_upload_waits_for_a_mapping(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    content = b"Student Number,Given Name\n1,Ann\n"
    record = upload_and_wait(client, working, demo, content, datasource="DataCenter")
    assert record["status"] == "fields_mapping_required"
    assert record["error"] is None
    assert [entry["fileHeader"] for entry in record["meta"]["headersMap"]] == [None] * len(
        record["meta"]["headersMap"]
    )


def test_an_xlsx_enrollment_file_keeps_its_text(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["UniqueID", "EntryYear", "Applied", "ZipCode"])
    sheet.append(["000987", 2026, "2025/09/30", "01234"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    record = upload_and_wait(client, working, demo, buffer.getvalue(), file_name="roster.xlsx")
    assert record["status"] == "done", record
    assert record["meta"]["data"] == [
        {"UniqueID": "000987", "EntryYear": "2026", "Applied": "2025/09/30", "ZipCode": "01234"}
    ]
    assert record["meta"]["sourceFormat"] == "xlsx"
    with working.db() as db:
        upload = db.scalars(select(Upload).where(Upload.uid == record["id"])).one()
        stored = db.scalars(select(EnrollmentRecord).where(EnrollmentRecord.upload_id == upload.id)).one()
    assert stored.unique_id == "000987"
    assert json.loads(stored.record)["ZipCode"] == "01234"


@pytest.mark.parametrize(
    ("content", "file_name", "expected", "says"),
    [
        (b"UniqueID,EntryYear,Applied\r\n", "headers.csv", "headers_only", "but no data rows"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image.csv", "wrong_file_type", "contains a PNG image"),
        (b"UniqueID,UniqueID\n1,2\n", "twice.csv", "duplicate_headers", '"UniqueID" (columns 1 and 2)'),
        (b"UniqueID,EntryYear\n1,2026,extra\n", "ragged.csv", "ragged_row", "Line 2 has 3 fields"),
    ],
)
def test_hostile_files_fail_with_their_own_error(
    client: httpx2.Client,
    working: InProcessApp,
    demo: LoggedIn,
    content: bytes,
    file_name: str,
    expected: str,
    says: str,
) -> None:
    record = upload_and_wait(client, working, demo, content, file_name=file_name)
    assert record["status"] == "failure"
    assert record["meta"]["errorCode"] == expected
    assert says in record["error"]
    assert record["recordVolume"] == 0


def test_columns_with_few_distinct_values_are_listed_for_value_mapping(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    rows = "".join(
        f"{index:05d},2026,2025/11/{1 + index % 28:02d},{('Man', 'Woman', ' man ', '')[index % 4]}\n"
        for index in range(60)
    )
    record = upload_and_wait(
        client,
        working,
        demo,
        ("Student Number,Year,Applied On,Sex\n" + rows).encode(),
        datasource="DataCenter",
    )
    assert record["status"] == "fields_mapping_required", record
    # Trimmed, blanks left out, case kept; columns with more than 25 distinct values are not listed.
    assert record["meta"]["codedValues"] == {"Year": ["2026"], "Sex": ["Man", "Woman", "man"]}
