"""Every status of an upload, reached one pipeline stage at a time, and stages that run again.

The in-process app runs no pipeline workers: each stage runs here, on the app's database and object store,
exactly one job per step, while the HTTP API reports what a client would see in between.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import func, select, text, update

import datalab.pipeline.cleanse
from datalab.db import SQLITE_PAGE_SIZE, transaction, utcnow
from datalab.exports.models import Export
from datalab.pipeline.models import STAGES, PipelineJob
from datalab.pipeline.readers import TableInfo, open_table
from datalab.pipeline.service import enqueue_stage
from datalab.pipeline.stages import STAGE_FUNCTIONS
from datalab.pipeline.staging import FileStaging, staging_for
from datalab.records.models import AffinityRecord, EmatchResult, EnrollmentRecord
from datalab.students.service import load_students
from datalab.uploads.models import Upload
from tests.conftest import AppFactory
from tests.support.checks import assert_envelope
from tests.support.inprocess import InProcessApp
from tests.support.server import LoggedIn
from tests.support.uploads import (
    StageRun,
    StageStepper,
    create_upload,
    form_parts,
    get_file,
    pipeline_jobs,
    post_parts,
    row_report,
    send_file,
    stage_stepper,
    upload_row,
)

ENROLLMENT_CSV = (
    b"UniqueID,EntryYear,EntryTerm,Applied,ZipCode\r\n"
    b"00123,2026,Fall,2025/11/02,02134\r\n"
    b"00124,2026,Fall,2025/11/03,2134\r\n"
    b"00125,2026,Spring,2025/11/04,\r\n"
)
FILES = {
    "enrollment": ENROLLMENT_CSV,
    "affinity": (
        b"FirstName,LastName,Address1,City,StateCode,ZipCode\r\n"
        b"Ann,Lee,1 Main St,Boston,MA,02134\r\n"
        b"Bo,Diaz,2 Elm St,Wichita,KS,6720\r\n"
        b"Cy,Park,3 Oak St,New York,New York,10001-1234\r\n"
    ),
    "ematch": (
        b"UniqueID,FirstName,LastName,BirthDate,Email\r\n"
        b"U1,Ann,Lee,2008-04-01,ann@example.edu\r\n"
        b"U2,Bo,Diaz,2008-05-02,bo@example.edu\r\n"
        b"U3,Cy,Park,2007-06-03,cy@example.edu\r\n"
    ),
}
PRODUCTION: dict[str, type[EnrollmentRecord | AffinityRecord | EmatchResult]] = {
    "enrollment": EnrollmentRecord,
    "affinity": AffinityRecord,
    "ematch": EmatchResult,
}


@pytest.fixture(scope="module")
def idle(make_app: AppFactory) -> InProcessApp:
    """An app whose pipeline never moves on its own."""
    server = make_app(pipeline_workers="0")
    with server.db() as db:
        load_students(
            db=db,
            rows=[
                {
                    "StudentKey": "000201",
                    "FirstName": "Ann",
                    "LastName": "Lee",
                    "BirthDate": "2008-04-01",
                    "Email": "ann@example.edu",
                }
            ],
            now=utcnow(),
        )
        db.commit()
    return server


@pytest.fixture(scope="module")
def logged_in(idle: InProcessApp) -> LoggedIn:
    return idle.login()


@pytest.fixture
def stepper(idle: InProcessApp) -> Iterator[StageStepper]:
    with stage_stepper(idle) as stepper:
        # Whatever a test leaves queued would be run by the next one: every test must finish its files.
        yield stepper
        assert stepper.step() is None, "a pipeline job was left queued"


@pytest.fixture
def client(idle: InProcessApp) -> httpx2.Client:
    return idle.client


def _status(client: httpx2.Client, server: InProcessApp, logged_in: LoggedIn, uid: str) -> str:
    status: str = get_file(client, server, logged_in, uid)["status"]
    return status


def _staged(server: InProcessApp, upload_id: int) -> int:
    with server.db() as db:
        return staging_for(db).count(upload_id)


def _production(server: InProcessApp, product: str, upload_id: int) -> list[tuple[int, str, str]]:
    """(row number, unique_id, record) of the production rows an upload loaded."""
    model = PRODUCTION[product]
    with server.db() as db:
        rows = db.execute(
            select(model.row_number, model.unique_id, model.record)
            .where(model.upload_id == upload_id)
            .order_by(model.row_number)
        ).all()
    return [(number, unique_id, record) for number, unique_id, record in rows]


def _watch_cleansing(
    monkeypatch: pytest.MonkeyPatch,
    client: httpx2.Client,
    server: InProcessApp,
    logged_in: LoggedIn,
    uid: str,
) -> list[str]:
    """The statuses the API reports while the cleanse stage reads the file (it holds no transaction then)."""
    seen: list[str] = []

    def watched(
        path: Path, *, file_name: str
    ) -> AbstractContextManager[tuple[TableInfo, Iterator[list[str]]]]:
        seen.append(_status(client, server, logged_in, uid))
        return open_table(path, file_name=file_name)

    monkeypatch.setattr(datalab.pipeline.cleanse, "open_table", watched)
    return seen


def test_a_file_passes_through_every_status_of_the_pipeline_in_order(
    client: httpx2.Client,
    idle: InProcessApp,
    logged_in: LoggedIn,
    stepper: StageStepper,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    form = create_upload(client, idle, logged_in.headers)
    uid = form.id
    statuses = [_status(client, idle, logged_in, uid)]
    assert stepper.step() is None  # an announced file has nothing to run
    posted = post_parts(client, form.url, form_parts(form.fields, ENROLLMENT_CSV, filename="roster.csv"))
    assert posted.status_code == 204
    upload_id = upload_row(idle, uid).id
    statuses.append(_status(client, idle, logged_in, uid))
    # Nothing is reported before cleansing has written it.
    assert_envelope(row_report(client, idle, logged_in, uid), 404, "report_not_found")

    stepper.run(upload_id, "analyze")
    statuses.append(_status(client, idle, logged_in, uid))
    assert pipeline_jobs(idle, upload_id) == [("analyze", "done"), ("cleanse", "pending")]
    assert_envelope(row_report(client, idle, logged_in, uid), 404, "report_not_found")

    seen_while_cleansing = _watch_cleansing(monkeypatch, client, idle, logged_in, uid)
    stepper.run(upload_id, "cleanse")
    statuses += [*seen_while_cleansing, _status(client, idle, logged_in, uid)]
    assert row_report(client, idle, logged_in, uid).status_code == 200
    assert _staged(idle, upload_id) == 0

    stepper.run(upload_id, "ingest")
    statuses.append(_status(client, idle, logged_in, uid))
    assert _staged(idle, upload_id) == 3
    assert _production(idle, "enrollment", upload_id) == []

    stepper.run(upload_id, "process")
    statuses.append(_status(client, idle, logged_in, uid))
    assert _staged(idle, upload_id) == 0
    assert [unique_id for _row, unique_id, _record in _production(idle, "enrollment", upload_id)] == [
        "00123",
        "00124",
        "00125",
    ]

    assert statuses == [
        "uploading",
        "analyzing",
        "enqueued",
        "cleansing",
        "ingesting",
        "processing",
        "done",
    ]
    assert stepper.runs == [StageRun(upload_id, stage) for stage in STAGES]
    assert pipeline_jobs(idle, upload_id) == [(stage, "done") for stage in STAGES]
    meta = get_file(client, idle, logged_in, uid)["meta"]
    assert (meta["acceptedRows"], meta["stagedRows"], meta["loadedRows"]) == (3, 3, 3)


def _lose_staged_rows(server: InProcessApp, upload_id: int, loss: str) -> Path | None:
    """Lose the upload's staged rows as the machine or the database can; the staging file, if any."""
    with server.db() as db:
        staging = staging_for(db)
        if not isinstance(staging, FileStaging):
            # PostgreSQL's crash recovery empties the unlogged staging table
            assert db.scalar(text("SELECT relpersistence FROM pg_class WHERE relname = 'staged_rows'")) == "u"
            db.execute(text("TRUNCATE staged_rows, staged_terms"))
            db.commit()
            return None
        path = staging.file(upload_id)
    if loss == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"" if loss == "emptied" else b"\0" * 8192)
    return path


