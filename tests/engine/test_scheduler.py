"""The horizon LP: safety invariants on every step, costs, statuses, unmet-energy reasons."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampflow.engine.errors import ProblemError
from ampflow.engine.scheduler import (
    Schedule,
    ScheduleProblem,
    Sessions,
    SolveStatus,
    UnmetReason,
    solve_schedule,
)
from ampflow.engine.topology import ChargerSpec, SiteSpec, Topology, compile_topology
from tests.engine.strategies import sites


def random_problem(draw: st.DrawFn, topo: Topology, T: int) -> ScheduleProblem:
    """Sessions (some V2G), caps, background load and prices for a random topology."""
    rows: dict[str, list[Any]] = {
        k: []
        for k in (
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
        )
    }
    for c in range(topo.n_connectors):
        t = draw(st.integers(-3, T))
        for _ in range(draw(st.integers(0, 2))):
            a = t
            d = a + draw(st.integers(0, T))
            v2g = topo.p_discharge_max_kw[c] > 0 and draw(st.booleans())
            battery = draw(st.floats(20, 100))
            soc = draw(st.floats(0, battery))
            rows["connector"].append(c)
            rows["arrival_step"].append(a)
            rows["departure_step"].append(d)
            rows["e_target_kwh"].append(draw(st.floats(0, 80)))
            rows["p_max_kw"].append(draw(st.floats(0, 80)))
            rows["p_discharge_max_kw"].append(draw(st.floats(0, 30)) if v2g else 0.0)
            known = v2g or draw(st.booleans())
            rows["soc_kwh"].append(soc if known else np.nan)
            rows["soc_min_kwh"].append(draw(st.floats(0, soc)) if known else np.nan)
            rows["soc_max_kwh"].append(battery if known else np.nan)
            rows["weight"].append(draw(st.sampled_from([1.0, 1.0, 3.0])))
            t = d + draw(st.integers(0, 2))
    sessions = Sessions(**{k: np.asarray(v) for k, v in rows.items()})  # type: ignore[arg-type]
    n_sites = topo.n_sites
    floats = st.floats(-0.1, 0.6)
    price = np.asarray(draw(st.lists(floats, min_size=T, max_size=T)))
    export = np.asarray(draw(st.lists(floats, min_size=T, max_size=T)))
    bg = np.asarray(
        draw(st.lists(st.floats(-30, 50), min_size=n_sites * T, max_size=n_sites * T))
    ).reshape(n_sites, T)
    upper = np.repeat(topo.b_import[:, None], T, axis=1)
    for s in range(n_sites):
        if draw(st.booleans()):  # a DR cap on the site over part of the horizon
            a = draw(st.integers(0, T - 1))
            e = draw(st.integers(a + 1, T))
            upper[topo.site_root_row[s], a:e] = np.minimum(
                upper[topo.site_root_row[s], a:e], draw(st.floats(0, 80))
            )
    return ScheduleProblem(
        topo,
        sessions,
        n_steps=T,
        dt_s=900,
        import_price=price,
        export_price=export,
        row_upper=upper,
        background_kw=bg,
        demand_charge_per_kw=draw(st.sampled_from([0.0, 0.0, 12.0])),
        sunk_peak_kw=np.asarray(
            draw(st.lists(st.floats(0, 60), min_size=n_sites, max_size=n_sites))
        ),
        degradation_per_kwh=draw(st.sampled_from([0.0, 0.05])),
    )


@st.composite
def problems(draw: st.DrawFn) -> ScheduleProblem:
    topo = compile_topology(draw(sites(max_sites=2, max_chargers=4)))
    return random_problem(draw, topo, draw(st.integers(1, 16)))


@given(problems())
@settings(max_examples=150, deadline=None)
def test_safety_invariants_hold_at_every_step(problem: ScheduleProblem) -> None:
    plan = solve_schedule(problem)
    assert plan.status is SolveStatus.OPTIMAL
    topo, s, T = problem.topology, problem.sessions, problem.n_steps
    dt_h = problem.dt_s / 3600
    tol = 1e-6
    # Topology, DR caps and background load, at every step, import and export.
    P = plan.connector_power_kw(topo, s)
    bg = np.zeros((topo.n_rows, T))
    bg[topo.site_root_row] = np.asarray(problem.background_kw)
    upper = np.asarray(problem.row_upper) - bg
    lower = topo.b_export[:, None] + bg
    load = topo.A @ P
    scale = 1 + np.abs(np.where(np.isfinite(upper), upper, 0))
    assert np.all(load <= np.maximum(upper, 0) + tol * scale)
    assert np.all(-load <= np.maximum(lower, 0) + tol * (1 + np.abs(lower)))
    # Connector and EV limits; nothing outside a session's window.
    steps = np.arange(T)
    window = (steps >= s.arrival_step[:, None]) & (steps < s.departure_step[:, None])
    assert np.all(plan.charge_kw[~window] == 0)
    assert np.all(plan.discharge_kw[~window] == 0)
    ev_max = np.minimum(s.p_max_kw, topo.p_max_kw[s.connector])
    assert np.all(plan.charge_kw <= ev_max[:, None] + tol)
    dis_max = np.minimum(s.p_discharge_max_kw, topo.p_discharge_max_kw[s.connector])
    assert np.all(plan.discharge_kw <= dis_max[:, None] + tol)
    # Energy never above the request; what is not delivered is reported as unmet.
    net = plan.p_kw.sum(axis=1) * dt_h
    assert np.all(net <= s.e_target_kwh + tol)
    assert np.all(plan.unmet_kwh >= 0)
    room = np.where(np.isfinite(s.soc_kwh), s.soc_max_kwh - s.soc_kwh, np.inf)
    target = np.minimum(s.e_target_kwh, np.maximum(room, 0))
    np.testing.assert_allclose(net + plan.unmet_kwh, target, atol=1e-5)
    # SoC within bounds for every session whose battery is known.
    known = np.isfinite(s.soc_kwh)
    soc = s.soc_kwh[known, None] + np.cumsum(plan.p_kw[known], axis=1) * dt_h
    lo = np.minimum(np.nan_to_num(s.soc_min_kwh[known]), s.soc_kwh[known])
    hi = np.maximum(s.soc_max_kwh[known], s.soc_kwh[known])
    assert np.all(soc >= lo[:, None] - 1e-5)
    assert np.all(soc <= hi[:, None] + 1e-5)


def _two_bays(import_kw: float = 11, export_kw: float = 0) -> Topology:
    return compile_topology(
        [
            SiteSpec(
                "s",
                import_kw=import_kw,
                export_kw=export_kw,
                chargers=[
                    ChargerSpec("a", "s", max_kw=11),
                    ChargerSpec("b", "s", max_kw=11, bidirectional=True),
                ],
            )
        ]
    )


def _sessions(**kw: Any) -> Sessions:
    base: dict[str, Any] = dict(
        connector=[0, 1],
        arrival_step=[0, 0],
        departure_step=[4, 4],
        e_target_kwh=[10, 10],
        p_max_kw=[11, 11],
    )
    base.update(kw)
    return Sessions(**base)


def test_cheapest_hours_first_and_ties_prefer_earlier() -> None:
    plan = solve_schedule(
        ScheduleProblem(
            _two_bays(22),
            _sessions(e_target_kwh=[5, 5]),
            n_steps=4,
            dt_s=3600,
            import_price=[0.3] * 4,
        )
    )
    np.testing.assert_allclose(plan.p_kw, [[5, 0, 0, 0], [5, 0, 0, 0]], atol=1e-9)
    assert plan.costs["energy"] == pytest.approx(3.0)


def test_demand_charge_flattens_the_peak() -> None:
    flat = solve_schedule(
        ScheduleProblem(
            _two_bays(22),
            _sessions(),
            n_steps=4,
            dt_s=3600,
            import_price=[0.3] * 4,
            demand_charge_per_kw=10,
        )
    )
    assert flat.site_import_kw.max() == pytest.approx(5.0)
    assert flat.costs["demand_charge"] == pytest.approx(50.0)
    sunk = solve_schedule(
        ScheduleProblem(
            _two_bays(22),
            _sessions(),
            n_steps=4,
            dt_s=3600,
            import_price=[0.3] * 4,
            demand_charge_per_kw=10,
            sunk_peak_kw=[8],
        )
    )
    assert sunk.costs["demand_charge"] == 0
    assert sunk.site_import_kw.max() <= 8 + 1e-9


def test_dr_cap_and_unmet_reasons() -> None:
    upper = np.repeat(_two_bays().b_import[:, None], 4, axis=1)
    upper[_two_bays().site_root_row[0]] = [11, 0, 0, 11]  # a DR event in hours 1-2

    def plan_for(sessions: Sessions) -> Schedule:
        return solve_schedule(
            ScheduleProblem(
                _two_bays(), sessions, n_steps=4, dt_s=3600, import_price=[0.3] * 4, row_upper=upper
            )
        )

    plan = plan_for(_sessions(e_target_kwh=[30, 10], p_max_kw=[7, 11]))
    assert plan.site_import_kw[0, 1:3].max() <= 1e-9
    # 30 kWh at 7 kW in 4 h is impossible even alone; 22 kWh of room for 40 kWh is a capacity gap.
    assert plan.unmet_reason[0] is UnmetReason.EV_LIMIT
    assert plan.unmet_kwh.sum() == pytest.approx(40 - 22)
    plan = plan_for(_sessions(e_target_kwh=[10, 20], weight=[1, 3]))
    # The priority session gets all it asked for; the other carries the capacity shortfall.
    assert plan.unmet_reason == (UnmetReason.CAPACITY, UnmetReason.NONE)
    assert plan.unmet_kwh[0] == pytest.approx(8)


def test_v2g_discharges_into_the_price_spike_within_soc() -> None:
    def plan_for(sessions: Sessions) -> Schedule:
        return solve_schedule(
            ScheduleProblem(
                _two_bays(11, export_kw=11),
                sessions,
                n_steps=4,
                dt_s=3600,
                import_price=[0.1, 0.1, 0.1, 0.9],
                export_price=[0.05, 0.05, 0.05, 0.8],
                degradation_per_kwh=0.02,
            )
        )

    sessions = _sessions(
        e_target_kwh=[0, 5],
        p_discharge_max_kw=[0, 11],
        soc_kwh=[np.nan, 40],
        soc_min_kwh=[np.nan, 30],
        soc_max_kwh=[np.nan, 60],
    )
    plan = plan_for(sessions)
    assert plan.discharge_kw[1, 3] == pytest.approx(11)
    soc = 40 + np.cumsum(plan.p_kw[1])
    assert soc.min() >= 30 - 1e-9
    assert soc[-1] == pytest.approx(45)
    assert plan.costs["export_revenue"] == pytest.approx(11 * 0.8)
    # Without a known state of charge the engine never discharges.
    blind = _sessions(e_target_kwh=[0, 5], p_discharge_max_kw=[0, 11])
    plan = plan_for(blind)
    assert plan.discharge_kw.max() == 0


def test_degradation_is_per_site() -> None:
    """Two identical V2G sites; discharging pays 0.8 - 0.1 at the spike. Wear of 0.5/kWh at
    the second site makes it not worth it there, and the cost reports each site's own rate."""
    topo = compile_topology(
        [
            SiteSpec(
                site,
                import_kw=11,
                export_kw=11,
                chargers=[ChargerSpec(f"{site}-b", site, max_kw=11, bidirectional=True)],
            )
            for site in ("cheap", "dear")
        ]
    )
    sessions = Sessions(
        connector=[0, 1],
        arrival_step=[0, 0],
        departure_step=[4, 4],
        e_target_kwh=[5, 5],
        p_max_kw=[11, 11],
        p_discharge_max_kw=[11, 11],
        soc_kwh=[40, 40],
        soc_min_kwh=[30, 30],
        soc_max_kwh=[60, 60],
    )
    plan = solve_schedule(
        ScheduleProblem(
            topo,
            sessions,
            n_steps=4,
            dt_s=3600,
            import_price=[0.1, 0.1, 0.1, 0.9],
            export_price=[0.05, 0.05, 0.05, 0.8],
            degradation_per_kwh=[0.02, 0.9],
        )
    )
    assert plan.discharge_kw[0, 3] == pytest.approx(11)
    assert plan.discharge_kw[1].max() == pytest.approx(0)
    assert plan.costs["degradation"] == pytest.approx(11 * 0.02)
    with pytest.raises(ProblemError, match="degradation_per_kwh"):
        ScheduleProblem(
            topo, sessions, n_steps=4, dt_s=3600, import_price=0.1, degradation_per_kwh=[0.1, -1.0]
        )


