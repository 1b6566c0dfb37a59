"""Sites and their capacity tree: create, read, change limits, priorities and time-of-day limits.

The tree is stored as rows and converted to and from the engine's :class:`SiteSpec`, which is also
how every change is validated: after a change the site is compiled with
:func:`~ampflow.engine.topology.compile_topology`, and a tree the engine would refuse is never
committed. Each change bumps the site's ``revision`` so that the control loop recompiles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import selectinload

from ampflow.engine.errors import TopologyError
from ampflow.engine.topology import ChargerKind, ChargerSpec, NodeSpec, SiteSpec, compile_topology
from ampflow.gateway.db.base import SessionStatus
from ampflow.gateway.db.errors import ConflictError, NotFoundError
from ampflow.gateway.db.models import Charger, Connector, LimitWindow, Node, Session, Site

__all__ = [
    "LimitWindowSpec",
    "SiteInfo",
    "add_charger",
    "add_node",
    "create_site",
    "get_site",
    "get_site_tree",
    "limit_windows",
    "list_sites",
    "set_limit_windows",
    "site_spec",
    "update_charger",
    "update_connector",
    "update_node",
    "update_site",
]


@dataclass(frozen=True)
class SiteInfo:
    """What a site has besides its electrical tree."""

    name: str = ""
    timezone: str = "UTC"
    min_import_kw: float = 0.0
    demand_charge_per_kw: float = 0.0
    currency: str = "EUR"


@dataclass(frozen=True)
class LimitWindowSpec:
    """A time-of-day limit; see :class:`~ampflow.gateway.db.models.LimitWindow`."""

    start_min: int
    end_min: int
    weekdays: int = 0b1111111
    node_id: str | None = None
    import_kw: float | None = None
    import_a: float | None = None
    export_kw: float | None = None
    loc: tuple[str | int, ...] = field(default=(), compare=False)


def _phase(obj: Site | Node) -> tuple[float, float, float] | None:
    values = (obj.phase_a_l1, obj.phase_a_l2, obj.phase_a_l3)
    if any(v is None for v in values):
        return None
    return (float(values[0] or 0), float(values[1] or 0), float(values[2] or 0))


def _set_phase(obj: Site | Node, phase_a: Sequence[float] | None) -> None:
    l1, l2, l3 = phase_a if phase_a is not None else (None, None, None)
    obj.phase_a_l1, obj.phase_a_l2, obj.phase_a_l3 = l1, l2, l3


def site_spec(site: Site) -> SiteSpec:
    """The engine's view of a stored site (its nodes and chargers must be loaded)."""
    node_ids = {n.pk: n.id for n in site.nodes}

    def parent(pk: int | None) -> str:
        return site.id if pk is None else node_ids[pk]

    nodes = [
        NodeSpec(
            n.id,
            parent(n.parent_pk),
            import_kw=math.inf if n.import_kw is None else n.import_kw,
            export_kw=n.export_kw,
            phase_a=_phase(n),
        )
        for n in site.nodes
    ]
    chargers = [
        ChargerSpec(
            c.id,
            parent(c.node_pk),
            max_kw=c.max_kw,
            connectors=len(c.connectors),
            kind=ChargerKind(c.kind),
            phases=c.phases,
            phase=c.phase,
            rotation=c.rotation,
            min_a=c.min_a,
            min_kw=c.min_kw,
            voltage_v=c.voltage_v,
            bidirectional=c.bidirectional,
            discharge_max_kw=c.discharge_max_kw,
        )
        for c in site.chargers
    ]
    return SiteSpec(
        site.id,
        import_kw=site.import_kw,
        export_kw=site.export_kw,
        voltage_v=site.voltage_v,
        phase_a=_phase(site),
        power_factor=site.power_factor,
        nodes=nodes,
        chargers=chargers,
    )


def _check_timezone(tz: str) -> None:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConflictError(
            f"timezone: expected an IANA time zone such as 'Europe/Amsterdam', got {tz!r}",
            loc=("body", "timezone"),
        ) from None


def _check_min(site: Site, *, loc: tuple[str | int, ...]) -> None:
    if site.import_kw < site.min_import_kw:
        raise ConflictError(
            f"site {site.id!r}: import_kw {site.import_kw:g} is below the site's minimum "
            f"import {site.min_import_kw:g} kW",
            loc=loc,
        )


