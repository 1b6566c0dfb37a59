"""Reference model: the horizon LP of :mod:`ampflow.engine.scheduler`, written in Pyomo.

The fast path builds the LP with numpy index arithmetic and hands it to HiGHS in one call. This
module states the same LP the textbook way, one set, parameter, variable and constraint at a
time, so that it is easy to read, to extend (a new cost, a new constraint) and to solve with any
solver Pyomo can drive. It is deliberately independent of the scheduler's internals: the tests
check that both give the same optimal cost.

Sets
----
``SESSIONS``, ``STEPS``, ``SITES``, ``ROWS`` (rows of the topology's ``A``); ``WINDOW``, the
(session, step) pairs in which a session is plugged in; ``V2G`` and ``V2G_WINDOW`` for the
sessions that can discharge; ``ROW_STEPS``, the (row, step) pairs that some session loads.

Variables
---------
* ``charge[s, t] >= 0`` [kW] on ``WINDOW``, ``discharge[s, t] >= 0`` [kW] on ``V2G_WINDOW``;
* ``unmet[s]`` in ``[0, target[s]]`` [kWh]; ``soc[s, t]`` [kWh] on ``V2G_WINDOW``;
* ``grid_import[k, t], grid_export[k, t] >= 0`` [kW] for every site and step;
* ``peak[k] >= 0`` [kW], the peak above the sunk peak, when there is a demand charge.

Constraints
-----------
* ``topology[r, t]``: ``-row_lower[r, t] <= sum_c A[r, c] net[c, t] <= row_upper[r, t]``;
* ``energy[s]``: ``sum_t net[s, t] dt_h + unmet[s] == target[s]``;
* ``soc_balance[s, t]``: ``soc[s, t] == soc[s, t - 1] + net[s, t] dt_h`` (``soc0`` before the
  first step);
* ``site_balance[k, t]``: ``grid_import - grid_export == background + sum_s net[s, t]``;
* ``peak_def[k, t]``: ``peak[k] >= grid_import[k, t] - sunk_peak[k]``.

Here ``net = charge - discharge``. The objective is the sum of the named cost expressions
``energy_cost``, ``bias_cost``, ``degradation_cost``, ``unmet_cost`` and ``demand_cost``.

Conventions shared with the scheduler (see its module docstring): background load is taken off
the site root row's import bound and added to its export bound, and negative bounds are clipped
to 0; export is paid at ``min(export_price, import_price)``; a session is V2G only with
``p_discharge_max_kw > 0``, a bidirectional connector, a known ``soc_kwh`` and ``soc_max_kwh``,
and a non-empty window; a known SoC caps the target at ``soc_max - soc``; the SoC bounds are
widened to include the initial SoC.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyomo.environ as pyo
from numpy.typing import ArrayLike, NDArray
from pyomo.opt import TerminationCondition

from ampflow.engine.errors import ProblemError
from ampflow.engine.scheduler import ScheduleProblem, urgency_share

__all__ = ["ReferenceResult", "build_pyomo_model", "solve_pyomo"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class ReferenceResult:
    """Solution of the reference model.

    Attributes
    ----------
    objective : float
        Total cost of the plan, background energy included [currency]; NaN unless optimal.
    charge_kw, discharge_kw : ndarray, shape (n_sessions, n_steps)
        Planned power [kW]; zero outside each session's window, NaN unless optimal.
    unmet_kwh : ndarray, shape (n_sessions,)
        Target energy the plan does not deliver [kWh]; NaN unless optimal.
    termination : str
        The solver's termination condition, such as ``"optimal"`` or ``"infeasible"``.
    """

    objective: float
    charge_kw: FloatArray
    discharge_kw: FloatArray
    unmet_kwh: FloatArray
    termination: str


def build_pyomo_model(problem: ScheduleProblem) -> pyo.ConcreteModel:
    """Build the horizon LP of ``problem`` as a Pyomo model.

    Parameters
    ----------
    problem : ScheduleProblem

    Returns
    -------
    pyomo.environ.ConcreteModel
        Minimises ``model.cost``; see the module docstring for its sets, variables and
        constraints. Session, step, site and row indices are the positions used by ``problem``.

    Raises
    ------
    ProblemError
        If a price, background or bound array has the wrong shape or non-finite entries.
    """
    d = _Inputs.from_problem(problem)
    T, n_sites = d.T, problem.topology.n_sites
    m = pyo.ConcreteModel(name="ampflow_reference_schedule")

    # ---- sets ---------------------------------------------------------------------------------
    m.SESSIONS = pyo.Set(initialize=range(d.n), ordered=True)
    m.STEPS = pyo.Set(initialize=range(T), ordered=True)
    m.SITES = pyo.Set(initialize=range(n_sites), ordered=True)
    m.ROWS = pyo.Set(initialize=range(problem.topology.n_rows), ordered=True)
    window = [(s, t) for s in range(d.n) for t in range(d.start[s], d.stop[s])]
    m.WINDOW = pyo.Set(dimen=2, within=m.SESSIONS * m.STEPS, initialize=window, ordered=True)
    m.V2G = pyo.Set(within=m.SESSIONS, initialize=np.flatnonzero(d.v2g).tolist(), ordered=True)
    v2g_window = [(s, t) for (s, t) in window if d.v2g[s]]
    m.V2G_WINDOW = pyo.Set(dimen=2, within=m.WINDOW, initialize=v2g_window, ordered=True)
    m.SITE_SESSIONS = pyo.Set(
        m.SITES, initialize=lambda _m, k: np.flatnonzero(d.site == k).tolist(), ordered=True
    )
    row_terms = _row_terms(problem, window)
    m.ROW_STEPS = pyo.Set(
        dimen=2, within=m.ROWS * m.STEPS, initialize=sorted(row_terms), ordered=True
    )

    # ---- parameters ---------------------------------------------------------------------------
    m.dt_h = pyo.Param(initialize=d.dt_h)
    m.import_price = pyo.Param(m.SITES, m.STEPS, initialize=_table(d.price_import))
    m.export_price = pyo.Param(m.SITES, m.STEPS, initialize=_table(d.price_export))
    m.background = pyo.Param(m.SITES, m.STEPS, initialize=_table(d.background))
    m.row_upper = pyo.Param(m.ROWS, m.STEPS, initialize=_table(d.row_upper))
    m.row_lower = pyo.Param(m.ROWS, m.STEPS, initialize=_table(d.row_lower))
    m.sunk_peak = pyo.Param(m.SITES, initialize=_table(d.sunk_peak))
    m.target = pyo.Param(m.SESSIONS, initialize=_table(d.target))
    m.charge_max = pyo.Param(m.SESSIONS, initialize=_table(d.charge_max))
    m.discharge_max = pyo.Param(m.SESSIONS, initialize=_table(d.discharge_max))
    m.soc0 = pyo.Param(m.V2G, initialize={s: float(d.soc0[s]) for s in m.V2G})
    m.soc_min = pyo.Param(m.V2G, initialize={s: float(d.soc_min[s]) for s in m.V2G})
    m.soc_max = pyo.Param(m.V2G, initialize={s: float(d.soc_max[s]) for s in m.V2G})
    m.unmet_price = pyo.Param(m.SESSIONS, initialize=_table(d.unmet_price))
    m.early_bias = pyo.Param(m.STEPS, initialize=_table(d.early_bias))
    m.urgency_bias = pyo.Param(
        m.WINDOW, initialize={(s, t): float(d.urgency_bias[s, t]) for s, t in window}
    )
    wear = np.broadcast_to(
        np.asarray(problem.degradation_per_kwh, dtype=np.float64), (len(d.sunk_peak),)
    )
    m.degradation = pyo.Param(
        m.SESSIONS, initialize={s: float(wear[d.site[s]]) for s in m.SESSIONS}
    )
    m.demand_charge = pyo.Param(initialize=float(problem.demand_charge_per_kw))

    # ---- variables ----------------------------------------------------------------------------
    m.charge = pyo.Var(m.WINDOW, bounds=lambda m, s, t: (0.0, m.charge_max[s]))
    m.discharge = pyo.Var(m.V2G_WINDOW, bounds=lambda m, s, t: (0.0, m.discharge_max[s]))
    m.unmet = pyo.Var(m.SESSIONS, bounds=lambda m, s: (0.0, m.target[s]))
    m.soc = pyo.Var(m.V2G_WINDOW, bounds=lambda m, s, t: (m.soc_min[s], m.soc_max[s]))
    m.grid_import = pyo.Var(m.SITES, m.STEPS, within=pyo.NonNegativeReals)
    m.grid_export = pyo.Var(m.SITES, m.STEPS, within=pyo.NonNegativeReals)
    has_peak = problem.demand_charge_per_kw > 0
    if has_peak:
        m.peak = pyo.Var(m.SITES, within=pyo.NonNegativeReals)

    def net_rule(m: Any, s: int, t: int) -> Any:
        """Net power of session ``s`` at step ``t`` [kW], positive when charging."""
        if (s, t) in m.V2G_WINDOW:
            return m.charge[s, t] - m.discharge[s, t]
        return m.charge[s, t]

    m.net = pyo.Expression(m.WINDOW, rule=net_rule)

    # ---- constraints --------------------------------------------------------------------------
    def topology_rule(m: Any, r: int, t: int) -> Any:
        lower, upper = pyo.value(m.row_lower[r, t]), pyo.value(m.row_upper[r, t])
        if not (math.isfinite(lower) or math.isfinite(upper)):
            return pyo.Constraint.Skip
        load = sum(coef * m.net[s, t] for s, coef in row_terms[r, t])
        return (
            -lower if math.isfinite(lower) else None,
            load,
            upper if math.isfinite(upper) else None,
        )

    m.topology = pyo.Constraint(m.ROW_STEPS, rule=topology_rule)

    def energy_rule(m: Any, s: int) -> Any:
        delivered = sum(m.net[s, t] * m.dt_h for t in range(d.start[s], d.stop[s]))
        return delivered + m.unmet[s] == m.target[s]

    m.energy = pyo.Constraint(m.SESSIONS, rule=energy_rule)

    def soc_rule(m: Any, s: int, t: int) -> Any:
        before = m.soc0[s] if t == d.start[s] else m.soc[s, t - 1]
        return m.soc[s, t] == before + m.net[s, t] * m.dt_h

    m.soc_balance = pyo.Constraint(m.V2G_WINDOW, rule=soc_rule)

    def site_rule(m: Any, k: int, t: int) -> Any:
        sessions = sum(m.net[s, t] for s in m.SITE_SESSIONS[k] if (s, t) in m.WINDOW)
        return m.grid_import[k, t] - m.grid_export[k, t] == m.background[k, t] + sessions

    m.site_balance = pyo.Constraint(m.SITES, m.STEPS, rule=site_rule)

    if has_peak:

        def peak_rule(m: Any, k: int, t: int) -> Any:
            return m.peak[k] >= m.grid_import[k, t] - m.sunk_peak[k]

        m.peak_def = pyo.Constraint(m.SITES, m.STEPS, rule=peak_rule)

    # ---- objective ----------------------------------------------------------------------------
    m.energy_cost = pyo.Expression(
        expr=sum(
            m.dt_h * m.import_price[k, t] * m.grid_import[k, t]
            - m.dt_h * m.export_price[k, t] * m.grid_export[k, t]
            for k in m.SITES
            for t in m.STEPS
        )
    )
    m.bias_cost = pyo.Expression(
        expr=sum((m.early_bias[t] + m.urgency_bias[s, t]) * m.charge[s, t] for s, t in m.WINDOW)
    )
    m.degradation_cost = pyo.Expression(
        expr=sum(m.degradation[s] * m.discharge[s, t] * m.dt_h for s, t in m.V2G_WINDOW)
    )
    m.unmet_cost = pyo.Expression(expr=sum(m.unmet_price[s] * m.unmet[s] for s in m.SESSIONS))
    m.demand_cost = pyo.Expression(
        expr=sum(m.demand_charge * m.peak[k] for k in m.SITES) if has_peak else 0.0
    )
    m.cost = pyo.Objective(
        expr=m.energy_cost + m.bias_cost + m.degradation_cost + m.unmet_cost + m.demand_cost,
        sense=pyo.minimize,
    )
    return m


def solve_pyomo(problem: ScheduleProblem, *, solver: str = "appsi_highs") -> ReferenceResult:
    """Build the reference model and solve it with a Pyomo solver.

    Parameters
    ----------
    problem : ScheduleProblem
    solver : str, default "appsi_highs"
        Name for ``pyomo.environ.SolverFactory``; the default drives HiGHS through highspy.

    Returns
    -------
    ReferenceResult
        Values are read only when the solver reports an optimum; otherwise they are NaN and
        ``termination`` says why.

    Raises
    ------
    RuntimeError
        If the solver is not available.

    Examples
    --------
    >>> from ampflow.engine.scheduler import Sessions
    >>> from ampflow.engine.topology import ChargerSpec, SiteSpec, compile_topology
    >>> topo = compile_topology([SiteSpec("s", import_kw=11, chargers=[
    ...     ChargerSpec("a", "s", max_kw=11), ChargerSpec("b", "s", max_kw=11)])])
    >>> sessions = Sessions(connector=[0, 1], arrival_step=[0, 0], departure_step=[4, 4],
    ...                     e_target_kwh=[10, 10], p_max_kw=[11, 11])
    >>> res = solve_pyomo(ScheduleProblem(topo, sessions, n_steps=4, dt_s=3600,
    ...                                   import_price=[0.4, 0.1, 0.1, 0.4]))
    >>> res.termination, res.unmet_kwh.round(6).tolist()
    ('optimal', [0.0, 0.0])
    >>> res.charge_kw.sum(axis=0).round(6).tolist()  # the cheap hours are filled first
    [0.0, 11.0, 9.0, 0.0]
    """
    model = build_pyomo_model(problem)
    opt = pyo.SolverFactory(solver)
    if opt is None or not opt.available(exception_flag=False):
        raise RuntimeError(f"solver {solver!r} is not available to Pyomo")
    results = opt.solve(model, load_solutions=False)
    termination = results.solver.termination_condition
    n, T = len(problem.sessions), problem.n_steps
    if termination != TerminationCondition.optimal:
        return ReferenceResult(
            objective=math.nan,
            charge_kw=np.full((n, T), np.nan),
            discharge_kw=np.full((n, T), np.nan),
            unmet_kwh=np.full(n, np.nan),
            termination=str(termination),
        )
    model.solutions.load_from(results)
    charge = np.zeros((n, T))
    discharge = np.zeros((n, T))
    for s, t in model.WINDOW:
        charge[s, t] = pyo.value(model.charge[s, t])
    for s, t in model.V2G_WINDOW:
        discharge[s, t] = pyo.value(model.discharge[s, t])
    unmet = np.array([pyo.value(model.unmet[s]) for s in model.SESSIONS], dtype=np.float64)
    return ReferenceResult(
        objective=float(pyo.value(model.cost)),
        charge_kw=charge,
        discharge_kw=discharge,
        unmet_kwh=unmet,
        termination=str(termination),
    )


@dataclass(frozen=True)
class _Inputs:
    """The problem's data as plain arrays, with the scheduler's conventions applied."""

    T: int
    n: int
    dt_h: float
    price_import: FloatArray  # (n_sites, T) [currency/kWh]
    price_export: FloatArray  # (n_sites, T), min(export, import) [currency/kWh]
    background: FloatArray  # (n_sites, T) [kW]
    row_upper: FloatArray  # (n_rows, T), background taken off, >= 0 [kW or A]
    row_lower: FloatArray  # (n_rows, T), export magnitude, >= 0 [kW or A]
    sunk_peak: FloatArray  # (n_sites,) [kW]
    start: IntArray  # first step of each window
    stop: IntArray  # first step after it
    site: IntArray  # site of each session
    v2g: BoolArray
    target: FloatArray  # [kWh]
    charge_max: FloatArray  # [kW]
    discharge_max: FloatArray  # [kW], 0 for sessions that are not V2G
    soc0: FloatArray  # [kWh]
    soc_min: FloatArray  # widened to include soc0 [kWh]
    soc_max: FloatArray  # widened to include soc0 [kWh]
    unmet_price: FloatArray  # weight * penalty [currency/kWh]
    early_bias: FloatArray  # (T,) tie-break cost per kW of charge at each step [currency/kW]
    urgency_bias: FloatArray  # (n, T) the same per session, to its early departure [currency/kW]

    @classmethod
    def from_problem(cls, p: ScheduleProblem) -> _Inputs:
        topo, ses, T = p.topology, p.sessions, p.n_steps
        n_sites, n = topo.n_sites, len(ses)
        dt_h = p.dt_s / 3600.0
        price_import = _site_steps("import_price", p.import_price, n_sites, T)
        price_export = _site_steps("export_price", p.export_price, n_sites, T)
        background = _site_steps("background_kw", p.background_kw, n_sites, T)
        upper = _row_steps("row_upper", p.row_upper, topo.b_import, T)
        lower = _row_steps("row_lower", p.row_lower, topo.b_export, T)
        for k in range(n_sites):
            root = int(topo.site_root_row[k])
            upper[root] -= background[k]
            lower[root] += background[k]
        sunk = np.zeros(n_sites)
        if p.sunk_peak_kw is not None:
            sunk = np.asarray(p.sunk_peak_kw, dtype=np.float64)
            if sunk.shape != (n_sites,):
                raise ProblemError(f"sunk_peak_kw: expected shape ({n_sites},), got {sunk.shape}")

        start = np.clip(ses.arrival_step, 0, T)
        stop = np.maximum(np.clip(ses.departure_step, 0, T), start)
        soc_known = np.isfinite(ses.soc_kwh) & np.isfinite(ses.soc_max_kwh)
        bidirectional = topo.p_discharge_max_kw[ses.connector] > 0
        v2g = (ses.p_discharge_max_kw > 0) & bidirectional & soc_known & (stop > start)
        target = ses.e_target_kwh.copy()
        target[soc_known] = np.minimum(
            target[soc_known], np.maximum(ses.soc_max_kwh - ses.soc_kwh, 0.0)[soc_known]
        )
        soc0 = np.where(soc_known, ses.soc_kwh, 0.0)
        soc_min = np.where(np.isfinite(ses.soc_min_kwh), ses.soc_min_kwh, 0.0)
        soc_max = np.where(soc_known, ses.soc_max_kwh, 0.0)
        step_share = np.arange(T) / max(T - 1, 1)
        urgency = urgency_share(ses, np.repeat(np.arange(n), T), np.tile(np.arange(T), n))
        return cls(
            T=T,
            n=n,
            dt_h=dt_h,
            price_import=price_import,
            price_export=np.minimum(price_export, price_import),
            background=background,
            row_upper=np.maximum(upper, 0.0),
            row_lower=np.maximum(lower, 0.0),
            sunk_peak=sunk,
            start=start.astype(np.int64),
            stop=stop.astype(np.int64),
            site=topo.connector_site[ses.connector].astype(np.int64),
            v2g=v2g,
            target=target,
            charge_max=np.minimum(ses.p_max_kw, topo.p_max_kw[ses.connector]),
            discharge_max=np.where(
                v2g, np.minimum(ses.p_discharge_max_kw, topo.p_discharge_max_kw[ses.connector]), 0.0
            ),
            soc0=soc0,
            soc_min=np.minimum(soc_min, soc0),
            soc_max=np.maximum(soc_max, soc0),
            unmet_price=ses.weight * p.unmet_penalty_per_kwh,
            early_bias=p.early_bias_per_kwh * dt_h * step_share,
            urgency_bias=p.urgency_bias_per_kwh * dt_h * urgency.reshape(n, T),
        )


def _row_terms(
    problem: ScheduleProblem, window: list[tuple[int, int]]
) -> dict[tuple[int, int], list[tuple[int, float]]]:
    """For every (row, step) that some session loads: its sessions and their coefficients."""
    csc = problem.topology.A_csc
    terms: dict[tuple[int, int], list[tuple[int, float]]] = defaultdict(list)
    for s, t in window:
        c = int(problem.sessions.connector[s])
        lo, hi = int(csc.indptr[c]), int(csc.indptr[c + 1])
        for r, coef in zip(csc.indices[lo:hi], csc.data[lo:hi], strict=True):
            if coef != 0:
                terms[int(r), t].append((s, float(coef)))
    return dict(terms)


def _table(arr: FloatArray) -> dict[Any, float]:
    """An array as a Pyomo initialiser: index (an int or a tuple of ints) to float."""
    if arr.ndim == 1:
        return {i: float(v) for i, v in enumerate(arr)}
    return {(int(i), int(j)): float(arr[i, j]) for i, j in np.ndindex(*arr.shape)}


def _site_steps(name: str, value: ArrayLike | None, n_sites: int, T: int) -> FloatArray:
    """A per-site, per-step array from shape (T,) or (n_sites, T); 0 when absent."""
    if value is None:
        return np.zeros((n_sites, T))
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape == (T,):
        arr = np.tile(arr, (n_sites, 1))
    if arr.shape != (n_sites, T) or not np.all(np.isfinite(arr)):
        raise ProblemError(f"{name}: expected finite numbers of shape ({T},) or ({n_sites}, {T})")
    return np.array(arr, dtype=np.float64)


def _row_steps(name: str, value: ArrayLike | None, default: FloatArray, T: int) -> FloatArray:
    """A per-row, per-step bound from shape (n_rows,) or (n_rows, T); ``default`` when absent."""
    n_rows = len(default)
    arr = default if value is None else np.asarray(value, dtype=np.float64)
    if arr.shape == (n_rows,):
        arr = arr[:, None]
    if arr.shape not in ((n_rows, 1), (n_rows, T)) or np.any(np.isnan(arr)):
        raise ProblemError(f"{name}: expected numbers of shape ({n_rows},) or ({n_rows}, {T})")
    return np.array(np.broadcast_to(arr, (n_rows, T)), dtype=np.float64)
