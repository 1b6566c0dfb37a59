"""The store as engine arrays: topology, open sessions, and caps and prices over a time grid.

:func:`load_snapshot` reads everything the control loop needs in one read transaction and
compiles the site trees with :func:`~ampflow.engine.topology.compile_topology` (cached while no
site's ``revision`` changes). :func:`evaluate_bounds` and :func:`evaluate_prices` then turn DR
events, time-of-day limits and price series into per-row and per-site arrays over a grid of steps.

Time rules
----------
* A DR interval applies to every step it overlaps, so a cap is never late.
* A time-of-day window applies to a step if it is active at any minute of the step. Windows are
  evaluated in the site's time zone minute by minute from UTC instants, so they follow DST: an
  08:00-10:00 window is 07:00-09:00 UTC in Amsterdam winter and 06:00-08:00 UTC in summer, and a
  02:00-03:00 window does not occur on the spring-forward day.
* SIMPLE levels 0..3 cap the site at a share of its import limit (settings), but never below its
  minimum import; explicit kW caps below the minimum are refused when posted.
* A price step takes the value of the price interval covering its midpoint; among overlapping
  series the lowest priority number wins, then the newest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import selectinload

from ampflow.engine.topology import RowKind, Topology, compile_topology
from ampflow.engine.units import kw_from_a
from ampflow.gateway.db.base import OptState, SessionStatus, SignalKind, SignalStatus
from ampflow.gateway.db.models import (
    Charger,
    Connector,
    LimitWindow,
    Node,
    Session,
    Signal,
    Site,
)
from ampflow.gateway.db.repo.sites import site_spec

__all__ = [
    "Bounds",
    "OpenSession",
    "SignalRow",
    "SiteRow",
    "Snapshot",
    "TopologyCache",
    "WindowRow",
    "evaluate_bounds",
    "evaluate_prices",
    "load_snapshot",
    "window_mask",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class SiteRow:
    """A site's scalar attributes, in topology order."""

    pk: int
    id: str
    timezone: str
    import_kw: float
    export_kw: float
    min_import_kw: float
    voltage_v: float
    power_factor: float
    demand_charge_per_kw: float


@dataclass(frozen=True, slots=True)
class OpenSession:
    """An active session as the control loop sees it (times in epoch seconds)."""

    pk: int
    id: str
    col: int  # topology column of its connector
    started_s: int
    departure_s: int | None
    energy_kwh: float
    energy_target_kwh: float | None
    soc_pct: float | None
    soc_target_pct: float | None
    battery_kwh: float | None
    ev_max_kw: float | None
    weight: float
    boost: bool
    power_kw: float | None
    measured_s: int | None
    v2g: bool
    targets_s: int | None  # when the targets last changed


@dataclass(frozen=True, slots=True)
class SignalRow:
    """An active, not opted-out signal with its intervals (epoch seconds)."""

    pk: int
    id: str
    site: int  # index into Snapshot.sites
    kind: SignalKind
    priority: int
    start_s: IntArray
    end_s: IntArray
    value: FloatArray


@dataclass(frozen=True, slots=True)
class WindowRow:
    """A time-of-day limit of a site (``node`` None = the grid connection)."""

    site: int
    node: str | None
    weekdays: int
    start_min: int
    end_min: int
    import_kw: float | None
    import_a: float | None
    export_kw: float | None


@dataclass(frozen=True)
class Snapshot:
    """Everything the control loop needs, read at one instant."""

    at_s: int
    topology: Topology
    sites: tuple[SiteRow, ...]
    connector_pk: IntArray  # (n_connectors,) store key of each topology column
    connector_weight: FloatArray  # charger priority x connector priority
    sessions: tuple[OpenSession, ...]
    signals: tuple[SignalRow, ...]
    windows: tuple[WindowRow, ...]
    revision: tuple[tuple[int, int], ...]


@dataclass
class TopologyCache:
    """The last compiled topology and the site revisions it was compiled from."""

    key: tuple[tuple[int, int], ...] | None = None
    topology: Topology | None = None
    connector_pk: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    connector_weight: FloatArray = field(default_factory=lambda: np.zeros(0))


def _epoch(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp())


