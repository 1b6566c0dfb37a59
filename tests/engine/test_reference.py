"""The Pyomo reference model against the fast scheduler: same optimum, same capacity safety."""

from __future__ import annotations

import functools
import math
import subprocess
import sys

import numpy as np
import pytest

from ampflow.engine.reference import ReferenceResult, solve_pyomo
from ampflow.engine.scheduler import (
    Schedule,
    ScheduleProblem,
    Sessions,
    SolveStatus,
    solve_schedule,
)
from ampflow.engine.topology import (
    ChargerKind,
    ChargerSpec,
    NodeSpec,
    SiteSpec,
    Topology,
    compile_topology,
)

SEEDS = range(40)
PHASES = ("L1", "L2", "L3", "L1-L2", "L2-L3", "L3-L1")
ROTATIONS = ("RST", "RTS", "SRT", "STR", "TRS", "TSR")


def _phase_a(rng: np.random.Generator, low: float, high: float) -> tuple[float, float, float]:
    a = rng.uniform(low, high, 3)
    return (float(a[0]), float(a[1]), float(a[2]))


def _charger(rng: np.random.Generator, cid: str, node: str) -> ChargerSpec:
    kind = str(rng.choice(["ac1", "ac3", "dc"]))
    connectors = int(rng.integers(1, 3))
    rotation = str(rng.choice(ROTATIONS))
    if kind == "ac1":
        max_kw = float(rng.uniform(3.7, 7.4))
        return ChargerSpec(
            cid,
            node,
            max_kw=max_kw,
            connectors=connectors,
            phases=1,
            phase=str(rng.choice(PHASES)),
            rotation=rotation,
        )
    bidirectional = bool(rng.random() < 0.5)
    discharge = float(rng.uniform(3, 20)) if bidirectional and rng.random() < 0.5 else None
    if kind == "ac3":
        max_kw = float(rng.uniform(7, 22))
        return ChargerSpec(
            cid,
            node,
            max_kw=max_kw,
            connectors=connectors,
            rotation=rotation,
            bidirectional=bidirectional,
            discharge_max_kw=discharge,
        )
    max_kw = float(rng.uniform(20, 60))
    return ChargerSpec(
        cid,
        node,
        max_kw=max_kw,
        connectors=connectors,
        kind=ChargerKind.DC,
        bidirectional=bidirectional,
        discharge_max_kw=discharge,
    )


def _topology(rng: np.random.Generator) -> Topology:
    """1-3 sites; feeders with kW and per-phase A limits; AC 1-phase, 3-phase and DC chargers."""
    sites = []
    for k in range(int(rng.integers(1, 4))):
        sid = f"site{k}"
        parents = [sid]
        nodes = []
        for j in range(int(rng.integers(0, 3))):
            import_kw = math.inf if rng.random() < 0.2 else float(rng.uniform(20, 80))
            export_kw = None if rng.random() < 0.5 else float(rng.uniform(0, 40))
            phase_a = _phase_a(rng, 30, 120) if rng.random() < 0.6 else None
            nodes.append(
                NodeSpec(
                    f"n{j}",
                    str(rng.choice(parents)),
                    import_kw=import_kw,
                    export_kw=export_kw,
                    phase_a=phase_a,
                )
            )
            parents.append(f"n{j}")
        chargers = [
            _charger(rng, f"cp{c}", str(rng.choice(parents)))
            for c in range(int(rng.integers(1, 5)))
        ]
        export_kw = 0.0 if rng.random() < 0.3 else float(rng.uniform(5, 50))
        phase_a = _phase_a(rng, 60, 250) if rng.random() < 0.5 else None
        sites.append(
            SiteSpec(
                sid,
                import_kw=float(rng.uniform(30, 150)),
                export_kw=export_kw,
                phase_a=phase_a,
                nodes=nodes,
                chargers=chargers,
            )
        )
    return compile_topology(sites)


