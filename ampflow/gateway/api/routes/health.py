"""``/health``: liveness and readiness, without a key."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from ampflow.gateway.api.deps import Ctx

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    control_tick: int | None


@router.get("/health", response_model=Health)
def health(ctx: Ctx) -> Health:
    """``ok`` when the database answers; the control loop's last tick."""
    with ctx.db.read() as s:
        s.execute(text("SELECT 1"))
    tick = None if ctx.control is None else ctx.control.tick_count
    return Health(status="ok", database=ctx.db.dialect, control_tick=tick)
