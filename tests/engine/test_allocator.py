"""The real-time allocator: safety invariants, max-min fairness, minimum current, rotation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from ampflow.engine.allocator import AllocatorState, allocate
from ampflow.engine.errors import ProblemError
from ampflow.engine.topology import ChargerSpec, NodeSpec, SiteSpec, Topology, compile_topology
from tests.engine.strategies import sites, vector


@st.composite
def allocation_cases(draw: st.DrawFn, max_sites: int = 3, max_chargers: int = 6):  # type: ignore[no-untyped-def]
    topo = compile_topology(draw(sites(max_sites=max_sites, max_chargers=max_chargers)))
    n = topo.n_connectors
    demand = vector(draw, n, 0.0, 80.0)
    weight = 1.0 + vector(draw, n, 0.0, 3.0, zero_share=0.5)
    caps = {sid: draw(st.floats(0, 100)) for sid in topo.site_ids if draw(st.booleans())}
    background = np.asarray(
        draw(st.lists(st.floats(-20, 60), min_size=topo.n_sites, max_size=topo.n_sites))
    )
    ub = topo.row_upper(node_cap_kw=caps, background_kw=background)
    waiting = np.asarray(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)), dtype=np.int64)
    credit = np.asarray(draw(st.lists(st.floats(-3, 3), min_size=n, max_size=n)))
    return topo, demand, weight, ub, AllocatorState(waiting, credit)


def _upper(topo: Topology, demand: np.ndarray) -> np.ndarray:
    return np.where(demand > 0, np.clip(demand, topo.p_min_kw, topo.p_max_kw), 0.0)


@given(allocation_cases())
@settings(max_examples=300, deadline=None)
def test_safety_invariants(case) -> None:  # type: ignore[no-untyped-def]
    topo, demand, weight, ub, state = case
    res = allocate(topo, demand, weight=weight, row_upper=ub, state=state)
    p = res.p_kw
    ub_eff = np.maximum(ub, 0)
    load = topo.A @ p
    # No node or phase over its limit, DR caps and background load included.
    assert np.all(load <= ub_eff + 1e-6 * (1 + np.where(np.isfinite(ub_eff), ub_eff, 0)))
    # No connector over its own or its EV's maximum; nothing without demand.
    assert np.all(p >= 0)
    assert np.all(p <= _upper(topo, demand) + 1e-9)
    assert np.all(p[demand == 0] == 0)
    # Minimum current: 0 or at least the minimum.
    assert np.all((p == 0) | (p >= topo.p_min_kw - 1e-9))
    # Shed connectors wanted power and got none; they wait one tick longer.
    assert np.all(p[res.shed] == 0)
    np.testing.assert_array_equal(
        res.state.waiting_ticks[res.shed], state.waiting_ticks[res.shed] + 1
    )
    np.testing.assert_array_equal(res.state.waiting_ticks[~res.shed], 0)
    # Rotation credit is zero-sum within each site among connectors that keep wanting power.
    wants = demand > 0
    delta = np.where(wants, res.state.credit - state.credit, 0.0)
    np.testing.assert_allclose(np.bincount(topo.connector_site, delta, topo.n_sites), 0, atol=1e-9)


@given(allocation_cases())
@settings(max_examples=300, deadline=None)
def test_every_unsatisfied_connector_has_a_bottleneck(case) -> None:  # type: ignore[no-untyped-def]
    """Pareto efficiency: a connector below its demand sits on a tight row."""
    topo, demand, weight, ub, state = case
    p = allocate(topo, demand, weight=weight, row_upper=ub, state=state).p_kw
    ub_eff = np.maximum(ub, 0)
    tight = topo.A @ p >= ub_eff - 1e-6 * (1 + np.where(np.isfinite(ub_eff), ub_eff, 0))
    short = (p > 0) & (p < _upper(topo, demand) - 1e-6)
    A = topo.A.toarray()
    for i in np.flatnonzero(short):
        assert tight[A[:, i] > 0].any(), f"connector {i} could get more"


def _lexicographic_max_min(topo: Topology, lower, upper, weight, ub) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Reference: weighted max-min fair allocation by a sequence of LPs (small instances only)."""
    A = topo.A.toarray()
    finite = np.isfinite(ub)
    A_ub, b_ub = A[finite], np.maximum(ub[finite], 0)
    n = len(lower)
    fixed = np.full(n, np.nan)
    fixed[upper <= lower + 1e-12] = lower[upper <= lower + 1e-12]
    while np.isnan(fixed).any():
        free = np.isnan(fixed)
        # Variables: x (n) and t. Maximise t with x_i >= w_i t for free i.
        bounds = [
            (f, f) if not np.isnan(f) else (lo, hi)
            for f, lo, hi in zip(fixed, lower, upper, strict=True)
        ] + [(0, None)]
        rows = np.hstack([A_ub, np.zeros((len(b_ub), 1))])
        level = np.zeros((int(free.sum()), n + 1))
        level[np.arange(free.sum()), np.flatnonzero(free)] = -1
        level[:, n] = weight[free]
        c = np.zeros(n + 1)
        c[n] = -1
        res = linprog(
            c,
            A_ub=np.vstack([rows, level]),
            b_ub=np.r_[b_ub, np.zeros(len(level))],
            bounds=bounds,
            method="highs",
        )
        assert res.status == 0
        t = res.x[n]
        blocked = []
        for i in np.flatnonzero(free):
            c_i = np.zeros(n + 1)
            c_i[i] = -1
            bnd = list(bounds)
            bnd[n] = (t, t)
            r = linprog(
                c_i,
                A_ub=np.vstack([rows, level]),
                b_ub=np.r_[b_ub, np.zeros(len(level))],
                bounds=bnd,
                method="highs",
            )
            if r.x[i] <= max(weight[i] * t, lower[i]) + 1e-7:
                blocked.append(i)
        assert blocked, "no connector blocked: reference did not progress"
        for i in blocked:
            fixed[i] = np.clip(weight[i] * t, lower[i], upper[i])
    return fixed


