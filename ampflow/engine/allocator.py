"""Real-time allocator: weighted max-min fair connector limits under ``A @ p <= b``.

Every tick the control loop asks: given what each EV can take now, how much may each connector
draw so that no node or phase is overloaded? The answer is the weighted max-min fair allocation
(progressive filling): every connector's power rises at a rate proportional to its weight until it
reaches its own demand or one of its rows becomes tight; then it is frozen and the others go on.

Minimum current
---------------
AC charging cannot go below a minimum current (6 A in IEC 61851), so a connector gets either 0 or
at least its minimum. When the minimums do not all fit, the connectors are ranked by weight and
then by a fair-share credit, and the lowest-ranked are shed until the rest fit. The credit is
returned in :class:`AllocatorState` and passed back in at the next tick, so shed connectors rise in
rank and the allocator rotates fairly over ticks, with no hidden state.

Vectorisation
-------------
Sites are independent, so each site has its own water level and all sites advance together; each
iteration handles the next event of every site at once (several events per site when they cannot
interact), with sparse matrix-vector products and segment reductions. There is no Python loop over
sites or connectors; the number of iterations is the number of distinct bottleneck levels in the
busiest site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ampflow.engine.errors import ProblemError
from ampflow.engine.topology import Topology

__all__ = ["Allocation", "AllocatorState", "allocate"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

_REL_TOL = 1e-9


@dataclass(frozen=True, slots=True)
class AllocatorState:
    """What the allocator carries from one tick to the next.

    Attributes
    ----------
    waiting_ticks : ndarray of int, shape (n_connectors,)
        Consecutive ticks each connector wanted power and got none.
    credit : ndarray, shape (n_connectors,)
        Fair-share credit for rotation: each tick, every connector that wants power earns its
        site's share of the served slots (served / wanting) times its weight share, and each
        served connector pays one slot. Within a site the credits sum to zero, so over many
        ticks every connector is served in proportion to its weight.
    """

    waiting_ticks: IntArray
    credit: FloatArray

    @classmethod
    def initial(cls, n_connectors: int) -> AllocatorState:
        """The state before the first tick: nobody has waited."""
        return cls(np.zeros(n_connectors, dtype=np.int64), np.zeros(n_connectors))


@dataclass(frozen=True, slots=True)
class Allocation:
    """Result of one allocation.

    Attributes
    ----------
    p_kw : ndarray, shape (n_connectors,)
        Limit for each connector [kW]; 0 or between its minimum and its demand.
    shed : ndarray of bool, shape (n_connectors,)
        Connectors that wanted power but got none because the minimums did not all fit.
    state : AllocatorState
        Pass it to the next call.
    iterations : int
        Number of filling iterations (a measure of the bottleneck structure).
    """

    p_kw: FloatArray
    shed: BoolArray
    state: AllocatorState
    iterations: int


def allocate(
    topology: Topology,
    demand_kw: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    row_upper: ArrayLike | None = None,
    state: AllocatorState | None = None,
) -> Allocation:
    """Weighted max-min fair connector limits for one tick.

    Parameters
    ----------
    topology : Topology
    demand_kw : array_like, shape (n_connectors,)
        The most each connector's EV can take now [kW]; 0 where nothing is plugged in or the EV is
        full. It is clipped to the connector's maximum; a positive demand below the connector's
        minimum is raised to the minimum (the limit must allow charging at all).
    weight : array_like, shape (n_connectors,), optional
        Priority weights, > 0 (default 1). A connector of weight 2 rises twice as fast as one of
        weight 1, and is admitted first when minimums do not fit.
    row_upper : array_like, shape (n_rows,), optional
        Effective import bound of each row [kW or A], with caps applied and background load
        subtracted (see :meth:`Topology.row_upper`); default ``topology.b_import``. A negative bound
        (background alone over the limit) allows nothing on that row.
    state : AllocatorState, optional
        The state returned by the previous tick.

    Returns
    -------
    Allocation

    Raises
    ------
    ProblemError
        If an input has the wrong shape or holds NaN, negative demand or non-positive weights.

    Examples
    --------
    >>> from ampflow.engine.topology import ChargerSpec, SiteSpec, compile_topology
    >>> site = SiteSpec("s", import_kw=30, chargers=[
    ...     ChargerSpec("a", "s", max_kw=22), ChargerSpec("b", "s", max_kw=22),
    ...     ChargerSpec("c", "s", max_kw=22)])
    >>> allocate(compile_topology([site]), [22, 5, 22]).p_kw.tolist()
    [12.5, 5.0, 12.5]
    """
    n_conn, n_rows = topology.n_connectors, topology.n_rows
    demand = _vector("demand_kw", demand_kw, n_conn)
    if np.any(demand < 0) or not np.all(np.isfinite(demand)):
        raise ProblemError(
            _first_bad("demand_kw", demand, (demand < 0) | ~np.isfinite(demand), ">= 0")
        )
    w = np.ones(n_conn) if weight is None else _vector("weight", weight, n_conn)
    if np.any(~(w > 0)) or not np.all(np.isfinite(w)):
        raise ProblemError(_first_bad("weight", w, ~(w > 0) | ~np.isfinite(w), "finite and > 0"))
    ub = topology.b_import if row_upper is None else _vector("row_upper", row_upper, n_rows)
    if np.any(np.isnan(ub)):
        raise ProblemError(_first_bad("row_upper", ub, np.isnan(ub), "a number (inf for none)"))
    ub = np.maximum(ub, 0.0)
    if state is None:
        state = AllocatorState.initial(n_conn)
    elif state.waiting_ticks.shape != (n_conn,) or state.credit.shape != (n_conn,):
        raise ProblemError(
            f"state: arrays must have shape ({n_conn},), got {state.waiting_ticks.shape}"
        )

    wants = demand > 0
    lower = np.where(wants, topology.p_min_kw, 0.0)
    upper = np.where(wants, np.clip(demand, topology.p_min_kw, topology.p_max_kw), 0.0)
    admitted = _admit(topology, lower, ub, wants, w, state.credit)
    p_kw, iterations = _fill(
        topology, np.where(admitted, lower, 0.0), np.where(admitted, upper, 0.0), w, ub
    )
    shed = wants & ~admitted
    waiting = np.where(shed, state.waiting_ticks + 1, 0)
    return Allocation(
        p_kw,
        shed,
        AllocatorState(waiting, _credit(topology, state.credit, wants, admitted, w)),
        iterations,
    )


def _credit(
    topology: Topology, credit: FloatArray, wants: BoolArray, served: BoolArray, w: FloatArray
) -> FloatArray:
    """Earn the site's served share in proportion to weight; pay one slot when served."""
    site = topology.connector_site
    n = topology.n_sites
    w_wanting = np.bincount(site, np.where(wants, w, 0.0), n)
    n_served = np.bincount(site, served.astype(np.float64), n)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(w_wanting > 0, n_served / w_wanting, 0.0)
    out: FloatArray = np.where(wants, credit + w * share[site] - served, 0.0)
    return out


