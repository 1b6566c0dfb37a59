"""The control loop: store -> engine -> limits, every tick and at once on every change.

Every tick (``tick_s``, 5 s by default) and whenever :meth:`ControlLoop.notify` is called (the
API calls it after committing a capacity change, a DR event, a price series or a new target), the
loop

1. snapshots the store into engine arrays (:func:`~ampflow.gateway.db.snapshot.load_snapshot`:
   the site trees compiled with ``compile_topology``, open sessions, DR caps, time-of-day limits);
2. runs the real-time allocator (:func:`~ampflow.engine.allocator.allocate`) under the caps that
   apply now, following the current plan and handing out what the plan leaves unused;
3. gives the connectors whose limit moved by more than ``limit_tolerance_kw`` to the
   :class:`LimitSink` (decreases first), and records every site's decision and those limits.

Every ``replan_s`` (5 min) and after every notification, the horizon scheduler
(:func:`~ampflow.engine.scheduler.solve_schedule`) re-plans in a worker thread, with DR caps,
time-of-day limits and prices over the horizon and each session's departure and energy or SoC
target; the plan is stored per site and connector and followed from the next tick. Database work
and solves all run off the event loop. Re-plans have a thread of their own at a lower CPU
priority (``replan_nice``, on Linux): a solve of a few seconds never holds up the real-time path
(a tick's allocation, the OCPP traffic that carries its limits) on a small box, where both would
otherwise share the cores; it only uses what they leave.

Hooks for the OCPP gateway
--------------------------
* :class:`LimitSink` receives changed limits; the gateway turns them into charging profiles
  (sending decreases before increases). Until it exists, :class:`RecordingSink` only records.
  A sink may also have ``uncontrollable_kw()`` returning ``{connector pk: kW}``: connectors that
  draw what they draw whatever they are told (a station that ignores or rejects profiles, or
  is offline). The allocator takes them as fixed load and shares out only what is left.
* :class:`StationCommands` starts and stops sessions on stations; :class:`NoStations` (the
  default) has no stations, so the API records starts and stops directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session as DbSession

from ampflow.engine.allocator import AllocatorState, allocate
from ampflow.engine.errors import AmpflowError
from ampflow.engine.scheduler import ScheduleProblem, Sessions, SolveStatus, solve_schedule
from ampflow.engine.topology import Topology
from ampflow.engine.units import a_from_kw
from ampflow.gateway.billing import scheduler_money
from ampflow.gateway.db import Database
from ampflow.gateway.db.base import utcnow
from ampflow.gateway.db.models import Site as SiteModel
from ampflow.gateway.db.repo import control_state, idempotency
from ampflow.gateway.db.snapshot import (
    Bounds,
    OpenSession,
    Snapshot,
    TopologyCache,
    evaluate_bounds,
    evaluate_prices,
    finite_or_none,
    load_snapshot,
)
from ampflow.gateway.settings import Settings

__all__ = [
    "ConnectorLimit",
    "ControlLoop",
    "Decision",
    "LimitSink",
    "NoStations",
    "RecordingSink",
    "StationCommands",
    "allocate_with_plan",
    "safe_fallback",
]

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_FRESH_S = 120  # a reading older than this says nothing about what the EV draws now
_SOC_MIN = 0.1  # V2G never discharges below 10 % of the battery


@dataclass(frozen=True, slots=True)
class ConnectorLimit:
    """A connector's new limit, with what a station needs to turn it into a profile.

    Attributes
    ----------
    limit_kw, limit_a : float
        The limit [kW], and the same as a current per phase [A].
    previous_kw : float or None
        The limit last sent (None if never).
    plan_kw : tuple of float
        Planned limits per plan step from ``plan_start`` [kW] (empty without a plan).
    """

    connector_pk: int
    connector_id: str
    site_id: str
    limit_kw: float
    limit_a: float
    previous_kw: float | None
    phases: int
    voltage_v: float
    plan_kw: tuple[float, ...] = ()
    plan_start: datetime | None = None
    plan_step_s: int | None = None


@runtime_checkable
class LimitSink(Protocol):
    """Where decided limits go: the OCPP gateway implements this to send charging profiles."""

    async def send_limits(self, limits: Sequence[ConnectorLimit]) -> Mapping[int, str]:
        """Deliver ``limits`` (decreases come first) and return a status per connector pk.

        A status of ``"failed"`` makes the loop offer that limit again at the next tick.
        """
        ...


class RecordingSink:
    """The sink used until the OCPP gateway exists: limits are only recorded."""

    def __init__(self) -> None:
        self.batches: list[list[ConnectorLimit]] = []

    async def send_limits(self, limits: Sequence[ConnectorLimit]) -> Mapping[int, str]:
        self.batches.append(list(limits))
        del self.batches[:-100]
        return {x.connector_pk: "recorded" for x in limits}


@runtime_checkable
class StationCommands(Protocol):
    """Remote start and stop through stations; the OCPP gateway implements this."""

    def handles(self, connector_id: str) -> bool:
        """Whether a connected station will act for this connector."""
        ...

    def remote_start(self, session_id: str, connector_id: str, *, id_token: str | None) -> None:
        """Queue a remote start (non-blocking; called after the session is committed)."""
        ...

    def remote_stop(self, session_id: str, connector_id: str) -> None:
        """Queue a remote stop (non-blocking)."""
        ...


class NoStations:
    """No stations are connected: the API records starts and stops itself."""

    def handles(self, connector_id: str) -> bool:
        return False

    def remote_start(self, session_id: str, connector_id: str, *, id_token: str | None) -> None:
        raise RuntimeError("no station gateway: sessions are recorded directly")

    def remote_stop(self, session_id: str, connector_id: str) -> None:
        raise RuntimeError("no station gateway: sessions are recorded directly")


@dataclass(frozen=True)
class Decision:
    """One tick: the limits decided and the ones that changed."""

    tick: int
    at: datetime
    snapshot: Snapshot
    p_kw: FloatArray
    bounds: Bounds
    changed: list[ConnectorLimit]
    sites: list[control_state.SiteDecision]


@dataclass
class _Plan:
    """The plan being followed, keyed by connector pk so it survives a recompiled tree."""

    start_s: int
    step_s: int
    computed_s: int
    kw: dict[int, FloatArray]  # connector pk -> per-step limit
    session_pks: frozenset[int]
    # site pk -> per-step grid-connection bound the plan was made under [kW]
    site_limit_kw: dict[int, FloatArray] = field(default_factory=dict)


@dataclass
class _SessionArrays:
    pk: NDArray[np.int64]
    col: NDArray[np.int64]
    ev_max: FloatArray
    remaining: FloatArray  # energy still wanted [kWh]; inf when no target is known
    weight: FloatArray
    departure_s: NDArray[np.int64]
    fields: dict[str, FloatArray] = field(default_factory=dict)


class ControlLoop:
    """Snapshot, allocate, plan and record; see the module notes.

    Parameters
    ----------
    db : Database
    settings : Settings
    sink : LimitSink, optional
        Default :class:`RecordingSink`.
    clock : callable, optional
        Returns the current time (tz-aware); tests pass a fixed clock.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        sink: LimitSink | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.sink: LimitSink = sink if sink is not None else RecordingSink()
        self.clock = clock
        self.tick_count = 0
        self.plan_count = 0
        self._cache = TopologyCache()
        self._alloc_state: AllocatorState | None = None
        self._state_key: tuple[tuple[int, int], ...] | None = None
        self._plan: _Plan | None = None
        self._sent: dict[int, float] = {}
        self._fixed: frozenset[int] = frozenset()  # connectors taken as fixed load last tick
        self._sent_s: dict[int, int] = {}  # when each limit was decided [epoch s]
        self._replan_requested = True
        self._last_plan_mono = -math.inf
        self._last_purge_s = -math.inf
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._plan_task: asyncio.Task[None] | None = None
        self._loaded = False
        self._planner: ThreadPoolExecutor | None = None

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the loop as a background task of the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await asyncio.to_thread(self._load_state)
        self._task = asyncio.create_task(self._run(), name="ampflow-control-loop")
        logger.info(
            "control loop started: tick %.1f s, re-plan %.0f s",
            self.settings.tick_s,
            self.settings.replan_s,
        )

    async def stop(self) -> None:
        """Stop the loop and wait for a re-plan in progress to finish."""
        for task in (self._task, self._plan_task):
            if task is not None and not task.done():
                task.cancel()
        for task in (self._task, self._plan_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._plan_task = None
        if self._planner is not None:
            self._planner.shutdown(wait=False)
            self._planner = None
        logger.info("control loop stopped after %d ticks", self.tick_count)

    async def _in_planner(self, now: datetime) -> None:
        """Run :meth:`_replan` in the re-plan thread (created on first use)."""
        if self._planner is None:
            self._planner = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="ampflow-replan",
                initializer=_lower_priority,
                initargs=(self.settings.replan_nice,),
            )
        await asyncio.get_running_loop().run_in_executor(self._planner, self._replan, now)

    def notify(self, reason: str, *, replan: bool = True) -> None:
        """Wake the loop now (thread-safe); with ``replan``, also re-plan at once."""
        logger.debug("control loop woken: %s", reason)
        if replan:
            self._replan_requested = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the top-level runner: log and keep controlling
                logger.exception("control tick failed; retrying at the next tick")
            self._maybe_replan()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.tick_s)
            # A burst of changes is taken in one tick rather than one tick per change.
            await asyncio.sleep(self.settings.min_tick_interval_s)

    # -- one tick ---------------------------------------------------------------------------

    async def run_once(self) -> Decision:
        """One tick: decide, hand changed limits to the sink, record. Returns the decision."""
        if not self._loaded:
            await asyncio.to_thread(self._load_state)
        hook = getattr(self.sink, "uncontrollable_kw", None)
        fixed: Mapping[int, float] = hook() if hook is not None else {}
        t0 = time.perf_counter()
        decision = await asyncio.to_thread(self._decide, self.clock(), fixed)
        t1 = time.perf_counter()
        statuses: Mapping[int, str] = {}
        if decision.changed:
            statuses = await self.sink.send_limits(decision.changed)
        t2 = time.perf_counter()
        await asyncio.to_thread(self._record, decision, statuses)
        self.tick_count = decision.tick
        logger.debug(
            "tick %d: decided in %.0f ms, %d limits changed, handed over in %.0f ms, "
            "recorded in %.0f ms",
            decision.tick,
            1e3 * (t1 - t0),
            len(decision.changed),
            1e3 * (t2 - t1),
            1e3 * (time.perf_counter() - t2),
        )
        return decision

    async def replan(self) -> None:
        """Re-plan now and wait for it (the loop does this by itself; tests call it)."""
        self._replan_requested = False
        await self._in_planner(self.clock())

    def _maybe_replan(self) -> None:
        loop = asyncio.get_running_loop()
        since = loop.time() - self._last_plan_mono
        due = since >= self.settings.replan_s
        if not (due or self._replan_requested):
            return
        if since < self.settings.replan_debounce_s:
            # Requested again right after a re-plan: the next tick starts it (the allocator has
            # applied the change already; only the hours ahead wait a moment).
            self._wake_later(self.settings.replan_debounce_s - since)
            return
        if self._plan_task is not None and not self._plan_task.done():
            return  # one at a time; the request stays pending
        self._replan_requested = False
        self._last_plan_mono = loop.time()
        self._plan_task = asyncio.create_task(self._replan_task(), name="ampflow-replan")

    def _wake_later(self, delay_s: float) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_later(delay_s, wake.set)

    async def _replan_task(self) -> None:
        t0 = time.perf_counter()
        try:
            await self._in_planner(self.clock())
        except asyncio.CancelledError:
            raise
        except Exception:  # the top-level runner of re-plans
            logger.exception("re-plan failed; keeping the previous plan")
            return
        logger.debug("re-plan %d took %.0f ms", self.plan_count, 1e3 * (time.perf_counter() - t0))
        if self._wake is not None:
            self._wake.set()  # follow the new plan from now

    def _load_state(self) -> None:
        with self.db.read() as s:
            self._sent = control_state.last_limits(s)
            self.tick_count = max(self.tick_count, control_state.last_tick(s))
        self._loaded = True

    def _snapshot(self, now: datetime) -> Snapshot:
        horizon = int(self.settings.plan_horizon_h * 3600)
        with self.db.read() as s:
            return load_snapshot(s, at=now, horizon_s=horizon, cache=self._cache)

    def _decide(self, now: datetime, fixed_kw: Mapping[int, float] | None = None) -> Decision:
        snap = self._snapshot(now)
        topo = snap.topology
        if snap.revision != self._state_key:
            self._alloc_state, self._state_key = None, snap.revision
        step = max(1, int(self.settings.tick_s))
        bounds = evaluate_bounds(
            snap,
            np.array([snap.at_s], dtype=np.int64),
            step,
            simple_fractions=self.settings.simple_level_fractions,
        )
        ses = self._session_arrays(snap)
        demand, weight = self._demand(snap, ses)
        planned, unplanned = self._planned_now(snap, ses)
        row_upper = bounds.ub[:, 0]
        if planned is not None:
            # A site whose limit is higher now than the plan had it (a cap cancelled or raised
            # since the plan's snapshot) is not held to the plan's load: it is allocated as if
            # unforeseen until the next plan, which the change has asked for already.
            stale = self._raised_since_plan(snap, row_upper[topo.site_root_row])
            unplanned = unplanned | stale[topo.connector_site]
        fixed = np.array([(fixed_kw or {}).get(int(pk), np.nan) for pk in snap.connector_pk])
        is_fixed = ~np.isnan(fixed)
        if is_fixed.any():  # uncontrollable load uses up capacity first
            row_upper = np.maximum(row_upper - topo.A @ np.where(is_fixed, fixed, 0.0), 0.0)
            demand = np.where(is_fixed, 0.0, demand)
            planned = None if planned is None else np.where(is_fixed, 0.0, planned)
            unplanned = unplanned & ~is_fixed
        try:
            p, self._alloc_state = allocate_with_plan(
                topo,
                demand,
                weight=weight,
                row_upper=row_upper,
                planned=planned,
                unplanned=unplanned,
                state=self._alloc_state,
            )
        except (AmpflowError, AssertionError):
            # The limits must still come down when a cap arrives: scale every site down.
            logger.exception("allocator failed; falling back to proportional safe limits")
            p, self._alloc_state = safe_fallback(topo, demand, row_upper), None
        p = np.where(is_fixed, fixed, p)
        # A connector that stops being fixed load gets its limit sent even if unchanged: the
        # sink never sends a fixed load, so the station does not have it.
        now_fixed = frozenset(int(pk) for pk in (fixed_kw or {}))
        released, self._fixed = self._fixed - now_fixed, now_fixed
        tick = self.tick_count + 1
        return Decision(
            tick=tick,
            at=now,
            snapshot=snap,
            p_kw=p,
            bounds=bounds,
            changed=self._changed(snap, p, force=released),
            sites=self._site_decisions(snap, bounds, p),
        )

    def _session_arrays(self, snap: Snapshot) -> _SessionArrays:
        topo, sessions = snap.topology, snap.sessions
        col = np.array([x.col for x in sessions], dtype=np.int64)
        ev_max = np.array(
            [x.ev_max_kw if x.ev_max_kw is not None else np.inf for x in sessions], dtype=np.float64
        )
        ev_max = np.minimum(ev_max, topo.p_max_kw[col]) if len(col) else ev_max
        energy = np.array([x.energy_kwh for x in sessions], dtype=np.float64)
        remaining = np.array([_remaining_kwh(x) for x in sessions], dtype=np.float64)
        boost = self.settings.boost_weight
        weight = np.array([x.weight * (boost if x.boost else 1.0) for x in sessions])
        dwell = int(self.settings.default_dwell_h * 3600)
        departure = np.array(
            [
                x.departure_s
                if x.departure_s is not None and x.departure_s > snap.at_s
                else max(x.started_s + dwell, snap.at_s + self.settings.plan_step_s)
                for x in sessions
            ],
            dtype=np.int64,
        )
        return _SessionArrays(
            pk=np.array([x.pk for x in sessions], dtype=np.int64),
            col=col,
            ev_max=ev_max,
            remaining=remaining,
            weight=weight.astype(np.float64),
            departure_s=departure,
            fields={"energy": energy},
        )

    def _demand(self, snap: Snapshot, ses: _SessionArrays) -> tuple[FloatArray, FloatArray]:
        """What each connector's EV can take now [kW], and each connector's weight."""
        topo = snap.topology
        demand = np.zeros(topo.n_connectors)
        weight = snap.connector_weight.copy()
        want = np.where(ses.remaining > 1e-3, ses.ev_max, 0.0)
        headroom = self.settings.demand_headroom_kw
        for i, x in enumerate(snap.sessions):
            pk = int(snap.connector_pk[x.col])
            sent = self._sent.get(pk)
            fresh = (
                x.measured_s is not None
                and snap.at_s - x.measured_s <= _FRESH_S
                and x.measured_s >= self._sent_s.get(pk, 0)  # taken under the limit now sent
            )
            if (
                fresh
                and x.power_kw is not None
                and sent is not None
                and x.power_kw < sent - headroom
            ):
                want[i] = min(want[i], x.power_kw + headroom)  # the EV takes less than offered
        demand[ses.col] = want
        weight[ses.col] *= ses.weight
        return demand, weight

    def _planned_now(
        self, snap: Snapshot, ses: _SessionArrays
    ) -> tuple[FloatArray | None, BoolArray]:
        """The plan's limit for this instant per connector, and connectors it did not foresee."""
        n = snap.topology.n_connectors
        unplanned = np.zeros(n, dtype=bool)
        plan = self._plan
        if plan is None:
            return None, unplanned
        k = (snap.at_s - plan.start_s) // plan.step_s
        if k < 0 or k >= max((len(v) for v in plan.kw.values()), default=0):
            return None, unplanned
        planned = np.array(
            [plan.kw[int(pk)][k] if int(pk) in plan.kw else 0.0 for pk in snap.connector_pk],
            dtype=np.float64,
        )
        for i, x in enumerate(snap.sessions):
            late = x.targets_s is not None and x.targets_s > plan.computed_s
            if int(ses.pk[i]) not in plan.session_pks or late:
                unplanned[x.col] = True
        return planned, unplanned

    def _raised_since_plan(self, snap: Snapshot, site_limit_kw: FloatArray) -> BoolArray:
        """Per site: is its grid-connection bound now above the one the plan had for now?"""
        plan = self._plan
        out = np.zeros(len(snap.sites), dtype=bool)
        if plan is None:
            return out
        k = (snap.at_s - plan.start_s) // plan.step_s
        for i, site in enumerate(snap.sites):
            planned = plan.site_limit_kw.get(site.pk)
            if planned is not None and 0 <= k < len(planned):
                out[i] = site_limit_kw[i] > planned[k] + _PLAN_EPS_KW
        return out

    def _changed(
        self, snap: Snapshot, p: FloatArray, *, force: frozenset[int] = frozenset()
    ) -> list[ConnectorLimit]:
        topo = snap.topology
        tol = self.settings.limit_tolerance_kw
        amps = a_from_kw(
            p, voltage_v=topo.voltage_v, phases=topo.phases, power_factor=topo.power_factor
        )
        plan = self._plan
        out = []
        for col in range(topo.n_connectors):
            pk = int(snap.connector_pk[col])
            prev = self._sent.get(pk)
            # Only small increases are skipped: a skipped decrease would leave a limit out
            # there above what the allocation assumed.
            if (
                prev is not None
                and pk not in force
                and prev - 1e-9 <= round(float(p[col]), 4) <= prev + tol
            ):
                continue
            site = snap.sites[int(topo.connector_site[col])]
            out.append(
                ConnectorLimit(
                    connector_pk=pk,
                    connector_id=topo.connector_ids[col],
                    site_id=site.id,
                    limit_kw=round(float(p[col]), 4),
                    limit_a=round(float(amps[col]), 2),
                    previous_kw=prev,
                    phases=int(topo.phases[col]),
                    voltage_v=float(topo.voltage_v[col]),
                    plan_kw=tuple(plan.kw.get(pk, ())) if plan is not None else (),
                    plan_start=None if plan is None else datetime.fromtimestamp(plan.start_s, UTC),
                    plan_step_s=None if plan is None else plan.step_s,
                )
            )
        # Decreases first, so a site never exceeds its cap while limits are in flight.
        out.sort(key=lambda x: x.limit_kw - (x.previous_kw or 0.0))
        return out

    def _site_decisions(
        self, snap: Snapshot, bounds: Bounds, p: FloatArray
    ) -> list[control_state.SiteDecision]:
        topo = snap.topology
        allocated = np.bincount(topo.connector_site, p, minlength=topo.n_sites)
        roots = topo.site_root_row
        return [
            control_state.SiteDecision(
                site_pk=site.pk,
                import_limit_kw=finite_or_none(float(bounds.ub[roots[i], 0])),
                dr_cap_kw=finite_or_none(float(bounds.dr_cap_kw[i, 0])),
                tod_cap_kw=finite_or_none(float(bounds.tod_cap_kw[i, 0])),
                allocated_kw=round(float(allocated[i]), 4),
                active_signals=bounds.active[i],
            )
            for i, site in enumerate(snap.sites)
        ]

    def _record(self, decision: Decision, statuses: Mapping[int, str]) -> None:
        site_of = {s.id: s.pk for s in decision.snapshot.sites}
        rows = []
        for x in decision.changed:
            status = statuses.get(x.connector_pk, "failed")
            rows.append(
                control_state.ConnectorDecision(
                    x.connector_pk, site_of[x.site_id], x.limit_kw, x.limit_a, status
                )
            )
        with self.db.write() as s:
            control_state.save_decisions(
                s, tick=decision.tick, at=decision.at, sites=decision.sites, connectors=rows
            )
            self._housekeeping(s, decision.at)
        for x in decision.changed:
            if statuses.get(x.connector_pk, "failed") != "failed":
                self._sent[x.connector_pk] = x.limit_kw
                self._sent_s[x.connector_pk] = int(decision.at.timestamp())

    def _housekeeping(self, s: DbSession, now: datetime) -> None:
        if now.timestamp() - self._last_purge_s < 3600:
            return
        self._last_purge_s = now.timestamp()
        ttl = timedelta(hours=self.settings.idempotency_ttl_h)
        purged = idempotency.purge_records(s, before=now - ttl)
        if purged:
            logger.info("purged %d idempotency records older than %s", purged, ttl)

    # -- re-plan ----------------------------------------------------------------------------

    def _replan(self, now: datetime) -> None:
        t0 = time.perf_counter()
        snap = self._snapshot(now)
        t_snap = time.perf_counter()
        topo = snap.topology
        step = self.settings.plan_step_s
        T = max(1, int(self.settings.plan_horizon_h * 3600) // step)
        start_s = snap.at_s - snap.at_s % step
        starts = start_s + step * np.arange(T, dtype=np.int64)
        fractions = self.settings.simple_level_fractions
        bounds = evaluate_bounds(snap, starts, step, simple_fractions=fractions)
        imp, exp = evaluate_prices(
            snap,
            starts,
            step,
            default_import=self.settings.default_import_price,
            default_export=self.settings.default_export_price,
        )
        ses = self._session_arrays(snap)
        conn_kw = np.zeros((topo.n_connectors, T))
        site_kw = np.zeros((topo.n_sites, T))
        status, message = SolveStatus.OPTIMAL, "no sessions to plan"
        if len(ses.pk):
            sessions = self._plan_sessions(snap, ses, start_s, step, T)
            exp, wear, value = self._settled_money(snap, sessions, start_s, step, T, exp)
            problem = ScheduleProblem(
                topo,
                sessions,
                n_steps=T,
                dt_s=step,
                import_price=imp,
                export_price=exp,
                row_upper=bounds.ub,
                row_lower=bounds.lb,
                # ScheduleProblem takes one demand charge: the highest of the sites.
                demand_charge_per_kw=max((x.demand_charge_per_kw for x in snap.sites), default=0.0),
                degradation_per_kwh=wear,
                discharge_value_per_kwh=value,
                urgency_bias_per_kwh=self.settings.urgency_bias_per_kwh,
            )
            t_build = time.perf_counter()
            plan = solve_schedule(
                problem, time_limit_s=self.settings.solver_time_limit_s, method="ipm"
            )
            t_solve = time.perf_counter()
            status, message = plan.status, plan.message or _unmet_message(plan.unmet_kwh, sessions)
            if np.isfinite(plan.site_import_kw).all():
                conn_kw = np.zeros((topo.n_connectors, T))
                np.add.at(conn_kw, sessions.connector, _even_out(plan.p_kw, topo, sessions))
                site_kw = plan.site_import_kw
        t_store = time.perf_counter()
        self._store_plan(snap, now, start_s, step, conn_kw, site_kw, bounds, imp, status, message)
        self.plan_count += 1
        if len(ses.pk):
            logger.debug(
                "re-plan %d: snapshot %.0f ms, problem %.0f ms, solve %.0f ms, result %.0f ms, "
                "stored in %.0f ms",
                self.plan_count,
                1e3 * (t_snap - t0),
                1e3 * (t_build - t_snap),
                1e3 * (t_solve - t_build),
                1e3 * (t_store - t_solve),
                1e3 * (time.perf_counter() - t_store),
            )

    def _settled_money(
        self, snap: Snapshot, sessions: Sessions, start_s: int, step: int, T: int, exp: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Export prices, degradation cost and DR payment per site as V2G settlement pays them.

        At a site with a V2G session, a discharged kWh is worth what
        :func:`ampflow.gateway.billing.settle_v2g` pays for it (the export price series with the
        site's billing default, and the DR payment on the EV's own discharge during DR events)
        and costs the degradation the site pays the driver, so the plan is optimised for the
        money that is actually settled. Other sites keep the plain export price, no wear cost
        and no DR payment.
        """
        topo = snap.topology
        wear = np.zeros(topo.n_sites)
        value = np.zeros((topo.n_sites, T))
        v2g = sessions.p_discharge_max_kw > 0
        v2g_sites = sorted(set(topo.connector_site[sessions.connector[v2g]].tolist()))
        if not v2g_sites:
            return exp, wear, value
        exp = exp.copy()
        start = datetime.fromtimestamp(start_s, UTC)
        with self.db.read() as s:
            for i in v2g_sites:
                site = s.get(SiteModel, snap.sites[i].pk)
                if site is None:
                    continue
                money = scheduler_money(s, site, start=start, n_steps=T, dt_s=step)
                kwargs = money.problem_kwargs()
                exp[i] = kwargs["export_price"]
                wear[i] = kwargs["degradation_per_kwh"]
                value[i] = kwargs["discharge_value_per_kwh"]
        return exp, wear, value

    def _plan_sessions(
        self, snap: Snapshot, ses: _SessionArrays, start_s: int, step: int, T: int
    ) -> Sessions:
        topo = snap.topology
        departure = np.clip(-((start_s - ses.departure_s) // step), 1, T)
        hours = np.maximum(ses.departure_s - snap.at_s, 0) / 3600.0
        target = np.where(np.isfinite(ses.remaining), ses.remaining, ses.ev_max * hours)
        soc = np.array([np.nan if x.soc_pct is None else x.soc_pct for x in snap.sessions])
        battery = np.array(
            [np.nan if x.battery_kwh is None else x.battery_kwh for x in snap.sessions]
        )
        v2g = np.array([x.v2g for x in snap.sessions], dtype=bool) & (
            topo.p_discharge_max_kw[ses.col] > 0
        )
        v2g &= np.isfinite(soc) & np.isfinite(battery)
        return Sessions(
            connector=ses.col,
            arrival_step=np.zeros(len(ses.col), dtype=np.int64),
            departure_step=departure.astype(np.int64),
            e_target_kwh=np.maximum(target, 0.0),
            p_max_kw=ses.ev_max,
            p_discharge_max_kw=np.where(v2g, ses.ev_max, 0.0),
            soc_kwh=np.where(v2g, soc / 100.0 * battery, np.nan),
            soc_min_kwh=np.where(v2g, _SOC_MIN * battery, np.nan),
            soc_max_kwh=np.where(v2g, battery, np.nan),
            weight=ses.weight,
            ids=tuple(x.id for x in snap.sessions),
        )

    def _store_plan(
        self,
        snap: Snapshot,
        now: datetime,
        start_s: int,
        step: int,
        conn_kw: FloatArray,
        site_kw: FloatArray,
        bounds: Bounds,
        imp: FloatArray,
        status: SolveStatus,
        message: str,
    ) -> None:
        topo = snap.topology
        roots = topo.site_root_row
        rounded = np.round(conn_kw, 4)
        idle = ~rounded.any(axis=1)  # stored as [] (nothing planned), which keeps plans small
        plans = []
        for i, site in enumerate(snap.sites):
            lo, hi = topo.site_conn_ptr[i], topo.site_conn_ptr[i + 1]
            plans.append(
                control_state.SitePlan(
                    site_pk=site.pk,
                    status=status.value,
                    message=message,
                    site_kw=np.round(site_kw[i], 4).tolist(),
                    limit_kw=[finite_or_none(float(x)) for x in bounds.ub[roots[i]]],
                    import_price=np.round(imp[i], 6).tolist(),
                    connector_kw={
                        int(snap.connector_pk[c]): [] if idle[c] else rounded[c].tolist()
                        for c in range(lo, hi)
                    },
                )
            )
        start = datetime.fromtimestamp(start_s, UTC)
        with self.db.write() as s:
            control_state.save_plans(s, computed_at=now, start_at=start, step_s=step, plans=plans)
        self._plan = _Plan(
            start_s=start_s,
            step_s=step,
            computed_s=snap.at_s,
            kw={int(pk): conn_kw[c].copy() for c, pk in enumerate(snap.connector_pk)},
            session_pks=frozenset(int(x.pk) for x in snap.sessions),
            site_limit_kw={
                site.pk: bounds.ub[roots[i]].copy() for i, site in enumerate(snap.sites)
            },
        )


_PLAN_EPS_KW = 1e-3  # planned power below this is taken as none [kW]


def _even_out(p_kw: FloatArray, topology: Topology, sessions: Sessions) -> FloatArray:
    """The plan with sessions the LP cannot tell apart given the same power.

    Sessions at one site with the same departure step, energy still to deliver (to 0.5 kWh),
    power limit and weight (and no V2G) are interchangeable in the objective, and an LP
    solution may give one full power and another none, or nearly equal but different powers,
    which would reach the stations as needlessly different limits (and move again at every
    re-plan). Each such group gets its members' mean: the site's totals, hence its cost and
    peak, are unchanged, and the allocator still holds every row when the plan is followed.
    """
    n = len(sessions.connector)
    if n < 2:
        return p_kw
    key = np.stack(
        [
            topology.connector_site[sessions.connector].astype(np.float64),
            sessions.departure_step.astype(np.float64),
            np.round(sessions.e_target_kwh * 2.0),  # to 0.5 kWh: the next re-plan corrects
            np.round(sessions.p_max_kw, 1),
            np.round(sessions.weight, 6),
            np.where(sessions.p_discharge_max_kw > 0, np.arange(n), -1.0),  # V2G: alone
        ],
        axis=1,
    )
    _, group, count = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    group = group.ravel()
    if count.max() < 2:
        return p_kw
    total = np.zeros((len(count), p_kw.shape[1]))
    np.add.at(total, group, p_kw)
    out: FloatArray = total[group] / count[group, None]
    return out


def allocate_with_plan(
    topology: Topology,
    demand_kw: FloatArray,
    *,
    weight: FloatArray,
    row_upper: FloatArray,
    planned: FloatArray | None,
    unplanned: BoolArray,
    state: AllocatorState | None = None,
) -> tuple[FloatArray, AllocatorState]:
    """Connector limits that follow the plan under the caps that apply now.

    Without a plan this is :func:`~ampflow.engine.allocator.allocate`. With one, each site's
    grid connection is held to the plan's load now (plus the demand of sessions the plan did not
    foresee): connectors first get up to their planned limit, then what that envelope leaves
    unused goes to the connectors that are charging or unforeseen, as in
    :func:`ampflow.scenarios.demo.replay_day`. Every row stays within ``row_upper``, and no
    connector gets more than its demand (raised to its minimum) or its maximum.

    Parameters
    ----------
    topology : Topology
    demand_kw, weight : ndarray, shape (n_connectors,)
        What each EV can take now [kW] and its priority weight.
    row_upper : ndarray, shape (n_rows,)
        Row bounds now, caps included [kW or A].
    planned : ndarray, shape (n_connectors,), or None
        The plan's limit for this instant [kW].
    unplanned : ndarray of bool, shape (n_connectors,)
        Connectors whose session the plan did not foresee.
    state : AllocatorState, optional

    Returns
    -------
    (ndarray, AllocatorState)
    """
    if planned is None:
        res = allocate(topology, demand_kw, weight=weight, row_upper=row_upper, state=state)
        return res.p_kw, res.state
    A, roots = topology.A, topology.site_root_row
    # A plan of a few watts is no plan (an interior-point solution is not exactly 0).
    planned = np.where(planned > _PLAN_EPS_KW, planned, 0.0)
    envelope = np.array(row_upper, dtype=np.float64)
    extra = np.where(unplanned, demand_kw, 0.0)
    envelope[roots] = np.minimum(envelope[roots], A[roots] @ (planned + extra) + 1e-9)
    first = np.where(unplanned, demand_kw, np.minimum(demand_kw, planned))
    follow = allocate(topology, first, weight=weight, row_upper=envelope, state=state)
    more = (follow.p_kw > 0) | unplanned
    rest = allocate(
        topology,
        np.where(more, np.maximum(demand_kw - follow.p_kw, 0.0), 0.0),
        weight=weight,
        row_upper=envelope - A @ follow.p_kw,
    )
    cap = np.where(demand_kw > 0, np.clip(demand_kw, topology.p_min_kw, topology.p_max_kw), 0.0)
    p: FloatArray = np.minimum(follow.p_kw + rest.p_kw, cap)
    return p, follow.state


def safe_fallback(topology: Topology, demand_kw: FloatArray, row_upper: FloatArray) -> FloatArray:
    """Limits that respect every row without the allocator: demands scaled down per site.

    Each site's demands (clipped to the connectors' maxima) are multiplied by the largest factor
    that keeps every row of the site within ``row_upper``; connectors that end up below their
    minimum get 0, which only lowers the loads. Used only if the allocator fails.

    Examples
    --------
    >>> from ampflow.engine.topology import ChargerSpec, SiteSpec, compile_topology
    >>> topo = compile_topology([SiteSpec("s", import_kw=11, chargers=[
    ...     ChargerSpec("a", "s", max_kw=11), ChargerSpec("b", "s", max_kw=11)])])
    >>> safe_fallback(topo, np.array([11.0, 11.0]), topo.b_import).tolist()
    [5.5, 5.5]
    """
    p = np.clip(demand_kw, 0.0, topology.p_max_kw)
    load = topology.A @ p
    ub = np.maximum(row_upper, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(load > 0, ub / load, np.inf)
    factor = np.ones(topology.n_sites)
    np.minimum.at(factor, topology.row_site, ratio)
    p = p * np.minimum(factor, 1.0)[topology.connector_site]
    out: FloatArray = np.where(p >= topology.p_min_kw, p, 0.0)
    return out


def _remaining_kwh(x: OpenSession) -> float:
    """Energy a session still wants [kWh]: from its energy target, else its SoC target."""
    if x.energy_target_kwh is not None:
        return max(x.energy_target_kwh - x.energy_kwh, 0.0)
    if x.soc_pct is not None and x.soc_target_pct is not None and x.battery_kwh is not None:
        return max((x.soc_target_pct - x.soc_pct) / 100.0 * x.battery_kwh, 0.0)
    return math.inf


def _unmet_message(unmet: FloatArray, sessions: Sessions) -> str:
    short = np.flatnonzero(unmet > 1e-3)
    if len(short) == 0:
        return "every target is planned in full"
    worst = short[np.argsort(-unmet[short])][:3]
    parts = ", ".join(f"{sessions.ids[i]} short {unmet[i]:.2f} kWh" for i in worst)
    return f"{len(short)} session(s) cannot reach their target: {parts}"


def _lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority by ``nice`` (Linux: a thread has its own)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:  # not allowed here: re-plans run at normal priority
        logger.info("re-plan thread keeps its priority: %s", exc)