def _sessions(rng: np.random.Generator, topo: Topology, T: int) -> Sessions:
    """0-2 sessions per connector, not overlapping; some start before 0 or end after T."""
    conn: list[int] = []
    arrival: list[int] = []
    departure: list[int] = []
    for c in range(topo.n_connectors):
        k = int(rng.integers(0, 3))
        times = np.sort(rng.integers(-4, T + 5, 2 * k))
        for i in range(k):
            conn.append(c)
            arrival.append(int(times[2 * i]))
            departure.append(int(times[2 * i + 1]))
    n = len(conn)
    connector = np.asarray(conn, dtype=np.int64)
    target = np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0, 60, n))
    p_max = rng.uniform(3, 50, n)
    bidirectional = topo.p_discharge_max_kw[connector] > 0
    wants_v2g = (bidirectional & (rng.random(n) < 0.8)) | (rng.random(n) < 0.1)
    p_dis = np.where(wants_v2g, rng.uniform(3, 30, n), 0.0)
    soc_known = wants_v2g | (rng.random(n) < 0.2)
    soc_max = rng.uniform(40, 100, n)
    soc = soc_max * np.where(rng.random(n) < 0.05, 1.1, rng.uniform(0.05, 0.9, n))
    soc_min = np.where(rng.random(n) < 0.3, np.nan, soc_max * rng.uniform(0, 0.4, n))
    soc_min = np.where(rng.random(n) < 0.1, soc + 5, soc_min)  # above soc0: the bound widens
    nan = np.full(n, np.nan)
    return Sessions(
        connector=connector,
        arrival_step=np.asarray(arrival, dtype=np.int64),
        departure_step=np.asarray(departure, dtype=np.int64),
        e_target_kwh=target,
        p_max_kw=p_max,
        p_discharge_max_kw=p_dis,
        soc_kwh=np.where(soc_known, soc, nan),
        soc_min_kwh=np.where(soc_known, soc_min, nan),
        soc_max_kwh=np.where(soc_known, soc_max, nan),
        weight=rng.uniform(0.5, 3, n),
    )


def make_problem(seed: int) -> ScheduleProblem:
    """A random horizon problem exercising every part of the model."""
    rng = np.random.default_rng(seed)
    topo = _topology(rng)
    T = int(rng.integers(4, 25))
    n_sites, n_rows = topo.n_sites, topo.n_rows
    shape = (T,) if rng.random() < 0.3 else (n_sites, T)
    import_price = rng.uniform(0.05, 0.5, shape)
    if rng.random() < 0.2:
        import_price[..., int(rng.integers(T))] = -0.05  # negative prices happen
    export_price = None if rng.random() < 0.2 else rng.uniform(0, 0.4, shape)  # some above import
    row_upper = None
    if rng.random() < 0.8:
        factor = rng.uniform(0.3, 1.2, (n_rows, T))
        factor[rng.random((n_rows, T)) < 0.15] = 0.02  # very tight caps: unmet energy
        row_upper = topo.b_import[:, None] * factor
    elif rng.random() < 0.5:
        row_upper = topo.b_import * 0.5
    row_lower = (
        None if rng.random() < 0.5 else topo.b_export[:, None] * rng.uniform(0, 1.2, (n_rows, T))
    )
    background = None
    if rng.random() < 0.8:
        base = rng.uniform(0, 30, (n_sites, T))
        pv = rng.uniform(0, 60, (n_sites, 1)) * np.sin(np.linspace(0, np.pi, T)) ** 2
        background = base - (pv if rng.random() < 0.6 else 0.0)
    demand_charge = float(rng.uniform(2, 15)) if rng.random() < 0.5 else 0.0
    sunk = rng.uniform(0, 60, n_sites) if rng.random() < 0.6 else None
    return ScheduleProblem(
        topology=topo,
        sessions=_sessions(rng, topo, T),
        n_steps=T,
        dt_s=float(rng.choice([900.0, 1800.0, 3600.0])),
        import_price=import_price,
        export_price=export_price,
        row_upper=row_upper,
        row_lower=row_lower,
        background_kw=background,
        demand_charge_per_kw=demand_charge,
        sunk_peak_kw=sunk,
        degradation_per_kwh=float(rng.uniform(0, 0.08)),
        unmet_penalty_per_kwh=float(rng.choice([1000.0, rng.uniform(0.5, 5)])),
        early_bias_per_kwh=float(rng.choice([0.0, 1e-4, 1e-2])),
        urgency_bias_per_kwh=float(rng.choice([0.0, 0.05])),
    )


@functools.cache
def _solved(seed: int) -> tuple[ScheduleProblem, Schedule, ReferenceResult]:
    problem = make_problem(seed)
    return problem, solve_schedule(problem), solve_pyomo(problem)


