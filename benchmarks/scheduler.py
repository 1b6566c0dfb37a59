"""Horizon scheduler: build + solve of the LP on a Caltech-size site, against Pyomo.

Main row: the Caltech garage model (54 single-phase 208 V EVSEs on two panels, three-phase
limits), the 50 real sessions that arrived on 2019-10-29 (ACN-Data), 5-minute steps over 24 h,
a time-of-use tariff and a demand charge. Scaling rows: 500 and 5,000 real sessions spread over
50 and 500 such sites (sessions from successive days of the same data), solved as one LP.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from ampflow.engine.reference import solve_pyomo
from ampflow.engine.scheduler import ScheduleProblem, Sessions, SolveStatus, solve_schedule
from ampflow.engine.topology import compile_topology
from ampflow.scenarios.acn import (
    CALTECH_TZ,
    acn_path,
    caltech_site,
    caltech_tou_price,
    day_sessions,
    read_acn,
)
from ampflow.scenarios.demo import caltech_demo_problem
from benchmarks._common import emit, median_ms, parser, peak_rss_mb

TZ = CALTECH_TZ
DAY = pd.Timestamp("2019-10-29", tz=TZ)
DT_S = 300
N_STEPS = 288


def caltech_day() -> ScheduleProblem:
    """The 50 sessions of 2019-10-29 behind the garage's real 150 kW limit."""
    return caltech_demo_problem(DAY.strftime("%Y-%m-%d"), import_kw=150.0)


def fleet_problem(n_sites: int, n_sessions: int) -> ScheduleProblem:
    """``n_sessions`` real sessions over ``n_sites`` Caltech-model sites (one day each)."""
    specs = [caltech_site(f"site{i}") for i in range(n_sites)]
    topo = compile_topology(specs)
    df = read_acn(acn_path("caltech_2019-05-01_2019-08-31"))
    days = sorted({a.normalize() for a in df.arrival.dt.tz_convert(TZ)})
    per_site = n_sessions // n_sites
    cols: dict[str, list[Any]] = {
        "connector": [],
        "arrival_step": [],
        "departure_step": [],
        "e_target_kwh": [],
        "p_max_kw": [],
    }
    for i in range(n_sites):
        # Each site replays a different day, wrapping round the four months of data.
        for k in range(len(days)):
            day = days[(i + k) % len(days)]
            d = day_sessions(df, topo, start=day, dt_s=DT_S, site_id=f"site{i}", limit=per_site)
            if len(d.sessions) >= per_site:
                break
        s = d.sessions
        cols["connector"].append(s.connector)
        cols["arrival_step"].append(s.arrival_step)
        cols["departure_step"].append(s.departure_step)
        cols["e_target_kwh"].append(s.e_target_kwh)
        cols["p_max_kw"].append(s.p_max_kw)
    sessions = Sessions(**{k: np.concatenate(v) for k, v in cols.items()})  # type: ignore[arg-type]
    return ScheduleProblem(
        topo,
        sessions,
        n_steps=N_STEPS,
        dt_s=DT_S,
        import_price=caltech_tou_price(pd.Timestamp("2019-06-03", tz=TZ), N_STEPS, DT_S),
        demand_charge_per_kw=15.0,
    )


def measure(problem: ScheduleProblem, *, repeats: int, pyomo: bool) -> dict[str, Any]:
    plan = solve_schedule(problem)
    assert plan.status is SolveStatus.OPTIMAL, plan.message
    ours = median_ms(lambda: solve_schedule(problem), repeats=repeats)
    row: dict[str, Any] = {
        "sites": problem.topology.n_sites,
        "sessions": len(problem.sessions),
        "steps": problem.n_steps,
        "lp_cols": plan.stats.n_cols,
        "lp_rows": plan.stats.n_rows,
        "median_ms": round(ours, 2),
        "build_ms": round(plan.stats.build_s * 1000, 2),
        "unmet_kwh": round(float(plan.unmet_kwh.sum()), 3),
        "objective": round(plan.objective, 4),
    }
    if pyomo:
        times = []
        for _ in range(max(1, repeats // 5)):
            t0 = time.perf_counter()
            ref = solve_pyomo(problem)
            times.append((time.perf_counter() - t0) * 1000)
        py_ms = float(np.median(times))
        row["pyomo_median_ms"] = round(py_ms, 1)
        row["speedup"] = round(py_ms / ours, 1)
        row["objective_rel_diff"] = abs(ref.objective - plan.objective) / max(
            1.0, abs(ref.objective)
        )
    return row


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    main_row = measure(caltech_day(), repeats=21, pyomo=True)
    scaling = [
        measure(fleet_problem(50, 500), repeats=5, pyomo=True),
        measure(fleet_problem(500, 5000), repeats=3, pyomo=False),
    ]
    emit(
        {
            "benchmark": "scheduler",
            **main_row,
            "scaling": scaling,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        },
        as_json=args.json,
    )


if __name__ == "__main__":
    main()