def _assert_loaded_once(client: httpx2.Client, server: InProcessApp, logged_in: LoggedIn, uid: str) -> None:
    """The enrollment file ENROLLMENT_CSV is done, its three rows loaded once each."""
    record = get_file(client, server, logged_in, uid)
    assert (record["status"], record["meta"]["loadedRows"]) == ("done", 3)
    production = _production(server, "enrollment", upload_row(server, uid).id)
    assert [unique_id for _row, unique_id, _record in production] == ["00123", "00124", "00125"]


@pytest.mark.parametrize("loss", ["emptied", "deleted", "overwritten"])
def test_lost_staged_rows_are_loaded_again_from_the_cleansed_rows(
    client: httpx2.Client, idle: InProcessApp, logged_in: LoggedIn, stepper: StageStepper, loss: str
) -> None:
    """Staging is not durable (a SQLite staging file is written without syncs; PostgreSQL's is an unlogged
    table): rows lost between ingest and processing are loaded again, not taken for an empty file."""
    if loss != "emptied" and not idle.database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL loses an unlogged table's rows in one way: all of them")
    uid = send_file(client, idle, logged_in, ENROLLMENT_CSV)
    upload_id = upload_row(idle, uid).id
    for stage in ("analyze", "cleanse", "ingest"):
        stepper.run(upload_id, stage)
    assert _staged(idle, upload_id) == 3
    path = _lose_staged_rows(idle, upload_id, loss)
    assert _staged(idle, upload_id) == 0
    stepper.run(upload_id, "process")
    _assert_loaded_once(client, idle, logged_in, uid)
    assert _staged(idle, upload_id) == 0
    assert path is None or not path.exists()


