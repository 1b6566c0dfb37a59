"""Hypothesis strategies: random capacity trees, phase wirings, demands, caps and sessions."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from ampflow.engine.topology import ChargerKind, ChargerSpec, NodeSpec, SiteSpec

PHASES = ("L1", "L2", "L3", "L1-L2", "L2-L3", "L3-L1")
ROTATIONS = ("RST", "RTS", "SRT", "STR", "TRS", "TSR")


def _limit(draw: st.DrawFn, low: float, high: float) -> float:
    return draw(st.one_of(st.just(math.inf), st.floats(low, high)))


def _phase_a(draw: st.DrawFn, low: float, high: float) -> tuple[float, float, float] | None:
    if draw(st.booleans()):
        return None
    a = st.floats(low, high)
    return (draw(a), draw(a), draw(a))


@st.composite
def sites(draw: st.DrawFn, *, max_sites: int = 3, max_chargers: int = 6) -> list[SiteSpec]:
    """Random sites: trees up to three levels deep, mixed AC 1-phase / 3-phase / DC chargers."""
    out = []
    for s in range(draw(st.integers(1, max_sites))):
        sid = f"site{s}"
        parents = [sid]
        nodes = []
        for n in range(draw(st.integers(0, 3))):
            nid = f"n{n}"
            nodes.append(
                NodeSpec(
                    nid,
                    draw(st.sampled_from(parents)),
                    import_kw=_limit(draw, 0, 120),
                    export_kw=draw(st.one_of(st.none(), st.floats(0, 60))),
                    phase_a=_phase_a(draw, 0, 160),
                )
            )
            parents.append(nid)
        chargers = []
        for c in range(draw(st.integers(1, max_chargers))):
            kind = draw(st.sampled_from([ChargerKind.AC, ChargerKind.AC, ChargerKind.DC]))
            phases = 3 if kind is ChargerKind.DC else draw(st.sampled_from([1, 3]))
            max_kw = draw(st.floats(4.5, 60 if kind is ChargerKind.DC else 22))
            chargers.append(
                ChargerSpec(
                    f"cp{c}",
                    draw(st.sampled_from(parents)),
                    max_kw=max_kw,
                    connectors=draw(st.integers(1, 2)),
                    kind=kind,
                    phases=phases,
                    phase=draw(st.sampled_from(PHASES)) if phases == 1 else None,
                    rotation=draw(st.sampled_from(ROTATIONS)),
                    min_a=draw(st.sampled_from([0.0, 6.0, 6.0])),
                    min_kw=draw(st.sampled_from([0.0, 0.0, 2.0])),
                    bidirectional=draw(st.booleans()),
                )
            )
        out.append(
            SiteSpec(
                sid,
                import_kw=draw(st.floats(0, 150)),
                export_kw=draw(st.floats(0, 50)),
                voltage_v=draw(st.sampled_from([230.0, 120.0])),
                phase_a=_phase_a(draw, 0, 250),
                nodes=nodes,
                chargers=chargers,
            )
        )
    return out


def vector(draw: st.DrawFn, n: int, low: float, high: float, zero_share: float = 0.2) -> np.ndarray:
    """A random non-negative vector with some exact zeros."""
    values = draw(st.lists(st.floats(low, high), min_size=n, max_size=n))
    zeros = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    return np.where(np.asarray(zeros) < zero_share, 0.0, np.asarray(values, dtype=float))
