"""Repositories: plain functions over a SQLAlchemy session, one module per resource.

They take and return plain values and ORM rows, raise ``NotFoundError`` or ``ConflictError``
(:mod:`ampflow.gateway.db.errors`) naming the field, and never commit: the caller's
:meth:`~ampflow.gateway.db.Database.write` block is the transaction.
"""

from ampflow.gateway.db.repo import (
    control_state,
    idempotency,
    keys,
    meter,
    sessions,
    signals,
    sites,
    stations,
)

__all__ = [
    "control_state",
    "idempotency",
    "keys",
    "meter",
    "sessions",
    "signals",
    "sites",
    "stations",
]
