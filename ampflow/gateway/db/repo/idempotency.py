"""``Idempotency-Key`` records: the first response to a creating POST, replayed on repeats.

The record is written in the same transaction as what the POST created, so either both exist or
neither does. A repeat with the same key and body gets the stored response; with a different
body it is refused (the API answers 422, as the IETF Idempotency-Key draft asks).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.db.models import IdempotencyRecord

__all__ = ["find_record", "purge_records", "save_record"]


def find_record(s: DbSession, key_pk: int, key: str) -> IdempotencyRecord | None:
    """The stored record for an API key's idempotency key, if any."""
    return s.get(IdempotencyRecord, (key_pk, key))


def save_record(
    s: DbSession,
    *,
    key_pk: int,
    key: str,
    method: str,
    path: str,
    fingerprint: str,
    status_code: int,
    body: Any,
) -> None:
    """Store a response; a concurrent request with the same key makes the commit fail."""
    s.add(
        IdempotencyRecord(
            key_pk=key_pk,
            key=key,
            method=method,
            path=path,
            fingerprint=fingerprint,
            status_code=status_code,
            body=body,
        )
    )
    s.flush()


def purge_records(s: DbSession, *, before: datetime) -> int:
    """Delete records created before ``before``; returns how many."""
    result = s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < before))
    return int(getattr(result, "rowcount", 0) or 0)
