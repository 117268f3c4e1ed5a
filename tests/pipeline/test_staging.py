"""Staged rows: PostgreSQL's staging table is cleared only of the upload's rows, whatever else it holds or is
being loaded into it; SQLite's staging files are replaced only when complete, read through an attachment
that does not outlive the unit of work, and deleted."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from datalab.accounts.service import create_organization
from datalab.db import make_engine, make_session_factory, transaction
from datalab.lifecycle import UploadStatus
from datalab.pipeline.artifacts import STAGED_SCHEMA, staged_batches
from datalab.pipeline.models import StagedRow, StagedTerm
from datalab.pipeline.staging import FileStaging, TableStaging, staging_for
from tests.support.accounts import unique, unique_fice
from tests.support.databases import DatabaseFactory
from tests.support.factories import add_upload_row


@pytest.fixture
def factory(database_factory: DatabaseFactory, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_factory.migrated_url(tmp_path))
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def table_factory(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    if factory.kw["bind"].dialect.name == "sqlite":
        pytest.skip("SQLite stages rows in a file per upload, not in the staging table")
    return factory


@pytest.fixture
def file_factory(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    if factory.kw["bind"].dialect.name != "sqlite":
        pytest.skip("only SQLite stages rows in a file per upload")
    return factory


def _stage(db: Session, upload_id: int, rows: int = 3) -> None:
    db.execute(
        insert(StagedRow),
        [{"upload_id": upload_id, "row_number": n, "record": "{}"} for n in range(2, rows + 2)],
    )


def _staged(factory: sessionmaker[Session]) -> dict[int, int]:
    with factory() as db:
        counts = db.execute(select(StagedRow.upload_id, func.count()).group_by(StagedRow.upload_id))
        return {row[0]: row[1] for row in counts}


def _table(db: Session) -> TableStaging:
    """The session's staging, which must be the staging table."""
    staging = staging_for(db)
    assert isinstance(staging, TableStaging)
    return staging


def _files(db: Session) -> FileStaging:
    """The session's staging, which must be files of their own."""
    staging = staging_for(db)
    assert isinstance(staging, FileStaging)
    return staging


@pytest.mark.parametrize("clear", [TableStaging.discard, TableStaging.clear_processed])
def test_clearing_an_upload_leaves_the_rows_of_the_others(
    table_factory: sessionmaker[Session], clear: Callable[[TableStaging, int], None]
) -> None:
    with transaction(table_factory) as db:
        _stage(db, 1)
        _stage(db, 2)
    with transaction(table_factory) as db:
        clear(_table(db), 1)
    assert _staged(table_factory) == {2: 3}
    with transaction(table_factory) as db:
        staging = _table(db)
        clear(staging, 2)
        clear(staging, 3)
    assert _staged(table_factory) == {}


def test_processed_rows_are_cleared_without_the_rows_of_a_load_not_yet_committed(
    table_factory: sessionmaker[Session],
) -> None:
    with transaction(table_factory) as db:
        _stage(db, 1)
    with table_factory() as loading, loading.begin():
        _stage(loading, 2)
        with transaction(table_factory) as db:
            _table(db).clear_processed(1)
    assert _staged(table_factory) == {2: 3}


def _batches(*row_numbers: int) -> Iterator[pa.RecordBatch]:
    """Record batches of staging rows, one per argument (each argument: the rows in that batch)."""
    start = 2
    for count in row_numbers:
        numbers = list(range(start, start + count))
        start += count
        yield pa.RecordBatch.from_pydict(
            {
                "row_number": numbers,
                "unique_id": [f"{n:07d}" for n in numbers],
                "entry_year": ["2025"] * count,
                "entry_term": ["Fall" if n % 2 else "Spring" for n in numbers],
                "record": [f'{{"UniqueID":"{n:07d}"}}' for n in numbers],
            },
            schema=STAGED_SCHEMA,
        )


def _terms_staged(factory: sessionmaker[Session]) -> list[tuple[int, str, str]]:
    with factory() as db:
        terms = db.execute(select(StagedTerm.upload_id, StagedTerm.entry_year, StagedTerm.entry_term))
        return sorted((row[0], row[1], row[2]) for row in terms)


def test_a_table_load_replaces_the_uploads_rows_whole_or_not_at_all(
    table_factory: sessionmaker[Session],
) -> None:
    def failing() -> Iterator[pa.RecordBatch]:
        yield from _batches(4)
        raise OSError("the cleansed rows file ends early")

    with table_factory() as db:
        staging = _table(db)
        assert staging.load(7, _batches(2, 3)) == 5
        assert staging.load(8, _batches(1)) == 1
        # committed by the load itself: visible to every session at once
        assert _staged(table_factory) == {7: 5, 8: 1}
        with pytest.raises(OSError, match="ends early"):
            staging.load(7, failing())
        assert _staged(table_factory) == {7: 5, 8: 1}
        assert staging.load(7, _batches(3)) == 3
    assert _staged(table_factory) == {7: 3, 8: 1}
    assert _terms_staged(table_factory) == [(7, "2025", "Fall"), (7, "2025", "Spring"), (8, "2025", "Spring")]


def test_rows_of_uploads_no_stage_will_read_are_discarded_before_an_ingest(
    table_factory: sessionmaker[Session],
) -> None:
    """A load commits before the status moves: rows of an upload that then failed are not kept."""
    with transaction(table_factory) as db:
        organization_id = create_organization(db=db, name=unique("Staging College"), fice=unique_fice()).id
        waiting = add_upload_row(db, organization_id=organization_id, status=UploadStatus.PROCESSING)
        failed = add_upload_row(db, organization_id=organization_id, status=UploadStatus.FAILURE)
    with table_factory() as db:
        for upload_id in (waiting, failed):
            _table(db).load(upload_id, _batches(2))
    with transaction(table_factory) as db:
        _table(db).discard_leftovers()
    assert _staged(table_factory) == {waiting: 2}
    assert _terms_staged(table_factory) == [(waiting, "2025", "Fall"), (waiting, "2025", "Spring")]


