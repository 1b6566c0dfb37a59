"""Discrete-time replay of a scenario through a policy.

At every step the simulator plugs in the sessions that have arrived, shows the policy only what it
could know (:class:`Observation`), asks it for connector limits, lets every EV draw what its
battery accepts under that limit, and records everything. It never lets a policy exceed a limit
silently: issued limits and drawn power are both checked against every row of the capacity system
(DR caps and time-of-day limits included) and every connector bound, and any excess is recorded.

The EV model: an EV draws ``min(limit, its max kW, what its battery accepts)``. With a known
battery (``battery_kwh`` and ``soc_arrival``) the charge power tapers linearly above 80 % SoC
to 0 at 100 %, as real ones do. A limit above 0 but below the connector's minimum pauses the EV
(IEC 61851: below 6 A the EV stops). Net delivered energy never exceeds the request. A V2G
session discharges on a negative limit, down to 10 % SoC.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from ampflow.engine.errors import AmpflowError
from ampflow.engine.topology import RowKind, Topology
from ampflow.scenarios.format import Scenario

__all__ = [
    "TAPER_SOC",
    "V2G_SOC_MIN",
    "Observation",
    "Policy",
    "PolicyContext",
    "Truth",
    "simulate",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

TAPER_SOC = 0.8
"""State of charge above which an EV's charge power tapers linearly to 0 at full."""
V2G_SOC_MIN = 0.1
"""State of charge below which a V2G session does not discharge."""
TOL = 1e-6
"""Tolerance for limit checks [kW or A]."""


@dataclass(frozen=True)
class Truth:
    """What really happens: only for policies that declare ``needs_truth`` (the offline bound)."""

    connector: IntArray
    arrival_step: IntArray
    departure_step: IntArray
    energy_kwh: FloatArray
    p_max_kw: FloatArray
    p_discharge_max_kw: FloatArray
    soc_kwh: FloatArray  # at arrival, NaN unless V2G
    soc_min_kwh: FloatArray
    soc_max_kwh: FloatArray
    background_kw: FloatArray  # (n_sites, n_steps)
    cap_kw: FloatArray  # (n_sites, n_steps), every DR cap and time-of-day limit


@dataclass(frozen=True)
class PolicyContext:
    """What a policy knows before the first step: the site, tariffs and the step grid.

    ``known_cap_kw(t)`` gives the import caps per site and step as known at step ``t``:
    time-of-day limits always, DR events once announced. ``plugin_info(sessions)`` gives, for
    sessions that have plugged in, what was known at plug-in in the layout forecasters take:
    ``session_id``, ``arrival``, ``station_id``, ``estimated_departure`` (the driver's, NaT if
    none), ``claimed`` (whether the driver gave one), ``requested_kwh`` and ``user_id`` when the
    scenario has them. ``departure_known`` says whether the sessions' departures a policy sees
    are the true ones (the scenario gives no estimates) rather than estimates.
    """

    topology: Topology
    dt_s: int
    n_steps: int
    start: pd.Timestamp
    import_price: FloatArray  # (n_sites, n_steps)
    export_price: FloatArray  # (n_sites, n_steps)
    demand_charge_per_kw: float
    degradation_per_kwh: float
    known_cap_kw: Callable[[int], FloatArray]
    plugin_info: Callable[[IntArray], pd.DataFrame] | None = None
    truth: Truth | None = None
    departure_known: bool = False


@dataclass(frozen=True)
class Observation:
    """What a policy sees at step ``t``: the plugged-in sessions and the site now.

    Session arrays have one entry per plugged session. ``departure_step`` is the departure the
    policy may believe: the driver's estimate (or the site's typical dwell when a session has none),
    pushed to ``t + 1`` once an EV stays beyond it; the true departure only when the scenario
    gives no estimates at all.
    """

    t: int
    session: IntArray
    connector: IntArray
    arrival_step: IntArray
    departure_step: IntArray
    energy_delivered_kwh: FloatArray
    energy_remaining_kwh: FloatArray
    p_max_kw: FloatArray
    p_discharge_max_kw: FloatArray
    soc_kwh: FloatArray
    soc_min_kwh: FloatArray
    soc_max_kwh: FloatArray
    row_upper: FloatArray  # (n_rows,) import bound now, caps applied and background subtracted
    row_lower: FloatArray  # (n_rows,) export bound now (a magnitude)
    background_kw: FloatArray  # (n_sites,) base load minus PV now
    peak_kw: FloatArray  # (n_sites,) highest net import so far
    base_load_kw: FloatArray | None = None  # (n_sites,) base load now, as metered
    pv_kw: FloatArray | None = None  # (n_sites,) PV production now, as metered

    def __len__(self) -> int:
        return len(self.session)