def _validate(site: Site, *, loc: tuple[str | int, ...]) -> None:
    """Compile the site as the engine would; any refusal becomes a conflict."""
    try:
        compile_topology([site_spec(site)])
    except TopologyError as exc:
        raise ConflictError(str(exc), loc=loc) from exc


def create_site(
    s: DbSession,
    spec: SiteSpec,
    info: SiteInfo,
    *,
    charger_priority: Mapping[str, float] | None = None,
) -> Site:
    """Store a new site with its tree.

    Raises
    ------
    TopologyError
        If the engine refuses the tree (the caller's input is invalid on its own).
    ConflictError
        For a duplicate site id, or an import limit below the site's minimum.
    """
    compile_topology([spec])
    if s.scalar(select(Site.pk).where(Site.id == spec.id)) is not None:
        raise ConflictError(f"site id {spec.id!r} already exists", loc=("body", "id"))
    _check_timezone(info.timezone)
    site = Site(
        id=spec.id,
        name=info.name,
        timezone=info.timezone,
        import_kw=spec.import_kw,
        export_kw=spec.export_kw,
        voltage_v=spec.voltage_v,
        power_factor=spec.power_factor,
        min_import_kw=info.min_import_kw,
        demand_charge_per_kw=info.demand_charge_per_kw,
        currency=info.currency,
        nodes=[],
        chargers=[],
    )
    _set_phase(site, spec.phase_a)
    _check_min(site, loc=("body", "import_kw"))
    s.add(site)
    s.flush()
    by_id: dict[str, Node] = {}
    pending = list(spec.nodes)
    while pending:  # parents first; compile_topology has ruled out cycles and unknown parents
        ready = [n for n in pending if n.parent == spec.id or n.parent in by_id]
        for n in ready:
            by_id[n.id] = _new_node(site, n, by_id.get(n.parent))
        pending = [n for n in pending if n.id not in by_id]
        s.flush()
    priority = charger_priority or {}
    for c in spec.chargers:
        _new_charger(site, c, by_id.get(c.node), priority.get(c.id, 1.0))
    s.flush()
    return site


def _new_node(site: Site, n: NodeSpec, parent: Node | None) -> Node:
    node = Node(
        site_pk=site.pk,
        id=n.id,
        parent_pk=None if parent is None else parent.pk,
        import_kw=None if math.isinf(n.import_kw) else n.import_kw,
        export_kw=n.export_kw,
    )
    _set_phase(node, n.phase_a)
    site.nodes.append(node)
    return node


def _new_charger(site: Site, c: ChargerSpec, node: Node | None, priority: float) -> Charger:
    charger = Charger(
        site_pk=site.pk,
        id=c.id,
        node_pk=None if node is None else node.pk,
        max_kw=c.max_kw,
        kind=ChargerKind(c.kind).value,
        phases=3 if ChargerKind(c.kind) is ChargerKind.DC else c.phases,
        phase=c.phase,
        rotation=c.rotation,
        min_a=c.min_a,
        min_kw=c.min_kw,
        voltage_v=c.voltage_v,
        bidirectional=c.bidirectional,
        discharge_max_kw=c.discharge_max_kw,
        priority=priority,
        connectors=[],
    )
    for n in range(1, c.connectors + 1):
        charger.connectors.append(Connector(site_pk=site.pk, number=n))
    site.chargers.append(charger)
    return charger


def get_site(s: DbSession, site_id: str) -> Site:
    """A site row (without loading its tree). Raises NotFoundError."""
    site = s.scalar(select(Site).where(Site.id == site_id))
    if site is None:
        raise NotFoundError(f"site {site_id!r} does not exist", loc=("path", "site_id"))
    return site


def get_site_tree(s: DbSession, site_id: str) -> Site:
    """A site with its nodes, chargers and connectors loaded. Raises NotFoundError."""
    site = s.scalar(
        select(Site)
        .where(Site.id == site_id)
        .options(
            selectinload(Site.nodes),
            selectinload(Site.chargers).selectinload(Charger.connectors),
        )
    )
    if site is None:
        raise NotFoundError(f"site {site_id!r} does not exist", loc=("path", "site_id"))
    return site


def list_sites(s: DbSession, *, site_ids: Sequence[str] | None = None) -> list[Site]:
    """Every site, or those in ``site_ids``, by id."""
    q = select(Site).order_by(Site.id)
    if site_ids is not None:
        q = q.where(Site.id.in_(list(site_ids)))
    return list(s.scalars(q))


