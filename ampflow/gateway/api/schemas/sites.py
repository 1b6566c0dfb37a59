"""Sites, their capacity tree, time-of-day limits and live state: Create, Update, Public."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, StringConstraints, field_validator, model_validator

from ampflow.engine.topology import ChargerKind, ChargerSpec, NodeSpec, SiteSpec
from ampflow.gateway.api.schemas.common import (
    Amps,
    InputModel,
    Kw,
    LocalId,
    OutputModel,
    PhaseA,
    PositiveKw,
    SiteId,
    UtcDateTime,
    Weight,
    keep,
)
from ampflow.gateway.db.models import Charger, Connector, LimitWindow, Node, Site
from ampflow.gateway.db.repo.sites import LimitWindowSpec, SiteInfo

__all__ = [
    "ChargerCreate",
    "ChargerPublic",
    "ChargerUpdate",
    "ConnectorPublic",
    "ConnectorState",
    "ConnectorUpdate",
    "LimitScheduleIn",
    "LimitSchedulePublic",
    "LimitWindowIn",
    "LimitWindowPublic",
    "NodeCreate",
    "NodePublic",
    "NodeUpdate",
    "SiteCreate",
    "SitePublic",
    "SiteState",
    "SiteSummary",
    "SiteUpdate",
    "Weekday",
    "connector_public",
    "tree_problems",
]

Timezone = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Voltage = Annotated[float, Field(ge=50, le=1500, allow_inf_nan=False)]
PowerFactor = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Phase = Annotated[str, StringConstraints(pattern=r"^L[123](-L[123])?$")]
Rotation = Literal["RST", "RTS", "SRT", "STR", "TRS", "TSR"]
ConnectorCount = Annotated[int, Field(ge=1, le=16)]


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"expected an IANA time zone such as 'Europe/Amsterdam', got {value!r}"
        ) from None
    return value


def _phase_tuple(values: Sequence[float] | None) -> tuple[float, float, float] | None:
    return None if values is None else (values[0], values[1], values[2])


class NodeCreate(InputModel):
    """A feeder, panel or cable. ``parent`` is another node's id or the site id."""

    id: LocalId
    parent: LocalId
    import_kw: Kw | None = Field(default=None, description="Limit [kW]; null for none")
    export_kw: Kw | None = Field(default=None, description="Export limit [kW]; null = import_kw")
    phase_a: PhaseA | None = Field(default=None, description="Per-phase current limit [A]")

    def spec(self) -> NodeSpec:
        return NodeSpec(
            self.id,
            self.parent,
            import_kw=math.inf if self.import_kw is None else self.import_kw,
            export_kw=self.export_kw,
            phase_a=_phase_tuple(self.phase_a),
        )


class NodeUpdate(InputModel):
    """New limits of a node; null removes a limit, an absent field keeps it."""

    import_kw: Kw | None = None
    export_kw: Kw | None = None
    phase_a: PhaseA | None = None


class NodePublic(OutputModel):
    id: str
    parent: str
    import_kw: float | None
    export_kw: float | None
    phase_a: list[float] | None


class ChargerCreate(InputModel):
    """A charger and its connectors, hanging from a node or the site (``node`` = site id)."""

    id: LocalId
    node: LocalId
    max_kw: PositiveKw
    connectors: ConnectorCount = 1
    kind: ChargerKind = ChargerKind.AC
    phases: Literal[1, 3] = 3
    phase: Phase | None = Field(default=None, description="For single-phase AC: L1, L2, L3, L1-L2")
    rotation: Rotation = "RST"
    min_a: Amps = 6.0
    min_kw: Kw = 0.0
    voltage_v: Voltage | None = None
    bidirectional: bool = False
    discharge_max_kw: Kw | None = None
    priority: Weight = 1.0

    def spec(self) -> ChargerSpec:
        return ChargerSpec(
            self.id,
            self.node,
            max_kw=self.max_kw,
            connectors=self.connectors,
            kind=self.kind,
            phases=self.phases,
            phase=self.phase,
            rotation=self.rotation,
            min_a=self.min_a,
            min_kw=self.min_kw,
            voltage_v=self.voltage_v,
            bidirectional=self.bidirectional,
            discharge_max_kw=self.discharge_max_kw,
        )


