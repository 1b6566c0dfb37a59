"""Alembic environment: runs the migrations on the connection handed over by ``migrate.py``.

No ``alembic.ini`` is needed: :func:`ampflow.gateway.db.migrate.upgrade` builds the configuration
in code and passes an open connection in ``config.attributes["connection"]``. Importing this file
outside Alembic (as the doctest collector does) does nothing.
"""

from __future__ import annotations

from alembic import context

from ampflow.gateway.db import models  # noqa: F401  (registers every table on the metadata)
from ampflow.gateway.db.base import Base


def run_migrations() -> None:
    """Run the migrations online, on the connection given by the caller."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "ampflow migrations run through ampflow.gateway.db.migrate.upgrade(), "
            "which passes the connection; there is no alembic.ini"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if hasattr(context, "config"):
    run_migrations()