def _effective_bounds(problem: ScheduleProblem) -> tuple[np.ndarray, np.ndarray]:
    """Row bounds per step with caps and background load applied, clipped at 0 [kW or A]."""
    topo, T = problem.topology, problem.n_steps
    shape = (topo.n_rows, T)
    ub = topo.b_import if problem.row_upper is None else np.asarray(problem.row_upper, float)
    lb = topo.b_export if problem.row_lower is None else np.asarray(problem.row_lower, float)
    ub = np.array(np.broadcast_to(ub.reshape(topo.n_rows, -1), shape))
    lb = np.array(np.broadcast_to(lb.reshape(topo.n_rows, -1), shape))
    if problem.background_kw is not None:
        bg = np.broadcast_to(np.asarray(problem.background_kw, float), (topo.n_sites, T))
        ub[topo.site_root_row] -= bg
        lb[topo.site_root_row] += bg
    return np.maximum(ub, 0.0), np.maximum(lb, 0.0)


def _features(problem: ScheduleProblem, plan: Schedule) -> set[str]:
    topo, s, T = problem.topology, problem.sessions, problem.n_steps
    out = {f"{topo.n_sites}_sites"}
    phase_rows = topo.row_kind > 0
    if phase_rows.any():
        out.add("phase_rows")
    coef = np.asarray(topo.A.todense())[phase_rows]
    per_conn = (coef > 0).sum(axis=0)
    out |= {"single_phase"} if np.any((per_conn == 1) & (topo.phases == 1)) else set()
    out |= {"line_to_line"} if np.any((per_conn == 2) & (topo.phases == 1)) else set()
    out |= {"dc_or_three_phase"} if np.any(topo.phases == 3) else set()
    if np.any(plan.discharge_kw > 1e-6):
        out.add("v2g_discharge")
    if np.any(plan.unmet_kwh > 1e-6):
        out.add("unmet")
    if problem.export_price is not None and np.any(
        np.asarray(problem.export_price) > np.asarray(problem.import_price)
    ):
        out.add("export_above_import")
    if problem.row_upper is not None and np.ndim(problem.row_upper) == 2:
        out.add("time_varying_caps")
    if problem.background_kw is not None and np.any(np.asarray(problem.background_kw) < 0):
        out.add("negative_background")
    if problem.demand_charge_per_kw > 0 and problem.sunk_peak_kw is not None:
        out.add("demand_charge_sunk_peak")
    if np.any(s.arrival_step < 0):
        out.add("arrived_before_horizon")
    if np.any(s.departure_step > T):
        out.add("departs_after_horizon")
    if problem.urgency_bias_per_kwh > 0:
        out.add("urgency_bias")
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_reference_and_scheduler_reach_the_same_optimum(seed: int) -> None:
    _, plan, ref = _solved(seed)
    assert plan.status is SolveStatus.OPTIMAL
    assert ref.termination == "optimal"
    a, b = plan.objective, ref.objective
    assert abs(a - b) <= 1e-6 * max(1.0, abs(a)), (a, b)


@pytest.mark.parametrize("seed", SEEDS)
def test_both_plans_respect_every_row(seed: int) -> None:
    problem, plan, ref = _solved(seed)
    topo, sessions = problem.topology, problem.sessions
    ub, lb = _effective_bounds(problem)
    p_ref = np.zeros((topo.n_connectors, problem.n_steps))
    np.add.at(p_ref, sessions.connector, ref.charge_kw - ref.discharge_kw)
    for p in (plan.connector_power_kw(topo, sessions), p_ref):
        assert topo.violation(p, upper=ub, lower=lb).max(initial=0.0) <= 1e-6


def test_random_instances_cover_the_model() -> None:
    seen: set[str] = set()
    for seed in SEEDS:
        problem, plan, _ = _solved(seed)
        seen |= _features(problem, plan)
    expected = {
        "1_sites",
        "2_sites",
        "3_sites",
        "phase_rows",
        "single_phase",
        "line_to_line",
        "dc_or_three_phase",
        "v2g_discharge",
        "unmet",
        "export_above_import",
        "time_varying_caps",
        "negative_background",
        "demand_charge_sunk_peak",
        "arrived_before_horizon",
        "departs_after_horizon",
        "urgency_bias",
    }
    assert expected <= seen, expected - seen


def test_engine_does_not_import_pyomo() -> None:
    code = "import sys, ampflow.engine.scheduler; assert 'pyomo' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
