"""Clearing staged rows: only the upload's, whatever else staging holds or is being loaded into it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from datalab.db import make_engine, make_session_factory, transaction
from datalab.pipeline.models import StagedRow
from datalab.pipeline.staging import clear_processed, clear_staged
from tests.support.databases import DatabaseFactory


@pytest.fixture
def factory(database_factory: DatabaseFactory, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_factory.migrated_url(tmp_path))
    yield make_session_factory(engine)
    engine.dispose()


def _stage(db: Session, upload_id: int, rows: int = 3) -> None:
    db.execute(
        insert(StagedRow),
        [{"upload_id": upload_id, "row_number": n, "record": "{}"} for n in range(2, rows + 2)],
    )


def _staged(factory: sessionmaker[Session]) -> dict[int, int]:
    with factory() as db:
        counts = db.execute(select(StagedRow.upload_id, func.count()).group_by(StagedRow.upload_id))
        return {row[0]: row[1] for row in counts}


@pytest.mark.parametrize("clear", [clear_staged, clear_processed])
def test_clearing_an_upload_leaves_the_rows_of_the_others(
    factory: sessionmaker[Session], clear: Callable[[Session, int], None]
) -> None:
    with transaction(factory) as db:
        _stage(db, 1)
        _stage(db, 2)
    with transaction(factory) as db:
        clear(db, 1)
    assert _staged(factory) == {2: 3}
    with transaction(factory) as db:
        clear(db, 2)
        clear(db, 3)
    assert _staged(factory) == {}


def test_processed_rows_are_cleared_without_the_rows_of_a_load_not_yet_committed(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as db:
        _stage(db, 1)
    if factory.kw["bind"].dialect.name == "sqlite":
        pytest.skip("SQLite has one writer at a time: no load can be under way while rows are cleared")
    with factory() as loading, loading.begin():
        _stage(loading, 2)
        with transaction(factory) as db:
            clear_processed(db, 1)
    assert _staged(factory) == {2: 3}