def test_a_dr_payment_is_earned_on_the_evs_own_net_discharge() -> None:
    """1.00 per kWh discharged in the last hour (a DR event) against 0.25 to import: the EV,
    which must leave with what it came with, buys 11 kWh before and discharges them into the
    event. The same payment all day is worth nothing: charging forgoes it as much as
    discharging earns it."""
    sessions = _sessions(
        e_target_kwh=[0, 0],
        p_discharge_max_kw=[0, 11],
        soc_kwh=[np.nan, 40],
        soc_min_kwh=[np.nan, 30],
        soc_max_kwh=[np.nan, 60],
    )

    def plan_for(value: list[float]) -> Schedule:
        return solve_schedule(
            ScheduleProblem(
                _two_bays(11, export_kw=11),
                sessions,
                n_steps=4,
                dt_s=3600,
                import_price=[0.25] * 4,
                export_price=[0.05] * 4,
                discharge_value_per_kwh=value,
            )
        )

    plan = plan_for([0, 0, 0, 1.0])
    assert plan.discharge_kw[1, 3] == pytest.approx(11.0)
    assert plan.charge_kw[1].sum() == pytest.approx(11.0)
    assert plan.costs["discharge_value"] == pytest.approx(11.0)
    assert plan.costs["export_revenue"] == pytest.approx(11 * 0.05)
    flat = plan_for([1.0] * 4)
    assert flat.discharge_kw.max() == pytest.approx(0.0)


