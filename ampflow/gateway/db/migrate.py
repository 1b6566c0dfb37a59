"""Alembic migrations shipped inside the package and run in code (no ``alembic.ini``).

``ampflow serve`` upgrades the database at start and ``ampflow db upgrade`` does it on demand.
On PostgreSQL an advisory lock serialises concurrent upgrades (several gateway processes
starting at once); on SQLite the write transaction does the same.

To add a migration after changing :mod:`ampflow.gateway.db.models`, write a new file in
``migrations/versions`` (``revision = "0002"``, ``down_revision = "0001"``); the test suite
checks that the migrated schema matches the models on both databases.
"""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from ampflow.gateway.db import models  # noqa: F401  (registers every table)
from ampflow.gateway.db.base import Base

__all__ = [
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "schema_diff",
    "upgrade",
]

# pg_advisory_xact_lock key: "ampf" in ASCII.
_LOCK_KEY = 0x616D7066


def alembic_config() -> Config:
    """An Alembic configuration pointing at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", "ampflow.gateway.db:migrations")
    return cfg


def head_revision() -> str:
    """The newest migration's revision id."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` in one transaction."""
    _run(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"`` drops every table)."""
    _run(engine, command.downgrade, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` before the first migration."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def schema_diff(engine: Engine) -> list[Any]:
    """Differences between the database schema and the models (empty when they agree)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def _run(engine: Engine, fn: Any, revision: str) -> None:
    cfg = alembic_config()
    write = engine.execution_options(ampflow_write=True)
    with write.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        cfg.attributes["connection"] = conn
        fn(cfg, revision)