def _admit(
    topology: Topology,
    lower: FloatArray,
    ub: FloatArray,
    wants: BoolArray,
    w: FloatArray,
    credit: FloatArray,
) -> BoolArray:
    """Choose the connectors whose minimums fit: shed the lowest-ranked from overloaded rows."""
    A = topology.A
    n = topology.n_connectors
    # Rank: higher weight first, then more fair-share credit, then column order. 0 = best.
    order = np.lexsort((np.arange(n), -credit, -w))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    cand = wants.copy()
    sheddable = cand & (lower > 0)
    tol = _tol(ub)
    while True:
        over = np.flatnonzero(A @ (lower * cand) > ub + tol)
        if len(over) == 0:
            break
        sub = A[over]
        key = np.where(sheddable[sub.indices], rank[sub.indices], -1)
        worst = np.maximum.reduceat(key, sub.indptr[:-1])
        cand[order[worst[worst >= 0]]] = False
        sheddable &= cand
    dropped = np.flatnonzero(wants & ~cand)
    if len(dropped) == 0:
        return cand
    # Re-admit dropped connectors that still fit, in rank order. Each row counts the minimums of
    # every better-ranked dropped connector, re-admitted or not, so the rule is conservative.
    slack = ub + tol - A @ (lower * cand)
    coo = topology.A_csc[:, dropped].tocoo()
    r, j = coo.coords
    by = np.lexsort((rank[dropped[j]], r))
    r, j = r[by], j[by]
    need = coo.data[by] * lower[dropped[j]]
    cum = np.cumsum(need)
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    before = np.repeat(cum[starts] - need[starts], np.diff(np.r_[starts, len(r)]))
    fails = (cum - before) > slack[r]
    ok = np.bincount(j[fails], minlength=len(dropped)) == 0
    cand[dropped[ok]] = True
    return cand