def test_interior_point_shares_a_binding_cap_among_identical_evs() -> None:
    """Forty identical EVs, flat prices, a cap of 60 % of their power for the first two hours:
    every split of the cap is optimal. The simplex returns a vertex (some EVs at full power,
    others at none); the interior point one near the centre, so every EV gets about its share,
    at the same cost."""
    n, T = 40, 16
    topo = compile_topology(
        [
            SiteSpec(
                "fleet",
                import_kw=11 * n,
                chargers=[ChargerSpec(f"c{i}", "fleet", max_kw=11) for i in range(n)],
            )
        ]
    )
    sessions = Sessions(
        connector=np.arange(n),
        arrival_step=np.zeros(n, dtype=np.int64),
        departure_step=np.full(n, T),
        e_target_kwh=np.full(n, 20.0),
        p_max_kw=np.full(n, 11.0),
    )
    upper = np.tile(topo.b_import[:, None], (1, T))
    upper[topo.site_root_row, :8] = 0.6 * 11 * n
    problem = ScheduleProblem(
        topo, sessions, n_steps=T, dt_s=900, import_price=np.full(T, 0.2), row_upper=upper
    )
    vertex = solve_schedule(problem)
    centre = solve_schedule(problem, method="ipm")
    assert centre.status is SolveStatus.OPTIMAL
    assert centre.objective == pytest.approx(vertex.objective, rel=1e-6)
    assert centre.p_kw[:, 0].sum() == pytest.approx(0.6 * 11 * n, rel=1e-6)
    assert np.ptp(vertex.p_kw[:, 0]) > 5.0  # all or nothing
    assert np.ptp(centre.p_kw[:, 0]) < 1.0  # about 6.6 kW each
    assert centre.unmet_kwh.max() == pytest.approx(0.0, abs=1e-6)


