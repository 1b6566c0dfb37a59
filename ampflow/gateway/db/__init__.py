"""Persistence: SQLAlchemy models, Alembic migrations, sessions and repositories."""

from ampflow.gateway.db.database import Database

__all__ = ["Database"]