def test_a_torn_staging_file_is_loaded_again_on_the_next_attempt(
    client: httpx2.Client, idle: InProcessApp, logged_in: LoggedIn
) -> None:
    """The machine stopping can tear a staging file (written without syncs) and keep its header, with the
    count in it, over lost pages: processing finds the file damaged, deletes it, and its next attempt loads
    the rows again from the cleansed rows."""
    if not idle.database_url.startswith("sqlite"):
        pytest.skip("only SQLite stages rows in a file per upload")
    uid = send_file(client, idle, logged_in, ENROLLMENT_CSV)
    upload_id = upload_row(idle, uid).id
    with stage_stepper(idle, max_attempts=2) as stepper:
        for stage in ("analyze", "cleanse", "ingest"):
            stepper.run(upload_id, stage)
        with idle.db() as db:
            staging = staging_for(db)
            assert isinstance(staging, FileStaging) and staging.complete(upload_id, 3)
            path = staging.file(upload_id)
        with path.open("r+b") as torn:
            header = torn.read(SQLITE_PAGE_SIZE)
            torn.write(b"\0" * (path.stat().st_size - len(header)))
        with idle.db() as db:
            assert staging_for(db).complete(upload_id, 3)
        stepper.run(upload_id, "process")
        assert not path.exists()
        assert _status(client, idle, logged_in, uid) == "processing"
        assert _production(idle, "enrollment", upload_id) == []
        _retry_now(stepper, upload_id, "process")
        stepper.run(upload_id, "process")
    _assert_loaded_once(client, idle, logged_in, uid)
    assert not path.exists()


