"""The procrastinate engine: stages deferred in the status transaction, its retries, the hand-over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import procrastinate
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import make_engine, make_session_factory, transaction, upgrade_database, utcnow
from datalab.pipeline.models import PipelineJob
from datalab.pipeline.pgqueue import STAGE_QUEUE, install_schema
from datalab.pipeline.runner import ClaimedJob, StageContext, claim_job
from datalab.pipeline.service import QUEUE_INFO_KEY, enqueue_stage
from datalab.pipeline.worker import RETRY_WAIT_SECONDS, hand_over_embedded_jobs, make_worker_app
from datalab.scoping import OrgContext
from datalab.settings import Settings
from datalab.storage.local import LocalObjectStore
from datalab.storage.sigv4 import Credentials
from datalab.students.matching import RuleMatcher
from datalab.uploads.models import Upload
from datalab.uploads.service import cancel_upload
from tests.support.databases import DatabaseFactory, postgres_url, queued_stage_jobs
from tests.support.uploads import add_analyzing_upload

pytestmark = pytest.mark.skipif(
    postgres_url() is None, reason="procrastinate needs PostgreSQL (set DATALAB_TEST_DATABASE_URL)"
)


@pytest.fixture
def database_url(database_factory: DatabaseFactory, tmp_path: Path) -> str:
    url = database_factory.new_url(tmp_path)
    engine = make_engine(url)
    upgrade_database(engine)
    install_schema(engine)
    install_schema(engine)  # a second start finds the schema there
    engine.dispose()
    return url


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine, info={QUEUE_INFO_KEY: "procrastinate"})
    engine.dispose()


def test_a_stage_is_deferred_only_when_its_status_change_commits(
    factory: sessionmaker[Session], database_url: str
) -> None:
    with factory() as db:
        add_analyzing_upload(db, "rolled.csv")
        enqueue_stage(db=db, upload_id=add_analyzing_upload(db, "back.csv"), stage="analyze", now=utcnow())
        db.rollback()
    assert queued_stage_jobs(database_url) == []
    with transaction(factory) as db:
        upload_id = add_analyzing_upload(db, "kept.csv")
        enqueue_stage(db=db, upload_id=upload_id, stage="analyze", now=utcnow())
    assert queued_stage_jobs(database_url) == [("todo", {"upload_id": upload_id, "stage": "analyze"})]
    with factory() as db:
        assert db.scalars(select(PipelineJob)).all() == []


def test_canceling_an_upload_cancels_its_waiting_job(
    factory: sessionmaker[Session], database_url: str
) -> None:
    with transaction(factory) as db:
        kept = add_analyzing_upload(db, "kept.csv")
        enqueue_stage(db=db, upload_id=kept, stage="analyze", now=utcnow())
        canceled = add_analyzing_upload(db, "gone.csv")
        enqueue_stage(db=db, upload_id=canceled, stage="analyze", now=utcnow())
    with transaction(factory) as db:
        upload = db.get_one(Upload, canceled)
        cancel_upload(
            db=db, org=OrgContext(user=None, organization=upload.organization), uid=upload.uid, now=utcnow()
        )
    assert queued_stage_jobs(database_url) == [("todo", {"upload_id": kept, "stage": "analyze"})]
    with factory() as db:
        assert (db.get_one(Upload, canceled).status, db.get_one(Upload, canceled).queue_job_id) == (
            "canceled",
            None,
        )
        assert db.get_one(Upload, kept).queue_job_id is not None


async def _run_until_idle(app: procrastinate.App) -> None:
    async with app.open_async():
        await app.run_worker_async(
            queues=[STAGE_QUEUE], wait=False, install_signal_handlers=False, delete_jobs="successful"
        )


def test_a_failing_stage_is_retried_by_procrastinate_then_fails_the_upload(
    factory: sessionmaker[Session], database_url: str, tmp_path: Path
) -> None:
    with transaction(factory) as db:
        upload_id = add_analyzing_upload(db, "a.csv")
        enqueue_stage(db=db, upload_id=upload_id, stage="analyze", now=utcnow())
    calls: list[int] = []

    def broken(_context: StageContext, job: ClaimedJob) -> None:
        calls.append(job.attempts)
        raise RuntimeError("disk on fire")

    settings = Settings(
        home=tmp_path,
        database_url=database_url,
        dev_mode=True,
        pipeline_queue="procrastinate",
        pipeline_max_attempts=2,
    )
    context = StageContext(
        session_factory=factory,
        store=LocalObjectStore(
            root=tmp_path / "objects", credentials=Credentials("AKIA", "secret"), region="us-east-1"
        ),
        uploads_bucket="uploads",
        exports_bucket="exports",
        temp_dir=tmp_path,
        matcher=RuleMatcher(),
        max_rejected_percent=10.0,
    )
    app = make_worker_app(settings=settings, context=context, stages={"analyze": broken}, name="test")
    asyncio.run(_run_until_idle(app))
    job = {"upload_id": upload_id, "stage": "analyze"}
    # The first failure is retried later: the job waits, the upload is untouched.
    assert (calls, queued_stage_jobs(database_url)) == ([1], [("todo", job)])
    with factory() as db:
        assert db.get_one(Upload, upload_id).status == "analyzing"
    time.sleep(RETRY_WAIT_SECONDS + 0.5)
    asyncio.run(_run_until_idle(app))
    assert (calls, queued_stage_jobs(database_url)) == ([1, 2], [("failed", job)])
    with factory() as db:
        upload = db.get_one(Upload, upload_id)
    assert upload.status == "failure"
    assert upload.error is not None
    assert "disk on fire" not in upload.error
    assert upload.error.startswith("The file could not be processed (analyze failed 2 times)")


def test_a_worker_defers_the_stages_the_embedded_queue_still_holds(
    factory: sessionmaker[Session], database_url: str
) -> None:
    embedded = make_session_factory(factory.kw["bind"])
    with transaction(embedded) as db:
        running_id = add_analyzing_upload(db, "running.csv")
        enqueue_stage(db=db, upload_id=running_id, stage="analyze", now=utcnow())
    # A live embedded thread holds this one: it is left to that thread.
    held = claim_job(session_factory=embedded, worker_id="w1", lease=timedelta(minutes=5), now=utcnow())
    assert held is not None
    with transaction(embedded) as db:
        upload_id = add_analyzing_upload(db, "waiting.csv")
        enqueue_stage(db=db, upload_id=upload_id, stage="cleanse", now=utcnow())
    assert hand_over_embedded_jobs(factory) == 1
    assert hand_over_embedded_jobs(factory) == 0
    with factory() as db:
        states = db.execute(select(PipelineJob.upload_id, PipelineJob.state).order_by(PipelineJob.id)).all()
    assert [tuple(row) for row in states] == [(running_id, "running"), (upload_id, "done")]
    assert queued_stage_jobs(database_url) == [("todo", {"upload_id": upload_id, "stage": "cleanse"})]