class Policy(Protocol):
    """A charging policy: sees an :class:`Observation`, returns connector limits [kW]."""

    name: str
    needs_truth: bool

    def reset(self, context: PolicyContext) -> None:
        """Start a new replay."""

    def decide(self, obs: Observation) -> FloatArray:
        """Connector limits for this step, shape (n_connectors,) [kW]; negative discharges."""
        ...


@dataclass
class _State:
    delivered: FloatArray  # net [kWh]
    discharged: FloatArray  # [kWh]
    power: FloatArray  # (n_steps, n_sessions)
    site_kw: FloatArray  # (n_steps, n_sites) net import incl. background
    ev_kw: FloatArray  # (n_steps, n_sites)
    limit: FloatArray  # (n_steps, n_sites) binding import limit
    over_kw: FloatArray  # (n_steps, n_sites) drawn power over any limit [kW]
    issued_over_kw: FloatArray  # (n_steps, n_sites) issued limits over any limit [kW]
    decision_s: FloatArray  # (n_steps,)


def simulate(
    scenario: Scenario,
    policy: Policy,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> xr.Dataset:
    """Replay ``scenario`` under ``policy`` and return the results.

    Parameters
    ----------
    scenario : Scenario
    policy : Policy
    progress : callable, optional
        Called as ``progress(step, n_steps)`` after each step.

    Returns
    -------
    xarray.Dataset
        See :func:`ampflow.scenarios.results.to_dataset`; metrics in ``attrs``.
    """
    from ampflow.scenarios.results import to_dataset

    sim = _Simulation(scenario)
    policy.reset(sim.context(with_truth=policy.needs_truth))
    state = sim.run(policy, progress)
    return to_dataset(scenario, policy.name, state_arrays(state))


def state_arrays(state: _State) -> dict[str, FloatArray]:
    return {k: getattr(state, k) for k in state.__dataclass_fields__}


class _Simulation:
    def __init__(self, sc: Scenario):
        self.sc = sc
        topo = sc.topology
        self.topo = topo
        df = sc.sessions

        def steps(col: str) -> FloatArray:
            seconds = (df[col] - sc.start).dt.total_seconds().to_numpy(dtype=np.float64)
            out: FloatArray = seconds / sc.dt_s
            return out

        self.conn = df["column"].to_numpy(dtype=np.int64)
        self.arrival = np.ceil(steps("arrival")).astype(np.int64)
        self.departure = np.maximum(np.floor(steps("departure")).astype(np.int64), self.arrival)
        self.belief = self._belief(df, steps)
        self.energy = df["energy_kwh"].to_numpy(dtype=np.float64)
        self.ev_max = np.minimum(df["max_kw"].to_numpy(dtype=np.float64), topo.p_max_kw[self.conn])
        battery = df["battery_kwh"].to_numpy(dtype=np.float64)
        self.battery = battery
        self.soc0 = df["soc_arrival"].to_numpy(dtype=np.float64) * battery
        v2g = df["v2g"].to_numpy(dtype=bool)
        self.dis_max = np.where(v2g, np.minimum(self.ev_max, topo.p_discharge_max_kw[self.conn]), 0)
        self.soc_min = np.where(v2g, V2G_SOC_MIN * battery, np.nan)
        self.dt_h = sc.dt_s / 3600
        # kW-equivalent of one ampere on each row, to report excess on phase rows in kWh.
        site_v = np.array([s.voltage_v for s in sc.sites])
        self.row_kw_per_unit = np.where(
            topo.row_kind == RowKind.TOTAL_KW, 1.0, site_v[topo.row_site] / 1000.0
        )
        self.cap = sc.cap_kw
        self.bg = sc.background_kw
        self.base, self.pv = sc.base_load_kw, sc.pv_kw

    def _belief(self, df: pd.DataFrame, steps: Callable[[str], FloatArray]) -> IntArray:
        if self.sc.departure_known:
            return self.departure.copy()
        est = steps("departure_estimate")
        if self.sc.default_dwell_h is not None:
            fallback = steps("arrival") + self.sc.default_dwell_h * 3600 / self.sc.dt_s
        else:
            fallback = np.full(len(df), float(self.sc.n_steps))
        est = np.where(np.isnan(est), fallback, est)
        # Like the truth (``departure``): the last full step before the estimate, so that an
        # estimate told the true departure believes exactly the steps the EV is really there.
        belief: IntArray = np.maximum(np.floor(est).astype(np.int64), self.arrival + 1)
        return belief

    def context(self, *, with_truth: bool) -> PolicyContext:
        sc = self.sc
        truth = None
        if with_truth:
            v2g = self.dis_max > 0
            truth = Truth(
                connector=self.conn,
                arrival_step=self.arrival,
                departure_step=self.departure,
                energy_kwh=self.energy,
                p_max_kw=self.ev_max,
                p_discharge_max_kw=self.dis_max,
                soc_kwh=np.where(v2g, self.soc0, np.nan),
                soc_min_kwh=np.where(v2g, self.soc_min, np.nan),
                soc_max_kwh=np.where(v2g, self.battery, np.nan),
                background_kw=self.bg.copy(),
                cap_kw=self.cap,
            )
        return PolicyContext(
            topology=self.topo,
            dt_s=sc.dt_s,
            n_steps=sc.n_steps,
            start=sc.start,
            import_price=sc.import_price,
            export_price=sc.export_price,
            demand_charge_per_kw=sc.demand_charge_per_kw,
            degradation_per_kwh=sc.degradation_per_kwh,
            known_cap_kw=_KnownCaps(sc),
            plugin_info=self.plugin_info,
            truth=truth,
            departure_known=sc.departure_known,
        )

    def plugin_info(self, sessions: IntArray) -> pd.DataFrame:
        idx = np.asarray(sessions, dtype=np.int64)
        df = self.sc.sessions.iloc[idx]
        cols = ["session_id", "arrival", "charger_id", "departure_estimate"]
        cols += [c for c in ("requested_kwh", "user_id") if c in df]
        out = df[cols].rename(
            columns={"charger_id": "station_id", "departure_estimate": "estimated_departure"}
        )
        out.insert(4, "claimed", df["departure_estimate"].notna())
        out.index = pd.Index(idx)
        return out

    def row_bounds(self, t: int) -> tuple[FloatArray, FloatArray]:
        topo = self.topo
        ub = topo.b_import.copy()
        roots = topo.site_root_row
        ub[roots] = np.minimum(ub[roots], self.cap[:, t]) - self.bg[:, t]
        lb = topo.b_export.copy()
        lb[roots] = lb[roots] + self.bg[:, t]
        return ub, lb

    def run(self, policy: Policy, progress: Callable[[int, int], None] | None) -> _State:
        sc, topo = self.sc, self.topo
        T, n, n_sites = sc.n_steps, len(self.conn), topo.n_sites
        st = _State(
            delivered=np.zeros(n),
            discharged=np.zeros(n),
            power=np.zeros((T, n)),
            site_kw=np.zeros((T, n_sites)),
            ev_kw=np.zeros((T, n_sites)),
            limit=np.zeros((T, n_sites)),
            over_kw=np.zeros((T, n_sites)),
            issued_over_kw=np.zeros((T, n_sites)),
            decision_s=np.zeros(T),
        )
        order = np.argsort(self.arrival, kind="stable")
        peak = np.zeros(n_sites)
        for t in range(T):
            plugged = order[(self.arrival[order] <= t) & (self.departure[order] > t)]
            plugged = np.sort(plugged)
            ub, lb = self.row_bounds(t)
            obs = self.observe(t, plugged, st, ub, lb, peak)
            tic = _time.perf_counter()
            limits = np.asarray(policy.decide(obs), dtype=np.float64)
            st.decision_s[t] = _time.perf_counter() - tic
            if limits.shape != (topo.n_connectors,) or not np.isfinite(limits).all():
                raise AmpflowError(
                    f"policy {policy.name!r}: decide() must return {topo.n_connectors} finite "
                    f"limits, got shape {limits.shape}"
                )
            self.step(t, plugged, limits, st, ub, lb)
            peak = np.maximum(peak, st.site_kw[t])
            if progress is not None:
                progress(t + 1, T)
        return st

    def observe(
        self,
        t: int,
        plugged: IntArray,
        st: _State,
        ub: FloatArray,
        lb: FloatArray,
        peak: FloatArray,
    ) -> Observation:
        remaining = np.maximum(self.energy[plugged] - st.delivered[plugged], 0.0)
        soc = self.soc0[plugged] + st.delivered[plugged]
        return Observation(
            t=t,
            session=plugged,
            connector=self.conn[plugged],
            arrival_step=self.arrival[plugged],
            departure_step=np.maximum(self.belief[plugged], t + 1),
            energy_delivered_kwh=st.delivered[plugged].copy(),
            energy_remaining_kwh=remaining,
            p_max_kw=self.ev_max[plugged],
            p_discharge_max_kw=self.dis_max[plugged],
            soc_kwh=soc,
            soc_min_kwh=self.soc_min[plugged],
            soc_max_kwh=self.battery[plugged],
            row_upper=ub,
            row_lower=lb,
            background_kw=self.bg[:, t].copy(),
            peak_kw=peak.copy(),
            base_load_kw=self.base[:, t].copy(),
            pv_kw=self.pv[:, t].copy(),
        )

    def step(
        self,
        t: int,
        plugged: IntArray,
        limits: FloatArray,
        st: _State,
        ub: FloatArray,
        lb: FloatArray,
    ) -> None:
        topo = self.topo
        # What the policy issued, checked as issued: rows, connector bounds, empty connectors.
        occupied = np.zeros(topo.n_connectors, dtype=bool)
        occupied[self.conn[plugged]] = True
        bound_over = np.maximum(limits - np.where(occupied, topo.p_max_kw, 0.0), 0.0) + np.maximum(
            -limits - np.where(occupied, topo.p_discharge_max_kw, 0.0), 0.0
        )
        # Background load alone over a cap is not the policy's doing: it must then issue 0.
        ub, lb = np.maximum(ub, 0.0), np.maximum(lb, 0.0)
        st.issued_over_kw[t] = self.excess(topo.violation(limits, upper=ub, lower=lb))
        st.issued_over_kw[t] += np.bincount(
            topo.connector_site, weights=bound_over, minlength=topo.n_sites
        )
        # What the EVs draw.
        lim = limits[self.conn[plugged]]
        p = self.ev_power(plugged, lim, st)
        drawn = np.zeros(topo.n_connectors)
        drawn[self.conn[plugged]] = p
        st.power[t, plugged] = p
        st.delivered[plugged] += p * self.dt_h
        st.discharged[plugged] += np.maximum(-p, 0.0) * self.dt_h
        st.ev_kw[t] = np.bincount(topo.connector_site, weights=drawn, minlength=topo.n_sites)
        st.site_kw[t] = st.ev_kw[t] + self.bg[:, t]
        st.limit[t] = np.minimum(topo.b_import[topo.site_root_row], self.cap[:, t])
        st.over_kw[t] = self.excess(topo.violation(drawn, upper=ub, lower=lb))

    def excess(self, over_rows: FloatArray) -> FloatArray:
        """Per-site sum of row excess, phase rows converted to kW."""
        kw = np.where(over_rows > TOL, over_rows, 0.0) * self.row_kw_per_unit
        out: FloatArray = np.bincount(self.topo.row_site, weights=kw, minlength=self.topo.n_sites)
        return out

    def ev_power(self, idx: IntArray, limit: FloatArray, st: _State) -> FloatArray:
        dt_h = self.dt_h
        c = self.conn[idx]
        remaining = self.energy[idx] - st.delivered[idx]
        cap = np.minimum(self.ev_max[idx], np.maximum(remaining, 0.0) / dt_h)
        battery = self.battery[idx]
        known = ~np.isnan(battery)
        soc = np.where(known, (self.soc0[idx] + st.delivered[idx]) / np.where(known, battery, 1), 0)
        taper = np.clip((1.0 - soc) / (1.0 - TAPER_SOC), 0.0, 1.0)
        cap = np.where(known & (soc > TAPER_SOC), np.minimum(cap, self.ev_max[idx] * taper), cap)
        charge = np.where(limit >= self.topo.p_min_kw[c] - TOL, np.minimum(limit, cap), 0.0)
        headroom = np.where(
            np.isnan(self.soc_min[idx]),
            0.0,
            (self.soc0[idx] + st.delivered[idx]) - self.soc_min[idx],
        )
        dis_cap = np.minimum(self.dis_max[idx], np.maximum(headroom, 0.0) / dt_h)
        discharge = np.minimum(np.maximum(-limit, 0.0), dis_cap)
        out: FloatArray = np.where(limit > 0, np.maximum(charge, 0.0), -discharge)
        return out


class _KnownCaps:
    """Import caps per site and step, as known at step ``t`` (events once announced)."""

    def __init__(self, sc: Scenario):
        from ampflow.scenarios.tables import _Grid, event_caps, tod_caps

        grid = _Grid(sc.start, sc.dt_s, sc.n_steps)
        self.sc = sc
        self.grid = grid
        self.tod = tod_caps(sc.time_of_day_limits, grid, sc.topology.site_ids, sc.timezone)
        ev = sc.events
        self.announced = np.floor(grid.step_of(ev["announced"])).astype(np.int64)
        self.events = ev[ev["cap_kw"].notna()] if len(ev) else ev
        self._cache: dict[int, FloatArray] = {}
        self._event_caps = event_caps

    def __call__(self, t: int) -> FloatArray:
        known = int(np.count_nonzero(self.announced <= t))
        if known not in self._cache:
            ev = self.sc.events[self.announced <= t]
            price = np.zeros((self.sc.topology.n_sites, self.sc.n_steps))
            cap, _ = self._event_caps(ev, self.grid, self.sc.topology.site_ids, price)
            self._cache[known] = np.minimum(cap, self.tod)
        return self._cache[known]