@given(allocation_cases(max_sites=2, max_chargers=4))
@settings(max_examples=60, deadline=None)
def test_matches_lp_reference_of_max_min_fairness(case) -> None:  # type: ignore[no-untyped-def]
    topo, demand, weight, ub, state = case
    # Limits at HiGHS's feasibility tolerance (1e-7) mislead the reference LP, not the allocator
    # (the safety properties above keep them); compare only where the reference can resolve.
    assume(not np.any((ub > 0) & (ub < 1e-4)))
    res = allocate(topo, demand, weight=weight, row_upper=ub, state=state)
    admitted = (demand > 0) & ~res.shed
    lower = np.where(admitted, topo.p_min_kw, 0.0)
    upper = np.where(admitted, _upper(topo, demand), 0.0)
    expected = _lexicographic_max_min(topo, lower, upper, weight, ub)
    np.testing.assert_allclose(res.p_kw, expected, atol=1e-5)


def _bus(n: int, import_kw: float) -> Topology:
    return compile_topology(
        [
            SiteSpec(
                "s",
                import_kw=import_kw,
                chargers=[ChargerSpec(f"c{i}", "s", max_kw=22) for i in range(n)],
            )
        ]
    )


def test_weights_share_in_proportion() -> None:
    res = allocate(_bus(3, 40), [22, 22, 22], weight=[2, 1, 1])
    np.testing.assert_allclose(res.p_kw, [20, 10, 10])


def test_rotation_when_minimums_do_not_fit() -> None:
    """Five EVs, room for two minimums: within any three ticks each EV charges at least once."""
    topo = _bus(5, 2 * 4.14 + 1)
    state = None
    served = []
    for _ in range(12):
        res = allocate(topo, np.full(5, 22.0), state=state)
        state = res.state
        assert (res.p_kw > 0).sum() == 2
        served.append(res.p_kw > 0)
    s = np.array(served)
    for start in range(len(s) - 2):
        assert s[start : start + 3].any(axis=0).all()
    # Over a full cycle of five ticks everyone charges exactly twice.
    np.testing.assert_array_equal(s[:10].sum(axis=0), [4, 4, 4, 4, 4])


def test_rotation_respects_weights() -> None:
    """Room for one minimum; a weight-2 EV ranks first whenever it wants power."""
    topo = _bus(3, 5)
    state = None
    served = np.zeros(3)
    for _ in range(9):
        res = allocate(topo, [22, 22, 22], state=state)
        state = res.state
        served += res.p_kw > 0
    np.testing.assert_array_equal(served, [3, 3, 3])


