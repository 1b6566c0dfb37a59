"""Horizon scheduler: the MPC step, an LP over sessions x steps solved by HiGHS in one call.

Variables exist only inside each session's window, so the model is as small as the charging it can
plan. For session ``s`` at step ``t`` (``dt_h`` hours long):

* ``c[s,t] >= 0`` charge power [kW], and ``d[s,t] >= 0`` discharge power [kW] for V2G sessions;
* ``u[s] >= 0`` unmet energy [kWh]; ``e[s,t]`` state of charge [kWh] for V2G sessions;
* per site: ``g_imp[t], g_exp[t] >= 0`` grid import/export [kW] (only where the site can export),
  and ``z >= 0``, the peak above the peak already reached this billing period [kW].

Constraints:

* topology at every step, import and export: ``-b_export[t] <= A @ (c - d)[t] <= b_import[t]``,
  with time-varying caps (DR, time-of-day) and the site's background load in the bounds;
* energy: ``sum_t (c - d) dt_h + u = e_target``, so delivered energy never exceeds the target;
* SoC for V2G: ``e[t] = e[t-1] + (c - d)[t] dt_h`` within ``[soc_min, soc_max]``;
* peak: site import ``- z <= sunk_peak`` at every step.

Objective: import cost at the time-varying price, minus export revenue, plus the demand charge on
``z``, plus degradation per kWh discharged, plus the unmet-energy penalty, plus a tiny bias that
prefers earlier charging when prices tie.

Export is valued at ``min(export_price, import_price)``: a site cannot profit from importing and
exporting at once, and the LP stays convex; a higher export price is therefore not chased.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import highspy
import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from ampflow.engine.errors import ProblemError
from ampflow.engine.topology import Topology

__all__ = [
    "Schedule",
    "ScheduleProblem",
    "Sessions",
    "SolveStatus",
    "SolverStats",
    "UnmetReason",
    "solve_schedule",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

_TOL = 1e-7
# Power bounds below 1 W are noise; at HiGHS's feasibility tolerance they can mislead presolve.
_MIN_KW = 1e-3


class SolveStatus(StrEnum):
    """Outcome of a solve. Only ``OPTIMAL`` and ``TIME_LIMIT`` (with a solution) carry a plan."""

    OPTIMAL = "optimal"
    TIME_LIMIT = "time_limit"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    ERROR = "error"


class UnmetReason(StrEnum):
    """Why a session's energy target is not fully planned."""

    NONE = "none"
    EV_LIMIT = "ev_limit"  # even alone, the EV cannot take that much before it leaves
    CAPACITY = "capacity"  # the site's limits (caps included) leave too little for it


@dataclass(frozen=True)
class Sessions:
    """The sessions to plan, one per EV, each on a connector (a column of ``A``).

    All arrays have shape (n_sessions,). Steps count from the start of the horizon.

    Parameters
    ----------
    connector : array_like of int
        Column of the session's connector in the topology.
    arrival_step, departure_step : array_like of int
        First step the EV may charge, and the first step it is gone (exclusive). Clipped to the
        horizon; an EV already plugged in has ``arrival_step <= 0``.
    e_target_kwh : array_like
        Net energy still to deliver [kWh], >= 0.
    p_max_kw : array_like
        The EV's maximum charge power [kW].
    p_discharge_max_kw : array_like, optional
        The EV's maximum discharge power [kW]; V2G needs it > 0, a bidirectional connector and a
        known state of charge. Default 0.
    soc_kwh, soc_min_kwh, soc_max_kwh : array_like, optional
        State of charge now and its bounds [kWh]; NaN where unknown.
    weight : array_like, optional
        Priority: multiplies the unmet-energy penalty (default 1).
    milestone_step, milestone_kwh : array_like, optional
        A soft early target: ``milestone_kwh`` delivered before ``milestone_step``, priced by
        ``ScheduleProblem.milestone_penalty_per_kwh`` per kWh short (default none). A robust plan
        uses it for a driver who may leave before the expected departure.
    ids : sequence of str, optional
    """

    connector: IntArray
    arrival_step: IntArray
    departure_step: IntArray
    e_target_kwh: FloatArray
    p_max_kw: FloatArray
    p_discharge_max_kw: FloatArray = field(default_factory=lambda: np.zeros(0))
    soc_kwh: FloatArray = field(default_factory=lambda: np.zeros(0))
    soc_min_kwh: FloatArray = field(default_factory=lambda: np.zeros(0))
    soc_max_kwh: FloatArray = field(default_factory=lambda: np.zeros(0))
    weight: FloatArray = field(default_factory=lambda: np.zeros(0))
    milestone_step: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    milestone_kwh: FloatArray = field(default_factory=lambda: np.zeros(0))
    ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = int(np.size(self.connector))
        if np.size(self.milestone_step) == 0 and n > 0:
            _set(self, "milestone_step", np.zeros(n, dtype=np.int64))
        ints = ("connector", "arrival_step", "departure_step", "milestone_step")
        for name in ints:
            _set(self, name, _array(name, getattr(self, name), n, np.int64))
        defaults = {
            "p_discharge_max_kw": 0.0,
            "soc_kwh": np.nan,
            "soc_min_kwh": np.nan,
            "soc_max_kwh": np.nan,
            "weight": 1.0,
            "milestone_kwh": 0.0,
        }
        for name in ("e_target_kwh", "p_max_kw", *defaults):
            value = getattr(self, name)
            if name in defaults and np.size(value) == 0 and n > 0:
                value = np.full(n, defaults[name])
            _set(self, name, _array(name, value, n, np.float64))
        for name in ("e_target_kwh", "p_max_kw", "p_discharge_max_kw", "milestone_kwh"):
            _require(name, getattr(self, name), lambda v: np.isfinite(v) & (v >= 0), ">= 0")
        _require("weight", self.weight, lambda v: np.isfinite(v) & (v > 0), "> 0")
        _require(
            "departure_step",
            self.departure_step,
            lambda v: v >= self.arrival_step,
            ">= arrival_step",
        )
        ids = tuple(self.ids) if self.ids else tuple(f"session-{i}" for i in range(n))
        if len(ids) != n:
            raise ProblemError(f"ids: expected {n} ids, got {len(ids)}")
        _set(self, "ids", ids)

    def __len__(self) -> int:
        return len(self.connector)


