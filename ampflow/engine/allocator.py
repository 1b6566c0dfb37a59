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
Sites are independent, so each site has its own water level and all sites advance together, with
sparse matrix-vector products and segment reductions; there is no Python loop over sites or
connectors. At level ``t`` connector ``i`` holds ``clip(w_i t, lower_i, upper_i)``, so each row's
load is a nondecreasing piecewise-linear function of its site's level, and a site's next
bottleneck is the level at which its first row becomes tight. Each iteration evaluates every site
at a candidate level (loads and slopes, two products):

* if every row fits, the level moves up to the candidate and the rows' tangents give the next
  crossing. When no floor or cap lies before it, the crossing is exact: it is the bottleneck, the
  connectors on the rows tight there are frozen, and the tangents without them give the next
  candidate at once. Otherwise the crossing is the next candidate (a Newton step over the floors
  and caps in between).
* if a row is over, the tangents of the rows that are over give a candidate below it (repeated
  while it progresses), else the site falls back to a level known to fit: the crossing when only
  caps lie before it (they only slow the load down) or the next floor.

Only the rows that can bind (their load with every connector at its cap exceeds the bound) and
the connectors on them take part, and they are compacted as connectors freeze. A site needs about
as many iterations as it has bottlenecks; admission works on the same rows.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from ampflow.engine.errors import ProblemError
from ampflow.engine.topology import Topology