def test_phase_bottleneck_and_dr_cap() -> None:
    topo = compile_topology(
        [
            SiteSpec(
                "s",
                import_kw=100,
                phase_a=(32, 63, 63),
                chargers=[
                    ChargerSpec("one", "s", max_kw=7.36, phases=1, phase="L1"),
                    ChargerSpec("three", "s", max_kw=22.08),
                ],
            )
        ]
    )
    res = allocate(topo, [7.36, 22.08])
    # L1 carries 32 A: the 1-phase EV and the 3-phase EV's L1 share it equally in kW terms.
    load = topo.A @ res.p_kw
    assert load.max() <= 63 + 1e-9
    l1 = next(r for r in range(topo.n_rows) if topo.row_kind[r] == 1)
    assert load[l1] == pytest.approx(32)
    # A 5 kW DR cap cannot hold both minimums (1.38 + 4.14 kW): one EV is shed, the other gets
    # the whole cap.
    capped = allocate(topo, [7.36, 22.08], row_upper=topo.row_upper(node_cap_kw={"s": 5}))
    assert (topo.A @ capped.p_kw)[topo.total_row("s")] <= 5 + 1e-9
    assert (capped.p_kw > 0).sum() == 1
    assert capped.p_kw.sum() == pytest.approx(5)


def test_bad_input_is_named() -> None:
    topo = _bus(2, 10)
    with pytest.raises(ProblemError, match=r"demand_kw\[1\] must be >= 0, got -1"):
        allocate(topo, [1, -1])
    with pytest.raises(ProblemError, match=r"demand_kw: expected shape \(2,\), got \(3,\)"):
        allocate(topo, [1, 1, 1])
    with pytest.raises(ProblemError, match=r"weight\[0\] must be finite and > 0"):
        allocate(topo, [1, 1], weight=[0, 1])
    with pytest.raises(ProblemError, match="row_upper"):
        allocate(topo, [1, 1], row_upper=[np.nan] * topo.n_rows)


def test_tree_with_nodes_below_the_site() -> None:
    topo = compile_topology(
        [
            SiteSpec(
                "s",
                import_kw=60,
                nodes=[NodeSpec("a", "s", import_kw=20), NodeSpec("b", "s", import_kw=100)],
                chargers=[
                    ChargerSpec("x", "a", max_kw=22, connectors=2),
                    ChargerSpec("y", "b", max_kw=22),
                    ChargerSpec("z", "b", max_kw=22),
                ],
            )
        ]
    )
    res = allocate(topo, [22, 22, 22, 22])
    # Panel a holds x's two connectors to 20 kW; the site's remaining 40 kW goes to y and z.
    np.testing.assert_allclose(res.p_kw, [10, 10, 20, 20])
    # A charger's rating is shared by its connectors.
    two = compile_topology(
        [SiteSpec("s", import_kw=60, chargers=[ChargerSpec("x", "s", max_kw=22, connectors=2)])]
    )
    np.testing.assert_allclose(allocate(two, [22, 22]).p_kw, [11, 11])


def test_cap_within_tolerance_of_a_tight_row_converges() -> None:
    """A connector whose cap (1e-9 kW) lies within the tolerance of the level at which its rows
    are tight (0: L2 and L3 allow nothing) is frozen at the level, not at its cap; otherwise the
    rows would stay over by its load and the site would never fit again."""
    topo = compile_topology(
        [
            SiteSpec(
                "s",
                import_kw=1,
                phase_a=(1.0, 0.0, 0.0),
                chargers=[
                    ChargerSpec("a", "s", max_kw=22, min_a=0),
                    ChargerSpec("b", "s", max_kw=22, min_a=0),
                    ChargerSpec("c", "s", max_kw=7.4, phases=1, phase="L1", min_a=0),
                ],
            )
        ]
    )
    res = allocate(topo, [1.0, 1e-9, 1.0])
    assert topo.violation(res.p_kw).max() == 0
    # The three-phase connectors load L2 and L3; the single-phase one gets L1's 1 A.
    np.testing.assert_allclose(res.p_kw, [0, 0, 0.23], atol=1e-12)


def test_cap_within_tolerance_above_the_level_still_rises() -> None:
    """A cap of 1e-9 kW lies within the tolerance of level 0, but the connector is not at it yet:
    L1 allows 0 A, so it gets 0, not its cap (which would put L1 over by 4e-9 A, and a site
    whose rows are all tight like this one could then never fit again)."""
    topo = compile_topology(
        [
            SiteSpec(
                "s",
                import_kw=10,
                phase_a=(0.0, 50.0, 50.0),
                chargers=[
                    ChargerSpec("a", "s", max_kw=7.4, phases=1, phase="L1", min_a=0),
                    ChargerSpec("b", "s", max_kw=7.4, phases=1, phase="L2", min_a=0),
                ],
            )
        ]
    )
    res = allocate(topo, [1e-9, 5.0])
    np.testing.assert_array_equal(res.p_kw, [0.0, 5.0])
    assert topo.violation(res.p_kw).max() == 0