@dataclass(frozen=True)
class ScheduleProblem:
    """Everything the horizon LP needs; arrays over steps have ``n_steps`` columns.

    Parameters
    ----------
    topology : Topology
    sessions : Sessions
    n_steps : int
    dt_s : float
        Step length [s].
    import_price : array_like, shape (n_steps,) or (n_sites, n_steps)
        [currency/kWh].
    export_price : array_like, optional
        Same shape; default 0.
    row_upper : array_like, shape (n_rows,) or (n_rows, n_steps), optional
        Import bound of every row with caps applied (DR, time-of-day) [kW or A]; default
        ``topology.b_import``. Background load is subtracted here by the scheduler, not the caller.
    row_lower : array_like, optional
        Export bound (a magnitude) of every row; default ``topology.b_export``.
    background_kw : array_like, shape (n_sites, n_steps), optional
        Uncontrolled load at each grid connection [kW]: base load minus PV. Negative = surplus.
    demand_charge_per_kw : float
        [currency/kW] on the peak above ``sunk_peak_kw``.
    sunk_peak_kw : array_like, shape (n_sites,), optional
        Peak already reached in the billing period [kW]; default 0.
    degradation_per_kwh : float or array_like, shape (n_sites,)
        Battery wear cost per kWh discharged [currency/kWh], one for all sites or one per site.
    discharge_value_per_kwh : array_like, shape (n_steps,) or (n_sites, n_steps), optional
        What a kWh a V2G EV discharges earns on top of the export price [currency/kWh], such as
        a DR event's payment per kWh. It is paid on the EV's own net discharge: a V2G EV that
        charges in that step forgoes it per kWh (so charging and discharging at once earns
        nothing). Reported as ``costs["discharge_value"]``.
    unmet_penalty_per_kwh : float
        Penalty per kWh of unmet target; keep it far above any price.
    early_bias_per_kwh : float
        Tie-break cost per kWh, growing linearly from 0 at the first step to this at the last.
    urgency_bias_per_kwh : float
        Cost per kWh of charging a session later, growing linearly from 0 at its arrival to this
        at its early departure (its milestone step where it has one, else its departure) and
        flat after it (default 0). Where a limit binds, the plan then serves first the EVs that
        may leave first, instead of an arbitrary vertex's choice; a robust plan under uncertain
        departures wants it.
    milestone_penalty_per_kwh : float
        Cost per kWh short of a session's soft early target (``Sessions.milestone_kwh``); 0
        ignores the milestones.
    carbon_intensity_kg_per_kwh : array_like, shape (n_steps,) or (n_sites, n_steps), optional
        Marginal emissions of imported energy [kg CO2/kWh], e.g. a published MOER forecast.
    carbon_price_per_kg : float
        Weight of emissions in the objective [currency/kg CO2]: imported energy costs its price plus
        this times its intensity, so analysts can trade cost against emissions. Reported as
        ``costs["carbon"]`` (``costs["energy"]`` stays the bill).
    """

    topology: Topology
    sessions: Sessions
    n_steps: int
    dt_s: float
    import_price: ArrayLike
    export_price: ArrayLike | None = None
    row_upper: ArrayLike | None = None
    row_lower: ArrayLike | None = None
    background_kw: ArrayLike | None = None
    demand_charge_per_kw: float = 0.0
    sunk_peak_kw: ArrayLike | None = None
    degradation_per_kwh: float | ArrayLike = 0.0
    discharge_value_per_kwh: ArrayLike | None = None
    unmet_penalty_per_kwh: float = 1000.0
    early_bias_per_kwh: float = 1e-4
    urgency_bias_per_kwh: float = 0.0
    milestone_penalty_per_kwh: float = 0.0
    carbon_intensity_kg_per_kwh: ArrayLike | None = None
    carbon_price_per_kg: float = 0.0

    def __post_init__(self) -> None:
        if self.n_steps < 1:
            raise ProblemError(f"n_steps must be >= 1, got {self.n_steps}")
        if not self.dt_s > 0:
            raise ProblemError(f"dt_s must be > 0, got {self.dt_s}")
        for name in (
            "demand_charge_per_kw",
            "degradation_per_kwh",
            "unmet_penalty_per_kwh",
            "early_bias_per_kwh",
            "urgency_bias_per_kwh",
            "milestone_penalty_per_kwh",
            "carbon_price_per_kg",
        ):
            v = getattr(self, name)
            try:
                arr = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ProblemError(f"{name} must be a finite number >= 0, got {v!r}") from exc
            if not (np.all(np.isfinite(arr)) and np.all(arr >= 0)):
                raise ProblemError(f"{name} must be a finite number >= 0, got {v!r}")
        s = self.sessions
        n_conn = self.topology.n_connectors
        bad = (s.connector < 0) | (s.connector >= n_conn)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ProblemError(
                f"sessions.connector[{i}] must be a column in 0..{n_conn - 1}, got {s.connector[i]}"
            )
        _check_no_overlap(s)