def load_snapshot(
    s: DbSession, *, at: datetime, horizon_s: int, cache: TopologyCache | None = None
) -> Snapshot:
    """Read the store at ``at``; signals are those overlapping ``[at, at + horizon_s)``."""
    cache = cache if cache is not None else TopologyCache()
    site_rows = list(s.scalars(select(Site).order_by(Site.id)))
    key = tuple((x.pk, x.revision) for x in site_rows)
    if key != cache.key or cache.topology is None:
        _compile(s, cache, key)
    assert cache.topology is not None
    sites = tuple(
        SiteRow(
            x.pk,
            x.id,
            x.timezone,
            x.import_kw,
            x.export_kw,
            x.min_import_kw,
            x.voltage_v,
            x.power_factor,
            x.demand_charge_per_kw,
        )
        for x in site_rows
    )
    site_index = {x.pk: i for i, x in enumerate(sites)}
    col_of = {int(pk): i for i, pk in enumerate(cache.connector_pk)}
    at_s = int(at.timestamp())
    return Snapshot(
        at_s=at_s,
        topology=cache.topology,
        sites=sites,
        connector_pk=cache.connector_pk,
        connector_weight=cache.connector_weight,
        sessions=_sessions(s, col_of),
        signals=_signals(s, site_index, at, horizon_s),
        windows=_windows(s, site_index),
        revision=key,
    )


def _compile(s: DbSession, cache: TopologyCache, key: tuple[tuple[int, int], ...]) -> None:
    trees = list(
        s.scalars(
            select(Site)
            .order_by(Site.id)
            .options(
                selectinload(Site.nodes),
                selectinload(Site.chargers).selectinload(Charger.connectors),
            )
        )
    )
    topology = compile_topology([site_spec(x) for x in trees])
    by_id: dict[str, tuple[int, float]] = {}
    for site in trees:
        for charger in site.chargers:
            for c in charger.connectors:
                by_id[f"{site.id}/{charger.id}/{c.number}"] = (c.pk, charger.priority * c.priority)
    pks = np.array([by_id[cid][0] for cid in topology.connector_ids], dtype=np.int64)
    weights = np.array([by_id[cid][1] for cid in topology.connector_ids], dtype=np.float64)
    cache.key, cache.topology = key, topology
    cache.connector_pk, cache.connector_weight = pks, np.maximum(weights, 1e-6)


def _sessions(s: DbSession, col_of: dict[int, int]) -> tuple[OpenSession, ...]:
    rows = s.execute(
        select(Session, Connector.measured_at)
        .join(Connector, Connector.pk == Session.connector_pk)
        .where(Session.status == SessionStatus.ACTIVE.value)
        .order_by(Session.pk)
    ).all()
    out = []
    for ses, measured_at in rows:
        if ses.connector_pk not in col_of:
            continue  # the tree changed under it since the last compile
        out.append(
            OpenSession(
                pk=ses.pk,
                id=ses.id,
                col=col_of[ses.connector_pk],
                started_s=int(ses.started_at.timestamp()),
                departure_s=_epoch(ses.departure_at),
                energy_kwh=ses.energy_kwh,
                energy_target_kwh=ses.energy_target_kwh,
                soc_pct=ses.soc_pct,
                soc_target_pct=ses.soc_target_pct,
                battery_kwh=ses.battery_kwh,
                ev_max_kw=ses.ev_max_kw,
                weight=ses.priority,
                boost=ses.boost,
                power_kw=ses.power_kw,
                measured_s=_epoch(measured_at),
                v2g=ses.v2g,
                targets_s=_epoch(ses.targets_updated_at),
            )
        )
    return tuple(out)


def _signals(
    s: DbSession, site_index: dict[int, int], at: datetime, horizon_s: int
) -> tuple[SignalRow, ...]:
    end = datetime.fromtimestamp(at.timestamp() + horizon_s, at.tzinfo)
    rows = s.scalars(
        select(Signal)
        .where(
            Signal.status == SignalStatus.ACTIVE.value,
            Signal.opt_state != OptState.OPT_OUT.value,
            Signal.start_at < end,
            Signal.end_at > at,
        )
        .order_by(Signal.pk)
    ).all()
    return tuple(
        SignalRow(
            pk=x.pk,
            id=x.id,
            site=site_index[x.site_pk],
            kind=SignalKind(x.kind),
            priority=x.priority,
            start_s=np.array([int(iv.start_at.timestamp()) for iv in x.intervals], np.int64),
            end_s=np.array([int(iv.end_at.timestamp()) for iv in x.intervals], np.int64),
            value=np.array([iv.value for iv in x.intervals], np.float64),
        )
        for x in rows
        if x.site_pk in site_index
    )


