"""API keys: create (the token is returned once), verify, list and revoke."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.db.base import Role, utcnow
from ampflow.gateway.db.crypto import check_api_secret, new_api_key, split_api_key
from ampflow.gateway.db.errors import ConflictError, NotFoundError
from ampflow.gateway.db.models import ApiKey, ApiKeySite

__all__ = ["KeyIdentity", "create_api_key", "list_api_keys", "revoke_api_key", "verify_api_key"]

# Roles whose keys act on their own sites only, and so need at least one.
SCOPED_ROLES = (Role.SITE_MANAGER, Role.UTILITY)


@dataclass(frozen=True)
class KeyIdentity:
    """Who a verified key belongs to: its row, role and sites (empty = all sites)."""

    pk: int
    id: str
    role: Role
    site_ids: frozenset[str]


def create_api_key(
    s: DbSession, *, role: Role, pepper: bytes, site_ids: Sequence[str] = (), name: str = ""
) -> tuple[ApiKey, str]:
    """Store a new key; returns the row and the token, which is not stored anywhere.

    Raises
    ------
    ConflictError
        If a site-scoped role (site_manager, utility) is given no site.
    """
    if role in SCOPED_ROLES and not site_ids:
        raise ConflictError(
            f"role {role.value!r} acts on its own sites: give at least one site",
            loc=("body", "site_ids"),
        )
    key = new_api_key()
    row = ApiKey(
        id=key.id,
        name=name,
        role=role.value,
        secret_hash=key.secret_hash(pepper),
        sites=[ApiKeySite(site_id=sid) for sid in sorted(set(site_ids))],
    )
    s.add(row)
    s.flush()
    return row, key.token


def verify_api_key(s: DbSession, token: str, *, pepper: bytes) -> KeyIdentity | None:
    """The identity behind a token, or ``None`` if it is malformed, unknown, wrong or revoked."""
    try:
        key_id, secret = split_api_key(token)
    except ValueError:
        return None
    row = s.scalar(select(ApiKey).where(ApiKey.id == key_id))
    if row is None or row.revoked_at is not None:
        return None
    if not check_api_secret(secret, row.secret_hash, pepper):
        return None
    return KeyIdentity(row.pk, row.id, Role(row.role), frozenset(x.site_id for x in row.sites))


def list_api_keys(s: DbSession) -> list[ApiKey]:
    """Every key, newest first (secrets are never returned)."""
    return list(s.scalars(select(ApiKey).order_by(ApiKey.pk.desc())))


def revoke_api_key(s: DbSession, key_id: str) -> ApiKey:
    """Revoke a key; revoking twice is harmless. Raises NotFoundError."""
    row = s.scalar(select(ApiKey).where(ApiKey.id == key_id))
    if row is None:
        raise NotFoundError(f"no API key {key_id!r}", loc=("path", "key_id"))
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        s.flush()
    return row