@dataclass(frozen=True)
class SolverStats:
    """Size of the LP and how long it took."""

    n_cols: int
    n_rows: int
    nnz: int
    build_s: float
    solve_s: float
    simplex_iterations: int
    highs_status: str


@dataclass(frozen=True)
class Schedule:
    """A horizon plan.

    Attributes
    ----------
    status : SolveStatus
    charge_kw, discharge_kw : ndarray, shape (n_sessions, n_steps)
        Planned power [kW]; zero outside each window. ``p_kw`` is their difference.
    unmet_kwh : ndarray, shape (n_sessions,)
        Target energy the plan does not deliver, and ``unmet_reason`` why.
    site_import_kw : ndarray, shape (n_sites, n_steps)
        Planned net grid exchange of each site including background load (negative = export).
    objective : float
        Total cost of the plan (including the background load's energy cost) [currency].
    cap_shortfall : ndarray, shape (n_rows,)
        Largest amount by which background load alone exceeds a row's cap [kW or A]: the part of
        an overload that curtailing charging cannot remove.
    """

    status: SolveStatus
    charge_kw: FloatArray
    discharge_kw: FloatArray
    unmet_kwh: FloatArray
    unmet_reason: tuple[UnmetReason, ...]
    site_import_kw: FloatArray
    objective: float
    costs: dict[str, float]
    cap_shortfall: FloatArray
    stats: SolverStats
    message: str = ""

    @property
    def p_kw(self) -> FloatArray:
        out: FloatArray = self.charge_kw - self.discharge_kw
        return out

    def connector_power_kw(self, topology: Topology, sessions: Sessions) -> FloatArray:
        """Planned power per connector and step, shape (n_connectors, n_steps) [kW]."""
        out = np.zeros((topology.n_connectors, self.p_kw.shape[1]))
        np.add.at(out, sessions.connector, self.p_kw)
        return out


def solve_schedule(
    problem: ScheduleProblem,
    *,
    time_limit_s: float | None = None,
    method: Literal["simplex", "ipm"] = "simplex",
) -> Schedule:
    """Build the horizon LP as sparse arrays and solve it with HiGHS in one hand-off.

    Parameters
    ----------
    problem : ScheduleProblem
    time_limit_s : float, optional
        HiGHS time limit [s]. A solve that hits it returns ``SolveStatus.TIME_LIMIT``.
    method : {"simplex", "ipm"}
        ``"simplex"`` (HiGHS's choice, a vertex of the optimal set: exact and fastest on small
        problems) or ``"ipm"``, interior point without crossover: a point near the centre of the
        optimal set, so sessions the objective cannot tell apart get (nearly) equal power
        instead of some getting all and others none, which is what a control loop sending
        limits to identical EVs wants. It is also faster on large horizons. Should it not
        converge, the simplex solves the problem again.

    Returns
    -------
    Schedule
        Infeasible, unbounded and time-limited solves are results with that status, not
        exceptions.

    Examples
    --------
    >>> from ampflow.engine.topology import ChargerSpec, SiteSpec, compile_topology
    >>> topo = compile_topology([SiteSpec("s", import_kw=11, chargers=[
    ...     ChargerSpec("a", "s", max_kw=11), ChargerSpec("b", "s", max_kw=11)])])
    >>> sessions = Sessions(connector=[0, 1], arrival_step=[0, 0], departure_step=[4, 4],
    ...                     e_target_kwh=[10, 10], p_max_kw=[11, 11])
    >>> plan = solve_schedule(ScheduleProblem(topo, sessions, n_steps=4, dt_s=3600,
    ...                                       import_price=[0.4, 0.1, 0.1, 0.4]))
    >>> plan.status, plan.unmet_kwh.round(6).tolist()
    (<SolveStatus.OPTIMAL: 'optimal'>, [0.0, 0.0])
    >>> plan.p_kw.sum(axis=0).round(6).tolist()  # the cheap hours are filled first
    [0.0, 11.0, 9.0, 0.0]
    """
    t0 = time.perf_counter()
    lp = _build(problem)
    t1 = time.perf_counter()
    h = _solver()
    # HiGHS measures time_limit on a clock that runs over the instance's whole life.
    limit = math.inf if time_limit_s is None else h.getRunTime() + float(time_limit_s)
    h.setOptionValue("time_limit", limit)
    h.setOptionValue("presolve", "choose")
    h.setOptionValue("solver", "ipm" if method == "ipm" else "choose")
    h.setOptionValue("run_crossover", "off" if method == "ipm" else "on")
    # Without crossover the default 1e-8 leaves planned power ~1 W off its bound.
    h.setOptionValue("ipm_optimality_tolerance", 1e-10)
    h.passModel(lp.to_highs())
    run_status = h.run()
    model_status = h.getModelStatus()
    if method == "ipm" and model_status.name not in _STATUS:
        h.setOptionValue("solver", "choose")  # the interior point stalled: the simplex
        h.setOptionValue("run_crossover", "on")
        run_status = h.run()
        model_status = h.getModelStatus()
    if model_status == highspy.HighsModelStatus.kInfeasible:
        # All-zero charging with full unmet energy is feasible by construction (bounds are
        # clipped so that zero fits), so "infeasible" is a presolve tolerance artefact: re-check
        # once without presolve before reporting it.
        h.setOptionValue("presolve", "off")
        run_status = h.run()
        model_status = h.getModelStatus()
    t2 = time.perf_counter()
    status = _STATUS.get(model_status.name, SolveStatus.ERROR)
    if run_status == highspy.HighsStatus.kError:
        status = SolveStatus.ERROR
    info = h.getInfo()
    stats = SolverStats(
        n_cols=lp.n_cols,
        n_rows=lp.n_rows,
        nnz=lp.nnz,
        build_s=t1 - t0,
        solve_s=t2 - t1,
        simplex_iterations=int(info.simplex_iteration_count),
        highs_status=h.modelStatusToString(model_status),
    )
    has_solution = status is SolveStatus.OPTIMAL or (
        status is SolveStatus.TIME_LIMIT and info.primal_solution_status == 2
    )
    x = np.asarray(h.getSolution().col_value) if has_solution else None
    return lp.result(problem, status, x, stats)


