"""The control loop's output: the plan per site and connector, and the limits last sent."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from ampflow.gateway.api.schemas.common import OutputModel
from ampflow.gateway.db.models import SiteControl
from ampflow.gateway.db.repo.control_state import ConnectorLive

__all__ = ["ConnectorSchedule", "SitePlanPublic", "SiteSchedule"]


class ConnectorSchedule(OutputModel):
    connector_id: str
    limit_kw: float | None = Field(description="The limit last decided and sent [kW]")
    limit_a: float | None = Field(description="The same per phase [A]")
    decided_at: datetime | None
    tick: int | None
    sent_status: str | None
    plan_kw: list[float] = Field(description="Planned limit per plan step [kW]")

    @classmethod
    def of(cls, connector_id: str, x: ConnectorLive) -> ConnectorSchedule:
        return cls(
            connector_id=connector_id,
            limit_kw=x.limit_kw,
            limit_a=x.limit_a,
            decided_at=x.decided_at,
            tick=x.tick,
            sent_status=x.sent_status,
            plan_kw=list(x.plan_kw or []),
        )


class SitePlanPublic(OutputModel):
    computed_at: datetime
    start: datetime
    step_s: int
    status: str | None
    message: str | None
    site_kw: list[float] = Field(description="Planned site import per step [kW]")
    limit_kw: list[float | None] = Field(
        description="Site import limit per step, caps included [kW]; null: none"
    )
    import_price: list[float] = Field(description="Import price per step [currency/kWh]")


class SiteSchedule(OutputModel):
    site_id: str
    tick: int | None = Field(description="Control-loop tick of the last decision")
    decided_at: datetime | None
    import_limit_kw: float | None = Field(description="Effective import limit now [kW]")
    dr_cap_kw: float | None
    tod_cap_kw: float | None
    allocated_kw: float | None
    active_signals: list[str]
    plan: SitePlanPublic | None
    connectors: list[ConnectorSchedule]

    @classmethod
    def of(
        cls, site_id: str, sc: SiteControl | None, connectors: list[ConnectorSchedule]
    ) -> SiteSchedule:
        plan = None
        if sc is not None and sc.plan_computed_at is not None and sc.plan_start_at is not None:
            plan = SitePlanPublic(
                computed_at=sc.plan_computed_at,
                start=sc.plan_start_at,
                step_s=sc.plan_step_s or 0,
                status=sc.plan_status,
                message=sc.plan_message,
                site_kw=list(sc.plan_site_kw or []),
                limit_kw=list(sc.plan_limit_kw or []),
                import_price=list(sc.plan_import_price or []),
            )
        return cls(
            site_id=site_id,
            tick=None if sc is None else sc.tick,
            decided_at=None if sc is None else sc.decided_at,
            import_limit_kw=None if sc is None else sc.import_limit_kw,
            dr_cap_kw=None if sc is None else sc.dr_cap_kw,
            tod_cap_kw=None if sc is None else sc.tod_cap_kw,
            allocated_kw=None if sc is None else sc.allocated_kw,
            active_signals=[] if sc is None else list(sc.active_signals or []),
            plan=plan,
            connectors=connectors,
        )
