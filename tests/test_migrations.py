"""Migrations create exactly the models' schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from datalab.db import MIGRATIONS_DIR, make_engine, make_session_factory, transaction, upgrade_database
from datalab.models_registry import metadata
from datalab.pipeline.models import PipelineJob, StagedRow
from datalab.records.models import EnrollmentTerm
from datalab.uploads.models import Upload
from tests.support.databases import DatabaseFactory, postgres_url
from tests.support.uploads import add_analyzing_upload


def _assert_migrated(url: str) -> None:
    engine = make_engine(url)
    try:
        upgrade_database(engine)
        upgrade_database(engine)  # a second run is a no-op
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), metadata()) == []
            tables = set(inspect(connection).get_table_names())
        assert {
            "organizations",
            "users",
            "memberships",
            "api_keys",
            "exports",
            "deliveries",
            "download_tickets",
            "login_throttles",
            "uploads",
            "pipeline_jobs",
            "field_mappings",
            "alembic_version",
        } <= tables
    finally:
        engine.dispose()


def test_migrations_match_the_models(database_factory: DatabaseFactory, tmp_path: Path) -> None:
    _assert_migrated(database_factory.new_url(tmp_path))


def test_migrations_on_sqlite_even_when_postgres_is_configured(tmp_path: Path) -> None:
    _assert_migrated(f"sqlite:///{tmp_path / 'fresh.db'}")


@pytest.mark.postgres
def test_migrations_on_postgresql(tmp_path: Path) -> None:
    factory = DatabaseFactory(postgres_url(), tmp_path)
    try:
        _assert_migrated(factory.new_url(tmp_path))
    finally:
        factory.drop_all()


def _migrate(engine: Engine, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def test_uploads_staged_in_the_sqlite_table_are_cleansed_again(tmp_path: Path) -> None:
    """SQLite stages rows in a file per upload since 0016: an upload whose rows were in the table when it
    was upgraded is cleansed again from its file rather than processed from nothing."""
    engine = make_engine(f"sqlite:///{tmp_path / 'staged.db'}")
    try:
        _migrate(engine, "0015")
        factory = make_session_factory(engine)
        with transaction(factory) as db:
            statuses = ("ingesting", "processing", "done")
            ids = {status: add_analyzing_upload(db, f"u{status}") for status in statuses}
            for status, upload_id in ids.items():
                db.execute(update(Upload).where(Upload.id == upload_id).values(status=status))
                db.add(PipelineJob(upload_id=upload_id, stage="cleanse", state="done", attempts=1))
            db.execute(
                text(
                    "INSERT INTO staged_rows (upload_id, row_number, unique_id, entry_year, entry_term, "
                    "record) VALUES (:upload, 2, '', '', '', '{}')"
                ),
                [{"upload": ids["ingesting"]}, {"upload": ids["processing"]}],
            )
        _migrate(engine, "head")
        with factory() as db:
            found = dict(db.execute(select(Upload.id, Upload.status)).all())
            jobs = dict(db.execute(select(PipelineJob.upload_id, PipelineJob.state)).all())
            staged = db.scalar(select(func.count()).select_from(StagedRow))
        assert found == {ids["ingesting"]: "enqueued", ids["processing"]: "enqueued", ids["done"]: "done"}
        assert jobs == {ids["ingesting"]: "pending", ids["processing"]: "pending", ids["done"]: "done"}
        assert staged == 0
    finally:
        engine.dispose()


def test_enrollment_terms_are_recorded_for_the_records_kept_before_0017(tmp_path: Path) -> None:
    """0017 finds a term's earlier records through the terms each upload holds: the records already kept
    get theirs, and the index of every record by organization and term goes."""
    engine = make_engine(f"sqlite:///{tmp_path / 'terms.db'}")
    try:
        _migrate(engine, "0016")
        factory = make_session_factory(engine)
        with transaction(factory) as db:
            first, second = add_analyzing_upload(db, "first"), add_analyzing_upload(db, "second")
            owners = dict(db.execute(select(Upload.id, Upload.organization_id)).all())
            db.execute(
                text(
                    "INSERT INTO enrollment_records (organization_id, upload_id, row_number, unique_id, "
                    "record, created_at, entry_year, entry_term) VALUES (:org, :upload, :row, '', '{}', "
                    "CURRENT_TIMESTAMP, :year, :term)"
                ),
                [
                    {"org": owners[upload], "upload": upload, "row": row, "year": year, "term": term}
                    for upload, row, year, term in [
                        (first, 2, "2027", "FALL"),
                        (first, 3, "2027", "FALL"),
                        (first, 4, "2028", "SPRING"),
                        (second, 2, "2027", "FALL"),
                    ]
                ],
            )
        _migrate(engine, "head")
        with factory() as db:
            terms = db.execute(
                select(
                    EnrollmentTerm.organization_id,
                    EnrollmentTerm.upload_id,
                    EnrollmentTerm.entry_year,
                    EnrollmentTerm.entry_term,
                )
            ).all()
        assert sorted(terms) == sorted(
            [
                (owners[first], first, "2027", "FALL"),
                (owners[first], first, "2028", "SPRING"),
                (owners[second], second, "2027", "FALL"),
            ]
        )
        indexes = {index["name"] for index in inspect(engine).get_indexes("enrollment_records")}
        assert "ix_enrollment_records_org_term" not in indexes
    finally:
        engine.dispose()


def _insert_records(engine: Engine, table: str, rows: list[tuple[int, int, int, str]]) -> None:
    """(organization id, upload id, row number, record) rows, written as any revision's table takes them."""
    terms = (", entry_year, entry_term", ", '2027', 'FALL'") if table == "enrollment_records" else ("", "")
    with engine.begin() as connection:
        connection.execute(
            text(
                f"INSERT INTO {table} (organization_id, upload_id, row_number, unique_id, record, created_at"
                f"{terms[0]}) VALUES (:org, :upload, :row, '', :record, CURRENT_TIMESTAMP{terms[1]})"
            ),
            [
                {"org": org, "upload": upload, "row": row, "record": record}
                for org, upload, row, record in rows
            ],
        )


