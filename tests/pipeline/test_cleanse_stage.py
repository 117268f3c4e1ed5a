"""The `cleansing` stage end to end: warnings, rejections, the row report, value mappings and the limit."""

from __future__ import annotations

import json

import httpx2
import pytest
from sqlalchemy import select

from datalab.pipeline.models import PipelineJob
from datalab.pipeline.staging import staging_for
from datalab.records.models import EnrollmentRecord
from tests.conftest import AppFactory
from tests.support.accounts import login_as, unique
from tests.support.checks import assert_envelope
from tests.support.factories import add_account, add_organization
from tests.support.inprocess import InProcessApp
from tests.support.server import LoggedIn
from tests.support.uploads import row_report, upload_and_wait, upload_row, wait_for_status

FUNNEL = "Inquired, Applied, Completed, Admitted, Confirmed, Enrolled, Canceled"
REPORT_HEADER = "row,column,field,value,severity,code,message\r\n"

# Rows 2 and 7 are accepted (7 with a blanked Email); 3 is accepted with a padded ZIP and a blanked
# Gender; 4 loses its only funnel date to a bad date and is rejected; 5 has no UniqueID; 6 no funnel date.
SMALL_CSV = (
    b"UniqueID,FirstName,EntryYear,EntryTerm,Applied,Gender,ZipCode,Email\r\n"
    b"00123,Ann,2026,Fall,2025/11/02,F,02134,ann@example.edu\r\n"
    b"00124,Bo,2026,Fall,2025/11/03,X,2134,\r\n"
    b"00125,Cy,2026,Fall,13/45/2025,M,,\r\n"
    b",Di,2026,Fall,2025/10/01,F,,\r\n"
    b"00127,Ed,2026,Spring,,M,,\r\n"
    b"00128,Flo,2026,Fall,2025/11/05,woman,,Flo.Example.edu\r\n"
)
SMALL_REPORT = (
    REPORT_HEADER
    + "3,ZipCode,ZipCode,2134,warning,zip_padded,leading zeros restored to make a 5-digit ZIP\r\n"
    + "3,Gender,Gender,X,warning,gender_invalid,expected male/man/M or female/woman/F\r\n"
    + "4,Applied,Applied,13/45/2025,warning,date_invalid,not a valid date in a supported format\r\n"
    + f'4,,"{FUNNEL}",,error,required_one_of_missing,"row rejected: one of {FUNNEL} is required"\r\n'
    + "5,UniqueID,UniqueID,,error,required_missing,row rejected: UniqueID is required\r\n"
    + f'6,,"{FUNNEL}",,error,required_one_of_missing,"row rejected: one of {FUNNEL} is required"\r\n'
    + "7,Email,Email,Flo.Example.edu,warning,email_invalid,not an email address\r\n"
)
SMALL_COUNTS = {
    "acceptedRows": 3,
    # Only accepted rows count as warned; row 4's warning is counted in `warnings` all the same.
    "warnedRows": 2,
    "rejectedRows": 3,
    "warnings": 4,
    "rejectedByField": {FUNNEL: 2, "UniqueID": 1},
}


@pytest.fixture(scope="module")
def lenient(make_app: AppFactory) -> InProcessApp:
    """A working app that lets files with up to half of their rows rejected through."""
    return make_app(pipeline_workers="2", pipeline_poll_seconds="0.1", pipeline_max_rejected_percent="50")


def _records(server: InProcessApp, uid: str) -> list[tuple[int, str, dict[str, str]]]:
    """(row number, unique_id column, record JSON) of each enrollment record the upload loaded."""
    upload_id = upload_row(server, uid).id
    with server.db() as db:
        rows = db.scalars(
            select(EnrollmentRecord)
            .where(EnrollmentRecord.upload_id == upload_id)
            .order_by(EnrollmentRecord.row_number)
        )
        return [(row.row_number, row.unique_id, json.loads(row.record)) for row in rows]


def _counts(meta: dict[str, object]) -> dict[str, object]:
    return {name: meta[name] for name in SMALL_COUNTS}


