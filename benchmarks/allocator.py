"""Real-time allocator: 100,000 connectors in 10,000 sites against a per-site Python loop.

Each site has a three-phase tree of two levels (grid connection, two feeders, chargers) with
per-phase current limits at every level, and ten connectors: AC three-phase, AC single-phase on
rotating phases (one line-to-line), and DC. Demands are random with idle connectors; some sites
have priorities and a DR cap tight enough that minimum currents must be shed.

The baseline is a straightforward implementation of the same allocation: a Python loop over sites,
and within each site an event-by-event progressive filling over lists. Both must agree.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ampflow.engine.allocator import allocate
from ampflow.engine.topology import (
    ChargerKind,
    ChargerSpec,
    NodeSpec,
    SiteSpec,
    Topology,
    compile_topology,
)
from benchmarks._common import emit, median_ms, parser, peak_rss_mb


def fleet(n_sites: int, seed: int = 0) -> list[SiteSpec]:
    """``n_sites`` sites of ten connectors each."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_sites):
        sid = f"site{s}"
        out.append(
            SiteSpec(
                sid,
                import_kw=float(rng.uniform(40, 160)),
                phase_a=(250.0, 250.0, 250.0),
                nodes=[
                    NodeSpec(
                        "fa", sid, import_kw=float(rng.uniform(30, 90)), phase_a=(100, 100, 100)
                    ),
                    NodeSpec(
                        "fb", sid, import_kw=float(rng.uniform(30, 90)), phase_a=(100, 100, 80)
                    ),
                ],
                chargers=[
                    ChargerSpec("ac22", "fa", max_kw=22, connectors=2),
                    ChargerSpec("p1", "fa", max_kw=7.4, phases=1, phase="L1"),
                    ChargerSpec("p2", "fa", max_kw=7.4, phases=1, phase="L1", rotation="STR"),
                    ChargerSpec("dc", "fa", max_kw=50, kind=ChargerKind.DC, min_kw=5),
                    ChargerSpec("ac11", "fb", max_kw=11, connectors=2),
                    ChargerSpec("p3", "fb", max_kw=7.4, phases=1, phase="L3"),
                    ChargerSpec("ll", "fb", max_kw=7.4, phases=1, phase="L1-L2"),
                    ChargerSpec("ac22b", "fb", max_kw=22),
                ],
            )
        )
    return out


def inputs(topo: Topology, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = topo.n_connectors
    demand = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(1, 60, n))
    weight = np.where(rng.random(n) < 0.1, 2.0, 1.0)
    capped = rng.random(topo.n_sites) < 0.1
    ub = topo.b_import.copy()
    roots = topo.site_root_row[capped]
    ub[roots] = rng.uniform(5, 40, len(roots))
    return {"demand_kw": demand, "weight": weight, "row_upper": ub}


# ---- baseline: per-site Python loop ------------------------------------------------------------


def baseline(topo: Topology, demand: np.ndarray, weight: np.ndarray, ub: np.ndarray) -> np.ndarray:
    """The same allocation, one site at a time, in plain Python over lists."""
    A = topo.A
    indptr, indices, data = A.indptr.tolist(), A.indices.tolist(), A.data.tolist()
    out = [0.0] * topo.n_connectors
    pmin, pmax = topo.p_min_kw.tolist(), topo.p_max_kw.tolist()
    d, w, b = demand.tolist(), weight.tolist(), np.maximum(ub, 0).tolist()
    for s in range(topo.n_sites):
        c0, c1 = int(topo.site_conn_ptr[s]), int(topo.site_conn_ptr[s + 1])
        r0, r1 = int(topo.site_row_ptr[s]), int(topo.site_row_ptr[s + 1])
        rows = [
            (b[r], [(indices[k], data[k]) for k in range(indptr[r], indptr[r + 1])])
            for r in range(r0, r1)
        ]
        conns = list(range(c0, c1))
        lower = {c: pmin[c] if d[c] > 0 else 0.0 for c in conns}
        upper = {c: min(max(d[c], pmin[c]), pmax[c]) if d[c] > 0 else 0.0 for c in conns}
        admitted = _admit_site(conns, rows, lower, d, w)
        for c in conns:
            if c not in admitted:
                lower[c] = upper[c] = 0.0
        for c, x in _fill_site(conns, rows, lower, upper, w).items():
            out[c] = x
    return np.asarray(out)


