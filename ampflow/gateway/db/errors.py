"""Errors of the store: a missing record, or input that conflicts with what is stored.

Each names the field it is about (``loc``, as in the API's error bodies), the value and what was
expected, so the API can answer 404 or 409 with a field-level message.
"""

from __future__ import annotations

from collections.abc import Sequence

from ampflow.engine.errors import AmpflowError

__all__ = ["ConflictError", "NotFoundError", "StoreError"]


class StoreError(AmpflowError):
    """Base of store errors.

    Parameters
    ----------
    message : str
        What is wrong, naming the value and the expectation.
    loc : sequence of str or int
        Where in the request the offending value is, e.g. ``("body", "cap_kw")``.
    """

    def __init__(self, message: str, *, loc: Sequence[str | int] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.loc = tuple(loc)


class NotFoundError(StoreError):
    """The record named in the request does not exist (HTTP 404)."""


class ConflictError(StoreError):
    """The input is valid on its own but conflicts with the stored state (HTTP 409)."""