def test_a_staging_file_holds_the_rows_in_the_columns_processing_reads(
    file_factory: sessionmaker[Session],
) -> None:
    with file_factory() as db:
        staging = _files(db)
        assert staging.load(7, _batches(2, 3)) == 5
        assert staging.count(7) == 5
        assert staging.complete(7, 5)
        assert not staging.complete(7, 4)
        assert not staging.partial_file(7).exists()
    with transaction(file_factory) as db, _files(db).tables(7) as staged:
        rows = db.execute(select(staged.rows).order_by(staged.rows.c.row_number)).all()
        terms = db.execute(select(staged.terms)).all()
    assert [(row.upload_id, row.row_number, row.unique_id, row.record) for row in rows] == [
        (7, n, f"{n:07d}", f'{{"UniqueID":"{n:07d}"}}') for n in range(2, 7)
    ]
    # the distinct entry terms of the rows, staged with them
    assert sorted(terms) == [(7, "2025", "Fall"), (7, "2025", "Spring")]


def test_the_attachment_ends_with_the_unit_of_work(file_factory: sessionmaker[Session]) -> None:
    """A pooled connection is not left with an upload's staging file attached, even after a failure."""
    with file_factory() as db:
        _files(db).load(7, _batches(1))
    with pytest.raises(RuntimeError, match="stop"), transaction(file_factory) as db, _files(db).tables(7):
        raise RuntimeError("stop")
    with transaction(file_factory) as db, _files(db).tables(7) as staged:
        assert db.scalar(select(func.count()).select_from(staged.rows)) == 1
    for _ in range(3):
        with file_factory() as db:
            names = [row[1] for row in db.execute(text("PRAGMA database_list"))]
        assert names == ["main"]


def test_a_load_that_stops_half_way_leaves_the_earlier_file(file_factory: sessionmaker[Session]) -> None:
    def failing() -> Iterator[pa.RecordBatch]:
        yield from _batches(4)
        raise OSError("the disk is full")

    with file_factory() as db:
        staging = _files(db)
        staging.load(7, _batches(2))
        with pytest.raises(OSError, match="disk is full"):
            staging.load(7, failing())
        assert staging.count(7) == 2
        assert staging.complete(7, 2)
        # the next load starts over from nothing
        assert staging.load(7, _batches(3)) == 3
        assert staging.count(7) == 3


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 100])
def test_a_missing_or_unreadable_file_is_not_complete(
    file_factory: sessionmaker[Session], content: bytes
) -> None:
    with file_factory() as db:
        staging = _files(db)
        assert not staging.complete(7, 0)
        assert staging.count(7) == 0
        path = staging.file(7)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        assert not staging.complete(7, 3)
        assert staging.count(7) == 0


def test_a_file_of_an_earlier_layout_is_not_complete(file_factory: sessionmaker[Session]) -> None:
    """A staging file written before the terms were staged with the rows (its header has no layout mark)
    is loaded again rather than read."""
    with file_factory() as db:
        staging = _files(db)
        staging.load(7, _batches(3))
        with closing(sqlite3.connect(staging.file(7))) as earlier:
            earlier.execute("PRAGMA application_id=0")
        assert not staging.complete(7, 3)
        assert staging.count(7) == 3


def test_discarded_and_leftover_files(file_factory: sessionmaker[Session]) -> None:
    with file_factory() as db:
        staging = _files(db)
        for upload_id in (1, 2, 3):
            staging.load(upload_id, _batches(1))
        staging.partial_file(4).write_bytes(b"")
        (staging.file(5).parent / "notes.txt").write_text("not a staging file")
        assert sorted(path.name for path in staging.leftovers({2, 3})) == ["1.sqlite", "4.sqlite.part"]
        staging.discard(2)
        assert not staging.file(2).exists()
        assert sorted(path.name for path in staging.leftovers({1, 3, 4})) == []
        assert staging.count(3) == 1


@pytest.mark.parametrize("strings", ["string views", "large strings"])
def test_a_cleansed_rows_file_is_staged_whichever_strings_it_holds(
    factory: sessionmaker[Session], tmp_path: Path, strings: str
) -> None:
    """Cleansing writes string views; files it wrote in large strings before are staged the same."""
    schema = STAGED_SCHEMA
    if strings == "large strings":
        schema = pa.schema(
            [
                (field.name, pa.large_string() if field.type == pa.string_view() else field.type)
                for field in schema
            ]
        )
    path = tmp_path / "cleansed.arrows"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in _batches(2, 1):
            writer.write_batch(batch.cast(schema))
    with transaction(factory) as db, staged_batches(path) as batches:
        staging = staging_for(db)
        assert staging.load(7, batches) == 3
        with staging.tables(7) as staged:
            rows = db.execute(
                select(staged.rows.c.row_number, staged.rows.c.record).order_by(staged.rows.c.row_number)
            ).all()
            terms = db.execute(select(staged.terms)).all()
    assert [tuple(row) for row in rows] == [(n, f'{{"UniqueID":"{n:07d}"}}') for n in range(2, 5)]
    assert sorted(terms) == [(7, "2025", "Fall"), (7, "2025", "Spring")]


def test_a_file_of_other_rows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.arrows"
    schema = pa.schema([("row_number", pa.int64())])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema):
        pass
    with pytest.raises(ValueError, match="not a file of staging rows"), staged_batches(path):
        pass
