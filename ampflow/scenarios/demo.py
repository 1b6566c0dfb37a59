"""A small replay of one real Caltech day through the engine, for ``make run``.

Two controllers are replayed on the same sessions, at 5-minute steps:

* ``allocator``: the real-time allocator alone, every step, each EV asking for its maximum;
* ``plan+allocator``: the horizon LP plans the day (MPC step), and each step the allocator
  redistributes what the plan leaves unused, never exceeding the site's limits.

EVs draw exactly their limit until their delivered energy (the target) is reached.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ampflow.engine.allocator import AllocatorState, allocate
from ampflow.engine.errors import AmpflowError
from ampflow.engine.scheduler import Schedule, ScheduleProblem, Sessions, solve_schedule
from ampflow.engine.topology import Topology, compile_topology
from ampflow.scenarios.acn import (
    CALTECH_TZ,
    acn_path,
    caltech_site,
    caltech_tou_price,
    day_sessions,
    read_acn,
)

__all__ = ["DemoResult", "caltech_demo_problem", "replay_day"]


def caltech_demo_problem(day: str = "2019-10-29", *, import_kw: float = 60.0) -> ScheduleProblem:
    """The Caltech garage on ``day``, with a tighter grid limit so that control matters."""
    topo = compile_topology([caltech_site(import_kw=import_kw)])
    df = read_acn(acn_path("caltech_2019-09-01_2019-12-31"))
    try:
        start = pd.Timestamp(day, tz=CALTECH_TZ)
    except ValueError as exc:
        raise AmpflowError(f"day: expected a date like 2019-10-29, got {day!r}") from exc
    d = day_sessions(df, topo, start=start, dt_s=300)
    if len(d.sessions) == 0:
        raise AmpflowError(
            f"day: no sessions on {day!r} in the bundled Caltech data (2019-09-01..2019-12-31)"
        )
    return ScheduleProblem(
        topo,
        d.sessions,
        n_steps=d.n_steps,
        dt_s=300,
        import_price=caltech_tou_price(d.start, d.n_steps, 300),
        demand_charge_per_kw=15.0,
    )


@dataclass(frozen=True)
class DemoResult:
    """What a controller did over the day."""

    name: str
    site_kw: NDArray[np.float64]  # (n_steps,)
    delivered_kwh: NDArray[np.float64]  # (n_sessions,)
    max_violation: float
    energy_cost: float
    peak_kw: float

    def served_share(self, target: NDArray[np.float64]) -> float:
        return float(np.mean(self.delivered_kwh >= target - 0.01))


def replay_day(
    problem: ScheduleProblem, *, use_plan: bool, replan_steps: int = 12
) -> tuple[DemoResult, Schedule | None]:
    """Replay the day step by step; with ``use_plan``, re-plan every ``replan_steps`` (MPC).

    Returns the result and the first plan (if any).
    """
    topo: Topology = problem.topology
    s = problem.sessions
    T, dt_h = problem.n_steps, problem.dt_s / 3600
    price = np.asarray(problem.import_price, dtype=np.float64)
    roots = topo.site_root_row
    delivered = np.zeros(len(s))
    site_kw = np.zeros(T)
    worst = 0.0
    first_plan: Schedule | None = None
    planned = np.zeros((topo.n_connectors, T))
    state = AllocatorState.initial(topo.n_connectors)
    for t in range(T):
        plugged = (s.arrival_step <= t) & (t < s.departure_step)
        need = np.where(plugged, np.maximum(s.e_target_kwh - delivered, 0.0) / dt_h, 0.0)
        if use_plan and t % replan_steps == 0:
            plan = solve_schedule(_remaining(problem, t, delivered, site_kw[:t].max(initial=0.0)))
            first_plan = first_plan or plan
            planned[:, t:] = plan.connector_power_kw(topo, _shifted(s, t, delivered))
        demand = np.zeros(topo.n_connectors)
        # Several sessions use one connector over a day: only the plugged one speaks for it.
        demand[s.connector[plugged]] = np.minimum(need, s.p_max_kw)[plugged]
        if use_plan:
            # Follow the plan within its site envelope (minimum currents that do not fit rotate),
            # then hand out what the plan leaves unused inside the same envelope.
            envelope = topo.b_import.copy()
            envelope[roots] = np.minimum(envelope[roots], topo.A[roots] @ planned[:, t] + 1e-9)
            follow = allocate(
                topo, np.minimum(demand, planned[:, t]), row_upper=envelope, state=state
            )
            rest = allocate(
                topo,
                np.maximum(demand - follow.p_kw, 0.0) * (follow.p_kw > 0),
                row_upper=envelope - topo.A @ follow.p_kw,
            )
            p, state = follow.p_kw + rest.p_kw, follow.state
        else:
            res = allocate(topo, demand, state=state)
            p, state = res.p_kw, res.state
        worst = max(worst, float(topo.violation(p).max()))
        drawn = np.minimum(p[s.connector], need) * plugged
        delivered += drawn * dt_h
        site_kw[t] = drawn.sum()
    name = "plan+allocator" if use_plan else "allocator"
    result = DemoResult(
        name, site_kw, delivered, worst, float(price @ site_kw * dt_h), float(site_kw.max())
    )
    return result, first_plan


def _shifted(s: Sessions, t: int, delivered: NDArray[np.float64]) -> Sessions:
    return replace(
        s,
        arrival_step=s.arrival_step - t,
        departure_step=s.departure_step - t,
        e_target_kwh=np.maximum(s.e_target_kwh - delivered, 0.0),
    )


def _remaining(
    problem: ScheduleProblem, t: int, delivered: NDArray[np.float64], peak_kw: float
) -> ScheduleProblem:
    """The problem from step ``t`` on: what is left to deliver, and the peak already reached."""
    price = np.asarray(problem.import_price, dtype=np.float64)
    return replace(
        problem,
        sessions=_shifted(problem.sessions, t, delivered),
        n_steps=problem.n_steps - t,
        import_price=price[t:],
        sunk_peak_kw=np.full(problem.topology.n_sites, peak_kw),
    )
