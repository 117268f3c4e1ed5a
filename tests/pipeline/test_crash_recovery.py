"""Crash safety and scale-out: workers killed mid-stage, servers restarted, procrastinate workers.

A file is uploaded through the HTTP API; once it is `ingesting`, the process doing the work is killed
with SIGKILL. After a new process starts, the file must reach `done` with exactly its rows: no loss, no
duplicates.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy import distinct, func, select, text

from datalab.demo.uploads import write_enrollment_csv
from datalab.pipeline.models import PipelineJob
from datalab.pipeline.staging import FileStaging, staging_for
from datalab.records.models import EnrollmentRecord
from datalab.uploads.models import Upload
from tests.support.databases import postgres_url, queued_stage_jobs
from tests.support.server import LiveServer, LoggedIn
from tests.support.uploads import upload_and_wait, upload_row, wait_for_status

LARGE_ROWS = 150_000
# A short lease so that work held by a killed process is taken again within seconds.
FAST_RECOVERY = {"pipeline_lease_seconds": "3", "pipeline_poll_seconds": "0.2"}

needs_postgresql = pytest.mark.skipif(
    postgres_url() is None, reason="procrastinate workers need PostgreSQL (set DATALAB_TEST_DATABASE_URL)"
)


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    """A client of the live servers (processes of their own) these tests kill."""
    with httpx2.Client(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("large") / "enrollment.csv"
    write_enrollment_csv(path, count=LARGE_ROWS, seed=7)
    return path.read_bytes()


def _stored(server: LiveServer, uid: str) -> tuple[int, int, int]:
    """Production rows of the upload, distinct row numbers among them, and rows left in staging."""
    with server.db() as db:
        upload_id = db.scalars(select(Upload.id).where(Upload.uid == uid)).one()
        rows = db.execute(
            select(func.count(), func.count(distinct(EnrollmentRecord.row_number))).where(
                EnrollmentRecord.upload_id == upload_id
            )
        ).one()
        staged = staging_for(db).count(upload_id)
    return int(rows[0]), int(rows[1]), staged


def _expected_accepted(record: dict[str, Any]) -> int:
    return int(record["meta"]["acceptedRows"])


def _caught_ingesting(
    client: httpx2.Client, server: LiveServer, login: LoggedIn, content: bytes
) -> dict[str, Any]:
    """Upload the file and return its record as soon as it is `ingesting` (the moment to crash)."""
    record = upload_and_wait(
        client, server, login, content, file_name="big.csv", until=frozenset({"ingesting", "done", "failure"})
    )
    assert record["status"] == "ingesting", "the file must be caught while ingesting"
    return record


def _wait_mid_ingest(server: LiveServer, uid: str) -> None:
    """Wait until rows of the upload are being loaded into staging (the moment to crash).

    SQLite writes the upload's staging file under a partial name until it is complete; PostgreSQL loads in
    one COPY (its table name quoted by the driver), which its activity view shows while it runs.
    """
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the ingest never started"
        with server.db() as db:
            if db.get_bind().dialect.name == "postgresql":
                loading = db.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND state = 'active' "
                        "AND query LIKE 'COPY %staged_rows%'"
                    )
                )
            else:
                upload_id = db.scalars(select(Upload.id).where(Upload.uid == uid)).one()
                part = FileStaging(db).partial_file(upload_id)
                loading = part.exists() and part.stat().st_size > 0
            status = db.scalar(select(Upload.status).where(Upload.uid == uid))
        assert status == "ingesting", f"the file went on to {status} before the crash"
        if loading:
            return
        time.sleep(0.01)


def _finished(client: httpx2.Client, server: LiveServer, login: LoggedIn, uid: str) -> dict[str, Any]:
    """Wait for the pipeline to finish the file after the crash; it must end `done`."""
    done = wait_for_status(client, server, login, uid, until=frozenset({"done", "failure"}), timeout=300)
    assert done["status"] == "done", done["error"]
    return done


def test_the_embedded_runner_finishes_a_file_after_the_server_is_killed_mid_ingest(
    client: httpx2.Client, make_server: Any, large_file: bytes
) -> None:
    server: LiveServer = make_server(pipeline_workers="1", own_process=True, **FAST_RECOVERY)
    login = server.login()
    record = _caught_ingesting(client, server, login, large_file)
    _wait_mid_ingest(server, record["id"])
    server.kill()
    server.start()
    login = server.login()
    done = _finished(client, server, login, record["id"])
    accepted = _expected_accepted(done)
    assert accepted + done["meta"]["rejectedRows"] == LARGE_ROWS
    assert done["meta"]["loadedRows"] == accepted
    assert _stored(server, record["id"]) == (accepted, accepted, 0)


@needs_postgresql
def test_procrastinate_workers_process_every_product(client: httpx2.Client, make_server: Any) -> None:
    server: LiveServer = make_server(pipeline_queue="procrastinate", pipeline_workers="2", **FAST_RECOVERY)
    server.start_worker()
    login = server.login()
    files = {
        "enrollment": b"UniqueID,EntryYear,EntryTerm,Applied,ZipCode\r\n00123,2026,Fall,2025-11-02,02134\r\n",
        "affinity": b"FirstName,LastName,Address1,City,StateCode,ZipCode\r\n"
        b"Ann,Lee,1 Elm St,Boston,MA,02134\r\n",
        "ematch": b"UniqueID,FirstName,LastName,BirthDate,Email\r\n"
        b"007,Ann,Lee,2008-04-01,ann@example.edu\r\n",
    }
    results = {}
    for product, content in files.items():
        record = upload_and_wait(
            client, server, login, content, product_type=product, until=frozenset({"done", "failure"})
        )
        assert record["status"] == "done", (product, record["error"])
        results[product] = record["meta"]
    assert results["enrollment"]["loadedRows"] == 1
    assert results["affinity"]["loadedRows"] == 1
    # Ann Lee is not among the demo's students: matched against them and reported unmatched.
    assert (results["ematch"]["matchedRows"], results["ematch"]["unmatchedRows"]) == (0, 1)
    with server.db() as db:
        jobs = db.scalars(select(PipelineJob.state)).all()
    # procrastinate alone held the jobs; it deletes each one that succeeded.
    assert jobs == []
    assert queued_stage_jobs(server.database_url) == []


def _stage_jobs_become(server: LiveServer, expected: list[tuple[str, dict[str, object]]]) -> None:
    """Wait until procrastinate holds exactly these stage jobs (status, arguments)."""
    deadline = time.monotonic() + 60
    while (jobs := queued_stage_jobs(server.database_url)) != expected:
        assert time.monotonic() < deadline, jobs
        time.sleep(0.05)


@needs_postgresql
def test_a_procrastinate_worker_killed_mid_ingest_is_recovered_by_the_next_worker(
    client: httpx2.Client, make_server: Any, large_file: bytes
) -> None:
    server: LiveServer = make_server(pipeline_queue="procrastinate", pipeline_workers="1", **FAST_RECOVERY)
    first = server.start_worker()
    login = server.login()
    record = _caught_ingesting(client, server, login, large_file)
    ingest = ("doing", {"upload_id": upload_row(server, record["id"]).id, "stage": "ingest"})
    _stage_jobs_become(server, [ingest])
    _wait_mid_ingest(server, record["id"])
    first.send_signal(signal.SIGKILL)
    first.wait()
    # The dead worker's job stays `doing`: only procrastinate's stalled-job recovery can run it again.
    time.sleep(1)
    assert queued_stage_jobs(server.database_url) == [ingest]
    server.start_worker()
    done = _finished(client, server, login, record["id"])
    accepted = _expected_accepted(done)
    assert _stored(server, record["id"]) == (accepted, accepted, 0)
    assert queued_stage_jobs(server.database_url) == []