_LOCAL = threading.local()


def _solver() -> Any:
    """This thread's HiGHS instance, reused across solves: creating one costs about 2 ms."""
    h = getattr(_LOCAL, "highs", None)
    if h is None:
        h = _LOCAL.highs = highspy.Highs()  # type: ignore[no-untyped-call]
    else:
        h.clear()
    h.setOptionValue("output_flag", False)
    return h


_STATUS = {
    "kOptimal": SolveStatus.OPTIMAL,
    "kModelEmpty": SolveStatus.OPTIMAL,  # nothing to plan: the empty plan is optimal
    "kTimeLimit": SolveStatus.TIME_LIMIT,
    "kIterationLimit": SolveStatus.TIME_LIMIT,
    "kInfeasible": SolveStatus.INFEASIBLE,
    "kUnbounded": SolveStatus.UNBOUNDED,
    "kUnboundedOrInfeasible": SolveStatus.INFEASIBLE,
}


@dataclass
class _Lp:
    """Columns, rows and COO entries of the LP, appended block by block."""

    col_cost: list[FloatArray] = field(default_factory=list)
    col_lower: list[FloatArray] = field(default_factory=list)
    col_upper: list[FloatArray] = field(default_factory=list)
    row_lower: list[FloatArray] = field(default_factory=list)
    row_upper: list[FloatArray] = field(default_factory=list)
    rows: list[IntArray] = field(default_factory=list)
    cols: list[IntArray] = field(default_factory=list)
    vals: list[FloatArray] = field(default_factory=list)
    n_cols: int = 0
    n_rows: int = 0
    nnz: int = 0
    constant: float = 0.0
    blocks: dict[str, Any] = field(default_factory=dict)

    def add_cols(
        self, cost: FloatArray, lower: FloatArray | float, upper: FloatArray | float
    ) -> IntArray:
        idx = np.arange(self.n_cols, self.n_cols + len(cost), dtype=np.int64)
        self.col_cost.append(cost)
        self.col_lower.append(np.broadcast_to(lower, cost.shape).astype(np.float64))
        self.col_upper.append(np.broadcast_to(upper, cost.shape).astype(np.float64))
        self.n_cols += len(cost)
        return idx

    def add_rows(
        self, lower: FloatArray, upper: FloatArray, rows: IntArray, cols: IntArray, vals: FloatArray
    ) -> None:
        """Add ``len(lower)`` rows; ``rows`` are local (0-based) indices into them."""
        self.row_lower.append(lower)
        self.row_upper.append(upper)
        self.rows.append(rows + self.n_rows)
        self.cols.append(cols)
        self.vals.append(vals)
        self.n_rows += len(lower)
        self.nnz += len(vals)

    def to_highs(self) -> highspy.HighsLp:
        lp = highspy.HighsLp()
        lp.num_col_ = self.n_cols
        lp.num_row_ = self.n_rows
        lp.col_cost_ = _cat(self.col_cost)
        lp.col_lower_ = _cat(self.col_lower)
        lp.col_upper_ = _cat(self.col_upper)
        lp.row_lower_ = _cat(self.row_lower)
        lp.row_upper_ = _cat(self.row_upper)
        A = sp.csc_array(
            (_cat(self.vals), (_cat(self.rows, np.int64), _cat(self.cols, np.int64))),
            shape=(self.n_rows, self.n_cols),
        )
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = A.indptr
        lp.a_matrix_.index_ = A.indices
        lp.a_matrix_.value_ = A.data
        return lp

    def result(
        self,
        problem: ScheduleProblem,
        status: SolveStatus,
        x: FloatArray | None,
        stats: SolverStats,
    ) -> Schedule:
        return _result(self, problem, status, x, stats)


def _build(problem: ScheduleProblem) -> _Lp:
    data = _Data.from_problem(problem)
    lp = _Lp()
    _define_power(lp, data)
    _define_topology(lp, data)
    _define_energy(lp, data)
    _define_milestones(lp, data)
    _define_soc(lp, data)
    _define_grid(lp, data)
    _define_peak(lp, data)
    lp.blocks["data"] = data
    return lp