class ChargerUpdate(InputModel):
    """New limits, priority or number of connectors of a charger."""

    max_kw: PositiveKw = keep()
    min_a: Amps = keep()
    min_kw: Kw = keep()
    connectors: ConnectorCount = keep()
    bidirectional: bool = keep()
    discharge_max_kw: Kw | None = None
    priority: Weight = keep()


class ConnectorUpdate(InputModel):
    """A connector's priority weight."""

    priority: Weight


class ConnectorPublic(OutputModel):
    id: str = Field(description="site/charger/number")
    number: int
    priority: float
    status: str | None
    status_at: datetime | None


class ChargerPublic(OutputModel):
    id: str
    node: str
    max_kw: float
    kind: ChargerKind
    phases: int
    phase: str | None
    rotation: str
    min_a: float
    min_kw: float
    voltage_v: float | None
    bidirectional: bool
    discharge_max_kw: float | None
    priority: float
    connectors: list[ConnectorPublic]


class SiteCreate(InputModel):
    """A site with its capacity tree. Limits can be given in kW, in A per phase, or both."""

    id: SiteId
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    timezone: Timezone = "UTC"
    import_kw: PositiveKw = Field(description="Grid connection import limit [kW]")
    export_kw: Kw = Field(default=0.0, description="Export limit [kW]; 0 forbids feeding back")
    phase_a: PhaseA | None = Field(default=None, description="Grid connection limit per phase [A]")
    voltage_v: Voltage = Field(default=230.0, description="Line-to-neutral voltage [V]")
    power_factor: PowerFactor = 1.0
    min_import_kw: Kw = Field(
        default=0.0, description="Lowest import limit the site can honour (uncontrollable load)"
    )
    demand_charge_per_kw: Annotated[float, Field(ge=0, le=1e4, allow_inf_nan=False)] = 0.0
    currency: Currency = "EUR"
    nodes: list[NodeCreate] = Field(default_factory=list, max_length=1000)
    chargers: list[ChargerCreate] = Field(default_factory=list, max_length=5000)

    _tz = field_validator("timezone")(_check_timezone)

    def spec(self) -> SiteSpec:
        return SiteSpec(
            self.id,
            import_kw=self.import_kw,
            export_kw=self.export_kw,
            voltage_v=self.voltage_v,
            phase_a=_phase_tuple(self.phase_a),
            power_factor=self.power_factor,
            nodes=[n.spec() for n in self.nodes],
            chargers=[c.spec() for c in self.chargers],
        )

    def info(self) -> SiteInfo:
        return SiteInfo(
            self.name, self.timezone, self.min_import_kw, self.demand_charge_per_kw, self.currency
        )


