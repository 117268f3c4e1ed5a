"""Two enrollment files of one organization processed at once: the one that commits last replaces the
terms the other committed, as if they had been processed one after the other.

On PostgreSQL the processing transactions overlap (SQLite's write transactions never do: BEGIN IMMEDIATE).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from datalab.accounts.service import create_organization
from datalab.db import make_engine, make_session_factory, transaction, utcnow
from datalab.lifecycle import UploadStatus
from datalab.pipeline.models import StagedRow, StagedTerm
from datalab.pipeline.staging import staging_for
from datalab.records.models import EnrollmentRecord, EnrollmentTerm
from datalab.records.service import apply_enrollment
from datalab.uploads.models import Upload
from tests.support.accounts import unique, unique_fice
from tests.support.databases import DatabaseFactory
from tests.support.factories import add_upload_row

# How long the second transaction is given to reach the lock (a bound on a hang, not a speed measure).
_REACH_LOCK_SECONDS = 60


@pytest.fixture
def factory(database_factory: DatabaseFactory, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_factory.migrated_url(tmp_path))
    if engine.dialect.name != "postgresql":
        engine.dispose()
        pytest.skip("SQLite runs one write transaction at a time")
    yield make_session_factory(engine)
    engine.dispose()


def _staged_upload(db: Session, organization_id: int, unique_ids: list[str]) -> int:
    """An enrollment upload in `processing` whose staged rows are these students of fall 2027."""
    upload_id = add_upload_row(db, organization_id=organization_id, status=UploadStatus.PROCESSING)
    db.execute(
        insert(StagedRow),
        [
            {
                "upload_id": upload_id,
                "row_number": row,
                "unique_id": unique_id,
                "entry_year": "2027",
                "entry_term": "FALL",
                "record": f'{{"UniqueID":"{unique_id}"}}',
            }
            for row, unique_id in enumerate(unique_ids, start=2)
        ],
    )
    db.execute(insert(StagedTerm).values(upload_id=upload_id, entry_year="2027", entry_term="FALL"))
    return upload_id


def _apply(db: Session, upload_id: int) -> dict[str, int]:
    upload = db.get_one(Upload, upload_id)
    with staging_for(db).tables(upload_id) as staged:
        return apply_enrollment(db=db, upload=upload, staged=staged.rows, terms=staged.terms, now=utcnow())


def _waiting_for_a_lock(factory: sessionmaker[Session]) -> bool:
    with factory() as db:
        waiting = db.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
            )
        )
        return bool(waiting)


def test_the_file_committed_last_replaces_the_terms_of_the_one_processed_beside_it(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as db:
        organization = create_organization(db=db, name=unique("Concurrent College"), fice=unique_fice())
        first = _staged_upload(db, organization.id, ["00001", "00002"])
        second = _staged_upload(db, organization.id, ["00003"])
    outcomes: dict[str, dict[str, int]] = {}

    def process_second() -> None:
        with transaction(factory) as db:
            outcomes["second"] = _apply(db, second)

    with transaction(factory) as db:
        outcomes["first"] = _apply(db, first)
        beside = threading.Thread(target=process_second)
        beside.start()
        deadline = time.monotonic() + _REACH_LOCK_SECONDS
        while beside.is_alive() and not _waiting_for_a_lock(factory) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "second" not in outcomes, "the second file was processed while the first was uncommitted"
    beside.join()

    assert outcomes == {
        "first": {"loadedRows": 2, "replacedRows": 0},
        "second": {"loadedRows": 1, "replacedRows": 2},
    }
    with factory() as db:
        records = db.execute(select(EnrollmentRecord.upload_id, EnrollmentRecord.unique_id)).all()
        terms = db.execute(select(EnrollmentTerm.upload_id, EnrollmentTerm.entry_term)).all()
    assert [tuple(row) for row in records] == [(second, "00003")]
    assert [tuple(row) for row in terms] == [(second, "FALL")]