def _fill(
    topology: Topology,
    lower: FloatArray,
    upper: FloatArray,
    w: FloatArray,
    ub: FloatArray,
) -> tuple[FloatArray, int]:
    """Progressive filling with floors ``lower`` and caps ``upper``, one water level per site.

    Each connector is *frozen* (its value fixed), at its *floor* (the level ``w*t`` is still below
    ``lower``) or *linear* (its value is ``w*t``). Per site, the next event is the smallest of: a
    linear connector reaching its cap, a floor connector being reached by the level, or a row
    becoming tight. Caps that come before any other event are taken in one batch, since until
    then slopes only fall and no row can tighten.
    """
    A = topology.A
    site_of_conn, site_of_row = topology.connector_site, topology.row_site
    row_tol = _tol(ub)
    x = lower.copy()
    live = upper > lower * (1 + _REL_TOL) + 1e-12
    floor = live & (lower > 0)
    lin = live & ~floor
    level = np.zeros(topology.n_sites)
    row_starts = topology.site_row_ptr[:-1]
    conn_min = _SiteMin(topology)
    iterations = 0
    max_iterations = 2 * (len(x) + topology.n_rows) + 10
    with np.errstate(divide="ignore", invalid="ignore"):
        while floor.any() or lin.any():
            iterations += 1
            base = np.where(lin, 0.0, x)
            slope = A @ np.where(lin, w, 0.0)
            t_row = np.where(slope > 0, (ub - A @ base) / slope, np.inf)
            t_row = np.maximum(t_row, level[site_of_row])
            m_row = np.minimum.reduceat(t_row, row_starts)
            cap_lvl = np.where(lin, upper / w, np.inf)
            rel_lvl = np.where(floor, lower / w, np.inf)
            c_site = conn_min(cap_lvl)
            e_site = conn_min(rel_lvl)
            horizon = np.minimum(m_row, e_site)
            caps_first = c_site <= horizon
            # Jump: where a floor is next, try the level of the next other event at once. If the
            # exact load there fits every row of the site, nothing tightens on the way, so every
            # floor and cap below it is passed in this one iteration.
            jumped = np.zeros(len(level), dtype=bool)
            floor_first = ~caps_first & (e_site < m_row)
            if floor_first.any():
                jump = np.where(floor_first, np.minimum(m_row, c_site), -np.inf)
                jump_c = jump[site_of_conn]
                moving = (lin | floor) & floor_first[site_of_conn]
                x_try = np.where(moving, np.clip(w * jump_c, lower, upper), base)
                fits = A @ x_try <= ub + row_tol
                jumped = floor_first & np.logical_and.reduceat(fits, row_starts)
                moving &= jumped[site_of_conn]
                capped = moving & (upper / w <= _up(jump_c))
                x[capped] = upper[capped]
                lin &= ~capped
                floor &= ~capped
                passed = moving & floor & (rel_lvl <= _up(jump_c))
                floor &= ~passed
                lin |= passed
                level = np.where(jumped, jump, level)
                caps_first &= ~jumped
            # (a) caps before any other event: freeze them at their cap, all at once.
            hit = lin & caps_first[site_of_conn] & (cap_lvl <= _up(horizon)[site_of_conn])
            x[hit] = upper[hit]
            lin &= ~hit
            # (b) otherwise the next event is a row tightening and/or floors being reached.
            m = np.where(caps_first | jumped, -np.inf, horizon)
            row_event = ~caps_first & ~jumped & (m_row <= _up(e_site))
            tight = t_row <= np.where(row_event, _up(m_row), -np.inf)[site_of_row]
            m_conn = m[site_of_conn]
            if tight.any():
                freeze = (lin | floor) & (A.T @ tight.astype(np.float64) > 0)
                x[freeze] = np.clip(w[freeze] * m_conn[freeze], lower[freeze], upper[freeze])
                lin &= ~freeze
                floor &= ~freeze
            release = floor & (rel_lvl <= _up(m_conn))
            floor &= ~release
            lin |= release
            if iterations > max_iterations:
                raise AssertionError("allocator did not converge; please report this instance")
            level = np.where(caps_first, c_site, np.where(np.isfinite(m), m, level))
    return x, iterations


class _SiteMin:
    """Per-site minimum of a per-connector array (connectors are sorted by site)."""

    def __init__(self, topology: Topology) -> None:
        counts = np.diff(topology.site_conn_ptr)
        self.nonempty = np.flatnonzero(counts > 0)
        self.starts = topology.site_conn_ptr[:-1][self.nonempty]
        self.n_sites = topology.n_sites

    def __call__(self, values: FloatArray) -> FloatArray:
        out = np.full(self.n_sites, np.inf)
        if len(values):
            out[self.nonempty] = np.minimum.reduceat(values, self.starts)
        return out


def _tol(values: FloatArray) -> FloatArray:
    """The relative tolerance at each value (infinite values get the absolute one)."""
    out: FloatArray = _REL_TOL * (1.0 + np.abs(np.where(np.isfinite(values), values, 0.0)))
    return out


def _up(level: FloatArray) -> FloatArray:
    """A level widened by the relative tolerance, so that ties are taken together."""
    return level + _tol(level)


def _vector(name: str, value: ArrayLike, n: int) -> FloatArray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ProblemError(f"{name}: expected {n} numbers, got {value!r}") from exc
    if arr.shape != (n,):
        raise ProblemError(f"{name}: expected shape ({n},), got {arr.shape}")
    return arr


def _first_bad(name: str, values: FloatArray, bad: BoolArray, expected: str) -> str:
    i = int(np.flatnonzero(bad)[0])
    return f"{name}[{i}] must be {expected}, got {values[i].item():g}"
