"""Reaching real services from tests: PostgreSQL, and the rule for a service that is missing.

A missing service fails the test when CI is "true" (CI must never pass by skipping) and skips it
otherwise, so a developer without PostgreSQL can still run the rest.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

POSTGRES_URL = os.environ.get(
    "WATCHER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require(service_name: str, reason: str) -> None:
    """Stop the test because `service_name` is missing: a failure in CI, a skip elsewhere."""
    message = f"{service_name} is not available: {reason}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def postgres_url() -> str:
    """The test database's URL, once it answers (otherwise the test fails or skips)."""
    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3}, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        require("postgresql", f"{engine.url.render_as_string(hide_password=True)}: {error.orig}")
    finally:
        engine.dispose()
    return POSTGRES_URL


@dataclass(frozen=True)
class PostgresSchema:
    """A schema of its own: `url` and `engine` have it as their search_path."""

    name: str
    url: str
    engine: Engine


@contextmanager
def fresh_postgres_schema() -> Iterator[PostgresSchema]:
    """Create a uniquely named schema, yield it, drop it with everything in it."""
    base = postgres_url()
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base, poolclass=sa.NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={name}"})
    url_text = url.render_as_string(hide_password=False)
    engine = sa.create_engine(url_text)
    try:
        yield PostgresSchema(name=name, url=url_text, engine=engine)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()