@dataclass
class _Data:
    """The problem normalised to arrays, and the index maps of the variables."""

    T: int
    dt_h: float
    topo: Topology
    s: Sessions
    price_imp: FloatArray  # (n_sites, T)
    price_exp: FloatArray  # (n_sites, T), already min(export, import)
    ub: FloatArray  # (n_rows, T), background subtracted, >= 0
    lb: FloatArray  # (n_rows, T) export magnitude, >= 0
    shortfall: FloatArray  # (n_rows,)
    bg: FloatArray  # (n_sites, T)
    sunk: FloatArray  # (n_sites,)
    target: FloatArray
    v2g: BoolArray
    grid_site: BoolArray  # sites modelled with import/export variables
    site: IntArray  # site of each session
    # charge variables
    k_sess: IntArray
    k_t: IntArray
    # discharge variables (V2G sessions only)
    d_sess: IntArray
    d_t: IntArray
    problem: ScheduleProblem
    carbon: FloatArray | None = None  # (n_sites, T) carbon cost per kWh imported, in price_imp
    degradation: FloatArray | None = None  # (n_sites,) wear cost per kWh discharged
    value: FloatArray | None = None  # (n_sites, T) earned per kWh of V2G net discharge

    @classmethod
    def from_problem(cls, p: ScheduleProblem) -> _Data:
        topo, s, T = p.topology, p.sessions, p.n_steps
        n_sites, n_rows = topo.n_sites, topo.n_rows
        price_imp = _per_site("import_price", p.import_price, n_sites, T, 0.0)
        carbon = None
        if p.carbon_intensity_kg_per_kwh is not None and p.carbon_price_per_kg > 0:
            intensity = _per_site(
                "carbon_intensity_kg_per_kwh", p.carbon_intensity_kg_per_kwh, n_sites, T, 0.0
            )
            carbon = p.carbon_price_per_kg * intensity
            price_imp = price_imp + carbon
        price_exp = _per_site("export_price", p.export_price, n_sites, T, 0.0)
        bg = _per_site("background_kw", p.background_kw, n_sites, T, 0.0)
        ub = _per_row("row_upper", p.row_upper, topo.b_import, n_rows, T)
        lb = _per_row("row_lower", p.row_lower, topo.b_export, n_rows, T)
        ub[topo.site_root_row] -= bg
        lb[topo.site_root_row] += bg
        shortfall = np.maximum(np.max(np.maximum(-ub, -lb), axis=1, initial=0.0), 0.0)
        ub, lb = np.maximum(ub, 0.0), np.maximum(lb, 0.0)
        sunk = (
            np.zeros(n_sites)
            if p.sunk_peak_kw is None
            else _array("sunk_peak_kw", p.sunk_peak_kw, n_sites, np.float64)
        )
        a = np.clip(s.arrival_step, 0, T)
        d = np.clip(s.departure_step, a, T)
        n = d - a
        soc_known = np.isfinite(s.soc_kwh) & np.isfinite(s.soc_max_kwh)
        v2g = (
            (s.p_discharge_max_kw > 0)
            & (topo.p_discharge_max_kw[s.connector] > 0)
            & soc_known
            & (n > 0)
        )
        # A session cannot be charged beyond its battery: cap the target there.
        room = np.where(soc_known, s.soc_max_kwh - s.soc_kwh, np.inf)
        target = np.minimum(s.e_target_kwh, np.maximum(room, 0.0))
        site = topo.connector_site[s.connector]
        grid_site = np.zeros(n_sites, dtype=bool)
        grid_site[site[v2g]] = True
        grid_site |= (bg < 0).any(axis=1)
        k_sess, k_t = _windows(a, n)
        d_sess, d_t = _windows(a[v2g], n[v2g])
        d_sess = np.flatnonzero(v2g)[d_sess]
        deg = np.asarray(p.degradation_per_kwh, dtype=np.float64)
        if deg.ndim:
            deg = _array("degradation_per_kwh", deg, n_sites, np.float64)
        degradation = np.broadcast_to(deg, (n_sites,)).astype(np.float64)
        value = None
        if p.discharge_value_per_kwh is not None:
            value = _per_site("discharge_value_per_kwh", p.discharge_value_per_kwh, n_sites, T, 0.0)
            if not (np.isfinite(value).all() and (value >= 0).all()):
                raise ProblemError("discharge_value_per_kwh must be finite numbers >= 0")
            if not value.any():
                value = None
        return cls(
            T,
            p.dt_s / 3600.0,
            topo,
            s,
            price_imp,
            np.minimum(price_exp, price_imp),
            ub,
            lb,
            shortfall,
            bg,
            sunk,
            target,
            v2g,
            grid_site,
            site,
            k_sess,
            k_t,
            d_sess,
            d_t,
            p,
            carbon,
            degradation,
            value,
        )


def _define_power(lp: _Lp, data: _Data) -> None:
    """Charge and discharge variables, with their costs and bounds."""
    s, topo, p = data.s, data.topo, data.problem
    conn = s.connector
    bias = p.early_bias_per_kwh * data.dt_h * (data.k_t / max(data.T - 1, 1))
    if p.urgency_bias_per_kwh > 0:
        bias = bias + p.urgency_bias_per_kwh * data.dt_h * urgency_share(s, data.k_sess, data.k_t)
    k_site = data.site[data.k_sess]
    direct = ~data.grid_site[k_site]  # energy cost sits on the charge variable itself
    cost = bias + np.where(direct, data.price_imp[k_site, data.k_t] * data.dt_h, 0.0)
    if data.value is not None:  # a V2G EV charging forgoes the value of discharging
        cost = cost + np.where(data.v2g[data.k_sess], data.value[k_site, data.k_t] * data.dt_h, 0.0)
    ub_c = np.minimum(s.p_max_kw, topo.p_max_kw[conn])[data.k_sess]
    needed = (data.target > 0) | data.v2g
    ub_c = np.where(needed[data.k_sess] & (ub_c >= _MIN_KW), ub_c, 0.0)
    lp.blocks["c"] = lp.add_cols(cost, 0.0, ub_c)
    ub_d = np.minimum(s.p_discharge_max_kw, topo.p_discharge_max_kw[conn])[data.d_sess]
    ub_d = np.where(ub_d >= _MIN_KW, ub_d, 0.0)
    assert data.degradation is not None
    cost_d = data.degradation[data.site[data.d_sess]] * data.dt_h
    if data.value is not None:
        cost_d = cost_d - data.value[data.site[data.d_sess], data.d_t] * data.dt_h
    lp.blocks["d"] = lp.add_cols(cost_d, 0.0, ub_d)
    # Background energy of directly-priced sites is a constant of the objective.
    direct_site = ~data.grid_site
    lp.constant += float((data.price_imp * data.bg)[direct_site].sum() * data.dt_h)


