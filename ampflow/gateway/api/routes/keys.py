"""``/api-keys`` (admin): create keys (the token is shown once), list and revoke them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from ampflow.gateway.api.deps import Admin, Ctx
from ampflow.gateway.api.errors import responses
from ampflow.gateway.api.schemas.keys import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from ampflow.gateway.db.base import Role
from ampflow.gateway.db.repo import keys

router = APIRouter(prefix="/api-keys", tags=["api-keys"])


@router.post("", status_code=201, response_model=ApiKeyCreated, responses=responses(409))
def create_key(body: ApiKeyCreate, ctx: Ctx, who: Admin) -> ApiKeyCreated:
    """Create a key; site_manager and utility keys need at least one site."""
    pepper = ctx.settings.secret_key.get_secret_value().encode()
    with ctx.db.write() as s:
        row, token = keys.create_api_key(
            s, role=Role(body.role), pepper=pepper, site_ids=body.site_ids, name=body.name
        )
        public = ApiKeyPublic.of(row)
    return ApiKeyCreated(**public.model_dump(), token=token)


@router.get("", response_model=list[ApiKeyPublic], responses=responses())
def list_keys(ctx: Ctx, who: Admin) -> list[ApiKeyPublic]:
    """Every key (never the secrets)."""
    with ctx.db.read() as s:
        return [ApiKeyPublic.of(r) for r in keys.list_api_keys(s)]


@router.delete("/{key_id}", response_model=ApiKeyPublic, responses=responses(404))
def revoke_key(
    key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")], ctx: Ctx, who: Admin
) -> ApiKeyPublic:
    """Revoke a key; it stops working at once in this process."""
    with ctx.db.write() as s:
        out = ApiKeyPublic.of(keys.revoke_api_key(s, key_id))
    ctx.keys.clear()
    return out
