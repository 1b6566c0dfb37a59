"""Error answers: field-level 404/409 from the store, 422 from checks beyond the schemas.

Every error body is ``{"detail": "message"}`` or ``{"detail": [{"loc", "msg", "type"}, ...]}``,
the same shape FastAPI uses for its own 422s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from ampflow.engine.errors import AmpflowError
from ampflow.gateway.api.schemas.common import ErrorBody
from ampflow.gateway.db.errors import ConflictError, NotFoundError, StoreError

__all__ = ["COMMON_RESPONSES", "install_error_handlers", "invalid", "responses"]

logger = logging.getLogger(__name__)

COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body could not be read (not UTF-8 text)"},
    401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one"},
    403: {"model": ErrorBody, "description": "The key's role or sites do not allow this"},
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a route: 401 and 403, plus ``codes`` (404, 409, ...)."""
    text = {
        404: "No such resource",
        409: "Conflicts with the stored state",
        503: "The database is unavailable; retry",
    }
    out = dict(COMMON_RESPONSES)
    for code in codes:
        out[code] = {"model": ErrorBody, "description": text[code]}
    return out


def invalid(problems: Sequence[tuple[Sequence[str | int], str]]) -> RequestValidationError:
    """A 422 with field-level messages, for checks that need more than one field."""
    return RequestValidationError(
        [{"loc": tuple(loc), "msg": msg, "type": "value_error"} for loc, msg in problems]
    )


def _store_error(exc: StoreError, status: int, kind: str) -> JSONResponse:
    loc = list(exc.loc) if exc.loc else ["body"]
    return JSONResponse(
        {"detail": [{"loc": loc, "msg": exc.message, "type": kind}]}, status_code=status
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map store and engine errors to 404, 409 and 422; database outages to 503."""

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, NotFoundError)
        return _store_error(exc, 404, "not_found")

    async def conflict(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ConflictError)
        return _store_error(exc, 409, "conflict")

    async def engine_error(_: Request, exc: Exception) -> JSONResponse:
        detail = [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)

    async def integrity(_: Request, exc: Exception) -> JSONResponse:
        # A race the checks could not see (two requests creating the same id at once).
        logger.info("integrity error answered with 409: %s", exc)
        detail = [
            {
                "loc": ["body"],
                "msg": "conflicts with a concurrent change (duplicate id or key); retry",
                "type": "conflict",
            }
        ]
        return JSONResponse({"detail": detail}, status_code=409)

    async def unstorable(_: Request, exc: Exception) -> JSONResponse:
        # Input the checks let through but the database refuses (a NUL in a query string).
        logger.info("data error answered with 422: %s", exc)
        detail = [
            {
                "loc": ["query"],
                "msg": "a value cannot be stored or compared (for example a NUL character)",
                "type": "value_error",
            }
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        logger.warning("database unavailable: %s", exc)
        return JSONResponse({"detail": "database unavailable, retry"}, status_code=503)

    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(ConflictError, conflict)
    app.add_exception_handler(AmpflowError, engine_error)
    app.add_exception_handler(IntegrityError, integrity)
    app.add_exception_handler(DataError, unstorable)
    app.add_exception_handler(OperationalError, unavailable)
