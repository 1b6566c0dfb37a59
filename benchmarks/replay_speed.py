"""Replay speed: simulated site-days per second for ``mpc`` (5-minute re-solve).

Replays the bundled Caltech week (54 EVSEs, 196 real sessions, 5-minute steps) under ``mpc``
re-solving the horizon LP every 5 minutes and on every arrival, and under ``llf`` in the same
run as the baseline. Target (issue 3): one site-day in at most 3 s with ``mpc``.
"""

from __future__ import annotations

import time
from typing import Any

from ampflow.scenarios import bundled_scenario, load_scenario
from ampflow.scenarios.policies import make_policy
from ampflow.scenarios.results import metrics
from ampflow.scenarios.simulator import simulate
from benchmarks._common import emit, parser, peak_rss_mb


def timed(policy: str, **params: Any) -> tuple[float, dict[str, Any]]:
    sc = load_scenario(bundled_scenario("caltech-week"))
    pol = make_policy(policy, **params)
    t0 = time.perf_counter()
    ds = simulate(sc, pol)
    wall = time.perf_counter() - t0
    return wall, {"site_days": sc.n_steps * sc.dt_s / 86400, "metrics": metrics(ds), "pol": pol}


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    mpc_s, mpc = timed("mpc", replan_s=300)
    llf_s, _ = timed("llf")
    days = mpc["site_days"]
    out = {
        "benchmark": "replay_speed",
        "scenario": "caltech-week",
        "site_days": days,
        "mpc_s_per_site_day": round(mpc_s / days, 3),
        "mpc_site_days_per_s": round(days / mpc_s, 3),
        "mpc_lp_solves": mpc["pol"].solves,
        "mpc_decision_ms_mean": round(mpc["metrics"]["decision_ms_mean"], 3),
        "llf_s_per_site_day": round(llf_s / days, 3),
        "llf_site_days_per_s": round(days / llf_s, 3),
        "mpc_vs_llf_time_ratio": round(mpc_s / llf_s, 2),
        "target_s_per_site_day": 3.0,
        "target_met": bool(mpc_s / days <= 3.0),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    emit(out, as_json=args.json)


if __name__ == "__main__":
    main()