def test_time_limit_is_a_result() -> None:
    rng = np.random.default_rng(0)
    n = 40
    topo = compile_topology(
        [
            SiteSpec(
                "s",
                import_kw=100,
                chargers=[ChargerSpec(f"c{i}", "s", max_kw=11) for i in range(n)],
            )
        ]
    )
    sessions = Sessions(
        connector=np.arange(n),
        arrival_step=rng.integers(0, 50, n),
        departure_step=rng.integers(60, 96, n),
        e_target_kwh=rng.uniform(5, 40, n),
        p_max_kw=np.full(n, 11.0),
    )
    plan = solve_schedule(
        ScheduleProblem(topo, sessions, n_steps=96, dt_s=900, import_price=rng.uniform(0, 1, 96)),
        time_limit_s=0.0,
    )
    assert plan.status is SolveStatus.TIME_LIMIT
    assert plan.message.startswith("no plan")
    assert np.isnan(plan.unmet_kwh).all()


def test_bad_problems_are_named() -> None:
    topo = _two_bays()
    with pytest.raises(ProblemError, match=r"e_target_kwh\[1\] must be >= 0, got -1"):
        _sessions(e_target_kwh=[1, -1])
    with pytest.raises(ProblemError, match=r"departure_step\[0\] must be >= arrival_step, got 2"):
        _sessions(arrival_step=[3, 0], departure_step=[2, 4])
    with pytest.raises(ProblemError, match="overlap on connector 0"):
        ScheduleProblem(
            topo,
            Sessions(
                connector=[0, 0],
                arrival_step=[0, 2],
                departure_step=[3, 4],
                e_target_kwh=[1, 1],
                p_max_kw=[1, 1],
            ),
            n_steps=4,
            dt_s=60,
            import_price=[0] * 4,
        )
    with pytest.raises(ProblemError, match=r"sessions.connector\[1\] must be a column in 0..1"):
        ScheduleProblem(topo, _sessions(connector=[0, 7]), n_steps=4, dt_s=60, import_price=[0] * 4)
    with pytest.raises(ProblemError, match=r"import_price: expected shape \(4,\)"):
        solve_schedule(ScheduleProblem(topo, _sessions(), n_steps=4, dt_s=60, import_price=[0] * 3))
    with pytest.raises(ProblemError, match="dt_s must be > 0"):
        ScheduleProblem(topo, _sessions(), n_steps=4, dt_s=0, import_price=[0] * 4)


