"""Alembic environment of the hub database. radflow runs it through
:func:`radflow.hub.registry.create` with an open connection (no alembic.ini needed)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
