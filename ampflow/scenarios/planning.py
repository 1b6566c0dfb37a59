"""The planning policies: ``mpc`` (the horizon LP re-solved as time goes on) and ``offline``.

``mpc`` re-plans every ``replan_s`` seconds and whenever an EV arrives, over the sessions that
are plugged in, on what it knows at that moment: each EV's believed departure and remaining
energy, the tariff, the caps announced so far, the peak already reached (so the demand charge
only counts what is new), the background load held at its current value and, given an arrival
forecaster, the EVs expected to arrive before the plugged ones leave. Every step the
real-time allocator follows the plan inside the plan's site envelope and hands out what the plan
leaves unused (an EV that finished or draws less), so the limits are always feasible for the
caps in force now.

``offline`` solves one LP over the whole scenario with perfect foresight (true arrivals,
departures, energy, background and caps): the bound that no causal policy can beat.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ampflow.engine.allocator import AllocatorState, allocate
from ampflow.engine.errors import AmpflowError
from ampflow.engine.scheduler import ScheduleProblem, Sessions, SolveStatus, solve_schedule
from ampflow.engine.topology import Topology
from ampflow.scenarios.policies import _Base, _demand
from ampflow.scenarios.simulator import Observation, PolicyContext

__all__ = ["MPC", "ArrivalPredictor", "Offline", "SessionPredictor"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


class SessionPredictor(Protocol):
    """What ``mpc`` needs from a session forecaster (see ``ampflow.forecasting``)."""

    def predict_sessions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Quantiles per session, with columns ``dwell_h_qNN`` [h]."""
        ...


class SeriesPredictor(Protocol):
    """What ``mpc`` needs from a base-load or PV forecaster (see ``ampflow.forecasting``)."""

    def predict(
        self, index: pd.DatetimeIndex, *, history: pd.Series | None = None, at: object = None
    ) -> pd.Series:
        """Power at ``index`` [kW] from values ``history`` stamped before ``at``."""
        ...


class ArrivalPredictor(Protocol):
    """What ``mpc`` needs from an arrival forecaster (see ``ampflow.forecasting``).

    ``step_s_`` is the length of the steps ``predict`` counts arrivals in [s].
    """

    step_s_: int

    def predict(
        self, index: pd.DatetimeIndex, *, sites: tuple[str, ...] | None = None
    ) -> pd.DataFrame:
        """Per (``site_id``, ``time``): ``arrivals`` in the step and ``expected_energy_kwh``
        [kWh]; optionally ``dwell_h_median`` [h]."""
        ...


@dataclass
class _Plan:
    start: int
    p_kw: FloatArray  # (n_connectors, horizon)
    sessions: frozenset[int]

    def at(self, t: int) -> FloatArray | None:
        k = t - self.start
        if k >= self.p_kw.shape[1]:
            return None
        out: FloatArray = self.p_kw[:, k]
        return out


