"""Apply and inspect the Alembic migrations shipped in the top-level `migrations` package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

import migrations


def _alembic_config(engine: Engine) -> tuple[Config, Path]:
    script_location = Path(migrations.__file__).resolve().parent
    config = Config()
    config.set_main_option("script_location", str(script_location))
    return config, script_location


def upgrade(engine: Engine, revision: str = "head") -> None:
    config, _ = _alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    config, _ = _alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    config, _ = _alembic_config(engine)
    return ScriptDirectory.from_config(config).get_current_head()