_SITE_FIELDS = {
    "name",
    "timezone",
    "import_kw",
    "export_kw",
    "voltage_v",
    "power_factor",
    "min_import_kw",
    "demand_charge_per_kw",
    "currency",
    "phase_a",
}


def update_site(s: DbSession, site_id: str, changes: Mapping[str, Any]) -> Site:
    """Change a site's attributes and limits (keys as in :data:`_SITE_FIELDS`).

    Raises
    ------
    NotFoundError, ConflictError
        ConflictError for an import limit below the site's minimum, or a tree the engine refuses.
    """
    unknown = set(changes) - _SITE_FIELDS
    if unknown:
        raise ValueError(f"update_site: unknown fields {sorted(unknown)}")
    site = get_site_tree(s, site_id)
    for key, value in changes.items():
        if key == "phase_a":
            _set_phase(site, value)
        else:
            setattr(site, key, value)
    if "timezone" in changes:
        _check_timezone(site.timezone)
    loc = ("body", "min_import_kw" if "min_import_kw" in changes else "import_kw")
    _check_min(site, loc=loc)
    _check_windows_above_min(s, site)
    _validate(site, loc=("body",))
    site.revision += 1
    s.flush()
    return site


def _find_node(site: Site, node_id: str) -> Node:
    for node in site.nodes:
        if node.id == node_id:
            return node
    raise NotFoundError(f"site {site.id!r} has no node {node_id!r}", loc=("path", "node_id"))


def _find_charger(site: Site, charger_id: str) -> Charger:
    for charger in site.chargers:
        if charger.id == charger_id:
            return charger
    raise NotFoundError(
        f"site {site.id!r} has no charger {charger_id!r}", loc=("path", "charger_id")
    )


def _parent_node(site: Site, parent_id: str, *, loc: tuple[str | int, ...]) -> Node | None:
    if parent_id == site.id:
        return None
    for node in site.nodes:
        if node.id == parent_id:
            return node
    raise ConflictError(
        f"site {site.id!r} has no node {parent_id!r} (use the site id for the grid connection)",
        loc=loc,
    )


def _check_new_id(site: Site, new_id: str) -> None:
    taken = {site.id} | {n.id for n in site.nodes} | {c.id for c in site.chargers}
    if new_id in taken:
        raise ConflictError(
            f"site {site.id!r} already has a node or charger {new_id!r}", loc=("body", "id")
        )


def add_node(s: DbSession, site_id: str, node: NodeSpec) -> Node:
    """Add a node below another node or the grid connection. Raises NotFoundError, ConflictError."""
    site = get_site_tree(s, site_id)
    _check_new_id(site, node.id)
    parent = _parent_node(site, node.parent, loc=("body", "parent"))
    row = _new_node(site, node, parent)
    s.flush()
    _validate(site, loc=("body",))
    site.revision += 1
    return row


def update_node(s: DbSession, site_id: str, node_id: str, changes: Mapping[str, Any]) -> Node:
    """Change a node's limits (``import_kw``, ``export_kw``, ``phase_a``; None = no limit)."""
    site = get_site_tree(s, site_id)
    node = _find_node(site, node_id)
    for key, value in changes.items():
        if key == "phase_a":
            _set_phase(node, value)
        elif key in ("import_kw", "export_kw"):
            setattr(node, key, value)
        else:
            raise ValueError(f"update_node: unknown field {key!r}")
    _validate(site, loc=("body",))
    site.revision += 1
    s.flush()
    return node


def add_charger(s: DbSession, site_id: str, charger: ChargerSpec, *, priority: float) -> Charger:
    """Add a charger and its connectors below a node or the grid connection."""
    site = get_site_tree(s, site_id)
    _check_new_id(site, charger.id)
    node = _parent_node(site, charger.node, loc=("body", "node"))
    row = _new_charger(site, charger, node, priority)
    s.flush()
    _validate(site, loc=("body",))
    site.revision += 1
    return row


_CHARGER_FIELDS = {
    "max_kw",
    "min_a",
    "min_kw",
    "priority",
    "connectors",
    "discharge_max_kw",
    "bidirectional",
}