def test_a_file_cannot_be_canceled_once_cleansing_started(
    client: httpx2.Client, idle: InProcessApp, logged_in: LoggedIn, stepper: StageStepper
) -> None:
    uid = send_file(client, idle, logged_in, ENROLLMENT_CSV)
    upload_id = upload_row(idle, uid).id
    for stage, status in [("analyze", None), ("cleanse", "ingesting"), ("ingest", "processing")]:
        stepper.run(upload_id, stage)
        if status is None:
            continue
        refused = client.post(f"{idle.base_url}/files/{uid}/cancel", headers=logged_in.headers)
        error = assert_envelope(refused, 422, "invalid_status")
        assert error["message"] == f"This file status is [{status}] and cannot be canceled."
    stepper.run(upload_id, "process")
    assert _status(client, idle, logged_in, uid) == "done"


def test_a_file_waiting_for_a_mapping_runs_nothing_until_it_is_mapped(
    client: httpx2.Client, idle: InProcessApp, logged_in: LoggedIn, stepper: StageStepper
) -> None:
    content = b"Matricule,Annee,Candidature\r\n7,2026,2025/10/01\r\n"
    uid = send_file(client, idle, logged_in, content, datasource="Data Center")
    upload_id = upload_row(idle, uid).id
    stepper.run(upload_id, "analyze")
    assert _status(client, idle, logged_in, uid) == "fields_mapping_required"
    assert stepper.step() is None
    mapping = {"UniqueID": "Matricule", "EntryYear": "Annee", "Applied": "Candidature"}
    processed = client.post(f"{idle.base_url}/files/{uid}/process", headers=logged_in.headers, json=mapping)
    assert processed.status_code == 200, processed.text
    assert processed.json()["status"] == "enqueued"
    for stage in ("cleanse", "ingest", "process"):
        stepper.run(upload_id, stage)
    assert _status(client, idle, logged_in, uid) == "done"
    assert [json.loads(record) for _row, _uid, record in _production(idle, "enrollment", upload_id)] == [
        {"UniqueID": "7", "EntryYear": "2026", "Applied": "2025/10/01"}
    ]


