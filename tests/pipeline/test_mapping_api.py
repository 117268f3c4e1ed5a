"""Mapping a file by hand (POST /files/{id}/process), its reuse by later uploads, and canceling files,
through the in-process app (its embedded pipeline workers and sweeper run in its lifespan)."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from datalab.records.models import EnrollmentRecord
from tests.conftest import AppFactory
from tests.support.checks import assert_envelope, s3_error, wait_for
from tests.support.inprocess import InProcessApp
from tests.support.server import LoggedIn
from tests.support.uploads import (
    create_upload,
    form_parts,
    get_file,
    object_path,
    pipeline_jobs,
    post_parts,
    send_file,
    stage_stepper,
    upload_and_wait,
    upload_row,
    wait_for_status,
)

CUSTOM_HEADERS = b"Student Number,Given Name,Year,Applied On,Sex\n"
MAPPING = {
    "UniqueID": "Student Number",
    "FirstName": "Given Name",
    "EntryYear": "Year",
    "Applied": "Applied On",
}


def _process(
    client: httpx2.Client, server: InProcessApp, demo: LoggedIn, uid: str, body: Any
) -> httpx2.Response:
    return client.post(f"{server.base_url}/files/{uid}/process", headers=demo.headers, json=body)


def _stored(server: InProcessApp, uid: str) -> list[dict[str, str]]:
    """The enrollment records the upload loaded, in file order."""
    upload_id = upload_row(server, uid).id
    with server.db() as db:
        rows = db.scalars(
            select(EnrollmentRecord)
            .where(EnrollmentRecord.upload_id == upload_id)
            .order_by(EnrollmentRecord.row_number)
        )
        return [json.loads(row.record) for row in rows]


def test_a_mapping_made_once_is_reused_by_the_next_api_upload(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    first = upload_and_wait(
        client, working, demo, CUSTOM_HEADERS + b"00042,Ann,2026,2025/10/01,Woman\n", datasource="DataCenter"
    )
    assert first["status"] == "fields_mapping_required"
    body = {"fieldsMap": {**MAPPING, "Gender": "Sex"}, "valuesMap": {"Gender": {"Woman": "F", "Man": "M"}}}
    processed = _process(client, working, demo, first["id"], body)
    assert processed.status_code == 200, processed.text
    record = processed.json()
    assert record["status"] == "enqueued"
    assert record["fieldsMap"] == {**MAPPING, "Gender": "Sex"}
    assert record["valuesMap"] == {"Gender": {"Woman": "F", "Man": "M"}}
    by_field = {entry["field"]: entry["fileHeader"] for entry in record["meta"]["headersMap"]}
    assert by_field["UniqueID"] == "Student Number"
    assert by_field["Email"] is None
    # Queued by the mapping, the file then goes through the rest of the pipeline.
    assert wait_for_status(client, working, demo, first["id"])["status"] == "done"
    assert _stored(working, first["id"]) == [
        {
            "UniqueID": "00042",
            "FirstName": "Ann",
            "Gender": "F",
            "EntryYear": "2026",
            "Applied": "2025/10/01",
        }
    ]

    # Same header set in another order and case, sent by a script: no person needed this time.
    second = upload_and_wait(
        client,
        working,
        demo,
        b"sex,year,student number,applied on,given name\nMan,2026,7,2025/10/02,Bo\n",
        datasource="API",
    )
    assert second["status"] == "done", second
    assert second["fieldsMap"] == {**MAPPING, "Gender": "Sex"}
    assert second["valuesMap"] == {"Gender": {"Woman": "F", "Man": "M"}}
    assert [row["UniqueID"] for row in _stored(working, second["id"])] == ["7"]


def test_a_failed_api_upload_can_be_mapped_with_the_flat_body(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    failed = upload_and_wait(client, working, demo, b"ID,Yr,Inq\n1,2027,2025/01/05\n", datasource="API")
    assert failed["status"] == "failure"
    flat = {"UniqueID": "ID", "EntryYear": "Yr", "Inquired": "Inq"}
    record = _process(client, working, demo, failed["id"], flat).json()
    assert record["status"] == "enqueued"
    assert record["error"] is None
    assert record["fieldsMap"] == flat
    assert record["valuesMap"] == {}
    done = wait_for_status(client, working, demo, failed["id"])
    assert (done["status"], done["error"]) == ("done", None)
    assert _stored(working, failed["id"]) == [
        {"UniqueID": "1", "EntryYear": "2027", "Inquired": "2025/01/05"}
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**MAPPING, "Nickname": "Given Name"}, "Nickname is not a field of the enrollment layout"),
        ({**MAPPING, "LastName": "Surname"}, "the file has no column 'Surname'"),
        ({"FirstName": "Given Name"}, "required fields left unmapped: UniqueID, EntryYear"),
    ],
)
def test_invalid_mappings_are_refused_with_upstream_validation_detail(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn, body: dict[str, str], message: str
) -> None:
    # A header set of its own: the mapping saved by another test must not apply here.
    content = b"Student Number,Given Name,Year,Applied On,Surname2\n1,A,2026,2025/1/1,M\n"
    pending = upload_and_wait(client, working, demo, content, datasource="DC")
    response = _process(client, working, demo, pending["id"], body)
    error = assert_envelope(response, 422, "validation_error")
    assert any(item["msg"].startswith(message) for item in error["detail"]), error
    assert set(error["detail"][0]) == {"loc", "msg", "type"}
    again = client.get(f"{working.base_url}/files/{pending['id']}", headers=demo.headers).json()
    assert again["status"] == "fields_mapping_required"


def test_only_files_waiting_for_a_mapping_can_be_processed(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    done = upload_and_wait(client, working, demo, b"UniqueID,EntryYear,Applied\n1,2026,2025/1/1\n")
    assert done["status"] == "done"
    response = _process(client, working, demo, done["id"], {"UniqueID": "UniqueID"})
    error = assert_envelope(response, 422, "invalid_status")
    assert error["message"] == "This file status is [done] and cannot be processed."
    assert get_file(client, working, demo, done["id"])["fieldsMap"] == {
        "UniqueID": "UniqueID",
        "EntryYear": "EntryYear",
        "Applied": "Applied",
    }
    broken = _process(client, working, demo, done["id"], ["not", "an", "object"])
    assert_envelope(broken, 400, "invalid_body")


def _cancel(client: httpx2.Client, server: InProcessApp, logged_in: LoggedIn, uid: str) -> httpx2.Response:
    return client.post(f"{server.base_url}/files/{uid}/cancel", headers=logged_in.headers)


def test_a_file_waiting_for_a_mapping_can_be_canceled_once(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    waiting = upload_and_wait(client, working, demo, b"Matricule,Prenom\n1,A\n", datasource="DC")
    assert waiting["status"] == "fields_mapping_required"
    canceled = _cancel(client, working, demo, waiting["id"])
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    again = _cancel(client, working, demo, waiting["id"])
    error = assert_envelope(again, 422, "invalid_status")
    assert error["message"] == "This file status is [canceled] and cannot be canceled."


@pytest.fixture(scope="module")
def idle(make_app: AppFactory) -> InProcessApp:
    """An app running no pipeline workers: a file stays where it is until a test runs its next stage."""
    return make_app(pipeline_workers="0")


@pytest.mark.parametrize("stages_run", [0, 1], ids=["analyzing", "enqueued"])
def test_cancel_until_enqueued_stops_the_pipeline(idle: InProcessApp, stages_run: int) -> None:
    client = idle.client
    logged_in = idle.login()
    uid = send_file(client, idle, logged_in, b"UniqueID,EntryYear,Applied\n1,2026,2025/1/1\n")
    upload_id = upload_row(idle, uid).id
    with stage_stepper(idle) as stepper:
        if stages_run:
            stepper.run(upload_id, "analyze")
        expected = ("analyzing", "enqueued")[stages_run]
        assert get_file(client, idle, logged_in, uid)["status"] == expected
        canceled = _cancel(client, idle, logged_in, uid)
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"
        # The stage that was waiting is dropped: nothing is left to run and the file stays canceled.
        assert stepper.step() is None
    assert get_file(client, idle, logged_in, uid)["status"] == "canceled"
    assert all(state == "done" for _stage, state in pipeline_jobs(idle, upload_id))
    again = _cancel(client, idle, logged_in, uid)
    error = assert_envelope(again, 422, "invalid_status")
    assert error["message"] == "This file status is [canceled] and cannot be canceled."


def test_a_processed_file_cannot_be_canceled(
    client: httpx2.Client, working: InProcessApp, demo: LoggedIn
) -> None:
    done = upload_and_wait(client, working, demo, b"UniqueID,EntryYear,Applied\n2,2026,2025/1/2\n")
    assert done["status"] == "done"
    error = assert_envelope(_cancel(client, working, demo, done["id"]), 422, "invalid_status")
    assert error["message"] == "This file status is [done] and cannot be canceled."
    assert get_file(client, working, demo, done["id"])["status"] == "done"


def test_a_canceled_form_cannot_be_used(client: httpx2.Client, working: InProcessApp, demo: LoggedIn) -> None:
    form = create_upload(client, working, demo.headers)
    canceled = client.post(f"{working.base_url}/files/{form.id}/cancel", headers=demo.headers)
    assert canceled.json()["status"] == "canceled"
    s3_error(
        post_parts(client, form.url, form_parts(form.fields, b"UniqueID\n1\n")),
        status=400,
        code="ExpiredToken",
        message="The provided token has expired.",
    )
    other = client.post(f"{working.base_url}/files/not-a-real-id/cancel", headers=demo.headers)
    assert other.json() == {
        "code": "file_not_found",
        "message": "File with id: not-a-real-id is NOT found.",
        "detail": "File with id: not-a-real-id is NOT found.",
    }


def test_the_file_of_a_canceled_upload_is_removed_after_the_retention_period(make_app: AppFactory) -> None:
    server = make_app(
        pipeline_workers="0", canceled_retention_hours="0.0005", upload_sweep_interval_seconds="1"
    )
    client = server.client
    logged_in = server.login()
    uid = send_file(client, server, logged_in, b"UniqueID,EntryYear,Applied\n1,2026,2025/1/1\n")
    row = upload_row(server, uid)
    assert object_path(server, row.object_key).is_file()
    assert _cancel(client, server, logged_in, uid).json()["status"] == "canceled"
    # Kept during the retention period (1.8 s here), then removed by the sweeper.
    assert object_path(server, row.object_key).is_file()
    assert wait_for(lambda: not object_path(server, row.object_key).exists(), timeout=15)
    # The removal is recorded just after the object is deleted.
    assert wait_for(lambda: upload_row(server, uid).file_removed_at is not None, timeout=5)
    assert get_file(client, server, logged_in, uid)["status"] == "canceled"
