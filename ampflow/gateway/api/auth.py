"""Authentication (API key -> principal) and authorisation (role and site scope).

Keys travel in ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. A pure ASGI middleware
authenticates every request except the public paths (``/health``, ``/openapi.json``, ``/docs``)
before anything else happens, so a request without a valid key gets 401 whatever its body; the
route's dependency then checks the role and the site (403).

Roles and what they may do
--------------------------
=============  =====================================================================
admin          everything, on every site; manages API keys
site_manager   on its sites: read everything, change the tree, limits, priorities,
               stations and sessions (targets, start, stop), post meter values
utility        on its sites: read the site, its live state and schedule; post and
               cancel DR events and prices
analyst        read everything (on its sites, if it has any), change nothing
=============  =====================================================================

Verified keys are cached for ``ttl_s`` (10 s), so a revoked key stops working in this process
at once and in other processes within that time.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import anyio.to_thread
from fastapi import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ampflow.gateway.db import Database
from ampflow.gateway.db.base import Role
from ampflow.gateway.db.repo import keys as key_repo

__all__ = ["PUBLIC_PATHS", "Action", "AuthMiddleware", "KeyCache", "Principal"]

PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


class Action(StrEnum):
    """What a route does, for the role check."""

    VIEW_GRID = "view_grid"  # sites, live state, schedules, DR events, prices
    VIEW_OPS = "view_ops"  # stations, sessions, meter values
    MANAGE = "manage"  # change a site's tree, limits, stations, sessions
    SIGNAL = "signal"  # post or cancel DR events and prices
    ADMIN = "admin"  # API keys


_ALLOWED: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.SITE_MANAGER: frozenset({Action.VIEW_GRID, Action.VIEW_OPS, Action.MANAGE}),
    Role.UTILITY: frozenset({Action.VIEW_GRID, Action.SIGNAL}),
    Role.ANALYST: frozenset({Action.VIEW_GRID, Action.VIEW_OPS}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's row, role and sites (empty = every site, for admin/analyst)."""

    key_pk: int
    key_id: str
    role: Role
    site_ids: frozenset[str]

    @property
    def all_sites(self) -> bool:
        return self.role is Role.ADMIN or not self.site_ids

    def may(self, action: Action) -> bool:
        return action in _ALLOWED[self.role]

    def covers(self, site_id: str) -> bool:
        return self.all_sites or site_id in self.site_ids

    def require(self, action: Action, site_id: str | None = None) -> None:
        """Raise 403 unless the role allows ``action`` (on ``site_id``, if given)."""
        if not self.may(action):
            raise HTTPException(
                403, f"role {self.role.value!r} may not {action.value.replace('_', ' ')}"
            )
        if site_id is not None and not self.covers(site_id):
            raise HTTPException(403, f"site {site_id!r} is outside this key's sites")

    def require_all(self, action: Action, site_ids: Iterable[str]) -> None:
        """:meth:`require` for several sites."""
        self.require(action)
        for site_id in site_ids:
            self.require(action, site_id)

    def visible(self, requested: str | None) -> list[str] | None:
        """Sites a listing may show: ``None`` = all; 403 if ``requested`` is out of scope."""
        if requested is not None:
            if not self.covers(requested):
                raise HTTPException(403, f"site {requested!r} is outside this key's sites")
            return [requested]
        return None if self.all_sites else sorted(self.site_ids)


class KeyCache:
    """Verified keys by the SHA-256 of the token, for ``ttl_s`` seconds."""

    def __init__(self, db: Database, pepper: bytes, *, ttl_s: float = 10.0) -> None:
        self.db = db
        self.pepper = pepper
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def lookup(self, token: str) -> Principal | None:
        """The principal behind a token (blocking: call it from a worker thread)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self.db.read() as s:
            who = key_repo.verify_api_key(s, token, pepper=self.pepper)
        if who is None:
            return None
        principal = Principal(who.pk, who.id, who.role, who.site_ids)
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[digest] = (now + self.ttl_s, principal)
        return principal

    def cached(self, token: str) -> Principal | None:
        """The principal if it is cached and fresh, without touching the database."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            hit = self._entries.get(digest)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def clear(self) -> None:
        """Forget every cached key (after a revocation)."""
        with self._lock:
            self._entries.clear()


def _token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The API key of a request; ``""`` (never valid) if it carries two different ones."""
    found: set[str] = set()
    for name, value in headers:
        if name == b"x-api-key":
            found.add(value.decode("latin-1").strip())
        elif name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            found.add(rest.strip() if scheme.lower() == "bearer" else "")
    if not found:
        return None
    return found.pop() if len(found) == 1 else ""


class AuthMiddleware:
    """Answer 401 to any non-public request without a valid key; else attach the principal."""

    def __init__(self, app: ASGIApp, *, keys: Callable[[], KeyCache]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        token = _token(scope["headers"])
        principal = None
        if token and len(token) <= 200:
            cache = self.keys()
            principal = cache.cached(token) or await anyio.to_thread.run_sync(cache.lookup, token)
        if principal is None:
            await _unauthorized(send, missing=token is None)
            return
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        state["principal"] = principal
        await self.app(scope, receive, send)


async def _unauthorized(send: Callable[[Any], Awaitable[None]], *, missing: bool) -> None:
    msg = (
        b'{"detail":"an API key is required: send Authorization: Bearer <key> or X-API-Key"}'
        if missing
        else b'{"detail":"unknown, malformed or revoked API key"}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(msg)).encode()),
                (b"www-authenticate", b'Bearer realm="ampflow"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": msg})