def test_time_limit_applies_per_solve_not_over_the_solver_lifetime() -> None:
    # The HiGHS instance is reused per thread; its clock runs on across solves.
    from ampflow.scenarios.demo import caltech_demo_problem

    problem = caltech_demo_problem("2019-10-29", import_kw=150)
    first = solve_schedule(problem)
    budget = max(0.5, 20 * first.stats.solve_s)
    spent = 0.0
    while spent < 2 * budget:
        plan = solve_schedule(problem, time_limit_s=budget)
        assert plan.status is SolveStatus.OPTIMAL
        spent += plan.stats.solve_s


def test_a_soft_milestone_pulls_energy_before_it_when_it_pays() -> None:
    from ampflow.engine.topology import ChargerSpec, SiteSpec, compile_topology

    topo = compile_topology(
        [SiteSpec("s", import_kw=50, chargers=[ChargerSpec("a", "s", max_kw=11)])]
    )
    sessions = Sessions(
        connector=[0],
        arrival_step=[0],
        departure_step=[8],
        e_target_kwh=[11.0],
        p_max_kw=[11.0],
        milestone_step=[4],
        milestone_kwh=[11.0],
    )
    price = [0.5] * 4 + [0.1] * 4  # cheap late: without the milestone, everything goes late
    base = ScheduleProblem(topo, sessions, n_steps=8, dt_s=3600, import_price=price)
    late = solve_schedule(base)
    assert late.p_kw[0, :4].sum() == pytest.approx(0.0, abs=1e-6)
    assert "milestone_penalty" not in late.costs
    # A penalty above the price gap (0.4/kWh) buys the energy early; one below it does not.
    early = solve_schedule(replace(base, milestone_penalty_per_kwh=1.0))
    assert early.p_kw[0, :4].sum() == pytest.approx(11.0, abs=1e-6)
    assert early.costs["milestone_penalty"] == pytest.approx(0.0, abs=1e-6)
    cheap = solve_schedule(replace(base, milestone_penalty_per_kwh=0.2))
    assert cheap.p_kw[0, :4].sum() == pytest.approx(0.0, abs=1e-6)
    assert cheap.costs["milestone_penalty"] == pytest.approx(0.2 * 11.0, rel=1e-6)