def _records(engine: Engine, table: str) -> list[tuple[int, int, int, str]]:
    with engine.connect() as connection:
        rows = connection.execute(text(f"SELECT organization_id, upload_id, row_number, record FROM {table}"))
        return sorted((row[0], row[1], row[2], row[3]) for row in rows)


@pytest.mark.parametrize("table", ["enrollment_records", "affinity_records"])
def test_records_keep_their_rows_when_keyed_by_upload_and_row_0019(
    database_factory: DatabaseFactory, tmp_path: Path, table: str
) -> None:
    """0019 keys the records processing copies from staging by upload and row number (no number of their
    own, no upload index); the rows kept stay, and going back numbers them again."""
    engine = make_engine(database_factory.new_url(tmp_path))
    try:
        _migrate(engine, "0018")
        kept = [(1, 5, 2, '{"UniqueID":"1"}'), (1, 5, 3, '{"UniqueID":"2"}'), (2, 6, 2, '{"UniqueID":"3"}')]
        _insert_records(engine, table, kept)
        _migrate(engine, "head")
        assert _records(engine, table) == kept
        schema = inspect(engine)
        assert schema.get_pk_constraint(table)["constrained_columns"] == ["upload_id", "row_number"]
        assert "id" not in {column["name"] for column in schema.get_columns(table)}
        assert f"ix_{table}_upload_id" not in {index["name"] for index in schema.get_indexes(table)}
        with pytest.raises(IntegrityError):
            _insert_records(engine, table, [(1, 5, 3, "{}")])

        _migrate(engine, "0018", down=True)
        assert _records(engine, table) == kept
        with engine.connect() as connection:
            numbers = connection.execute(text(f"SELECT id FROM {table}")).scalars().all()
        assert len(set(numbers)) == len(kept)
        _insert_records(engine, table, [(1, 5, 4, "{}")])
        _migrate(engine, "head")
        assert len(_records(engine, table)) == len(kept) + 1
    finally:
        engine.dispose()