def test_warnings_and_rejections_are_counted_and_reported_row_by_row(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    record = upload_and_wait(client, working, demo, SMALL_CSV)
    uid = record["id"]
    # Half of the rows rejected is more than the default 10%: the file fails, naming the counts.
    assert record["status"] == "failure"
    assert record["error"] == (
        "3 of 6 rows (50.0%) were rejected, more than the 10% allowed. "
        f"The row report (GET /v1/files/{uid}/errors) lists each rejected row and why."
    )
    assert record["recordVolume"] == 6
    assert _counts(record["meta"]) == SMALL_COUNTS
    assert record["meta"]["errorReport"] == f"/v1/files/{uid}/errors"
    assert record["meta"]["totalRows"] == 6

    report = row_report(client, working, demo, uid)
    assert report.status_code == 200, report.text
    assert report.headers["content-type"] == "text/csv; charset=utf-8"
    assert report.headers["content-disposition"] == 'attachment; filename="roster-errors.csv"'
    assert report.text == SMALL_REPORT

    # A failed file goes no further: nothing staged, nothing loaded, no later stage queued.
    upload_id = upload_row(working, uid).id
    with working.db() as db:
        stages = db.scalars(select(PipelineJob.stage).where(PipelineJob.upload_id == upload_id)).all()
        staged = staging_for(db).count(upload_id)
    assert sorted(stages) == ["analyze", "cleanse"]
    assert staged == 0
    assert _records(working, uid) == []


def test_under_the_limit_warned_values_are_blank_and_rejected_rows_left_out(lenient: InProcessApp) -> None:
    client = lenient.client
    logged_in = lenient.login()
    record = upload_and_wait(client, lenient, logged_in, SMALL_CSV)
    assert (record["status"], record["error"]) == ("done", None), record
    assert _counts(record["meta"]) == SMALL_COUNTS
    assert record["meta"]["loadedRows"] == 3
    assert row_report(client, lenient, logged_in, record["id"]).text == SMALL_REPORT
    assert _records(lenient, record["id"]) == [
        (
            2,
            "00123",
            {
                "UniqueID": "00123",
                "FirstName": "Ann",
                "Email": "ann@example.edu",
                "ZipCode": "02134",
                "Gender": "F",
                "EntryTerm": "FALL",
                "EntryYear": "2026",
                "Applied": "2025/11/02",
            },
        ),
        (
            3,
            "00124",
            {
                "UniqueID": "00124",
                "FirstName": "Bo",
                "ZipCode": "02134",
                "EntryTerm": "FALL",
                "EntryYear": "2026",
                "Applied": "2025/11/03",
            },
        ),
        (
            7,
            "00128",
            {
                "UniqueID": "00128",
                "FirstName": "Flo",
                "Gender": "F",
                "EntryTerm": "FALL",
                "EntryYear": "2026",
                "Applied": "2025/11/05",
            },
        ),
    ]


def _file(accepted: int, rejected: int) -> bytes:
    good = [f"{index:05d},2026,2025/10/01" for index in range(accepted)]
    bad = [f"{90000 + index},2026," for index in range(rejected)]
    return ("UniqueID,EntryYear,Applied\r\n" + "".join(row + "\r\n" for row in good + bad)).encode()


@pytest.mark.parametrize(
    ("accepted", "rejected", "status", "error"),
    [
        (9, 1, "done", None),
        (
            8,
            1,
            "failure",
            "1 of 9 rows (11.1%) were rejected, more than the 10% allowed. ",
        ),
        (0, 2, "failure", "None of the file's 2 rows could be accepted. "),
    ],
    ids=["exactly-the-limit", "just-over-the-limit", "nothing-accepted"],
)
def test_the_rejected_share_decides_whether_the_file_goes_on(
    client: httpx2.Client,
    working: InProcessApp,
    demo: LoggedIn,
    accepted: int,
    rejected: int,
    status: str,
    error: str | None,
) -> None:
    record = upload_and_wait(client, working, demo, _file(accepted, rejected))
    assert record["status"] == status, record
    meta = record["meta"]
    assert (meta["acceptedRows"], meta["rejectedRows"]) == (accepted, rejected)
    assert meta["rejectedByField"] == {FUNNEL: rejected}
    if error is None:
        assert record["error"] is None
        assert meta["loadedRows"] == accepted
    else:
        report_hint = f"The row report (GET /v1/files/{record['id']}/errors) lists each rejected row and why."
        assert record["error"] == error + report_hint
    assert len(_records(working, record["id"])) == (accepted if status == "done" else 0)


def test_a_value_mapping_is_applied_before_the_rule(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    content = (
        b"Student Number,Year,Applied On,Sex\r\n"
        b"1,2026,2025/10/01,Homme\r\n"
        b"2,2026,2025/10/02,FEMME\r\n"
        b"3,2026,2025/10/03,Autre\r\n"
        b"4,2026,2025/10/04,Man\r\n"
    )
    waiting = upload_and_wait(client, working, demo, content, datasource="Data Center")
    assert waiting["status"] == "fields_mapping_required"
    body = {
        "fieldsMap": {
            "UniqueID": "Student Number",
            "EntryYear": "Year",
            "Applied": "Applied On",
            "Gender": "Sex",
        },
        "valuesMap": {"Gender": {"Homme": "M", "femme": "F"}},
    }
    processed = client.post(
        f"{working.base_url}/files/{waiting['id']}/process", headers=demo.headers, json=body
    )
    assert processed.status_code == 200, processed.text
    record = wait_for_status(client, working, demo, waiting["id"])
    assert record["status"] == "done", record
    assert record["valuesMap"] == {"Gender": {"Homme": "M", "femme": "F"}}
    assert (record["meta"]["warnings"], record["meta"]["warnedRows"]) == (1, 1)
    # Mapped values (matched exactly, else case-insensitively) become the rule's input; a value the
    # mapping does not know still goes through the rule alone.
    assert [(row, stored.get("Gender")) for row, _uid, stored in _records(working, waiting["id"])] == [
        (2, "M"),
        (3, "F"),
        (4, None),
        (5, "M"),
    ]
    assert row_report(client, working, demo, waiting["id"]).text == (
        REPORT_HEADER + "4,Sex,Gender,Autre,warning,gender_invalid,expected male/man/M or female/woman/F\r\n"
    )


def test_leading_zeros_are_kept_in_the_stored_record(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    content = (
        b"UniqueID,EntryYear,EntryTerm,Enrolled,ZipCode,HSCode\r\n00123,2026,FA26,08/20/2026,02134,012345\r\n"
    )
    record = upload_and_wait(client, working, demo, content)
    assert record["status"] == "done", record
    assert _counts(record["meta"]) == {
        "acceptedRows": 1,
        "warnedRows": 0,
        "rejectedRows": 0,
        "warnings": 0,
        "rejectedByField": {},
    }
    assert _records(working, record["id"]) == [
        (
            2,
            "00123",
            {
                "UniqueID": "00123",
                "ZipCode": "02134",
                "EntryTerm": "FALL",
                "EntryYear": "2026",
                "Enrolled": "2026/08/20",
                "HSCode": "012345",
            },
        )
    ]
    # A clean file still has a row report: its header alone.
    assert row_report(client, working, demo, record["id"]).text == REPORT_HEADER


def test_backslashes_tabs_line_breaks_and_quotes_reach_the_stored_record_unchanged(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    # The characters the bulk loads' text formats give a meaning to, in the record key and the record.
    content = (
        b"UniqueID,EntryYear,EntryTerm,Enrolled,Address1,City\r\n"
        b'A\\N,2026,FA26,08/20/2026,"back\\slash ""q"" tab\there","two\r\nlines\\t"\r\n'
    )
    record = upload_and_wait(client, working, demo, content)
    assert record["status"] == "done", record
    [(row_number, unique_id, stored)] = _records(working, record["id"])
    assert (row_number, unique_id) == (2, "A\\N")
    assert (stored["UniqueID"], stored["Address1"], stored["City"]) == (
        "A\\N",
        'back\\slash "q" tab\there',
        "two\r\nlines\\t",
    )


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_a_run_of_blank_lines_longer_than_a_read_block_is_skipped(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn, line_end: bytes
) -> None:
    # The file is read in blocks of a few MiB: one of them holds blank lines only.
    blank_lines = line_end * (10 * 1024 * 1024 // len(line_end))
    content = (
        b"UniqueID,EntryYear,EntryTerm,Enrolled\r\n00123,2026,FA26,08/20/2026\r\n"
        + blank_lines
        + b"00456,2026,FA26,08/21/2026\r\n"
    )
    record = upload_and_wait(client, working, demo, content)
    assert record["status"] == "done", record
    assert record["meta"]["acceptedRows"] == 2
    assert [unique_id for _, unique_id, _ in _records(working, record["id"])] == ["00123", "00456"]


def test_the_row_report_is_not_found_before_cleansing(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    waiting = upload_and_wait(client, working, demo, b"Code,Annee\r\n1,2026\r\n", datasource="Data Center")
    assert waiting["status"] == "fields_mapping_required"
    error = assert_envelope(row_report(client, working, demo, waiting["id"]), 404, "report_not_found")
    assert error["message"] == (
        f"File with id: {waiting['id']} has no row report yet: it is written when the file is cleansed "
        "(status is now fields_mapping_required)."
    )
    # A file that failed before cleansing has none either.
    failed = upload_and_wait(client, working, demo, b"Code,Annee\r\n1,2026\r\n", datasource="API")
    assert failed["status"] == "failure"
    error = assert_envelope(row_report(client, working, demo, failed["id"]), 404, "report_not_found")
    assert error["message"].endswith("(status is now failure).")


def test_the_row_report_of_an_unknown_or_foreign_file_is_not_found(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    record = upload_and_wait(client, working, demo, SMALL_CSV, file_name="ours.csv")
    assert row_report(client, working, demo, record["id"]).status_code == 200
    error = assert_envelope(row_report(client, working, demo, "not-a-real-id"), 404, "file_not_found")
    assert error["message"] == "File with id: not-a-real-id is NOT found."

    organization = add_organization(working, name=unique("Other College"))
    other = login_as(working, add_account(working, organization_uids=[organization.uid]))
    error = assert_envelope(row_report(client, working, other, record["id"]), 404, "file_not_found")
    assert error["message"] == f"File with id: {record['id']} is NOT found."
