"""Apply and inspect the Alembic migrations shipped in `watcher.migrations` (the top-level migrations/).

Alembic (and Mako with it) is imported only when the schema is behind: a daemon that starts on
a current database does not carry it in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

# The newest revision in migrations/versions; a test keeps it equal to Alembic's own head.
HEAD_REVISION = "0003_versions"


def _alembic_config() -> Any:
    from alembic.config import Config

    from watcher import migrations

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).resolve().parent))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    if revision == "head" and current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command

    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated), read without Alembic."""
    try:
        with engine.connect() as connection:
            row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    except DBAPIError:
        return None  # no alembic_version table yet
    return str(row[0]) if row else None


def head_revision(engine: Engine | None = None) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()
