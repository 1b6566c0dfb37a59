"""Compiling capacity trees to ``A @ p <= b``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

from ampflow.engine.errors import TopologyError
from ampflow.engine.topology import ChargerSpec, NodeSpec, RowKind, SiteSpec, compile_topology
from tests.engine.strategies import sites


def _depot() -> SiteSpec:
    return SiteSpec(
        "depot",
        import_kw=150,
        export_kw=50,
        phase_a=(200, 200, 200),
        nodes=[NodeSpec("panel-a", "depot", import_kw=40, phase_a=(63, 63, 32))],
        chargers=[
            ChargerSpec("cp-1", "panel-a", max_kw=22, connectors=2),
            ChargerSpec("cp-2", "panel-a", max_kw=7.4, phases=1, phase="L1", rotation="STR"),
            ChargerSpec("us-1", "depot", max_kw=6.656, phases=1, phase="L1-L2", voltage_v=208),
            ChargerSpec("dc-1", "depot", max_kw=150, kind="DC", bidirectional=True),
        ],
    )


def test_matrix_of_a_small_site() -> None:
    topo = compile_topology([_depot()])
    assert topo.connector_ids == (
        "depot/cp-1/1",
        "depot/cp-1/2",
        "depot/cp-2/1",
        "depot/us-1/1",
        "depot/dc-1/1",
    )
    A = topo.A.toarray()
    root = topo.total_row("depot")
    panel = topo.total_row("depot/panel-a")
    # Every connector loads the grid connection's total row by its own power.
    np.testing.assert_array_equal(A[root], [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(A[panel], [1, 1, 1, 0, 0])
    # Panel-a phase rows: 3-phase at 230 V is 1000/690 A/kW per phase; cp-2 is wired to the
    # charger's L1 with rotation STR, so it loads the grid's L2 at 1000/230 A/kW.
    panel_phase = {
        RowKind(k): r
        for r, k in enumerate(topo.row_kind)
        if topo.row_node[r] == topo.node_index("depot/panel-a") and k > 0
    }
    three = 1000 / (3 * 230)
    np.testing.assert_allclose(A[panel_phase[RowKind.L1_A]], [three, three, 0, 0, 0])
    np.testing.assert_allclose(A[panel_phase[RowKind.L2_A]], [three, three, 1000 / 230, 0, 0])
    np.testing.assert_allclose(A[panel_phase[RowKind.L3_A]], [three, three, 0, 0, 0])
    assert topo.b_import[panel_phase[RowKind.L3_A]] == 32
    # The 208 V line-to-line charger counts its current on both L1 and L2 of the grid connection.
    root_phase = [
        r
        for r, k in enumerate(topo.row_kind)
        if topo.row_node[r] == topo.node_index("depot") and k > 0
    ]
    np.testing.assert_allclose(A[root_phase, 3], [1000 / 208, 1000 / 208, 0])
    # DC loads all three phases equally.
    np.testing.assert_allclose(A[root_phase, 4], [three] * 3)
    # Bounds: export defaults to 0 at a grid connection, is explicit here; chargers export only
    # when bidirectional.
    assert topo.b_import[root] == 150
    assert topo.b_export[root] == 50
    assert topo.b_export[topo.total_row("depot/cp-1")] == 0
    assert topo.b_export[topo.total_row("depot/dc-1")] == 150
    np.testing.assert_allclose(topo.p_min_kw[:3], [6 * 690 / 1000] * 2 + [6 * 230 / 1000])


def test_checker_uses_the_same_rows() -> None:
    topo = compile_topology([_depot()])
    p = np.array([22, 22, 0, 0, 0])  # 44 kW on a 40 kW panel
    over = topo.violation(p)
    assert over[topo.total_row("depot/panel-a")] == pytest.approx(4)
    assert over[topo.total_row("depot")] == 0
    # Discharging 60 kW exceeds the 50 kW export limit.
    assert topo.violation(np.array([0, 0, 0, 0, -60.0]))[topo.total_row("depot")] == 10


def test_many_sites_compile_block_diagonal() -> None:
    topo = compile_topology(
        [
            SiteSpec(
                f"s{i}", import_kw=50, chargers=[ChargerSpec("c", f"s{i}", max_kw=11, connectors=2)]
            )
            for i in range(500)
        ]
    )
    assert topo.n_connectors == 1000
    assert topo.n_sites == 500
    A = topo.A.tocoo()
    # No entry couples two sites.
    assert np.all(topo.row_site[A.row] == topo.connector_site[A.col])
    np.testing.assert_array_equal(np.diff(topo.site_conn_ptr), 2)


@pytest.mark.parametrize(
    ("site", "message"),
    [
        (SiteSpec("s", import_kw=-5), "site 's': import_kw must be a number >= 0, got -5"),
        (SiteSpec("s", import_kw=10, nodes=[NodeSpec("a", "nowhere")]), "unknown parent 'nowhere'"),
        (
            SiteSpec("s", import_kw=10, nodes=[NodeSpec("a", "b"), NodeSpec("b", "a")]),
            "parents form a cycle",
        ),
        (
            SiteSpec("s", import_kw=10, chargers=[ChargerSpec("c", "s", max_kw=7, phases=1)]),
            "charger 'c': a single-phase charger needs phase",
        ),
        (
            SiteSpec("s", import_kw=10, chargers=[ChargerSpec("c", "s", max_kw=7, phases=2)]),
            "phases must be 1 or 3, got 2",
        ),
        (
            SiteSpec("s", import_kw=10, chargers=[ChargerSpec("c", "s", max_kw=7, rotation="XYZ")]),
            "rotation must be one of",
        ),
        (
            SiteSpec("s", import_kw=10, nodes=[NodeSpec("a", "s", phase_a=(1, 2))]),  # type: ignore[arg-type]
            "phase_a must list 3 currents",
        ),
        (
            SiteSpec("s", import_kw=10, nodes=[NodeSpec("a", "s"), NodeSpec("a", "s")]),
            "node 'a': duplicate node id",
        ),
        (
            SiteSpec("s", import_kw=10, chargers=[ChargerSpec("c", "s", max_kw=1.0)]),
            "minimum power 4.140 kW exceeds max_kw 1.0",
        ),
        (SiteSpec("s", import_kw=math.nan), "import_kw must be a number >= 0, got nan"),
    ],
)
def test_invalid_topology_is_named(site: SiteSpec, message: str) -> None:
    with pytest.raises(TopologyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_topology([site])


def test_duplicate_site() -> None:
    with pytest.raises(TopologyError, match="site 's': duplicate site id"):
        compile_topology([SiteSpec("s", import_kw=1), SiteSpec("s", import_kw=1)])


@given(sites())
@settings(max_examples=100, deadline=None)
def test_every_connector_loads_its_whole_ancestry(specs: list[SiteSpec]) -> None:
    topo = compile_topology(specs)
    A = topo.A.toarray()
    for c in range(topo.n_connectors):
        node = int(topo.connector_charger[c])
        ancestry = set()
        while node >= 0:
            ancestry.add(node)
            node = int(topo.node_parent[node])
        rows = set(np.flatnonzero(A[:, c] > 0))
        total_rows = {r for r in rows if topo.row_kind[r] == 0}
        assert {int(topo.row_node[r]) for r in total_rows} == ancestry
        assert all(topo.row_node[r] in ancestry for r in rows)
        np.testing.assert_array_equal(A[list(total_rows), c], 1.0)
    # Rows and connectors are sorted by site, as the allocator's segment reductions need.
    assert np.all(np.diff(topo.row_site) >= 0)
    assert np.all(np.diff(topo.connector_site) >= 0)
