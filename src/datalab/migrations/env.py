"""Alembic environment: runs on the connection handed over by datalab.db.upgrade_database."""

from __future__ import annotations

from alembic import context

from datalab import models_registry

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=models_registry.metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