class MPC(_Base):
    """Model-predictive control: the horizon LP, re-solved, with the allocator every step.

    Parameters
    ----------
    replan_s : int
        Re-plan at least this often [s]; also on every arrival.
    dwell_scale : float
        Plan to finish within this fraction of each EV's believed dwell (robustness against
        drivers who leave before their estimate); once an EV stays past it, it is urgent.
    forecaster : object with ``predict_sessions(frame) -> DataFrame``, optional
        A session forecaster (such as :class:`ampflow.forecasting.SessionForecaster`, fitted only
        on sessions before the replay). At plug-in it is shown what was known then
        (:attr:`PolicyContext.plugin_info`), and the plan uses its ``departure_quantile`` of dwell
        instead of the driver's estimate. Once an EV stays beyond it, it is urgent.
    early_bias_per_kwh : float
        Cost per kWh of charging later, rising from 0 now to this at the horizon's end: among
        plans of equal cost, the one that charges earliest (under the peak already paid for),
        which is what protects a driver who leaves early.
    departure_quantile : float
        Which forecast quantile of departure to plan on: low is robust (energy delivered early),
        0.5 plans on the median.
    early_quantile, early_penalty_per_kwh : float
        A soft early target: every kWh not delivered by the ``early_quantile`` of departure costs
        ``early_penalty_per_kwh`` in the plan (0 = off). It hedges against early departures at a
        price the plan weighs against the demand charge, instead of planning on the early
        quantile outright.
    conditional : bool
        Re-read the forecast's dwell quantiles at every re-plan given that the EV is still
        plugged in (see :func:`dwell_given`): the planned and early departures of an EV that
        stays move later, so the soft early target keeps hedging for its whole stay, and an
        EV past its planned departure is not treated as leaving this step. ``False`` keeps
        the quantiles read at plug-in.
    amortize_peak : bool or None
        Weigh a new peak by the demand charge times the share of the rest of the scenario (the
        billing period) that the horizon covers, instead of the whole charge. A peak paid for
        tonight serves every later night too; a plan that sees one night of V2G arbitrage and
        the whole charge would never discharge. ``None`` (the default) amortizes while a
        V2G-capable EV is plugged in: on ``v2g-depot`` it cuts the cost gap to ``offline``
        from 17 % to 4 %; without V2G the flat plan is worth its peak (on ``caltech-week``
        amortizing costs 5 points for 1.5 points more energy).
    urgency_bias_per_kwh : float
        Cost per kWh of charging an EV later, rising from 0 at its arrival to this at its early
        departure (the forecast's ``early_quantile`` with a soft early target, else its planned
        departure); see :class:`ScheduleProblem`. Where the site's limit or peak binds, the plan
        serves first the EVs that may leave first instead of an arbitrary choice among equally
        cheap plans. It is a tie-break, kept below the tariffs' price steps: replaying the ACN
        weeks with forecasts, any value from 0.002 to 0.05 delivers the same 0.1-0.7 point more
        of offline's energy for 0.1-0.5 point more cost; 0 turns it off. It applies only where
        departures are estimates (:attr:`PolicyContext.departure_known` false): on
        ``v2g-depot``, whose departures are known, it would raise the peak by 15 %.
    learn_estimates : bool
        Without a ``forecaster``: learn, from the sessions that have left so far, how far drivers
        leave from the departure first believed for them (the driver's estimate, or the site's
        typical dwell), and plan each plugged EV on its first belief plus the errors'
        ``departure_quantile``, with the soft early target at their ``early_quantile`` (with
        ``early_penalty_per_kwh``). The errors are read given the EV's stay so far (those of
        drivers who stayed at least as long past their belief); with none, it leaves next step.
        It needs no history: analysts and sites without one get a hedge against optimistic
        estimates. Replaying the ACN weeks with ``early_penalty_per_kwh=2``, it delivers 2.6-2.7
        points more of offline's energy (94 -> 97 %) for 4-6 points more cost.
    learn_min_sessions : int
        Sessions that must have left before ``learn_estimates`` applies.
    horizon_h : float
        Longest planning horizon [h]; the horizon ends at the last believed departure.
    time_limit_s : float
        HiGHS time limit per solve [s].
    arrivals : object with ``predict(index, sites=...)`` and ``step_s_``, optional
        An arrival forecaster (such as :class:`ampflow.forecasting.ArrivalForecaster`, fitted
        only on sessions before the replay, with site ids as in the scenario). At each re-plan it
        is asked for the steps from now to the end of the horizon only, and the EVs it expects
        are added to the LP as *expected arrivals* (below).
    arrival_block_h : float
        Expected arrivals are pooled over blocks of this length [h].
    arrival_weight : float
        Weight of an expected arrival's unmet-energy penalty, relative to a plugged EV's 1: the
        plan serves the EVs that are really there first.
    arrival_dwell_h : float
        Dwell of an expected arrival [h] where the forecaster gives no ``dwell_h_median``.
    arrival_min_kwh : float
        Blocks expecting less energy than this [kWh] add nothing.
    base_load, pv : mapping of site id to forecaster, optional
        Base-load and PV forecasters per site (such as
        :class:`ampflow.forecasting.BaseLoadForecaster` and
        :class:`ampflow.forecasting.PVForecaster`, fitted only on data before the replay). At
        each re-plan the background of the horizon (base load minus PV) is forecast from what
        the site's meters have shown so far (``history``, stamped before now) instead of held
        at its value now; the step now keeps the metered value. Sites without one keep the
        value now.
    split : {"plan", "urgency"}
        How the plan's site total now is shared among the plugged EVs: as the plan splits it
        (``"plan"``), or by urgency (``"urgency"``): weighted max-min fair shares, the weight
        of an EV the inverse of its laxity (hours to its early departure, the forecast's
        ``early_quantile`` or the driver's estimate, less the hours it needs at full power;
        at least 15 minutes). The plan still decides how much the site draws and when; the
        split protects the drivers who may leave first.

    Notes
    -----
    **Expected arrivals.** Planning over plugged EVs only, the LP sees an empty future: it
    spreads each EV over its whole dwell at the lowest peak, and the EVs that arrive later
    must then raise the peak (or go short). With ``arrivals``, each re-plan adds, per site and
    per block of ``arrival_block_h`` from now to the end of the horizon (the last plugged EV's
    believed departure), phantom sessions sharing the block's expected energy (expected
    arrivals ``n`` x mean energy per EV): ``round(n)`` of them, at least one and no more than
    it takes to draw that energy at a third of a typical connector's maximum (fewer columns,
    same reserve). Each arrives at the block's middle, stays the forecast median dwell of that
    hour (its energy pro rata where it would stay past the horizon), may draw its connector's
    maximum, and sits on a connector that is idle then in the plan (a plugged EV's connector
    frees at its believed departure; connectors are taken in a spread order so that phases
    and panels share the load). Their unmet energy costs ``arrival_weight`` times a real EV's,
    so they give way when the site is short, but they still reserve the capacity and the
    demand-charge peak the future will need, so the plugged EVs charge earlier and flatter.
    Only the plugged EVs' part of the plan is followed; the phantoms are re-drawn at every
    re-plan, and a real arrival triggers one.

    Chosen by replaying the ACN weeks (``benchmarks/quality.py``, with the session forecaster,
    against the offline bound as it was before the plan follower served the plan's own powers
    first, which made the bound 1-3 % cheaper): reserving for arrivals cut the cost gap to it
    from 5.3 % to 1.0 % with 1 point more energy on ``caltech-week-dr``, and from +0.4 % to
    -2.2 % at equal energy on ``jpl-week``; on ``caltech-week`` from 7.0 % to 0.4 %, but the
    flatter plan leaves 0.7 point less energy to drivers who leave well before their forecast.
    Blocks of 1-2 h and weights of 0.1-1 give the same results within 0.3 %. Extending the
    horizon to the phantoms' departures instead of taking their energy pro rata costs 10-70 %
    more replay time for no better result. The phantoms make each LP about 1.5-2 times larger:
    a replay takes 0.75 s per site-day on ``caltech-week`` (0.48 blind), 3.4 on the busier
    ``jpl-week`` (1.9 blind).
    """

    name = "mpc"

    def __init__(
        self,
        *,
        replan_s: int = 300,
        horizon_h: float = 24.0,
        dwell_scale: float = 1.0,
        forecaster: SessionPredictor | None = None,
        departure_quantile: float = 0.5,
        early_quantile: float = 0.1,
        early_penalty_per_kwh: float = 0.0,
        early_bias_per_kwh: float = 0.01,
        time_limit_s: float = 5.0,
        arrivals: ArrivalPredictor | None = None,
        arrival_block_h: float = 1.0,
        arrival_weight: float = 0.1,
        arrival_dwell_h: float = 6.0,
        arrival_min_kwh: float = 0.5,
        split: str = "plan",
        conditional: bool = True,
        amortize_peak: bool | None = None,
        urgency_bias_per_kwh: float = 0.01,
        learn_estimates: bool = False,
        learn_min_sessions: int = 10,
        base_load: Mapping[str, SeriesPredictor] | None = None,
        pv: Mapping[str, SeriesPredictor] | None = None,
    ):
        self.base_load = dict(base_load or {})
        self.pv = dict(pv or {})
        if split not in ("plan", "urgency"):
            raise AmpflowError(f"mpc: split must be 'plan' or 'urgency', got {split!r}")
        self.split = split
        self.conditional = conditional
        self.amortize_peak = amortize_peak
        self.urgency_bias_per_kwh = urgency_bias_per_kwh
        if learn_min_sessions < 1:
            raise AmpflowError(f"mpc: learn_min_sessions must be >= 1, got {learn_min_sessions!r}")
        self.learn_estimates = learn_estimates
        self.learn_min_sessions = learn_min_sessions
        for name, value in (
            ("arrival_block_h", arrival_block_h),
            ("arrival_weight", arrival_weight),
            ("arrival_dwell_h", arrival_dwell_h),
        ):
            if not (np.isfinite(value) and value > 0):
                raise AmpflowError(f"mpc: {name} must be a finite number > 0, got {value!r}")
        for name, value in (
            ("departure_quantile", departure_quantile),
            ("early_quantile", early_quantile),
        ):
            if not (isinstance(value, int | float) and 0 < value < 1):
                raise AmpflowError(f"mpc: {name} must be a number in (0, 1), got {value!r}")
        self.arrivals = arrivals
        self.arrival_block_h = arrival_block_h
        self.arrival_weight = arrival_weight
        self.arrival_dwell_h = arrival_dwell_h
        self.arrival_min_kwh = arrival_min_kwh
        self.early_bias_per_kwh = early_bias_per_kwh
        self.early_quantile = early_quantile
        self.early_penalty_per_kwh = early_penalty_per_kwh
        self.replan_s = replan_s
        self.forecaster = forecaster
        self.departure_quantile = departure_quantile
        self.dwell_scale = dwell_scale
        self.horizon_h = horizon_h
        self.time_limit_s = time_limit_s

    def reset(self, context: PolicyContext) -> None:
        super().reset(context)
        self.plan: _Plan | None = None
        self.follower = _Follower(self.topo, context.dt_s, memory=False)
        self.every = max(1, round(self.replan_s / context.dt_s))
        self.solves = 0
        self.forecast_step: dict[int, tuple[int, int]] = {}
        self.dwell_grid: dict[int, FloatArray] = {}
        self.grid_q = np.zeros(0)
        self.arrival_cache: tuple[int, FloatArray] = (0, np.zeros((3, self.topo.n_sites, 0)))
        unknown = sorted((set(self.base_load) | set(self.pv)) - set(self.topo.site_ids))
        if unknown:
            raise AmpflowError(f"mpc: base_load/pv: unknown site(s) {unknown}")
        self.metered: list[tuple[FloatArray, FloatArray]] = []
        self.first_belief: dict[int, int] = {}
        self.was_present: frozenset[int] = frozenset()
        self.errors: list[int] = []

    def decide(self, obs: Observation) -> FloatArray:
        t = obs.t
        if (self.base_load or self.pv) and obs.base_load_kw is not None and obs.pv_kw is not None:
            self.metered.append((obs.base_load_kw, obs.pv_kw))
        present = frozenset(int(s) for s in obs.session)
        if self.learn_estimates and self.forecaster is None:  # a forecaster replaces learning
            self._learn(obs, present)
        plan = self.plan
        planned = None if plan is None else plan.at(t)
        if (
            plan is None
            or planned is None
            or (t - plan.start) % self.every == 0
            or not present <= plan.sessions
        ):
            plan = self.plan = self.replan(obs, present)
            planned = plan.at(t)
        assert planned is not None
        return self.follow(obs, planned)

    def replan(self, obs: Observation, present: frozenset[int]) -> _Plan:
        ctx, topo, t = self.ctx, self.topo, obs.t
        early = None
        if self.forecaster is not None:
            late, early = self.forecast(obs)
            obs = replace(obs, departure_step=np.maximum(late, t + 1))
        elif self.learn_estimates and len(self.errors) >= self.learn_min_sessions:
            late, early = self._learned(obs)
            obs = replace(obs, departure_step=late)
        if self.dwell_scale != 1.0:
            dwell = (obs.departure_step - obs.arrival_step) * self.dwell_scale
            departure = np.maximum(obs.arrival_step + np.ceil(dwell).astype(np.int64), t + 1)
            obs = replace(obs, departure_step=departure)
        horizon = int(np.max(obs.departure_step, initial=t + 1)) - t
        horizon = max(1, min(horizon, round(self.horizon_h * 3600 / ctx.dt_s)))
        if len(obs) == 0:
            return _Plan(t, np.zeros((topo.n_connectors, horizon)), present)
        sessions = _sessions(obs, t)
        if early is not None and self.early_penalty_per_kwh > 0:
            sessions = replace(
                sessions, milestone_step=early - t, milestone_kwh=obs.energy_remaining_kwh
            )
        n_real = len(sessions)
        if self.arrivals is not None:
            sessions = _append(sessions, self.expected_arrivals(obs, horizon))
        window = _window(t, horizon, ctx.n_steps)
        caps = ctx.known_cap_kw(t)[:, window]
        problem = ScheduleProblem(
            topo,
            sessions,
            n_steps=horizon,
            dt_s=ctx.dt_s,
            import_price=ctx.import_price[:, window],
            export_price=ctx.export_price[:, window],
            row_upper=_row_caps(topo, caps),
            background_kw=self._background(obs, horizon),
            demand_charge_per_kw=self._demand_charge(obs, horizon),
            sunk_peak_kw=obs.peak_kw,
            degradation_per_kwh=ctx.degradation_per_kwh,
            early_bias_per_kwh=self.early_bias_per_kwh,
            # Urgency hedges departures the plan does not know; where they are known it would
            # only pull charging (and the peak) earlier.
            urgency_bias_per_kwh=0.0 if ctx.departure_known else self.urgency_bias_per_kwh,
            milestone_penalty_per_kwh=self.early_penalty_per_kwh,
        )
        schedule = solve_schedule(problem, time_limit_s=self.time_limit_s)
        self.solves += 1
        if schedule.status not in (SolveStatus.OPTIMAL,):
            # No plan this time: the allocator alone keeps the site within its limits.
            demand = np.zeros((topo.n_connectors, horizon))
            demand[obs.connector, :] = _demand(obs, ctx.dt_s)[:, None]
            return _Plan(t, demand, present)
        p_kw = np.zeros((topo.n_connectors, horizon))
        np.add.at(p_kw, sessions.connector[:n_real], schedule.p_kw[:n_real])
        return _Plan(t, p_kw, present)

    def _learn(self, obs: Observation, present: frozenset[int]) -> None:
        """Record how far each session that left was from its first believed departure."""
        t = obs.t
        for s in self.was_present - present:
            self.errors.append(t - self.first_belief[s])
        for s, b in zip(obs.session.tolist(), obs.departure_step.tolist(), strict=True):
            self.first_belief.setdefault(s, b)
        self.was_present = present

    def _learned(self, obs: Observation) -> tuple[IntArray, IntArray]:
        """Planned and early departure of each plugged session from the errors seen so far.

        Each session's first believed departure plus the ``departure_quantile`` (and the
        ``early_quantile``) of the errors of the sessions that stayed at least as long past
        theirs as it has; with none, it leaves next step.
        """
        t = obs.t
        err = np.sort(np.asarray(self.errors, dtype=np.float64))
        first = np.array([self.first_belief[s] for s in obs.session.tolist()], dtype=np.int64)
        lo = np.searchsorted(err, t - first, side="right")  # errors consistent with being here
        n = len(err) - lo
        out = []
        for q in (self.departure_quantile, self.early_quantile):
            pos = lo + q * np.maximum(n - 1, 0)
            i = np.minimum(np.floor(pos).astype(np.int64), len(err) - 1)
            j = np.minimum(i + 1, len(err) - 1)
            value = err[i] + (pos - i) * (err[j] - err[i])
            step = np.where(n > 0, first + np.floor(value), t + 1).astype(np.int64)
            out.append(np.maximum(step, t + 1))
        late, early = out
        early = np.minimum(early, late)
        for k, s in enumerate(obs.session.tolist()):
            self.forecast_step[s] = (int(late[k]), int(early[k]))
        return late, early

    def _demand_charge(self, obs: Observation, horizon: int) -> float:
        """The demand charge the plan weighs a new peak by [per kW] (see ``amortize_peak``)."""
        dc = float(self.ctx.demand_charge_per_kw)
        amortize = self.amortize_peak
        if amortize is None:
            amortize = bool(np.any(obs.p_discharge_max_kw > 0))
        if not amortize:
            return dc
        return dc * horizon / max(self.ctx.n_steps - obs.t, horizon)

    def expected_arrivals(self, obs: Observation, horizon: int) -> Sessions:
        """Phantom sessions for the EVs expected from now until step ``t + horizon``.

        Steps count from now (LP steps). See the class notes for the construction.
        """
        ctx, topo, t = self.ctx, self.topo, obs.t
        assert self.arrivals is not None
        dt_s = ctx.dt_s
        step_s = int(self.arrivals.step_s_)
        block = max(1, round(self.arrival_block_h * 3600 / step_s))
        first = t * dt_s // step_s  # the forecast step that holds now
        last = -(-(t + horizon) * dt_s // step_s)  # the first forecast step past the horizon
        n_blocks = -(-(last - first) // block)
        # Only steps up to the horizon are asked for; a last partial block is padded with none.
        table = self._arrival_table(first, last - first)
        pad = ((0, 0), (0, 0), (0, n_blocks * block - (last - first)))
        table = np.pad(table, pad).reshape(3, topo.n_sites, n_blocks, block)
        n, e, dwell = table[0], table[1], table[2]
        count = n.sum(axis=2)
        energy = e.sum(axis=2)
        dwell_h = (n * dwell).sum(axis=2) / np.maximum(count, 1e-12)
        mid_s = (first + (np.arange(n_blocks) + 0.5) * block) * step_s - t * dt_s
        arrive = np.maximum(1, np.ceil(mid_s / dt_s)).astype(np.int64)
        leave = arrive + np.maximum(1, np.ceil(dwell_h * 3600 / dt_s)).astype(np.int64)
        # A plugged EV's connector is free from its believed departure on (LP steps).
        free_from = np.zeros(topo.n_connectors, dtype=np.int64)
        free_from[obs.connector] = obs.departure_step - t
        none = np.zeros(0, dtype=np.int64)
        parts = [(none, none, none, np.zeros(0))]
        for k in range(topo.n_sites):
            conns = np.flatnonzero(topo.connector_site == k)
            if conns.size == 0:
                continue
            keep = (arrive < horizon) & (energy[k] >= self.arrival_min_kwh)
            # As many phantoms as EVs expected, but no more than it takes for them to draw
            # _HEADROOM times the block's average need at a typical connector's maximum.
            need_kw = energy[k] / np.maximum(leave[k] - arrive, 1) / (dt_s / 3600)
            enough = np.ceil(need_kw * _HEADROOM / np.median(topo.p_max_kw[conns]))
            count_k = np.maximum(1, np.minimum(np.round(count[k]), enough)).astype(np.int64)
            # A phantom staying past the horizon brings only its share of energy within it.
            inside = np.clip((horizon - arrive) / np.maximum(leave[k] - arrive, 1), 0.0, 1.0)
            parts.append(
                _place(
                    conns,
                    free_from,
                    arrive[keep],
                    np.minimum(leave[k, keep], horizon),
                    (energy[k] * inside)[keep],
                    count_k[keep],
                )
            )
        conn = np.concatenate([q[0] for q in parts])
        return Sessions(
            connector=conn,
            arrival_step=np.concatenate([q[1] for q in parts]),
            departure_step=np.concatenate([q[2] for q in parts]),
            e_target_kwh=np.concatenate([q[3] for q in parts]),
            p_max_kw=topo.p_max_kw[conn],
            weight=np.full(len(conn), self.arrival_weight),
            ids=tuple(f"expected-{i}" for i in range(len(conn))),
        )

    def _background(self, obs: Observation, horizon: int) -> FloatArray:
        """Base load minus PV over the horizon [kW]: forecast where a site has forecasters, the
        value now elsewhere (and always for the step now)."""
        out = np.repeat(obs.background_kw[:, None], horizon, axis=1)
        if horizon < 2 or not (self.base_load or self.pv) or not self.metered:
            return out
        ctx, t = self.ctx, obs.t
        step = pd.Timedelta(seconds=ctx.dt_s)
        now = ctx.start + t * step
        future = pd.DatetimeIndex([now + k * step for k in range(1, horizon)])
        seen = pd.DatetimeIndex([now - k * step for k in range(len(self.metered) - 1, -1, -1)])
        for i, site in enumerate(self.topo.site_ids):
            base = self.base_load.get(site)
            pv = self.pv.get(site)
            if base is None and pv is None:
                continue
            load = np.array([m[0][i] for m in self.metered])
            prod = np.array([m[1][i] for m in self.metered])
            b = (
                np.full(horizon - 1, load[-1])
                if base is None
                else base.predict(future, history=pd.Series(load, index=seen), at=now).to_numpy()
            )
            g = (
                np.full(horizon - 1, prod[-1])
                if pv is None
                else pv.predict(future, history=pd.Series(prod, index=seen), at=now).to_numpy()
            )
            out[i, 1:] = np.nan_to_num(b, nan=load[-1]) - np.maximum(np.nan_to_num(g), 0.0)
        return out

    def follow(self, obs: Observation, planned: FloatArray) -> FloatArray:
        if self.split == "plan" or len(obs) == 0:
            return self.follower(obs, planned)
        # The early departures of the last re-plan's forecast (none without one).
        pairs = [self.forecast_step.get(int(s)) for s in obs.session]
        early = np.array(
            [d if p is None else p[1] for p, d in zip(pairs, obs.departure_step, strict=True)],
            dtype=np.int64,
        )
        dt_h = self.ctx.dt_s / 3600
        need_h = obs.energy_remaining_kwh / np.maximum(obs.p_max_kw, 1e-6)
        laxity = np.maximum((early - obs.t) * dt_h - need_h, 0.25)
        weight = np.ones(self.topo.n_connectors)
        weight[obs.connector] = 1.0 / laxity
        return self.follower(obs, planned, weight=weight)

    def _arrival_table(self, first: int, n: int) -> FloatArray:
        """Expected arrivals, energy [kWh] and dwell [h] per site for forecast steps
        ``first .. first + n - 1`` (counted from the replay start), shape (3, n_sites, n).

        Each step is asked of the forecaster once, when a plan first reaches it: never a step
        that ended before the step that holds now.
        """
        assert self.arrivals is not None
        step_s = int(self.arrivals.step_s_)
        cached_first, table = self.arrival_cache
        table = table[:, :, max(0, first - cached_first) :]
        have = table.shape[2]
        if have < n:
            start = self.ctx.start + pd.Timedelta(seconds=(first + have) * step_s)
            index = pd.date_range(start, periods=n - have, freq=pd.Timedelta(seconds=step_s))
            pred = self.arrivals.predict(index, sites=self.topo.site_ids)
            sites = [pd.DataFrame(pred.xs(s, level="site_id")) for s in self.topo.site_ids]
            new = np.stack([self._arrival_columns(part) for part in sites], axis=1)
            table = np.concatenate([table, new], axis=2)
        self.arrival_cache = (first, table)
        out: FloatArray = table[:, :, :n]
        return out

    def _arrival_columns(self, part: pd.DataFrame) -> FloatArray:
        """Arrivals, expected energy [kWh] and dwell [h] of one site's forecast, shape (3, n)."""
        n = part["arrivals"].to_numpy(dtype=np.float64)
        e = np.nan_to_num(part["expected_energy_kwh"].to_numpy(dtype=np.float64))
        dwell = np.full(n.shape, self.arrival_dwell_h)
        if "dwell_h_median" in part:
            d = part["dwell_h_median"].to_numpy(dtype=np.float64)
            dwell = np.where(np.isfinite(d), d, dwell)
        out: FloatArray = np.stack([n, e, dwell])
        return out

    def forecast(self, obs: Observation) -> tuple[IntArray, IntArray]:
        """Planned and early departure step of each plugged session.

        The forecaster is asked once, at plug-in, for its dwell quantiles. With ``conditional``
        each re-plan reads them given that the EV is still here (:func:`dwell_given`), else as
        they were at plug-in.
        """
        new = [int(s) for s in obs.session if int(s) not in self.dwell_grid]
        if new and self.ctx.plugin_info is not None and self.forecaster is not None:
            frame = self.ctx.plugin_info(np.asarray(new, dtype=np.int64))
            self.grid_q, grid = _dwell_quantiles(self.forecaster.predict_sessions(frame))
            for k, s in enumerate(new):
                self.dwell_grid[s] = grid[k]
        if len(obs) == 0:
            none = np.zeros(0, dtype=np.int64)
            return none, none
        grid = np.stack([self.dwell_grid[int(s)] for s in obs.session])
        dt_s = self.ctx.dt_s
        stayed_h = (obs.t - obs.arrival_step) * dt_s / 3600 if self.conditional else 0.0
        qs = [self.departure_quantile]
        if self.early_penalty_per_kwh > 0 or self.split == "urgency":
            qs.append(self.early_quantile)
        steps = [
            obs.arrival_step
            + np.maximum(1, np.floor(dwell_given(grid, self.grid_q, stayed_h, q) * 3600 / dt_s))
            for q in qs
        ]
        late, early = steps[0], np.minimum(steps[-1], steps[0])
        late = late.astype(np.int64)
        early = early.astype(np.int64)
        for k, s in enumerate(obs.session):
            self.forecast_step[int(s)] = (int(late[k]), int(early[k]))
        return late, early


def _dwell_quantiles(pred: pd.DataFrame) -> tuple[FloatArray, FloatArray]:
    """The levels and the values [h] of a forecast's ``dwell_h_qNN`` columns (``q5``, ``q10``,
    ``q97.5``: percent), both in increasing order.

    Examples
    --------
    >>> pred = pd.DataFrame({"dwell_h_q10": [2.0], "dwell_h_q5": [1.0], "dwell_h_q97.5": [9.0]})
    >>> levels, values = _dwell_quantiles(pred)
    >>> levels.tolist(), values.tolist()
    ([0.05, 0.1, 0.975], [[1.0, 2.0, 9.0]])
    """
    found = {}
    for c in pred.columns:
        if isinstance(c, str) and c.startswith("dwell_h_q"):
            try:
                level = float(c[9:]) / 100
            except ValueError:
                continue
            if 0 < level < 1:
                found[level] = c
    if not found:
        raise AmpflowError(f"forecaster: no dwell_h_qNN column; it predicts {list(pred.columns)}")
    levels = np.array(sorted(found))
    cols = [found[level] for level in levels]
    values = np.sort(np.maximum(pred[cols].to_numpy(dtype=np.float64), 0.0), axis=1)
    return levels, np.nan_to_num(values, nan=0.0)


def dwell_given(
    grid: FloatArray, levels: FloatArray, stayed_h: FloatArray | float, q: float
) -> FloatArray:
    """The ``q`` quantile of dwell [h] given a stay of at least ``stayed_h``, per row of ``grid``.

    ``grid`` holds each session's dwell quantiles at ``levels`` (increasing, within (0, 1)).
    Between them the distribution is linear; below the first it rises linearly from 0; above
    the last its tail is exponential, with the density it has at the last level (so a driver
    who stays past every quantile is expected to stay on by a constant mean). Given the stay
    ``s`` with ``F(s) = p0``, the conditional quantile is ``Q(p0 + q (1 - p0))``: once the
    early leavers have gone, the quantiles of those still here move later. A forecast of a
    single quantile is taken as it is (it must be the one asked for).

    Examples
    --------
    >>> g = np.array([[1.0, 2.0, 4.0]]); lv = np.array([0.25, 0.5, 0.75])
    >>> dwell_given(g, lv, 0.0, 0.5).round(3).tolist()
    [2.0]
    >>> dwell_given(g, lv, 2.0, 0.5).round(3).tolist()   # half have left: the 75 % quantile
    [4.0]
    """
    grid = np.asarray(grid, dtype=np.float64)
    n, k = grid.shape
    if k == 1:
        # One quantile is no distribution: it is the plan, whatever the stay.
        if not np.isclose(q, levels[0]):
            raise AmpflowError(
                f"forecaster: no column 'dwell_h_q{round(100 * q, 6):g}' for quantile {q}; "
                f"it predicts only the {levels[0]:g} quantile"
            )
        return grid[:, 0].copy()
    stayed = np.broadcast_to(np.asarray(stayed_h, dtype=np.float64), (n,))
    last, top = grid[:, -1], levels[-1]
    # The tail's mean: the last segment's density carried on (at least 15 minutes).
    slope = (grid[:, -1] - grid[:, -2]) / (levels[-1] - levels[-2])
    mean = np.maximum(slope * (1.0 - top), 0.25)
    # log survival at the stay: log(1 - F(stayed)).
    with np.errstate(divide="ignore", invalid="ignore"):
        p_in = np.array([np.interp(stayed[i], grid[i], levels) for i in range(n)])
        p_low = levels[0] * np.where(grid[:, 0] > 0, stayed / grid[:, 0], 1.0)
    p = np.where(stayed <= grid[:, 0], np.minimum(p_low, levels[0]), p_in)
    log_surv = np.where(
        stayed > last, np.log1p(-top) - (stayed - last) / mean, np.log1p(-np.minimum(p, top))
    )
    # The target level, as log survival: log(1 - p0) + log(1 - q).
    target = log_surv + np.log1p(-q)
    level = -np.expm1(target)
    inside = np.array([np.interp(level[i], levels, grid[i]) for i in range(n)])
    below = grid[:, 0] * level / levels[0]
    tail = last + mean * (np.log1p(-top) - target)
    out: FloatArray = np.where(level <= levels[0], below, np.where(level <= top, inside, tail))
    return np.maximum(out, stayed)


class Offline(_Base):
    """Perfect foresight: one LP over the whole scenario, the bound for every causal policy."""

    name = "offline"
    needs_truth = True

    def __init__(self, *, time_limit_s: float = 600.0):
        self.time_limit_s = time_limit_s

    def reset(self, context: PolicyContext) -> None:
        super().reset(context)
        truth = context.truth
        assert truth is not None, "the offline policy needs the truth"
        topo = self.topo
        sessions = Sessions(
            connector=truth.connector,
            arrival_step=truth.arrival_step,
            departure_step=truth.departure_step,
            e_target_kwh=truth.energy_kwh,
            p_max_kw=truth.p_max_kw,
            p_discharge_max_kw=truth.p_discharge_max_kw,
            soc_kwh=truth.soc_kwh,
            soc_min_kwh=truth.soc_min_kwh,
            soc_max_kwh=truth.soc_max_kwh,
        )
        problem = ScheduleProblem(
            topo,
            sessions,
            n_steps=context.n_steps,
            dt_s=context.dt_s,
            import_price=context.import_price,
            export_price=context.export_price,
            row_upper=_row_caps(topo, truth.cap_kw),
            background_kw=truth.background_kw,
            demand_charge_per_kw=context.demand_charge_per_kw,
            degradation_per_kwh=context.degradation_per_kwh,
        )
        self.schedule = solve_schedule(problem, time_limit_s=self.time_limit_s)
        self.p_kw = self.schedule.connector_power_kw(topo, sessions)
        self.follower = _Follower(topo, context.dt_s)

    def decide(self, obs: Observation) -> FloatArray:
        return self.follower(obs, self.p_kw[:, obs.t])


class _Follower:
    """Turns a plan step into feasible limits that respect minimum charging currents.

    An LP plans smooth powers, often below a connector's minimum (6 A), which an EV cannot
    draw. The follower keeps, per connector, the energy the plan asked for but did not get
    (``owed``) and adds it back when it can be given at or above the minimum: a sigma-delta
    rounding of the plan that keeps its energy. The allocator then fits the plan's own powers
    into the plan's site envelope (plus what is owed) and the caps in force now, then what is
    owed into what is left (so an EV planned at full power is never levelled down for the
    catch-up of others), and finally hands out what the plan leaves unused to EVs already
    charging.
    """

    def __init__(self, topo: Topology, dt_s: int, *, memory: bool = True):
        self.topo = topo
        self.memory = memory
        self.dt_h = dt_s / 3600
        self.owed = np.zeros(topo.n_connectors)
        self.session = np.full(topo.n_connectors, -1, dtype=np.int64)
        self.state = AllocatorState.initial(topo.n_connectors)

    def __call__(
        self, obs: Observation, planned: FloatArray, *, weight: FloatArray | None = None
    ) -> FloatArray:
        """Limits now. With ``weight``, the plan's site total is shared by weighted max-min
        fairness over the EVs' demands instead of by the plan's own split."""
        topo = self.topo
        current = np.full(topo.n_connectors, -1, dtype=np.int64)
        current[obs.connector] = obs.session
        self.owed[(current != self.session) | (not self.memory)] = 0.0
        self.session = current
        demand = np.zeros(topo.n_connectors)
        demand[obs.connector] = _demand(obs, round(self.dt_h * 3600))
        discharge = np.minimum(planned, 0.0)
        discharge[obs.connector] = np.maximum(discharge[obs.connector], -obs.p_discharge_max_kw)
        charge = np.maximum(planned, 0.0)
        target = np.minimum(demand, charge + self.owed / self.dt_h)
        target[discharge < 0] = 0.0
        envelope = obs.row_upper - topo.A @ discharge
        roots = topo.site_root_row
        envelope[roots] = np.minimum(envelope[roots], topo.A[roots] @ target + 1e-9)
        if weight is not None:
            follow = allocate(
                topo, np.where(discharge < 0, 0.0, demand), weight=weight, row_upper=envelope
            )
            given = follow.p_kw
        else:
            # The plan's own powers first (they fit: the plan kept every row), then what it
            # owes: an EV planned at full power is never levelled down to make room for the
            # catch-up of others.
            base = np.where(discharge < 0, 0.0, np.minimum(charge, demand))
            follow = allocate(topo, base, row_upper=envelope, state=self.state)
            given = follow.p_kw
            owed = np.maximum(target - given, 0.0)
            if owed.any():
                given = given + allocate(topo, owed, row_upper=envelope - topo.A @ given).p_kw
        self.state = follow.state
        extra = np.maximum(demand - given, 0.0) * (given > 0)
        if extra.any():
            given = given + allocate(topo, extra, row_upper=envelope - topo.A @ given).p_kw
        given, discharge = self._hold_export(obs, given, discharge, target)
        self.owed = np.maximum(self.owed + (np.minimum(charge, demand) - given) * self.dt_h, 0.0)
        out: FloatArray = given + discharge
        return out

    def _hold_export(
        self, obs: Observation, given: FloatArray, discharge: FloatArray, target: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Charging and discharging with every row's export bound held.

        The plan discharges a V2G EV into the load of the EVs it charges at the same time; when
        that load is not given (an EV planned below its connector's minimum, or fuller than
        planned), the discharge would be exported past the site's export limit. Each site's
        discharge is then scaled down to what its rows can take, and the charging it made room
        for is fitted again into the smaller import envelope (which can only lower it); after a
        few rounds a site still over has its discharge switched off, which always holds.
        """
        if not (discharge < 0).any():  # nothing discharges: nothing to export
            return given, discharge
        topo = self.topo
        lower = np.maximum(obs.row_lower, 0.0)

        def exported() -> BoolArray:
            flow = topo.A @ (given + discharge)
            over = np.bincount(
                topo.row_site, weights=np.maximum(-lower - flow, 0.0), minlength=topo.n_sites
            )
            out: BoolArray = over > 1e-9
            return out

        def refit() -> FloatArray:
            envelope = obs.row_upper - topo.A @ discharge
            roots = topo.site_root_row
            envelope[roots] = np.minimum(envelope[roots], topo.A[roots] @ target + 1e-9)
            p: FloatArray = allocate(topo, given, row_upper=envelope).p_kw
            return p

        for _ in range(3):
            over = exported()
            if not over.any():
                return given, discharge
            push = -(topo.A @ discharge)  # what the discharge exports through each row
            room = topo.A @ given + lower
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(push > 1e-12, np.clip(room / push, 0.0, 1.0), 1.0)
            keep = np.ones(topo.n_sites)
            np.minimum.at(keep, topo.row_site, share)
            keep = np.where(over, keep * (1.0 - 1e-9), 1.0)
            discharge = discharge * keep[topo.connector_site]
            given = refit()
        over = exported()
        if over.any():
            discharge = np.where(over[topo.connector_site], 0.0, discharge)
            given = refit()
        return given, discharge


_SPREAD = (np.sqrt(5.0) - 1.0) / 2.0
_HEADROOM = 3.0
"""Phantoms of a block may draw up to this many times the power its energy needs on average."""


def _place(
    conns: IntArray,
    free_from: IntArray,
    arrive: IntArray,
    leave: IntArray,
    energy: FloatArray,
    count: IntArray,
) -> tuple[IntArray, IntArray, IntArray, FloatArray]:
    """Put ``count[b]`` EVs sharing ``energy[b]`` of each block on connectors idle from its
    arrival; ``free_from`` is updated. Returns connector, arrival, departure and energy."""
    # Golden-ratio order: consecutive picks land far apart in the site's connector list, which
    # alternates phases and panels, so expected load is spread rather than piled on one feeder.
    order = conns[np.argsort((conns * _SPREAD) % 1.0, kind="stable")]
    rows: list[tuple[int, int, int, float]] = []
    for a, d, e, m in zip(arrive, leave, energy, count, strict=True):
        idle = order[free_from[order] <= a][:m]
        free_from[idle] = d
        rows += [(int(c), int(a), int(d), float(e) / len(idle)) for c in idle]
    conn, arrival, departure, kwh = zip(*rows, strict=True) if rows else ((), (), (), ())
    return (
        np.asarray(conn, dtype=np.int64),
        np.asarray(arrival, dtype=np.int64),
        np.asarray(departure, dtype=np.int64),
        np.asarray(kwh, dtype=np.float64),
    )


def _append(real: Sessions, extra: Sessions) -> Sessions:
    """``real`` followed by ``extra``, every per-session field concatenated."""
    fields = (
        "connector",
        "arrival_step",
        "departure_step",
        "e_target_kwh",
        "p_max_kw",
        "p_discharge_max_kw",
        "soc_kwh",
        "soc_min_kwh",
        "soc_max_kwh",
        "weight",
        "milestone_step",
        "milestone_kwh",
    )
    joined = {f: np.concatenate([getattr(real, f), getattr(extra, f)]) for f in fields}
    return Sessions(**joined, ids=real.ids + extra.ids)


def _window(t: int, horizon: int, n_steps: int) -> IntArray:
    """Steps ``t .. t + horizon - 1``, the last step repeated past the end of the scenario."""
    out: IntArray = np.minimum(np.arange(t, t + horizon), n_steps - 1)
    return out


def _row_caps(topo: Topology, cap_kw: FloatArray) -> FloatArray:
    """Row import bounds over steps with site caps applied on each grid connection's total."""
    ub = np.repeat(topo.b_import[:, None], cap_kw.shape[1], axis=1)
    roots = topo.site_root_row
    ub[roots] = np.minimum(ub[roots], cap_kw)
    return ub


def _sessions(obs: Observation, t: int) -> Sessions:
    """The plugged sessions as an LP starting now."""
    v2g = obs.p_discharge_max_kw > 0
    return Sessions(
        connector=obs.connector,
        arrival_step=np.zeros(len(obs), dtype=np.int64),
        departure_step=obs.departure_step - t,
        e_target_kwh=obs.energy_remaining_kwh,
        p_max_kw=obs.p_max_kw,
        p_discharge_max_kw=obs.p_discharge_max_kw,
        soc_kwh=np.where(v2g, obs.soc_kwh, np.nan),
        soc_min_kwh=np.where(v2g, obs.soc_min_kwh, np.nan),
        soc_max_kwh=np.where(v2g, obs.soc_max_kwh, np.nan),
        ids=tuple(str(s) for s in obs.session),
    )
