"""API keys: Create, Public, and the one-time Created answer that carries the token."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from ampflow.gateway.api.schemas.common import InputModel, OutputModel, SiteId
from ampflow.gateway.db.base import Role
from ampflow.gateway.db.models import ApiKey

__all__ = ["ApiKeyCreate", "ApiKeyCreated", "ApiKeyPublic"]


class ApiKeyCreate(InputModel):
    role: Role
    site_ids: list[SiteId] = Field(default_factory=list, max_length=1000)
    name: Annotated[str, StringConstraints(max_length=100)] = ""


class ApiKeyPublic(OutputModel):
    id: str
    name: str
    role: Role
    site_ids: list[str]
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyPublic:
        return cls(
            id=row.id,
            name=row.name,
            role=Role(row.role),
            site_ids=[x.site_id for x in row.sites],
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )


class ApiKeyCreated(ApiKeyPublic):
    token: str = Field(description="The key itself; shown once, only its hash is stored")
