"""Migrations create exactly the models' schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from datalab.db import make_engine, upgrade_database
from datalab.models_registry import metadata
from tests.support.databases import DatabaseFactory, postgres_url


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