def _admit_site(
    conns: list[int], rows: list[Any], lower: dict[int, float], d: list[float], w: list[float]
) -> set[int]:
    rank = {c: i for i, c in enumerate(sorted(conns, key=lambda c: (-w[c], c)))}
    cand = {c for c in conns if d[c] > 0}
    while True:
        drop = set()
        for ub, entries in rows:
            load = sum(a * lower[c] for c, a in entries if c in cand)
            if load > ub + 1e-9 * (1 + (ub if math.isfinite(ub) else 0)):
                members = [c for c, _ in entries if c in cand and lower[c] > 0]
                drop.add(max(members, key=lambda c: rank[c]))
        if not drop:
            break
        cand -= drop
    dropped = sorted((c for c in conns if d[c] > 0 and c not in cand), key=lambda c: rank[c])
    if dropped:
        slack = {}
        for i, (ub, entries) in enumerate(rows):
            used = sum(a * lower[c] for c, a in entries if c in cand)
            slack[i] = ub + 1e-9 * (1 + (ub if math.isfinite(ub) else 0)) - used
        cum = dict.fromkeys(slack, 0.0)
        ok = set()
        for c in dropped:
            fits = True
            for i, (_, entries) in enumerate(rows):
                for cc, a in entries:
                    if cc == c:
                        cum[i] += a * lower[c]
                        fits &= cum[i] <= slack[i]
            if fits:
                ok.add(c)
        cand |= ok
    return cand


def _fill_site(
    conns: list[int],
    rows: list[Any],
    lower: dict[int, float],
    upper: dict[int, float],
    w: list[float],
) -> dict[int, float]:
    x = dict(lower)
    frozen = {c for c in conns if upper[c] <= lower[c] * (1 + 1e-9) + 1e-12}
    t = 0.0
    while len(frozen) < len(conns):
        live = [c for c in conns if c not in frozen]
        floor = {c for c in live if w[c] * t < lower[c] * (1 - 1e-12)}
        events = []
        for c in live:
            events.append(lower[c] / w[c] if c in floor else upper[c] / w[c])
        tight_level = math.inf
        for ub, entries in rows:
            fixed = sum(a * (x[c] if (c in frozen or c in floor) else 0.0) for c, a in entries)
            slope = sum(a * w[c] for c, a in entries if c in live and c not in floor)
            if slope > 0:
                tight_level = min(tight_level, max((ub - fixed) / slope, t))
        t = min(min(events), tight_level)
        for c in live:
            if c not in floor:
                x[c] = w[c] * t
        for c in live:
            if c not in floor and upper[c] / w[c] <= t * (1 + 1e-9) + 1e-12:
                x[c] = upper[c]
                frozen.add(c)
        if tight_level <= t * (1 + 1e-9) + 1e-12:
            for ub, entries in rows:
                load = sum(a * x[c] for c, a in entries)
                if load >= ub - 1e-9 * (1 + abs(ub)) and math.isfinite(ub):
                    for c, _ in entries:
                        if c not in frozen:
                            x[c] = min(max(w[c] * t, lower[c]), upper[c])
                            frozen.add(c)
    return x


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    n_sites = 10_000
    t0 = time.perf_counter()
    topo = compile_topology(fleet(n_sites))
    compile_ms = (time.perf_counter() - t0) * 1000
    kw = inputs(topo)
    res = allocate(topo, **kw)
    ours = median_ms(lambda: allocate(topo, **kw), repeats=15, warmup=2)
    rss = peak_rss_mb()
    runs: list[np.ndarray] = []
    base_ms = median_ms(
        lambda: runs.append(baseline(topo, kw["demand_kw"], kw["weight"], kw["row_upper"])),
        repeats=3,
        warmup=0,
    )
    base = runs[0]
    over = topo.violation(res.p_kw, upper=np.maximum(kw["row_upper"], 0))
    emit(
        {
            "benchmark": "allocator",
            "sites": n_sites,
            "connectors": topo.n_connectors,
            "rows": topo.n_rows,
            "nnz": int(topo.A.nnz),
            "compile_ms": round(compile_ms, 1),
            "median_ms": round(ours, 2),
            "baseline_median_ms": round(base_ms, 1),
            "speedup": round(base_ms / ours, 1),
            "iterations": res.iterations,
            "shed_connectors": int(res.shed.sum()),
            "max_abs_diff_vs_baseline_kw": float(np.abs(res.p_kw - base).max()),
            "max_row_violation": float(over.max()),
            "peak_rss_mb": round(rss, 1),
        },
        as_json=args.json,
    )


if __name__ == "__main__":
    main()
