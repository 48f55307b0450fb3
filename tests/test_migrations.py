"""Migrations: from empty to head and back on SQLite and PostgreSQL; the models match them."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from watcher.store import migrate
from watcher.store.database import open_engine
from watcher.store.tables import metadata

pytestmark = pytest.mark.integration


def test_upgrade_from_empty_then_downgrade_and_again(database_url: str) -> None:
    engine = open_engine(database_url)
    try:
        assert migrate.current_revision(engine) is None
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision(engine)
        tables = set(inspect(engine).get_table_names())
        assert set(metadata.tables) <= tables
        migrate.downgrade(engine, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(engine)
        migrate.upgrade(engine)  # idempotent: `watcher run` migrates at every start
        assert migrate.current_revision(engine) == migrate.head_revision(engine)
    finally:
        engine.dispose()


def test_models_match_migrations(database_url: str) -> None:
    engine = open_engine(database_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
        assert differences == []
    finally:
        engine.dispose()


def test_head_constant_matches_the_migrations() -> None:
    assert migrate.head_revision() == migrate.HEAD_REVISION
