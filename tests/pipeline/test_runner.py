"""The embedded runner's claims, leases, retries and give-ups, on the configured database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import make_engine, make_session_factory, transaction, utcnow
from datalab.pipeline.models import PipelineJob
from datalab.pipeline.runner import ClaimedJob, EmbeddedRunner, StageContext, claim_job, finish_job
from datalab.pipeline.service import enqueue_stage
from datalab.storage.local import LocalObjectStore
from datalab.storage.sigv4 import Credentials
from datalab.students.matching import RuleMatcher
from datalab.uploads.models import Upload
from tests.support.databases import DatabaseFactory
from tests.support.uploads import add_analyzing_upload

LEASE = timedelta(seconds=30)


@pytest.fixture
def factory(database_factory: DatabaseFactory, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_factory.migrated_url(tmp_path))
    yield make_session_factory(engine)
    engine.dispose()


def _queued_upload(factory: sessionmaker[Session], name: str = "a.csv") -> int:
    with transaction(factory) as db:
        upload_id = add_analyzing_upload(db, name)
        enqueue_stage(db=db, upload_id=upload_id, stage="analyze", now=utcnow())
        return upload_id


def _job(factory: sessionmaker[Session], upload_id: int) -> PipelineJob:
    with factory() as db:
        job = db.scalar(select(PipelineJob).where(PipelineJob.upload_id == upload_id))
        assert job is not None
        return job


def test_a_claimed_job_is_leased_and_taken_again_when_its_lease_runs_out(
    factory: sessionmaker[Session],
) -> None:
    upload_id = _queued_upload(factory)
    now = utcnow()
    first = claim_job(session_factory=factory, worker_id="w1", lease=LEASE, now=now)
    assert first is not None
    assert (first.upload_id, first.stage, first.attempts) == (upload_id, "analyze", 1)
    assert claim_job(session_factory=factory, worker_id="w2", lease=LEASE, now=now + LEASE / 2) is None
    # w1 died: once its lease has run out, another worker resumes the job.
    second = claim_job(session_factory=factory, worker_id="w2", lease=LEASE, now=now + LEASE * 2)
    assert second is not None
    assert (second.id, second.attempts, second.worker_id) == (first.id, 2, "w2")
    with transaction(factory) as db:
        finish_job(db=db, job=first, now=utcnow())  # the old holder's late finish changes nothing
    assert _job(factory, upload_id).state == "running"
    with transaction(factory) as db:
        finish_job(db=db, job=second, now=utcnow())
    assert _job(factory, upload_id).state == "done"


def test_concurrent_claims_hand_a_job_to_exactly_one_worker(factory: sessionmaker[Session]) -> None:
    _queued_upload(factory)
    barrier = threading.Barrier(6)
    claimed: list[ClaimedJob | None] = []

    def claim(worker: int) -> None:
        barrier.wait()
        claimed.append(claim_job(session_factory=factory, worker_id=f"w{worker}", lease=LEASE, now=utcnow()))

    threads = [threading.Thread(target=claim, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([job for job in claimed if job is not None]) == 1


def _runner(
    factory: sessionmaker[Session], tmp_path: Path, stage: object, max_attempts: int
) -> EmbeddedRunner:
    store = LocalObjectStore(
        root=tmp_path / "objects", credentials=Credentials("AKIA", "secret"), region="us-east-1"
    )
    context = StageContext(
        session_factory=factory,
        store=store,
        uploads_bucket="uploads",
        exports_bucket="exports",
        temp_dir=tmp_path,
        matcher=RuleMatcher(),
        max_rejected_percent=10.0,
    )
    return EmbeddedRunner(
        context=context,
        stages={"analyze": stage},  # type: ignore[dict-item]
        workers=0,
        poll_seconds=0.1,
        lease_seconds=30,
        max_attempts=max_attempts,
    )


def test_a_failing_stage_is_retried_then_fails_the_upload_with_a_plain_reason(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    upload_id = _queued_upload(factory)
    calls: list[int] = []

    def broken(_context: StageContext, job: ClaimedJob) -> None:
        calls.append(job.attempts)
        raise RuntimeError("disk on fire")

    runner = _runner(factory, tmp_path, broken, max_attempts=2)
    assert runner.run_one("w1") is True
    job = _job(factory, upload_id)
    assert (job.state, job.attempts, job.last_error) == ("pending", 1, "RuntimeError: disk on fire")
    assert job.run_after > utcnow()
    assert runner.run_one("w1") is False  # backing off
    with transaction(factory) as db:
        db.get_one(PipelineJob, job.id).run_after = utcnow()
    assert runner.run_one("w1") is True
    assert calls == [1, 2]
    assert _job(factory, upload_id).state == "failed"
    with factory() as db:
        upload = db.get_one(Upload, upload_id)
    assert upload.status == "failure"
    assert upload.error is not None
    assert "disk on fire" not in upload.error
    assert upload.error.startswith("The file could not be processed (analyze failed 2 times)")


def test_an_idle_runner_reports_no_work(factory: sessionmaker[Session], tmp_path: Path) -> None:
    def never(_context: StageContext, _job: ClaimedJob) -> None:
        raise AssertionError("no job should run")

    assert _runner(factory, tmp_path, never, max_attempts=1).run_one("w1") is False


def test_stage_runs_are_timed_and_failures_counted(factory: sessionmaker[Session], tmp_path: Path) -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    failures_before = value("datalab_pipeline_stage_failures_total", stage="analyze")
    failed_runs_before = value(
        "datalab_pipeline_stage_duration_seconds_count", stage="analyze", outcome="failure"
    )
    _queued_upload(factory)

    def broken(_context: StageContext, _job: ClaimedJob) -> None:
        raise RuntimeError("disk on fire")

    assert _runner(factory, tmp_path, broken, max_attempts=1).run_one("w1") is True
    assert value("datalab_pipeline_stage_failures_total", stage="analyze") == failures_before + 1
    assert (
        value("datalab_pipeline_stage_duration_seconds_count", stage="analyze", outcome="failure")
        == failed_runs_before + 1
    )