def test_a_file_whose_rows_are_all_rejected_fails_in_cleansing(
    client: httpx2.Client,
    idle: InProcessApp,
    logged_in: LoggedIn,
    stepper: StageStepper,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uid = send_file(client, idle, logged_in, b"UniqueID,EntryYear,Applied\r\n1,2026,\r\n2,,2025/10/01\r\n")
    upload_id = upload_row(idle, uid).id
    stepper.run(upload_id, "analyze")
    seen = _watch_cleansing(monkeypatch, client, idle, logged_in, uid)
    stepper.run(upload_id, "cleanse")
    record = get_file(client, idle, logged_in, uid)
    assert [*seen, record["status"]] == ["cleansing", "failure"]
    assert record["error"].startswith("None of the file's 2 rows could be accepted.")
    assert pipeline_jobs(idle, upload_id) == [("analyze", "done"), ("cleanse", "done")]


def test_an_analyzing_file_can_be_canceled_and_is_never_analyzed(
    client: httpx2.Client, idle: InProcessApp, logged_in: LoggedIn, stepper: StageStepper
) -> None:
    uid = send_file(client, idle, logged_in, ENROLLMENT_CSV)
    assert _status(client, idle, logged_in, uid) == "analyzing"
    canceled = client.post(f"{idle.base_url}/files/{uid}/cancel", headers=logged_in.headers)
    assert canceled.status_code == 200, canceled.text
    assert _status(client, idle, logged_in, uid) == "canceled"
    assert stepper.step() is None
    assert get_file(client, idle, logged_in, uid)["meta"] == {}


def _snapshot(
    client: httpx2.Client, server: InProcessApp, logged_in: LoggedIn, product: str, uid: str
) -> dict[str, Any]:
    upload_id = upload_row(server, uid).id
    record = get_file(client, server, logged_in, uid)
    with server.db() as db:
        exports = db.scalar(select(func.count()).select_from(Export).where(Export.product_key == "ematch"))
    return {
        "status": record["status"],
        "meta": record["meta"],
        "recordVolume": record["recordVolume"],
        "report": row_report(client, server, logged_in, uid).text,
        "staged": _staged(server, upload_id),
        "production": _production(server, product, upload_id),
        "exports": exports,
    }


@pytest.mark.parametrize("product", list(FILES))
def test_finished_stages_queued_again_change_nothing(
    client: httpx2.Client, idle: InProcessApp, logged_in: LoggedIn, stepper: StageStepper, product: str
) -> None:
    uid = send_file(client, idle, logged_in, FILES[product], file_name=f"{product}.csv", product_type=product)
    upload_id = upload_row(idle, uid).id
    assert stepper.drain() == [StageRun(upload_id, stage) for stage in STAGES]
    before = _snapshot(client, idle, logged_in, product, uid)
    assert before["status"] == "done"
    assert len(before["production"]) == 3

    with transaction(stepper.session_factory) as db:
        for stage in STAGES:
            enqueue_stage(db=db, upload_id=upload_id, stage=stage, now=utcnow())
    assert stepper.drain() == [StageRun(upload_id, stage) for stage in STAGES]
    assert _snapshot(client, idle, logged_in, product, uid) == before
    assert pipeline_jobs(idle, upload_id) == [(stage, "done") for stage in STAGES]


def _rewind(stepper: StageStepper, upload_id: int, *, status: str, stage: str) -> None:
    """Put the upload back in `status` with `stage` queued, as if a person asked for it to be redone."""
    with transaction(stepper.session_factory) as db:
        db.execute(update(Upload).where(Upload.id == upload_id).values(status=status))
        enqueue_stage(db=db, upload_id=upload_id, stage=stage, now=utcnow())


COUNTS = ("acceptedRows", "warnedRows", "rejectedRows", "warnings", "stagedRows", "loadedRows")


@pytest.mark.parametrize("product", list(FILES))
def test_a_file_processed_again_from_cleansing_loads_the_same_rows_once(
    client: httpx2.Client, idle: InProcessApp, logged_in: LoggedIn, stepper: StageStepper, product: str
) -> None:
    uid = send_file(client, idle, logged_in, FILES[product], file_name=f"{product}.csv", product_type=product)
    upload_id = upload_row(idle, uid).id
    assert stepper.drain() == [StageRun(upload_id, stage) for stage in STAGES]
    first = _snapshot(client, idle, logged_in, product, uid)
    assert first["status"] == "done"
    assert [row for row, _uid, _record in first["production"]] == [2, 3, 4]

    _rewind(stepper, upload_id, status="enqueued", stage="cleanse")
    assert stepper.drain() == [StageRun(upload_id, stage) for stage in ("cleanse", "ingest", "process")]
    again = _snapshot(client, idle, logged_in, product, uid)
    assert again["status"] == "done"
    assert again["report"] == first["report"]
    assert again["staged"] == 0
    assert again["production"] == first["production"]
    assert {name: again["meta"].get(name) for name in COUNTS} == {
        name: first["meta"].get(name) for name in COUNTS
    }
    if product == "enrollment":
        # The file's own earlier rows are replaced silently: they are not another file's records.
        assert again["meta"]["replacedRows"] == 0
    if product == "ematch":
        assert (again["meta"]["matchedRows"], again["meta"]["unmatchedRows"]) == (1, 2)


def _crash_once_moving_on(monkeypatch: pytest.MonkeyPatch, stage: str, next_status: str) -> list[str]:
    """Make the stage die once when it moves the upload on to `next_status`, its work done: the list of
    statuses it died moving to fills as it does."""
    module = sys.modules[STAGE_FUNCTIONS[stage].__module__]
    real_move = module.move_upload
    crashes: list[str] = []

    def crash_once(**values: Any) -> bool:
        # The stage's work is done (rows written, report stored); it dies moving the upload on.
        if values["status"] == next_status and not crashes:
            crashes.append(values["status"])
            raise RuntimeError("worker lost")
        moved: bool = real_move(**values)
        return moved

    monkeypatch.setattr(module, "move_upload", crash_once)
    return crashes


def _export_count(server: InProcessApp) -> int | None:
    with server.db() as db:
        return db.scalar(select(func.count()).select_from(Export))


def _retry_now(stepper: StageStepper, upload_id: int, stage: str) -> None:
    """Make the failed job's retry due now."""
    with transaction(stepper.session_factory) as db:
        db.execute(
            update(PipelineJob)
            .where(PipelineJob.upload_id == upload_id, PipelineJob.stage == stage)
            .values(run_after=utcnow())
        )


def _attempts(server: InProcessApp, upload_id: int, stage: str) -> int:
    """The attempts of the upload's one job of that stage."""
    with server.db() as db:
        (attempts,) = db.scalars(
            select(PipelineJob.attempts).where(PipelineJob.upload_id == upload_id, PipelineJob.stage == stage)
        ).all()
    return attempts


@pytest.mark.parametrize(
    ("product", "stage", "next_status"),
    [
        ("enrollment", "cleanse", "ingesting"),
        ("enrollment", "ingest", "processing"),
        ("enrollment", "process", "done"),
        ("affinity", "process", "done"),
        ("ematch", "process", "done"),
    ],
)
def test_a_stage_that_crashed_before_it_finished_is_retried_without_doubling_anything(
    client: httpx2.Client,
    idle: InProcessApp,
    logged_in: LoggedIn,
    monkeypatch: pytest.MonkeyPatch,
    product: str,
    stage: str,
    next_status: str,
) -> None:
    crashes = _crash_once_moving_on(monkeypatch, stage, next_status)
    uid = send_file(client, idle, logged_in, FILES[product], file_name=f"{product}.csv", product_type=product)
    upload_id = upload_row(idle, uid).id
    exports_before = _export_count(idle)
    with stage_stepper(idle, max_attempts=2) as stepper:
        ran = stepper.drain()
        # The failed attempt waits for its retry: nothing after it ran, no production row was written.
        assert ran == [StageRun(upload_id, name) for name in STAGES[: STAGES.index(stage) + 1]]
        assert crashes == [next_status]
        status = _status(client, idle, logged_in, uid)
        assert status == {"cleanse": "cleansing", "ingest": "ingesting", "process": "processing"}[stage]
        # A load is complete before the status moves (a staging file, or rows committed in the load's own
        # transaction): a failed move leaves the rows for the retry to replace.
        assert _staged(idle, upload_id) == (3 if stage in ("ingest", "process") else 0)
        assert _production(idle, product, upload_id) == []
        _retry_now(stepper, upload_id, stage)
        assert stepper.drain() == [StageRun(upload_id, name) for name in STAGES[STAGES.index(stage) :]]

    record = get_file(client, idle, logged_in, uid)
    assert (record["status"], record["error"]) == ("done", None), record
    assert (record["meta"]["acceptedRows"], record["meta"]["stagedRows"]) == (3, 3)
    if product == "ematch":
        assert (record["meta"]["matchedRows"], record["meta"]["unmatchedRows"]) == (1, 2)
    else:
        assert record["meta"]["loadedRows"] == 3
    assert [row for row, _uid, _record in _production(idle, product, upload_id)] == [2, 3, 4]
    assert _staged(idle, upload_id) == 0
    report = row_report(client, idle, logged_in, uid).text.splitlines()
    assert len(report) == len(set(report))
    assert _attempts(idle, upload_id, stage) == 2
    assert _export_count(idle) == (exports_before or 0) + (1 if product == "ematch" else 0)
    # A retried publication overwrites its object instead of leaving an orphan beside it.
    results = list((idle.home / "objects" / "datalab-exports").glob(f"*/ematch/{uid}/*"))
    assert len(results) == (1 if product == "ematch" else 0)
