"""``Idempotency-Key`` for creating POSTs (IETF draft-ietf-httpapi-idempotency-key-header).

The first response to a key is stored in the same transaction as what the POST created. A retry
with the same key and the same body gets that response again (header ``Idempotent-Replayed:
true``) and creates nothing; the same key with another body or path is a 422. Two requests racing
with one key: one wins, the other gets 409 (on PostgreSQL; SQLite serialises them, so the second
is a replay).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.api.auth import Principal
from ampflow.gateway.api.context import AppContext
from ampflow.gateway.api.errors import invalid
from ampflow.gateway.db.repo import idempotency as repo

__all__ = ["IdempotencyKey", "create_once", "run_once"]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retry-safe creation: a repeat with the same key returns the first response",
    ),
]


def create_once(
    ctx: AppContext,
    who: Principal,
    request: Request,
    key: str | None,
    body: BaseModel,
    create: Callable[[DbSession], BaseModel],
    *,
    status_code: int = 201,
) -> JSONResponse:
    """Run ``create`` in one write transaction, at most once per idempotency key."""
    fingerprint = hashlib.sha256(
        json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()
    return run_once(
        ctx,
        who,
        request,
        key,
        fingerprint,
        lambda s: create(s).model_dump(mode="json"),
        lambda payload, code: JSONResponse(payload, status_code=code),
        status_code=status_code,
    )


def run_once[R: Response](
    ctx: AppContext,
    who: Principal,
    request: Request,
    key: str | None,
    fingerprint: str,
    create: Callable[[DbSession], Any],
    respond: Callable[[Any, int], R],
    *,
    status_code: int = 201,
) -> R:
    """The mechanism behind :func:`create_once`: ``create`` returns what is stored under the
    key (JSON-able data or exact text) and ``respond`` turns it, or a stored one, into the
    response."""
    path, method = request.url.path, request.method
    with ctx.db.write() as s:
        if key is not None:
            record = repo.find_record(s, who.key_pk, key)
            if record is not None:
                if (record.fingerprint, record.path, record.method) != (fingerprint, path, method):
                    raise invalid(
                        [
                            (
                                ("header", "Idempotency-Key"),
                                "this Idempotency-Key was already used with a different request; "
                                "use a new key",
                            )
                        ]
                    )
                response = respond(record.body, record.status_code)
                response.headers["Idempotent-Replayed"] = "true"
                return response
        stored = create(s)
        if key is not None:
            repo.save_record(
                s,
                key_pk=who.key_pk,
                key=key,
                method=method,
                path=path,
                fingerprint=fingerprint,
                status_code=status_code,
                body=stored,
            )
    return respond(stored, status_code)
