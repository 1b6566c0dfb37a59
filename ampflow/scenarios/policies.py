"""Charging policies behind one interface: the classic baselines and the engine's allocator.

``uncontrolled``
    Every plugged EV gets its connector's maximum; limits are ignored (the reference for harm).
``round-robin``
    ACN-Sim's round robin: in rotating queue order each EV is raised one rate increment at a time
    while the site stays feasible.
``edf``, ``llf``
    ACN-Sim's sorted greedy: EVs in order of earliest (estimated) departure or least laxity each
    get the highest rate that keeps every row of ``A @ p <= b`` feasible.
``allocator``
    The engine's real-time allocator alone: weighted max-min fair limits every step.

``mpc`` and ``offline`` (the horizon LP) are in :mod:`ampflow.scenarios.planning`; use
:func:`make_policy` to get any of them by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ampflow.engine.allocator import AllocatorState, allocate
from ampflow.engine.errors import AmpflowError
from ampflow.engine.topology import Topology
from ampflow.scenarios.simulator import Observation, Policy, PolicyContext

__all__ = [
    "POLICIES",
    "AllocatorPolicy",
    "EarliestDeadlineFirst",
    "LeastLaxityFirst",
    "RoundRobin",
    "Uncontrolled",
    "make_policy",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
_EPS = 1e-9


def _demand(obs: Observation, dt_s: int) -> FloatArray:
    """Charge power each plugged EV can use this step [kW]: its max, or what it still needs."""
    out: FloatArray = np.minimum(obs.p_max_kw, obs.energy_remaining_kwh / (dt_s / 3600))
    return out


class _Base:
    name = "base"
    needs_truth = False

    def reset(self, context: PolicyContext) -> None:
        self.ctx = context
        self.topo: Topology = context.topology

    def zeros(self) -> FloatArray:
        return np.zeros(self.topo.n_connectors)


class Uncontrolled(_Base):
    """Every plugged EV charges at full power; no limit is respected."""

    name = "uncontrolled"

    def decide(self, obs: Observation) -> FloatArray:
        p = self.zeros()
        p[obs.connector] = np.where(obs.energy_remaining_kwh > 0, obs.p_max_kw, 0.0)
        return p


class _Greedy(_Base):
    """Give EVs, in ``order()``, the most each can have while every row stays within bounds."""

    def reset(self, context: PolicyContext) -> None:
        super().reset(context)
        csc = self.topo.A_csc
        self.col_rows = [
            csc.indices[csc.indptr[j] : csc.indptr[j + 1]] for j in range(csc.shape[1])
        ]
        self.col_vals = [csc.data[csc.indptr[j] : csc.indptr[j + 1]] for j in range(csc.shape[1])]

    def order(self, obs: Observation, demand: FloatArray) -> IntArray:
        raise NotImplementedError

    def decide(self, obs: Observation) -> FloatArray:
        p = self.zeros()
        demand = _demand(obs, self.ctx.dt_s)
        slack = np.maximum(obs.row_upper, 0.0).copy()
        p_min = self.topo.p_min_kw
        for i in self.order(obs, demand):
            if demand[i] <= _EPS:
                continue
            j = int(obs.connector[i])
            rows, vals = self.col_rows[j], self.col_vals[j]
            pos = vals > 0
            room = np.min(slack[rows[pos]] / vals[pos], initial=np.inf)
            rate = min(max(demand[i], p_min[j]), self.topo.p_max_kw[j], room)
            if rate < p_min[j] - _EPS or rate <= _EPS:
                continue
            p[j] = rate
            slack[rows] -= vals * rate
        return p


class EarliestDeadlineFirst(_Greedy):
    """Sorted greedy by the (estimated) departure, earliest first."""

    name = "edf"

    def order(self, obs: Observation, demand: FloatArray) -> IntArray:
        return np.lexsort((obs.session, obs.departure_step))


class LeastLaxityFirst(_Greedy):
    """Sorted greedy by laxity: time left minus the time needed at full power, least first."""

    name = "llf"

    def order(self, obs: Observation, demand: FloatArray) -> IntArray:
        dt_h = self.ctx.dt_s / 3600
        needed = obs.energy_remaining_kwh / np.maximum(obs.p_max_kw, _EPS) / dt_h
        laxity = (obs.departure_step - obs.t) - needed
        return np.lexsort((obs.session, laxity))


class RoundRobin(_Base):
    """ACN-Sim's round robin: raise EVs one increment at a time, in rotating queue order.

    Parameters
    ----------
    increment_a : float
        Rate increment per round [A] (converted to kW per connector from its voltage and phases),
        at least a 32nd of the connector's maximum.
    """

    name = "round-robin"

    def __init__(self, *, increment_a: float = 1.0):
        self.increment_a = increment_a

    def reset(self, context: PolicyContext) -> None:
        super().reset(context)
        topo = self.topo
        # 1 A per round, as ACN-Sim does for its 32 A EVSEs; high-power (DC) connectors step by a
        # 32nd of their maximum, so that every connector reaches its max in at most 32 rounds.
        self.step_kw = np.maximum(
            self.increment_a * topo.voltage_v * topo.phases / 1000.0, topo.p_max_kw / 32
        )
        self.queue_offset = 0

    def decide(self, obs: Observation) -> FloatArray:
        topo = self.topo
        p = self.zeros()
        n = len(obs)
        if n == 0:
            return p
        demand = _demand(obs, self.ctx.dt_s)
        conn = obs.connector
        cap = np.where(
            demand > _EPS,
            np.minimum(np.maximum(demand, topo.p_min_kw[conn]), topo.p_max_kw[conn]),
            0.0,
        )
        # Rotate the queue each step so that no EV is always first.
        queue = np.roll(np.arange(n), -(self.queue_offset % n))
        self.queue_offset += 1
        rate = np.zeros(n)
        active = cap > _EPS
        ub = np.maximum(obs.row_upper, 0.0)
        A = topo.A[:, conn]
        while active.any():
            first = rate == 0
            step = np.maximum(self.step_kw[conn], 1e-3)
            inc = np.where(first, np.maximum(topo.p_min_kw[conn], step), step)
            inc = np.where(active, np.minimum(inc, cap - rate), 0.0)
            trial = rate + inc
            if np.all(A @ trial <= ub + _EPS):
                rate = trial
                active &= rate < cap - _EPS
                continue
            # Some row would overflow: raise one EV at a time, in queue order.
            for i in queue:
                if not active[i]:
                    continue
                rate[i] += inc[i]
                if np.all(A @ rate <= ub + _EPS):
                    active[i] = rate[i] < cap[i] - _EPS
                else:
                    rate[i] -= inc[i]
                    active[i] = False
        p[conn] = rate
        return p


class AllocatorPolicy(_Base):
    """The engine's real-time allocator alone, every step; EVs ask for what they can use."""

    name = "allocator"

    def reset(self, context: PolicyContext) -> None:
        super().reset(context)
        self.state = AllocatorState.initial(self.topo.n_connectors)

    def decide(self, obs: Observation) -> FloatArray:
        demand = self.zeros()
        demand[obs.connector] = _demand(obs, self.ctx.dt_s)
        res = allocate(self.topo, demand, row_upper=obs.row_upper, state=self.state)
        self.state = res.state
        return res.p_kw


POLICIES: tuple[str, ...] = (
    "uncontrolled",
    "round-robin",
    "edf",
    "llf",
    "allocator",
    "mpc",
    "offline",
)


def make_policy(name: str, **params: Any) -> Policy:
    """A policy by name (see :data:`POLICIES`), with its keyword parameters.

    Examples
    --------
    >>> make_policy("edf").name
    'edf'
    """
    from ampflow.scenarios.planning import MPC, Offline

    classes: dict[str, Any] = {
        "uncontrolled": Uncontrolled,
        "round-robin": RoundRobin,
        "edf": EarliestDeadlineFirst,
        "llf": LeastLaxityFirst,
        "allocator": AllocatorPolicy,
        "mpc": MPC,
        "offline": Offline,
    }
    if name not in classes:
        raise AmpflowError(f"policy: expected one of {list(POLICIES)}, got {name!r}")
    try:
        policy: Policy = classes[name](**params)
    except TypeError as exc:
        raise AmpflowError(f"policy {name!r}: bad parameters {params!r} ({exc})") from exc
    return policy