def tree_problems(site: SiteCreate) -> list[tuple[tuple[str | int, ...], str]]:
    """Field-level problems of a site's tree: duplicate ids, unknown parents, cycles, phases."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen = {site.id}
    ids = [("nodes", i, n.id) for i, n in enumerate(site.nodes)]
    ids += [("chargers", i, c.id) for i, c in enumerate(site.chargers)]
    for kind, i, item_id in ids:
        if item_id in seen:
            problems.append(((kind, i, "id"), f"duplicate id {item_id!r} in site {site.id!r}"))
        seen.add(item_id)
    node_ids = {n.id for n in site.nodes}
    parents = {n.id: n.parent for n in site.nodes}
    for i, n in enumerate(site.nodes):
        if n.parent != site.id and n.parent not in node_ids:
            problems.append(
                (
                    ("nodes", i, "parent"),
                    f"unknown parent {n.parent!r}: expected a node id or the site id {site.id!r}",
                )
            )
            continue
        up, steps = n.parent, 0
        while up in parents and steps <= len(parents):
            up, steps = parents[up], steps + 1
        if steps > len(parents):
            problems.append((("nodes", i, "parent"), f"node {n.id!r}: its parents form a cycle"))
    for i, c in enumerate(site.chargers):
        if c.node != site.id and c.node not in node_ids:
            problems.append(
                (
                    ("chargers", i, "node"),
                    f"unknown node {c.node!r}: expected a node id or the site id {site.id!r}",
                )
            )
        if c.kind is ChargerKind.AC and c.phases == 1 and c.phase is None:
            problems.append(
                (
                    ("chargers", i, "phase"),
                    "a single-phase AC charger needs phase (L1, L2, L3 or a pair such as L1-L2)",
                )
            )
    return [(("body", *loc), msg) for loc, msg in problems]


class SiteUpdate(InputModel):
    """New attributes or limits of a site; absent fields are kept, ``phase_a: null`` removes."""

    name: Annotated[str, StringConstraints(max_length=200)] = keep()
    timezone: Timezone = keep()
    import_kw: PositiveKw = keep()
    export_kw: Kw = keep()
    phase_a: PhaseA | None = None
    voltage_v: Voltage = keep()
    power_factor: PowerFactor = keep()
    min_import_kw: Kw = keep()
    demand_charge_per_kw: Annotated[float, Field(ge=0, le=1e4, allow_inf_nan=False)] = keep()
    currency: Currency = keep()

    _tz = field_validator("timezone")(_check_timezone)


class SiteSummary(OutputModel):
    id: str
    name: str
    timezone: str
    import_kw: float
    export_kw: float
    min_import_kw: float
    revision: int


class SitePublic(SiteSummary):
    phase_a: list[float] | None
    voltage_v: float
    power_factor: float
    demand_charge_per_kw: float
    currency: str
    created_at: datetime
    updated_at: datetime
    nodes: list[NodePublic]
    chargers: list[ChargerPublic]

    @classmethod
    def of(cls, site: Site) -> SitePublic:
        """From a site with its tree loaded."""
        node_ids = {n.pk: n.id for n in site.nodes}
        return cls(
            id=site.id,
            name=site.name,
            timezone=site.timezone,
            import_kw=site.import_kw,
            export_kw=site.export_kw,
            min_import_kw=site.min_import_kw,
            revision=site.revision,
            phase_a=_phase_list(site),
            voltage_v=site.voltage_v,
            power_factor=site.power_factor,
            demand_charge_per_kw=site.demand_charge_per_kw,
            currency=site.currency,
            created_at=site.created_at,
            updated_at=site.updated_at,
            nodes=[_node(n, site.id, node_ids) for n in site.nodes],
            chargers=[_charger(c, site.id, node_ids) for c in site.chargers],
        )


def _phase_list(obj: Site | Node) -> list[float] | None:
    values = [obj.phase_a_l1, obj.phase_a_l2, obj.phase_a_l3]
    return None if any(v is None for v in values) else [float(v or 0) for v in values]


def _node(n: Node, site_id: str, node_ids: dict[int, str]) -> NodePublic:
    return NodePublic(
        id=n.id,
        parent=site_id if n.parent_pk is None else node_ids[n.parent_pk],
        import_kw=n.import_kw,
        export_kw=n.export_kw,
        phase_a=_phase_list(n),
    )


def connector_public(site_id: str, charger_id: str, c: Connector) -> ConnectorPublic:
    return ConnectorPublic(
        id=f"{site_id}/{charger_id}/{c.number}",
        number=c.number,
        priority=c.priority,
        status=c.status,
        status_at=c.status_at,
    )


def _charger(c: Charger, site_id: str, node_ids: dict[int, str]) -> ChargerPublic:
    return ChargerPublic(
        id=c.id,
        node=site_id if c.node_pk is None else node_ids[c.node_pk],
        max_kw=c.max_kw,
        kind=ChargerKind(c.kind),
        phases=c.phases,
        phase=c.phase,
        rotation=c.rotation,
        min_a=c.min_a,
        min_kw=c.min_kw,
        voltage_v=c.voltage_v,
        bidirectional=c.bidirectional,
        discharge_max_kw=c.discharge_max_kw,
        priority=c.priority,
        connectors=[connector_public(site_id, c.id, x) for x in c.connectors],
    )


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


_DAYS = list(Weekday)
LocalTime = Annotated[str, StringConstraints(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]


def _minutes(value: str) -> int:
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


class LimitWindowIn(InputModel):
    """A limit during a local-time window on some weekdays, in the site's time zone.

    ``end`` ``00:00`` or ``24:00`` is the end of the day; ``start`` after ``end`` wraps past
    midnight (the window belongs to the weekday it starts on); ``start == end`` is the whole day.
    """

    weekdays: Annotated[list[Weekday], Field(min_length=1, max_length=7)] = _DAYS
    start: LocalTime
    end: LocalTime
    node_id: LocalId | None = Field(default=None, description="A node; null = grid connection")
    import_kw: Kw | None = None
    import_a: Amps | None = Field(default=None, description="Per phase [A]")
    export_kw: Kw | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> LimitWindowIn:
        if self.import_kw is None and self.import_a is None and self.export_kw is None:
            raise ValueError("give at least one of import_kw, import_a, export_kw")
        return self

    def spec(self, index: int) -> LimitWindowSpec:
        start, end = _minutes(self.start), _minutes(self.end)
        if end == 0 and start != 0:
            end = 1440
        mask = sum(1 << _DAYS.index(d) for d in set(self.weekdays))
        return LimitWindowSpec(
            start_min=start % 1440,
            end_min=end,
            weekdays=mask,
            node_id=self.node_id,
            import_kw=self.import_kw,
            import_a=self.import_a,
            export_kw=self.export_kw,
            loc=("body", "windows", index),
        )


class LimitScheduleIn(InputModel):
    """The whole time-of-day schedule of a site; it replaces the previous one."""

    windows: Annotated[list[LimitWindowIn], Field(max_length=200)]


class LimitWindowPublic(OutputModel):
    weekdays: list[Weekday]
    start: str
    end: str
    node_id: str | None
    import_kw: float | None
    import_a: float | None
    export_kw: float | None

    @classmethod
    def of(cls, w: LimitWindow, node_id: str | None) -> LimitWindowPublic:
        end = "24:00" if w.end_min == 1440 else f"{w.end_min // 60:02d}:{w.end_min % 60:02d}"
        return cls(
            weekdays=[d for i, d in enumerate(_DAYS) if w.weekdays >> i & 1],
            start=f"{w.start_min // 60:02d}:{w.start_min % 60:02d}",
            end=end,
            node_id=node_id,
            import_kw=w.import_kw,
            import_a=w.import_a,
            export_kw=w.export_kw,
        )


class LimitSchedulePublic(OutputModel):
    site_id: str
    timezone: str
    windows: list[LimitWindowPublic]


class ConnectorState(OutputModel):
    """A connector now: what it draws, what it may draw, and who is plugged in."""

    id: str
    status: str | None
    power_kw: float | None
    energy_wh: float | None
    soc_pct: float | None
    measured_at: datetime | None
    limit_kw: float | None
    limit_a: float | None
    session_id: str | None


class SiteState(OutputModel):
    """A site's live state: total power against the effective limit, per connector."""

    site_id: str
    at: UtcDateTime
    power_kw: float
    import_limit_kw: float | None = Field(description="Effective limit now, caps included")
    dr_cap_kw: float | None
    tod_cap_kw: float | None
    active_signals: list[str]
    tick: int | None
    decided_at: datetime | None
    connectors: list[ConnectorState]