def update_charger(
    s: DbSession, site_id: str, charger_id: str, changes: Mapping[str, Any]
) -> Charger:
    """Change a charger's limits, priority or number of connectors.

    Removing a connector that has an open session is a conflict.
    """
    unknown = set(changes) - _CHARGER_FIELDS
    if unknown:
        raise ValueError(f"update_charger: unknown fields {sorted(unknown)}")
    site = get_site_tree(s, site_id)
    charger = _find_charger(site, charger_id)
    for key, value in changes.items():
        if key != "connectors":
            setattr(charger, key, value)
    if "connectors" in changes:
        _resize(s, site, charger, int(changes["connectors"]))
    _validate(site, loc=("body",))
    site.revision += 1
    s.flush()
    return charger


def _resize(s: DbSession, site: Site, charger: Charger, n: int) -> None:
    current = len(charger.connectors)
    if n > current:
        for number in range(current + 1, n + 1):
            charger.connectors.append(Connector(site_pk=site.pk, number=number))
        return
    drop = [c for c in charger.connectors if c.number > n]
    busy = s.scalar(
        select(Session.id).where(
            Session.connector_pk.in_([c.pk for c in drop]),
            Session.status.in_(SessionStatus.open()),
        )
    )
    if busy is not None:
        raise ConflictError(
            f"charger {charger.id!r}: cannot remove a connector while session {busy!r} is open "
            f"on it",
            loc=("body", "connectors"),
        )
    for c in drop:
        charger.connectors.remove(c)


def update_connector(
    s: DbSession, site_id: str, charger_id: str, number: int, *, priority: float
) -> Connector:
    """Set a connector's priority weight."""
    site = get_site_tree(s, site_id)
    charger = _find_charger(site, charger_id)
    for connector in charger.connectors:
        if connector.number == number:
            connector.priority = priority
            site.revision += 1
            s.flush()
            return connector
    raise NotFoundError(
        f"charger {charger_id!r} of site {site_id!r} has no connector {number}",
        loc=("path", "number"),
    )


def limit_windows(s: DbSession, site: Site) -> list[tuple[LimitWindow, str | None]]:
    """The site's time-of-day limits, each with its node id (None = grid connection)."""
    rows = s.execute(
        select(LimitWindow, Node.id)
        .outerjoin(Node, Node.pk == LimitWindow.node_pk)
        .where(LimitWindow.site_pk == site.pk)
        .order_by(LimitWindow.pk)
    ).all()
    return [(w, node_id) for w, node_id in rows]


def set_limit_windows(
    s: DbSession, site_id: str, windows: Sequence[LimitWindowSpec]
) -> list[tuple[LimitWindow, str | None]]:
    """Replace the site's time-of-day limits at once.

    Raises
    ------
    NotFoundError
        For an unknown site.
    ConflictError
        For an unknown node, or a site-level import limit below the site's minimum.
    """
    site = get_site_tree(s, site_id)
    nodes = {n.id: n for n in site.nodes}
    rows = []
    for i, w in enumerate(windows):
        loc = w.loc or ("body", "windows", i)
        node_pk = None
        if w.node_id is not None and w.node_id != site.id:
            if w.node_id not in nodes:
                raise ConflictError(
                    f"site {site_id!r} has no node {w.node_id!r}", loc=(*loc, "node_id")
                )
            node_pk = nodes[w.node_id].pk
        if node_pk is None and w.import_kw is not None and w.import_kw < site.min_import_kw:
            raise ConflictError(
                f"site {site_id!r}: import_kw {w.import_kw:g} is below the site's minimum "
                f"import {site.min_import_kw:g} kW",
                loc=(*loc, "import_kw"),
            )
        rows.append(
            LimitWindow(
                site_pk=site.pk,
                node_pk=node_pk,
                weekdays=w.weekdays,
                start_min=w.start_min,
                end_min=w.end_min,
                import_kw=w.import_kw,
                import_a=w.import_a,
                export_kw=w.export_kw,
            )
        )
    for old in s.scalars(select(LimitWindow).where(LimitWindow.site_pk == site.pk)):
        s.delete(old)
    s.flush()
    s.add_all(rows)
    site.revision += 1
    s.flush()
    return limit_windows(s, site)


def _check_windows_above_min(s: DbSession, site: Site) -> None:
    low = s.scalar(
        select(LimitWindow.import_kw).where(
            LimitWindow.site_pk == site.pk,
            LimitWindow.node_pk.is_(None),
            LimitWindow.import_kw < site.min_import_kw,
        )
    )
    if low is not None:
        raise ConflictError(
            f"site {site.id!r}: min_import_kw {site.min_import_kw:g} is above the time-of-day "
            f"limit of {low:g} kW; change the limit schedule first",
            loc=("body", "min_import_kw"),
        )