def urgency_share(s: Sessions, sess: IntArray, t: IntArray) -> FloatArray:
    """For each (session, step) pair: the share of the session's time from its arrival to its
    early departure gone by that step, at most 1 (the ramp of ``urgency_bias_per_kwh``).

    The early departure is the session's milestone step where it has one, else its departure.
    """
    early = np.where(s.milestone_step > s.arrival_step, s.milestone_step, s.departure_step)
    span = np.maximum(early - s.arrival_step, 1)[sess]
    out: FloatArray = np.minimum((t - s.arrival_step[sess]) / span, 1.0)
    return out


def _define_topology(lp: _Lp, data: _Data) -> None:
    """``-lb[r,t] <= sum A[r,c] (c - d)[t] <= ub[r,t]``, only for rows that can bind."""
    csc, T = data.topo.A_csc, data.T
    conn = data.s.connector
    parts = [
        _column_entries(csc, conn[data.k_sess], data.k_t, lp.blocks["c"], 1.0, T),
        _column_entries(csc, conn[data.d_sess], data.d_t, lp.blocks["d"], -1.0, T),
    ]
    key = np.concatenate([q[0] for q in parts])
    col = np.concatenate([q[1] for q in parts])
    val = np.concatenate([q[2] for q in parts])
    if len(key) == 0:
        return
    uniq, row = np.unique(key, return_inverse=True)
    r, t = uniq // T, uniq % T
    col_ub = _cat(lp.col_upper)[col]
    max_act = np.bincount(row, np.where(val > 0, val * col_ub, 0.0), len(uniq))
    min_act = np.bincount(row, np.where(val < 0, val * col_ub, 0.0), len(uniq))
    upper, lower = data.ub[r, t], -data.lb[r, t]
    binding = (max_act > upper + _TOL) | (min_act < lower - _TOL)
    new_index = np.cumsum(binding) - 1
    keep = binding[row]
    lp.add_rows(lower[binding], upper[binding], new_index[row[keep]], col[keep], val[keep])


def _define_energy(lp: _Lp, data: _Data) -> None:
    """``sum_t (c - d) dt_h + u = target`` per session."""
    n = len(data.s)
    weight = data.s.weight * data.problem.unmet_penalty_per_kwh
    u = lp.add_cols(weight, 0.0, data.target)
    lp.blocks["u"] = u
    c, d = lp.blocks["c"], lp.blocks["d"]
    rows = np.concatenate([data.k_sess, data.d_sess, np.arange(n)])
    cols = np.concatenate([c, d, u])
    vals = np.concatenate([np.full(len(c), data.dt_h), np.full(len(d), -data.dt_h), np.ones(n)])
    lp.add_rows(data.target, data.target.copy(), rows, cols, vals)


def _define_milestones(lp: _Lp, data: _Data) -> None:
    """``sum_{t < m} (c - d) dt_h + v >= milestone`` per session with one; ``v`` priced."""
    penalty = data.problem.milestone_penalty_per_kwh
    s = data.s
    want = np.minimum(s.milestone_kwh, data.target)
    has = (want > 0) & (s.milestone_step > 0)
    if penalty <= 0 or not has.any():
        return
    idx = np.flatnonzero(has)
    slot = np.full(len(s), -1, dtype=np.int64)
    slot[idx] = np.arange(len(idx))
    v = lp.blocks["v"] = lp.add_cols(np.full(len(idx), penalty), 0.0, want[idx])
    c, d = lp.blocks["c"], lp.blocks["d"]
    in_c = has[data.k_sess] & (data.k_t < s.milestone_step[data.k_sess])
    in_d = has[data.d_sess] & (data.d_t < s.milestone_step[data.d_sess])
    rows = np.concatenate([slot[data.k_sess[in_c]], slot[data.d_sess[in_d]], np.arange(len(idx))])
    cols = np.concatenate([c[in_c], d[in_d], v])
    vals = np.concatenate(
        [np.full(in_c.sum(), data.dt_h), np.full(in_d.sum(), -data.dt_h), np.ones(len(idx))]
    )
    lp.add_rows(want[idx], np.full(len(idx), np.inf), rows, cols, vals)