def test_a_carbon_price_moves_charging_to_cleaner_hours() -> None:
    from ampflow.engine.topology import ChargerSpec, SiteSpec, compile_topology

    topo = compile_topology(
        [SiteSpec("s", import_kw=50, chargers=[ChargerSpec("a", "s", max_kw=11)])]
    )
    sessions = Sessions(
        connector=[0], arrival_step=[0], departure_step=[4], e_target_kwh=[11.0], p_max_kw=[11.0]
    )
    price = [0.10, 0.12, 0.12, 0.12]
    intensity = [0.9, 0.2, 0.2, 0.2]  # kg CO2/kWh: the cheapest hour is the dirtiest
    base = ScheduleProblem(
        topo,
        sessions,
        n_steps=4,
        dt_s=3600,
        import_price=price,
        carbon_intensity_kg_per_kwh=intensity,
    )
    cheap = solve_schedule(base)
    assert cheap.p_kw[0, 0] == pytest.approx(11.0)
    assert "carbon" not in cheap.costs
    clean = solve_schedule(replace(base, carbon_price_per_kg=0.1))  # 0.07/kWh more at hour 0
    assert clean.p_kw[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert clean.costs["energy"] == pytest.approx(11.0 * 0.12)
    assert clean.costs["carbon"] == pytest.approx(11.0 * 0.2 * 0.1)


def test_urgency_bias_serves_the_ev_that_may_leave_first_under_a_binding_limit() -> None:
    """Six EVs share a site that fits three at full power, all with enough time: every order is
    as cheap. With the urgency bias the three that leave first (or whose soft early target comes
    first) charge first; without it, the plan's choice is arbitrary."""
    n, T = 6, 24
    topo = compile_topology(
        [
            SiteSpec(
                "site",
                import_kw=3 * 11,
                chargers=[ChargerSpec(f"c{i}", "site", max_kw=11) for i in range(n)],
            )
        ]
    )
    # Sessions 1, 3 and 5 leave at step 12 (or have their early target there); the others at 24.
    early = np.array([24, 12, 24, 12, 24, 12])
    by_departure = Sessions(
        connector=np.arange(n),
        arrival_step=np.zeros(n, dtype=np.int64),
        departure_step=early,
        e_target_kwh=np.full(n, 11 * 3 / 4),  # three 15-minute steps at full power
        p_max_kw=np.full(n, 11.0),
    )
    by_milestone = replace(
        by_departure,
        departure_step=np.full(n, T),
        milestone_step=early,
        milestone_kwh=np.zeros(n),
    )
    for sessions in (by_departure, by_milestone):
        problem = ScheduleProblem(
            topo,
            sessions,
            n_steps=T,
            dt_s=900,
            import_price=np.full(T, 0.2),
            urgency_bias_per_kwh=0.05,
        )
        plan = solve_schedule(problem)
        assert plan.status is SolveStatus.OPTIMAL
        np.testing.assert_allclose(plan.p_kw[1::2, :3], 11.0, atol=1e-6)
        np.testing.assert_allclose(plan.p_kw[0::2, :3], 0.0, atol=1e-6)
        assert plan.unmet_kwh.max() <= 1e-9