def _windows(s: DbSession, site_index: dict[int, int]) -> tuple[WindowRow, ...]:
    rows = s.execute(
        select(LimitWindow, Node.id, Site.id)
        .join(Site, Site.pk == LimitWindow.site_pk)
        .outerjoin(Node, Node.pk == LimitWindow.node_pk)
        .order_by(LimitWindow.pk)
    ).all()
    return tuple(
        WindowRow(
            site=site_index[w.site_pk],
            node=None if node_id is None else f"{site_id}/{node_id}",
            weekdays=w.weekdays,
            start_min=w.start_min,
            end_min=w.end_min,
            import_kw=w.import_kw,
            import_a=w.import_a,
            export_kw=w.export_kw,
        )
        for w, node_id, site_id in rows
        if w.site_pk in site_index
    )


def window_mask(
    weekday: IntArray, minute: IntArray, *, weekdays: int, start_min: int, end_min: int
) -> NDArray[np.bool_]:
    """Whether a time-of-day window is active at local ``weekday`` (Monday 0) and ``minute``.

    ``end_min`` 1440 is the end of the day; ``start_min > end_min`` wraps past midnight and the
    part after midnight belongs to the weekday the window started on; ``start_min == end_min``
    is the whole day.

    Examples
    --------
    >>> import numpy as np
    >>> day = np.array([0, 0, 1, 1]); minute = np.array([21 * 60, 23 * 60, 60, 7 * 60])
    >>> window_mask(day, minute, weekdays=0b1, start_min=22 * 60, end_min=6 * 60).tolist()
    [False, True, True, False]
    """

    def on(day: IntArray) -> NDArray[np.bool_]:
        return ((weekdays >> day) & 1).astype(bool)

    if start_min < end_min:
        return on(weekday) & (minute >= start_min) & (minute < end_min)
    if start_min > end_min:
        return (on(weekday) & (minute >= start_min)) | (on((weekday - 1) % 7) & (minute < end_min))
    return on(weekday)


@dataclass(frozen=True)
class Bounds:
    """Row bounds over a grid of steps, and the site-level caps behind them.

    Attributes
    ----------
    ub, lb : ndarray, shape (n_rows, n_steps)
        Import bound and export bound (a magnitude) of every row [kW or A].
    dr_cap_kw, tod_cap_kw, export_cap_kw : ndarray, shape (n_sites, n_steps)
        The DR cap, the time-of-day cap at the grid connection, and the export cap (inf: none).
    active : list of tuple of str
        Per site, the ids of the DR signals that apply at the first step.
    """

    ub: FloatArray
    lb: FloatArray
    dr_cap_kw: FloatArray
    tod_cap_kw: FloatArray
    export_cap_kw: FloatArray
    active: list[tuple[str, ...]]


def _overlap(sig: SignalRow, starts: IntArray, step_s: int) -> tuple[NDArray[np.bool_], FloatArray]:
    """(n_intervals, T) overlap of each interval with each step, and the values."""
    hit = (sig.start_s[:, None] < starts[None, :] + step_s) & (sig.end_s[:, None] > starts[None, :])
    return hit, sig.value


def _dr_caps(
    snap: Snapshot, starts: IntArray, step_s: int, fractions: Sequence[float]
) -> tuple[FloatArray, FloatArray, list[tuple[str, ...]]]:
    n_sites, T = len(snap.sites), len(starts)
    dr = np.full((n_sites, T), np.inf)
    exp = np.full((n_sites, T), np.inf)
    active: list[list[str]] = [[] for _ in range(n_sites)]
    for sig in snap.signals:
        if sig.kind.is_price:
            continue
        hit, value = _overlap(sig, starts, step_s)
        site = snap.sites[sig.site]
        if sig.kind is SignalKind.SIMPLE_LEVEL:
            level = np.clip(np.rint(value), 0, 3).astype(np.int64)
            value = np.maximum(np.asarray(fractions)[level] * site.import_kw, site.min_import_kw)
        cap = np.min(np.where(hit, value[:, None], np.inf), axis=0, initial=np.inf)
        target = exp if sig.kind is SignalKind.EXPORT_CAP_KW else dr
        target[sig.site] = np.minimum(target[sig.site], cap)
        if hit[:, 0].any():
            active[sig.site].append(sig.id)
    return dr, exp, [tuple(a) for a in active]