def _define_soc(lp: _Lp, data: _Data) -> None:
    """For V2G sessions: ``e[t] - e[t-1] - (c - d)[t] dt_h = 0`` within SoC bounds."""
    v = np.flatnonzero(data.v2g)
    if len(v) == 0:
        return
    s = data.s
    # The charge variables of V2G sessions, in the same (session, step) order as discharge.
    c_of = np.isin(data.k_sess, v)
    c_idx = lp.blocks["c"][c_of]
    e_sess = data.d_sess
    lo = np.where(np.isfinite(s.soc_min_kwh), s.soc_min_kwh, 0.0)[e_sess]
    hi = s.soc_max_kwh[e_sess]
    soc0 = s.soc_kwh[e_sess]
    lo, hi = np.minimum(lo, soc0), np.maximum(hi, soc0)  # never infeasible at the start
    e = lp.add_cols(np.zeros(len(e_sess)), lo, hi)
    lp.blocks["e"] = e
    m = len(e)
    first = np.r_[True, e_sess[1:] != e_sess[:-1]]
    prev = np.flatnonzero(~first)
    rows = np.concatenate([np.arange(m), prev, np.arange(m), np.arange(m)])
    cols = np.concatenate([e, e[prev - 1], c_idx, lp.blocks["d"]])
    vals = np.concatenate(
        [np.ones(m), -np.ones(len(prev)), np.full(m, -data.dt_h), np.full(m, data.dt_h)]
    )
    rhs = np.where(first, soc0, 0.0)
    lp.add_rows(rhs, rhs.copy(), rows, cols, vals)


def _define_grid(lp: _Lp, data: _Data) -> None:
    """For sites that can export: ``g_imp - g_exp - sum (c - d) = background``."""
    sites = np.flatnonzero(data.grid_site)
    if len(sites) == 0:
        return
    T = data.T
    n = len(sites) * T
    g_site = np.repeat(sites, T)
    g_t = np.tile(np.arange(T), len(sites))
    price_i = data.price_imp[g_site, g_t] * data.dt_h
    price_e = data.price_exp[g_site, g_t] * data.dt_h
    g_imp = lp.add_cols(price_i, 0.0, np.inf)
    g_exp = lp.add_cols(-price_e, 0.0, np.inf)
    lp.blocks["g_imp"], lp.blocks["g_exp"], lp.blocks["g_sites"] = g_imp, g_exp, sites
    local = np.full(data.topo.n_sites, -1)
    local[sites] = np.arange(len(sites))
    kc = local[data.site[data.k_sess]]
    kd = local[data.site[data.d_sess]]
    on_c, on_d = kc >= 0, kd >= 0
    rows = np.concatenate(
        [np.arange(n), np.arange(n), kc[on_c] * T + data.k_t[on_c], kd[on_d] * T + data.d_t[on_d]]
    )
    cols = np.concatenate([g_imp, g_exp, lp.blocks["c"][on_c], lp.blocks["d"][on_d]])
    vals = np.concatenate(
        [np.ones(n), -np.ones(n), -np.ones(int(on_c.sum())), np.ones(int(on_d.sum()))]
    )
    rhs = data.bg[g_site, g_t]
    lp.add_rows(rhs, rhs.copy(), rows, cols, vals)


def _define_peak(lp: _Lp, data: _Data) -> None:
    """``import[t] - z <= sunk_peak`` per site and step; ``z`` carries the demand charge."""
    dc = data.problem.demand_charge_per_kw
    if dc <= 0:
        return
    T, n_sites = data.T, data.topo.n_sites
    # Direct sites: import = background + sum c. The background alone sets a floor on z.
    floor = np.maximum(np.max(data.bg - data.sunk[:, None], axis=1), 0.0)
    floor[data.grid_site] = 0.0  # discharge can bring a V2G site's import below its background
    z = lp.add_cols(np.full(n_sites, dc), floor, np.inf)
    lp.blocks["z"] = z
    direct = ~data.grid_site[data.site[data.k_sess]]
    key = data.site[data.k_sess[direct]] * T + data.k_t[direct]
    uniq, row = np.unique(key, return_inverse=True)
    ps, pt = uniq // T, uniq % T
    m = len(uniq)
    rows = [row, np.arange(m)]
    cols = [lp.blocks["c"][direct], z[ps]]
    vals = [np.ones(len(row)), -np.ones(m)]
    upper = [data.sunk[ps] - data.bg[ps, pt]]
    if "g_imp" in lp.blocks:
        g = lp.blocks["g_imp"]
        gs = np.repeat(lp.blocks["g_sites"], T)
        rows += [m + np.arange(len(g)), m + np.arange(len(g))]
        cols += [g, z[gs]]
        vals += [np.ones(len(g)), -np.ones(len(g))]
        upper.append(data.sunk[gs])
    up = np.concatenate(upper)
    lp.add_rows(
        np.full(len(up), -np.inf),
        up,
        np.concatenate(rows),
        np.concatenate(cols),
        np.concatenate(vals),
    )