__all__ = ["Allocation", "AllocatorState", "allocate"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

_REL_TOL = 1e-9
_BIG = 1e300
"""Stands for "none" (no floor or cap ahead): finite, so masks can apply by multiplication."""
_COMPACT = 0.5
"""Compact the working set once fewer than this share of its connectors still rise..."""
_SMALL = 2048
"""... unless it is this small: then a compaction costs more than it saves."""


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
    # min/max propagate NaN, so one reduction each checks the whole array.
    if n_conn and not (demand.min() >= 0 and np.isfinite(demand.max())):
        raise ProblemError(
            _first_bad("demand_kw", demand, (demand < 0) | ~np.isfinite(demand), ">= 0")
        )
    w = np.ones(n_conn) if weight is None else _vector("weight", weight, n_conn)
    if n_conn and not (w.min() > 0 and np.isfinite(w.max())):
        raise ProblemError(_first_bad("weight", w, ~(w > 0) | ~np.isfinite(w), "finite and > 0"))
    ub = topology.b_import if row_upper is None else _vector("row_upper", row_upper, n_rows)
    if n_rows and np.isnan(ub.min()):
        raise ProblemError(_first_bad("row_upper", ub, np.isnan(ub), "a number (inf for none)"))
    ub = np.maximum(ub, 0.0)
    if state is None:
        state = AllocatorState.initial(n_conn)
    elif state.waiting_ticks.shape != (n_conn,) or state.credit.shape != (n_conn,):
        raise ProblemError(
            f"state: arrays must have shape ({n_conn},), got {state.waiting_ticks.shape}"
        )

    wants = demand > 0
    lower = topology.p_min_kw * wants
    upper = np.minimum(np.maximum(demand, topology.p_min_kw), topology.p_max_kw) * wants
    p_kw, admitted, iterations = _solve(topology, lower, upper, wants, w, ub, state.credit)
    shed = wants & ~admitted
    waiting = (state.waiting_ticks + 1) * shed
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
    w_wanting = np.bincount(site, w * wants, n)
    n_served = np.bincount(site, served, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(w_wanting > 0, n_served / w_wanting, 0.0)
    out: FloatArray = share.take(site)
    out *= w
    out += credit
    out -= served
    np.copyto(out, 0.0, where=~wants)
    return out


def _solve(
    topology: Topology,
    lower: FloatArray,
    upper: FloatArray,
    wants: BoolArray,
    w: FloatArray,
    ub: FloatArray,
    credit: FloatArray,
) -> tuple[FloatArray, BoolArray, int]:
    """Admission, then progressive filling; returns the limits, the admitted and the iterations.

    Both work on the rows that can bind only: a row whose load stays within its bound with every
    connector at its cap never stops anyone, and never overloads with minimums either.
    """
    admitted = wants.copy()
    live = upper > lower * (1 + _REL_TOL) + 1e-12
    x = np.where(live, upper, lower)
    work = _Work.build(topology, lower, upper, w, ub, live)
    if work is None:
        return x, admitted, 0
    shed = work.conn.take(work.admit(credit.take(work.conn)))
    admitted[shed] = False
    x[shed] = 0.0
    work.prepare()
    iterations = 0
    max_iterations = 2 * (len(x) + topology.n_rows) + 10
    while work.n_rising:
        iterations += 1
        work.step()
        if iterations > max_iterations:
            raise AssertionError("allocator did not converge; please report this instance")
        if work.n_rising < _COMPACT * len(work.conn) and len(work.conn) > _SMALL:
            compacted = work.compact(x)
            if compacted is None:
                return x, admitted, iterations
            work = compacted
    x[work.conn] = work.up
    return x, admitted, iterations


@dataclass(slots=True, eq=False)
class _Work:
    """The rows that can still bind and the connectors on them (internal and mutable).

    Rows and connectors stay sorted by site; ``rptr`` gives each site's first row, ``rcount`` and
    ``ccount`` its numbers of rows and connectors. A connector that no longer rises is *pinned*
    (``live`` false): ``lo = up`` = its value and ``lo_w = up_w = _BIG``, so it never counts as a
    floor or cap still ahead. A connector past its cap needs no pinning: at any higher level it
    holds its cap. ``res`` is each row's bound less the load of connectors dropped at earlier
    compactions, ``rlim`` the same plus its tolerance.

    Filling evaluates every site at a candidate level (:meth:`step`). Per site: ``level`` (every
    row fits there), ``cand`` (the level to evaluate next), ``safe`` (a level known to fit, to
    fall back on), ``tried`` (the candidate is already a retry from above) and ``maxcap`` (a level
    where every connector is at its cap). ``rising`` marks the connectors still rising (neither
    pinned nor at their cap) and ``n_rising`` counts them.
    """

    conn: IntArray
    A: sp.csr_array
    res: FloatArray
    rlim: FloatArray
    rsite: IntArray
    rptr: IntArray
    rcount: IntArray
    csite: IntArray
    ccount: IntArray
    lo: FloatArray
    up: FloatArray
    w: FloatArray
    lo_w: FloatArray
    up_w: FloatArray
    live: BoolArray
    level: FloatArray
    cand: FloatArray
    safe: FloatArray
    tried: BoolArray
    maxcap: FloatArray
    rising: BoolArray
    n_rising: int

    @classmethod
    def build(
        cls,
        topology: Topology,
        lower: FloatArray,
        upper: FloatArray,
        w: FloatArray,
        ub: FloatArray,
        live: BoolArray,
    ) -> _Work | None:
        """The rows that can bind and the connectors that want power on them.

        Connectors that do not rise (demand at the minimum) are pinned at their minimum.
        """
        full = _int32(topology)
        rows = np.flatnonzero(full @ upper > ub)
        if len(rows) == 0:
            return None
        A, cols = _select(full, rows, upper > 0, topology.n_connectors)
        sites, csite, rsite, cptr, rptr = _sites(
            topology.connector_site.take(cols), topology.row_site.take(rows), topology.n_sites
        )
        rising = live.take(cols)
        lo, wc = lower.take(cols), w.take(cols)
        up = np.where(rising, upper.take(cols), lo)
        res = ub.take(rows)
        n = len(sites)
        return cls(
            conn=cols,
            A=A,
            res=res,
            rlim=res + _tol(res),
            rsite=rsite,
            rptr=rptr,
            rcount=np.diff(rptr, append=len(rows)),
            csite=csite,
            ccount=np.diff(cptr, append=len(cols)),
            lo=lo,
            up=up,
            w=wc,
            lo_w=np.where(rising, lo / wc, _BIG),
            up_w=np.where(rising, up / wc, _BIG),
            live=rising,
            level=np.zeros(n),
            cand=np.zeros(n),
            safe=np.zeros(n),
            tried=np.zeros(n, dtype=bool),
            maxcap=np.zeros(n),
            rising=rising,
            n_rising=0,
        )

    def admit(self, credit: FloatArray) -> IntArray:
        """Shed the connectors whose minimums do not fit; returns them, pinned at 0.

        Where minimums overload a row, the lowest-ranked sheddable connector of every such row is
        shed, until none is overloaded; then shed connectors that still fit are re-admitted in
        rank order. Rank: higher weight first, then more fair-share credit, then column order.
        """
        over = np.flatnonzero(self.A @ self.lo > self.rlim)
        if len(over) == 0:
            return over
        # Everything happens in the sites of the overloaded rows: their rows and connectors.
        sites = self.rsite.take(over)
        sites = sites[np.r_[True, sites[1:] != sites[:-1]]]
        in_site = np.zeros(len(self.level), dtype=bool)
        in_site[sites] = True
        conns = np.flatnonzero(self.per_conn(in_site))
        rows = _ranges(np.r_[self.rptr, len(self.res)], sites)
        A = _rows(self.A, rows)
        local = np.empty(len(self.conn), dtype=np.int32)
        local[conns] = np.arange(len(conns), dtype=np.int32)
        A = sp.csr_array(
            (A.data, local.take(A.indices.astype(np.intp)), A.indptr),
            shape=(len(rows), len(conns)),
        )
        local_row = np.empty(len(self.res), dtype=np.intp)
        local_row[rows] = np.arange(len(rows))
        lower, limit = self.lo.take(conns), self.rlim.take(rows)
        n = len(conns)
        order = np.lexsort((conns, -credit.take(conns), -self.w.take(conns)))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        cand = _shed(A, local_row.take(over), lower, limit, rank, order)
        # Re-admit shed connectors that still fit, in rank order. Each row counts the minimums of
        # every better-ranked shed connector, re-admitted or not, so the rule is conservative.
        slack = limit - A @ (lower * cand)
        col = A.indices.astype(np.intp)
        entry = np.flatnonzero(~cand.take(col))
        r = np.repeat(np.arange(len(rows)), np.diff(A.indptr)).take(entry)
        c = col.take(entry)
        by = np.argsort(r * n + rank.take(c), kind="stable")
        r, c = r.take(by), c.take(by)
        need = A.data.take(entry.take(by)) * lower.take(c)
        cum = np.cumsum(need)
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        before = np.repeat(cum.take(starts) - need.take(starts), np.diff(np.r_[starts, len(r)]))
        fails = (cum - before) > slack.take(r)
        failed = np.zeros(n, dtype=bool)
        failed[c[fails]] = True
        shed: IntArray = conns.take(np.flatnonzero(failed))
        self.lo[shed] = 0.0
        self.up[shed] = 0.0
        self.lo_w[shed] = _BIG
        self.up_w[shed] = _BIG
        self.live[shed] = False
        return shed

    def prepare(self) -> None:
        """Each site's first candidate: where a row is full if every connector rose from 0."""
        rising = self.live
        self.maxcap = self.site_max(self.up_w * rising)
        self.safe = self.site_min(self.lo_w)
        slope = self.A @ (self.w * rising)
        with np.errstate(divide="ignore", invalid="ignore"):
            guess = np.where(slope > 0, (self.res - self.A @ (self.lo * ~rising)) / slope, np.inf)
        guess = self.site_min(guess, self.rsite)
        self.cand = np.minimum(np.maximum(guess, self.safe), self.maxcap)
        self.rising = rising.copy()
        self.n_rising = int(np.count_nonzero(rising))

    def compact(self, x: FloatArray) -> _Work | None:
        """Keep the rows that can still bind and the connectors still rising on them.

        The others get their final value in ``x``: pinned ones their value, the rest their cap.
        """
        A = self.A
        rising = self.rising
        x[self.conn] = self.up
        fixed = A @ (self.up * ~rising)
        res = self.res - fixed
        rows = np.flatnonzero(A @ (self.up * rising) > np.maximum(res, 0.0))
        if len(rows) == 0:
            return None
        sub, cols = _select(A, rows, rising, len(rising))
        sites, csite, rsite, cptr, rptr = _sites(
            self.csite.take(cols), self.rsite.take(rows), len(self.level)
        )
        up_w = self.up_w.take(cols)
        return _Work(
            conn=self.conn.take(cols),
            A=sub,
            res=res.take(rows),
            rlim=self.rlim.take(rows) - fixed.take(rows),
            rsite=rsite,
            rptr=rptr,
            rcount=np.diff(rptr, append=len(rows)),
            csite=csite,
            ccount=np.diff(cptr, append=len(cols)),
            lo=self.lo.take(cols),
            up=self.up.take(cols),
            w=self.w.take(cols),
            lo_w=self.lo_w.take(cols),
            up_w=up_w,
            live=np.ones(len(cols), dtype=bool),
            level=self.level.take(sites),
            cand=self.cand.take(sites),
            safe=self.safe.take(sites),
            tried=self.tried.take(sites),
            maxcap=_group_max(up_w, csite, len(sites)),
            rising=np.ones(len(cols), dtype=bool),
            n_rising=len(cols),
        )

    def site_min(self, values: FloatArray, site: IntArray | None = None) -> FloatArray:
        """Each site's least value, over its connectors (or over rows, with ``rsite``)."""
        out = np.full(len(self.level), np.inf)
        np.minimum.at(out, self.csite if site is None else site, values)
        return out

    def site_max(self, values: FloatArray) -> FloatArray:
        """Each site's greatest value over its connectors."""
        return _group_max(values, self.csite, len(self.level))

    def per_conn(self, values: NDArray[Any]) -> NDArray[Any]:
        """A per-site array repeated for each of the site's connectors."""
        return np.repeat(values, self.ccount)

    def per_row(self, values: NDArray[Any]) -> NDArray[Any]:
        """A per-site array repeated for each of the site's rows."""
        return np.repeat(values, self.rcount)

    def step(self) -> None:
        """Evaluate every site at its candidate level and move on (see the module notes)."""
        cand = self.cand
        c = self.per_conn(cand)
        x = self.w * c
        np.maximum(x, self.lo, out=x)
        np.minimum(x, self.up, out=x)
        load = self.A @ x
        # A floor within the tolerance counts as left (the rows' tangents then rise early: safe);
        # a cap only once passed (a cap within the tolerance above the level still rises: a row
        # tight at the level must not end up over by it).
        left = self.lo_w <= self.per_conn(_up(cand))
        below = self.up_w > c
        lin = left & below
        slope = self.A @ (self.w * lin)
        gap = self._gap(load, slope)
        fits = np.ones(len(cand), dtype=bool)
        fits[self.rsite.take(np.flatnonzero(load > self.rlim))] = False
        first = self.site_min(gap, self.rsite) + cand
        m = np.maximum(first, cand)
        # The next floor and cap ahead of the candidate (_BIG where none): the crossing is exact
        # when it comes no later.
        floor_next = self.site_min(np.where(left, _BIG, self.lo_w))
        cap_next = self.site_min(np.where(below, self.up_w, _BIG))
        bottleneck = fits & (m <= _up(np.minimum(floor_next, cap_next)))
        level = np.where(fits, np.where(bottleneck, m, cand), self.level)
        ahead = m
        if bottleneck.any():
            frozen = self._freeze(
                level, gap <= self.per_row(np.where(bottleneck, _up(m) - cand, -np.inf))
            )
            if lin[frozen].any():
                # From the bottleneck on, without the frozen connectors: the next crossing.
                load += slope * self.per_row(np.where(bottleneck, m - cand, 0.0))
                lin[frozen] = False
                slope = self.A @ (self.w * lin)
                after = self.site_min(self._gap(load, slope), self.rsite) + level
                ahead = np.where(bottleneck, np.maximum(after, m), m)
        safe = np.minimum(ahead, floor_next)
        # Nothing left to stop the site before every connector reaches its cap: done.
        done = fits & (self.maxcap <= safe)
        retry = ~fits & (first > self.level) & (_up(first) < cand)
        self.cand = np.where(
            fits, np.minimum(ahead, self.maxcap), np.where(retry, first, self.safe)
        )
        self.safe = np.where(fits, safe, self.safe)
        self.tried = retry
        self.level = np.where(done, self.maxcap, level)
        self.rising = self.live & (self.up_w > self.per_conn(self.level))
        self.n_rising = int(np.count_nonzero(self.rising))

    def _gap(self, load: FloatArray, slope: FloatArray) -> FloatArray:
        """How far each row's site level can rise on with ``slope`` before the row is tight."""
        out: FloatArray = self.res - load
        with np.errstate(divide="ignore", invalid="ignore"):
            out /= slope
        np.copyto(out, np.inf, where=slope <= 0)
        return out

    def _freeze(self, level: FloatArray, tight: BoolArray) -> IntArray:
        """Pin the connectors on tight rows at ``level`` (at their cap if they are past it)."""
        rows = np.flatnonzero(tight)
        on = np.zeros(len(self.live), dtype=bool)
        on[self.A.indices.take(_ranges(self.A.indptr, rows)).astype(np.intp)] = True
        idx = np.flatnonzero(on & self.live)
        lvl = level.take(self.csite.take(idx))
        # At the level, or their floor (a cap just above the level, within the tolerance, would
        # put a tight row over by it).
        value = np.minimum(np.maximum(self.w.take(idx) * lvl, self.lo.take(idx)), self.up.take(idx))
        self.lo[idx] = value
        self.up[idx] = value
        self.lo_w[idx] = _BIG
        self.up_w[idx] = _BIG
        self.live[idx] = False
        return idx


_INT32: weakref.WeakKeyDictionary[Topology, sp.csr_array] = weakref.WeakKeyDictionary()


def _int32(topology: Topology) -> sp.csr_array:
    """``topology.A`` with 32-bit indices (faster products), cached per topology."""
    A = _INT32.get(topology)
    if A is None:
        A = topology.A
        if A.nnz < 2**31 and A.shape[1] < 2**31:
            A = sp.csr_array(
                (A.data, A.indices.astype(np.int32), A.indptr.astype(np.int32)), shape=A.shape
            )
        _INT32[topology] = A
    return A


def _select(
    A: sp.csr_array, rows: IntArray, keep: BoolArray, n_cols: int
) -> tuple[sp.csr_array, IntArray]:
    """Rows ``rows`` of ``A``, restricted to the columns ``keep`` (each row keeps one).

    Returns the submatrix, with 32-bit indices (faster products), and the columns that appear in
    it, in order: its columns.
    """
    sub = A[rows]
    old = sub.indices.astype(np.intp)
    keep_nnz = keep.take(old)
    indptr = np.zeros(len(rows) + 1, dtype=np.int32)
    indptr[1:] = np.cumsum(keep_nnz, dtype=np.int32).take(sub.indptr[1:] - 1)
    kept = np.flatnonzero(keep_nnz)
    old = old.take(kept)
    seen = np.zeros(n_cols, dtype=bool)
    seen[old] = True
    cols = np.flatnonzero(seen)
    new = np.empty(n_cols, dtype=np.int32)
    new[cols] = np.arange(len(cols), dtype=np.int32)
    out = sp.csr_array((sub.data.take(kept), new.take(old), indptr), shape=(len(rows), len(cols)))
    return out, cols


def _group_max(values: FloatArray, group: IntArray, n_groups: int) -> FloatArray:
    """Each group's greatest value (``ufunc.at`` beats ``reduceat`` on many small groups)."""
    out = np.full(n_groups, -np.inf)
    np.maximum.at(out, group, values)
    return out


def _sites(
    csite: IntArray, rsite: IntArray, n_sites: int
) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray]:
    """Renumber the sites that ``csite`` (sorted) uses; ``rsite`` must use the same ones.

    Returns the kept sites, the new site of each connector and row, and each site's first
    connector and first row.
    """
    sites = np.flatnonzero(np.bincount(csite, minlength=n_sites))
    new = np.empty(n_sites, dtype=np.int64)
    new[sites] = np.arange(len(sites))
    csite, rsite = new[csite], new[rsite]
    return sites, csite, rsite, _starts(csite, len(sites)), _starts(rsite, len(sites))


def _shed(
    A: sp.csr_array,
    over: IntArray,
    lower: FloatArray,
    limit: FloatArray,
    rank: IntArray,
    order: IntArray,
) -> BoolArray:
    """Drop the worst-ranked sheddable connector of every overloaded row until none is.

    ``over`` lists the rows that every minimum overloads; shedding only unloads rows, so no other
    row can become overloaded. Returns the connectors kept.
    """
    cand = np.ones(len(lower), dtype=bool)
    sheddable = lower > 0
    rows = _rows(A, over)
    col = rows.indices.astype(np.intp)
    while True:
        still = rows @ (lower * cand) > limit[over]
        if not still.any():
            return cand
        # The worst-ranked sheddable connector of each overloaded row (-1: none) is dropped.
        key = np.where(sheddable[col], rank[col], -1)
        worst = np.maximum.reduceat(key, rows.indptr[:-1])[still]
        cand[order[worst[worst >= 0]]] = False
        sheddable &= cand


def _rows(A: sp.csr_array, rows: IntArray) -> sp.csr_array:
    """Rows ``rows`` of ``A`` (each with an entry), with all its columns."""
    start = A.indptr.take(rows)
    length = A.indptr[rows + 1] - start
    indptr = np.zeros(len(rows) + 1, dtype=A.indptr.dtype)
    np.cumsum(length, out=indptr[1:])
    pos = np.repeat(start - indptr[:-1], length)
    pos += np.arange(len(pos))
    return sp.csr_array((A.data[pos], A.indices[pos], indptr), shape=(len(rows), A.shape[1]))


def _starts(group: IntArray, n_groups: int) -> IntArray:
    """First position of each group in an array sorted by group (every group non-empty)."""
    out = np.zeros(n_groups, dtype=np.int64)
    np.cumsum(np.bincount(group, minlength=n_groups)[:-1], out=out[1:])
    return out


def _ranges(ptr: NDArray[np.integer[Any]], groups: IntArray) -> IntArray:
    """Concatenated ``arange(ptr[g], ptr[g + 1])`` for each group ``g``."""
    start, length = ptr[groups], ptr[groups + 1] - ptr[groups]
    offset = np.cumsum(length) - length
    out: IntArray = np.repeat(start - offset, length) + np.arange(int(length.sum()))
    return out


def _tol(values: FloatArray) -> FloatArray:
    """The relative tolerance at each value (infinite values get the absolute one)."""
    out: FloatArray = _REL_TOL * (1.0 + np.abs(np.where(np.isfinite(values), values, 0.0)))
    return out


def _up(level: FloatArray) -> FloatArray:
    """A level (>= 0) widened by the relative tolerance, so that ties are taken together."""
    out: FloatArray = level + _REL_TOL * (1.0 + level)
    return out


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