def _local_minutes(starts: IntArray, step_s: int, timezone: str) -> tuple[IntArray, IntArray, int]:
    """Local weekday and minute of every minute of every step, flattened (T * n_sub,)."""
    n_sub = max(1, step_s // 60)
    t = (starts[:, None] + 60 * np.arange(n_sub)[None, :]).reshape(-1)
    local = pd.to_datetime(t, unit="s", utc=True).tz_convert(timezone)
    weekday = np.asarray(local.day_of_week, dtype=np.int64)
    minute = np.asarray(local.hour * 60 + local.minute, dtype=np.int64)
    return weekday, minute, n_sub


def evaluate_bounds(
    snap: Snapshot, starts: IntArray, step_s: int, *, simple_fractions: Sequence[float]
) -> Bounds:
    """Row bounds with DR caps and time-of-day limits over steps starting at ``starts``.

    Parameters
    ----------
    snap : Snapshot
    starts : ndarray of int, shape (n_steps,)
        Start of each step [epoch s].
    step_s : int
        Step length [s].
    simple_fractions : sequence of 4 floats
        Share of the import limit allowed at SIMPLE levels 0..3.
    """
    topo = snap.topology
    T = len(starts)
    ub = np.repeat(topo.b_import[:, None], T, axis=1)
    lb = np.repeat(topo.b_export[:, None], T, axis=1)
    dr, exp, active = _dr_caps(snap, starts, step_s, simple_fractions)
    tod = np.full_like(dr, np.inf)
    locals_: dict[str, tuple[IntArray, IntArray, int]] = {}
    for w in snap.windows:
        site = snap.sites[w.site]
        if site.timezone not in locals_:
            locals_[site.timezone] = _local_minutes(starts, step_s, site.timezone)
        weekday, minute, n_sub = locals_[site.timezone]
        on = window_mask(
            weekday, minute, weekdays=w.weekdays, start_min=w.start_min, end_min=w.end_min
        )
        on_step = on.reshape(T, n_sub).any(axis=1)
        _apply_window(snap, w, on_step, ub, lb, tod)
    roots = topo.site_root_row
    ub[roots] = np.minimum(ub[roots], dr)
    lb[roots] = np.minimum(lb[roots], exp)
    return Bounds(ub, lb, dr, tod, exp, active)


def _apply_window(
    snap: Snapshot,
    w: WindowRow,
    on: NDArray[np.bool_],
    ub: FloatArray,
    lb: FloatArray,
    tod: FloatArray,
) -> None:
    topo = snap.topology
    site = snap.sites[w.site]
    node = topo.node_index(w.node if w.node is not None else site.id)
    total = topo.total_row(node)
    if w.import_kw is not None:
        ub[total] = np.where(on, np.minimum(ub[total], w.import_kw), ub[total])
        if w.node is None:
            tod[w.site] = np.where(on, np.minimum(tod[w.site], w.import_kw), tod[w.site])
    if w.export_kw is not None:
        lb[total] = np.where(on, np.minimum(lb[total], w.export_kw), lb[total])
    if w.import_a is not None:
        phase_rows = np.flatnonzero((topo.row_node == node) & (topo.row_kind != RowKind.TOTAL_KW))
        if len(phase_rows):
            ub[phase_rows] = np.where(on, np.minimum(ub[phase_rows], w.import_a), ub[phase_rows])
        else:  # no per-phase rows at this node: the same current on three phases, as kW
            kw = float(
                kw_from_a(
                    w.import_a, voltage_v=site.voltage_v, phases=3, power_factor=site.power_factor
                )
            )
            ub[total] = np.where(on, np.minimum(ub[total], kw), ub[total])
            if w.node is None:
                tod[w.site] = np.where(on, np.minimum(tod[w.site], kw), tod[w.site])


def evaluate_prices(
    snap: Snapshot, starts: IntArray, step_s: int, *, default_import: float, default_export: float
) -> tuple[FloatArray, FloatArray]:
    """Import and export price of every site at every step [currency/kWh], shape (n_sites, T)."""
    n_sites, T = len(snap.sites), len(starts)
    imp = np.full((n_sites, T), float(default_import))
    exp = np.full((n_sites, T), float(default_export))
    mid = starts + step_s // 2
    prices = [x for x in snap.signals if x.kind.is_price]
    # Apply the least preferred first, so the preferred one (low priority, newest) is left.
    for sig in sorted(prices, key=lambda x: (-x.priority, x.pk)):
        inside = (sig.start_s[:, None] <= mid[None, :]) & (sig.end_s[:, None] > mid[None, :])
        covered = inside.any(axis=0)
        value = sig.value[np.argmax(inside, axis=0)]
        target = imp if sig.kind is SignalKind.IMPORT_PRICE else exp
        target[sig.site] = np.where(covered, value, target[sig.site])
    return imp, exp


def finite_or_none(x: float) -> float | None:
    """``None`` for an infinite value (no limit), else the value."""
    return None if math.isinf(x) else float(x)