def _result(
    lp: _Lp, p: ScheduleProblem, status: SolveStatus, x: FloatArray | None, stats: SolverStats
) -> Schedule:
    data: _Data = lp.blocks["data"]
    n, T, n_sites = len(p.sessions), data.T, data.topo.n_sites
    charge = np.zeros((n, T))
    discharge = np.zeros((n, T))
    if x is None:
        nan = np.full(n, np.nan)
        return Schedule(
            status,
            charge,
            discharge,
            nan,
            tuple(UnmetReason.NONE for _ in range(n)),
            np.full((n_sites, T), np.nan),
            float("nan"),
            {},
            data.shortfall,
            stats,
            f"no plan: {stats.highs_status}",
        )
    charge[data.k_sess, data.k_t] = np.maximum(x[lp.blocks["c"]], 0.0)
    discharge[data.d_sess, data.d_t] = np.maximum(x[lp.blocks["d"]], 0.0)
    unmet = np.maximum(x[lp.blocks["u"]], 0.0)
    net = charge - discharge
    site_load = np.zeros((n_sites, T))
    np.add.at(site_load, data.site, net)
    site_import = site_load + data.bg
    window = np.clip(p.sessions.departure_step, 0, T) - np.clip(p.sessions.arrival_step, 0, T)
    ev_max = np.minimum(p.sessions.p_max_kw, data.topo.p_max_kw[p.sessions.connector])
    alone = ev_max * np.maximum(window, 0) * data.dt_h
    reason = tuple(
        UnmetReason.NONE
        if u <= 1e-6
        else UnmetReason.EV_LIMIT
        if tgt > a + 1e-6
        else UnmetReason.CAPACITY
        for u, tgt, a in zip(unmet, data.target, alone, strict=True)
    )
    dt_h = data.dt_h
    exp_price = data.price_exp
    assert data.degradation is not None
    wear = data.degradation
    imported = np.maximum(site_import, 0.0)
    carbon_cost = 0.0 if data.carbon is None else float((data.carbon * imported).sum() * dt_h)
    energy_cost = float((data.price_imp * imported).sum() * dt_h) - carbon_cost
    export_revenue = float((exp_price * np.maximum(-site_import, 0.0)).sum() * dt_h)
    peak_above = np.maximum(site_import.max(axis=1, initial=0.0) - data.sunk, 0.0)
    costs = {
        "energy": energy_cost,
        "export_revenue": export_revenue,
        "demand_charge": float(p.demand_charge_per_kw * peak_above.sum()),
        "degradation": float((wear[data.site] * discharge.sum(axis=1)).sum() * dt_h),
        "unmet_penalty": float(p.unmet_penalty_per_kwh * (p.sessions.weight * unmet).sum()),
    }
    if data.carbon is not None:
        costs["carbon"] = carbon_cost
    if data.value is not None:
        own = np.where(data.v2g[:, None], discharge - charge, 0.0)
        costs["discharge_value"] = float((data.value[data.site] * own).sum() * dt_h)
    if "v" in lp.blocks:
        short = np.maximum(x[lp.blocks["v"]], 0.0).sum()
        costs["milestone_penalty"] = float(p.milestone_penalty_per_kwh * short)
    cost_vec = _cat(lp.col_cost)
    objective = float(cost_vec @ x) + lp.constant
    return Schedule(
        status,
        charge,
        discharge,
        unmet,
        reason,
        site_import,
        objective,
        costs,
        data.shortfall,
        stats,
    )


def _windows(start: IntArray, length: IntArray) -> tuple[IntArray, IntArray]:
    """(session, step) of every step inside each window, sessions in order."""
    total = int(length.sum())
    sess = np.repeat(np.arange(len(length)), length)
    offset = np.cumsum(length) - length
    steps = start[sess] + np.arange(total) - offset[sess]
    return sess.astype(np.int64), steps.astype(np.int64)


def _column_entries(
    csc: sp.csc_array, conn: IntArray, t: IntArray, var: IntArray, sign: float, T: int
) -> tuple[IntArray, IntArray, FloatArray]:
    """For each variable on connector ``conn`` at step ``t``: its entries in every row of A."""
    ptr = csc.indptr
    counts = ptr[conn + 1] - ptr[conn]
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(conn)), counts)
    pos = ptr[conn][owner] + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    key = csc.indices[pos].astype(np.int64) * T + t[owner]
    return key, var[owner], sign * csc.data[pos]


def _per_site(
    name: str, value: ArrayLike | None, n_sites: int, T: int, default: float
) -> FloatArray:
    if value is None:
        return np.full((n_sites, T), default)
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape == (T,):
        arr = np.broadcast_to(arr, (n_sites, T))
    if arr.shape != (n_sites, T):
        raise ProblemError(f"{name}: expected shape ({T},) or ({n_sites}, {T}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ProblemError(f"{name}: expected finite numbers, got NaN or inf")
    return np.array(arr)


def _per_row(
    name: str, value: ArrayLike | None, default: FloatArray, n_rows: int, T: int
) -> FloatArray:
    arr: FloatArray = default if value is None else np.asarray(value, dtype=np.float64)
    if arr.shape == (n_rows,):
        arr = arr[:, None]
    if arr.shape not in ((n_rows, 1), (n_rows, T)):
        raise ProblemError(
            f"{name}: expected shape ({n_rows},) or ({n_rows}, {T}), got {arr.shape}"
        )
    if np.any(np.isnan(arr)):
        raise ProblemError(f"{name}: expected numbers (inf for no limit), got NaN")
    return np.array(np.broadcast_to(arr, (n_rows, T)))


def _check_no_overlap(s: Sessions) -> None:
    order = np.lexsort((s.arrival_step, s.connector))
    c, a, d = s.connector[order], s.arrival_step[order], s.departure_step[order]
    clash = (c[1:] == c[:-1]) & (a[1:] < d[:-1])
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        raise ProblemError(
            f"sessions {s.ids[order[i]]!r} and {s.ids[order[i + 1]]!r} overlap on connector "
            f"{c[i]}: one departs at step {d[i]}, the other arrives at step {a[i + 1]}"
        )


def _array(name: str, value: ArrayLike, n: int, dtype: type) -> NDArray[Any]:
    try:
        arr: NDArray[Any] = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ProblemError(f"{name}: expected {n} numbers, got {value!r}") from exc
    if arr.shape != (n,):
        raise ProblemError(f"{name}: expected shape ({n},), got {arr.shape}")
    return arr


def _require(name: str, arr: NDArray[Any], ok: Any, expected: str) -> None:
    good = ok(arr)
    if not np.all(good):
        i = int(np.flatnonzero(~good)[0])
        raise ProblemError(f"{name}[{i}] must be {expected}, got {arr[i].item():g}")


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _cat(parts: list[Any], dtype: type = np.float64) -> NDArray[Any]:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)
