"""Alembic environment: run by `watcher db upgrade` and at `watcher run` start.

The connection is handed in by watcher.store.migrate through `config.attributes["connection"]`,
so no alembic.ini is needed and an installed wheel migrates the same way as a checkout.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from watcher.store.tables import metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("migrations run only through watcher.store.migrate (no connection given)")
run_migrations(connection)
