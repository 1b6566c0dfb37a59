"""Sites as trees of capacity nodes, compiled to one sparse system ``A @ p <= b``.

A site is a tree: the grid connection (the root, whose id is the site id), then feeders and
panels, then chargers, then connectors. Every node has an import limit in kW and optionally an
export limit in kW and per-phase current limits in A. :func:`compile_topology` turns any number
of sites into one block-diagonal sparse matrix ``A`` whose columns are connectors and whose rows
are (node, quantity) pairs, where quantity is the node's total power [kW] or the current on one
of its three phases [A]. For connector power ``p`` [kW] (positive = charging, negative =
discharging), every capacity rule of every site reads::

    -b_export <= A @ p <= b_import

The allocator, the horizon scheduler and the invariant checker all use this one matrix.

Phase wiring
------------
* AC three-phase chargers load the three phases equally: ``1000 / (3 V pf)`` A per kW.
* AC single-phase chargers are wired to one phase (``phase="L2"``), or between two lines
  (``phase="L1-L2"``, as in North American 208 V sites). ``rotation`` maps the charger's terminals
  to the grid's phases, as OCPP's ``ConnectorPhaseRotation`` does (``"RST"`` is the identity,
  ``"STR"`` puts the charger's L1 on the grid's L2). A line-to-line load of current ``I`` is
  counted as ``I`` on both lines, which bounds the true phasor sum from above, so the linear rule is
  conservative.
* DC chargers draw from all three phases equally.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ampflow.engine.errors import TopologyError
from ampflow.engine.units import kw_from_a

__all__ = [
    "ChargerKind",
    "ChargerSpec",
    "NodeSpec",
    "RowKind",
    "SiteSpec",
    "Topology",
    "compile_topology",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

_ROTATIONS = {
    "RST": (0, 1, 2),
    "RTS": (0, 2, 1),
    "SRT": (1, 0, 2),
    "STR": (1, 2, 0),
    "TRS": (2, 0, 1),
    "TSR": (2, 1, 0),
}
_PHASE_INDEX = {"L1": 0, "L2": 1, "L3": 2}


class ChargerKind(StrEnum):
    """Whether a charger delivers AC (the EV's on-board charger converts) or DC."""

    AC = "AC"
    DC = "DC"


class RowKind(IntEnum):
    """What a row of ``A`` measures: a node's total power [kW] or one phase's current [A]."""

    TOTAL_KW = 0
    L1_A = 1
    L2_A = 2
    L3_A = 3


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A capacity node below a site's grid connection: a feeder, panel or cable.

    Parameters
    ----------
    id : str
        Unique within the site.
    parent : str
        Id of the parent node, or of the site for a node directly below the grid connection.
    import_kw : float, default inf
        Limit on the power flowing down through the node [kW].
    export_kw : float or None
        Limit on the power flowing up [kW]; ``None`` means the same as ``import_kw``.
    phase_a : tuple of 3 floats or None
        Current limit on L1, L2, L3 [A], in both directions.
    """

    id: str
    parent: str
    import_kw: float = math.inf
    export_kw: float | None = None
    phase_a: tuple[float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class ChargerSpec:
    """A charging station with one or more connectors that share its limit.

    Parameters
    ----------
    id : str
        Unique within the site; connectors are named ``f"{id}/{n}"`` with ``n`` from 1, as OCPP's
        connectorId / evseId.
    node : str
        The node (or site id) the charger hangs from.
    max_kw : float
        The charger's rated power, shared by its connectors, and each connector's maximum [kW].
    connectors : int, default 1
    kind : ChargerKind, default AC
    phases : {1, 3}, default 3
        Number of AC phases (ignored for DC, which loads all three).
    phase : str or None
        For single-phase AC: the charger terminal used, ``"L1"``, ``"L2"``, ``"L3"``, or a
        line-to-line pair such as ``"L1-L2"``.
    rotation : str, default "RST"
        How the charger's L1, L2, L3 map to the grid's phases.
    min_a : float, default 6
        Minimum current an AC connector can be set to without stopping [A] (IEC 61851).
    min_kw : float, default 0
        Minimum power for a DC connector [kW].
    voltage_v : float or None
        Voltage across the charger's input; defaults to the site's line-to-neutral voltage, or
        ``sqrt(3)`` times it for a line-to-line charger.
    bidirectional : bool, default False
        Whether the connectors can discharge (V2G).
    discharge_max_kw : float or None
        Maximum discharge power per connector [kW]; defaults to ``max_kw`` when bidirectional.
    """

    id: str
    node: str
    max_kw: float
    connectors: int = 1
    kind: ChargerKind = ChargerKind.AC
    phases: int = 3
    phase: str | None = None
    rotation: str = "RST"
    min_a: float = 6.0
    min_kw: float = 0.0
    voltage_v: float | None = None
    bidirectional: bool = False
    discharge_max_kw: float | None = None


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """A site: a grid connection with an optional tree of nodes and chargers below it.

    Parameters
    ----------
    id : str
        Unique site id; it is also the id of the grid-connection node.
    import_kw : float
        Grid connection import limit [kW].
    export_kw : float, default 0
        Grid connection export limit [kW]; 0 forbids feeding back.
    voltage_v : float, default 230
        Line-to-neutral voltage [V].
    phase_a : tuple of 3 floats or None
        Per-phase current limit of the grid connection [A].
    power_factor : float, default 1
        Power factor used to convert kW to A on this site.
    nodes, chargers : sequence
        The tree below the grid connection.
    """

    id: str
    import_kw: float
    export_kw: float = 0.0
    voltage_v: float = 230.0
    phase_a: tuple[float, float, float] | None = None
    power_factor: float = 1.0
    nodes: Sequence[NodeSpec] = ()
    chargers: Sequence[ChargerSpec] = ()


@dataclass(frozen=True, eq=False)
class Topology:
    """Many sites compiled into one sparse capacity system.

    Columns (connectors) and rows are sorted by site, so each site owns one contiguous block of
    both; ``site_conn_ptr`` and ``site_row_ptr`` give the block boundaries.

    Attributes
    ----------
    A : scipy.sparse.csr_array, shape (n_rows, n_connectors)
        Load each row sees per kW of connector power [kW/kW or A/kW].
    b_import, b_export : ndarray, shape (n_rows,)
        Row limits [kW or A]; the rule is ``-b_export <= A @ p <= b_import``. ``inf`` = no limit.
    row_node : ndarray of int, shape (n_rows,)
        Node index of each row. ``row_kind`` says which quantity (see :class:`RowKind`).
    p_max_kw, p_min_kw, p_discharge_max_kw : ndarray, shape (n_connectors,)
        Connector limits [kW]: maximum charge, the minimum non-zero charge, maximum discharge.
    phases : ndarray of int, shape (n_connectors,)
        Number of AC phases each connector uses (3 for DC).
    voltage_v : ndarray, shape (n_connectors,)
        Voltage used to convert a connector's current to power [V].
    """

    site_ids: tuple[str, ...]
    node_ids: tuple[str, ...]
    node_site: IntArray
    node_parent: IntArray
    connector_ids: tuple[str, ...]
    connector_site: IntArray
    connector_charger: IntArray
    A: sp.csr_array
    b_import: FloatArray
    b_export: FloatArray
    row_node: IntArray
    row_kind: NDArray[np.int8]
    row_site: IntArray
    site_conn_ptr: IntArray
    site_row_ptr: IntArray
    site_root_row: IntArray
    p_max_kw: FloatArray
    p_min_kw: FloatArray
    p_discharge_max_kw: FloatArray
    phases: IntArray
    voltage_v: FloatArray
    power_factor: FloatArray
    _index: dict[str, dict[str, int]] = field(repr=False, default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.A.shape[0])

    @property
    def n_connectors(self) -> int:
        return int(self.A.shape[1])

    @property
    def n_sites(self) -> int:
        return len(self.site_ids)

    @cached_property
    def A_csc(self) -> sp.csc_array:  # noqa: N802 (named after A)
        """``A`` in compressed-column form, for per-connector reductions over its rows."""
        return self.A.tocsc()

    def connector_index(self, connector_id: str) -> int:
        """Column of a connector, by its id ``"site/charger/n"``."""
        return self._lookup("connector", connector_id)

    def node_index(self, node_id: str) -> int:
        """Index of a node, by its id ``"site/node"`` (the grid connection is ``"site"``)."""
        return self._lookup("node", node_id)

    def total_row(self, node: int | str) -> int:
        """Row of a node's total-power limit."""
        n = self.node_index(node) if isinstance(node, str) else node
        return int(self._total_row_of_node[n])

    @cached_property
    def _total_row_of_node(self) -> IntArray:
        out = np.full(len(self.node_ids), -1, dtype=np.int64)
        totals = np.flatnonzero(self.row_kind == 0)
        out[self.row_node[totals]] = totals
        return out

    def _lookup(self, kind: str, key: str) -> int:
        if kind not in self._index:
            names = self.connector_ids if kind == "connector" else self.node_ids
            self._index[kind] = {name: i for i, name in enumerate(names)}
        try:
            return self._index[kind][key]
        except KeyError:
            raise KeyError(f"unknown {kind} id {key!r}") from None

    def row_upper(
        self,
        *,
        node_cap_kw: Mapping[str, float] | None = None,
        background_kw: FloatArray | None = None,
    ) -> FloatArray:
        """Effective import bound of every row: the limit, lowered by caps and background load.

        Parameters
        ----------
        node_cap_kw : mapping of node id to kW, optional
            Extra caps on nodes' total power, such as a DR event on a site (node id = site id).
        background_kw : ndarray, shape (n_sites,), optional
            Uncontrolled load at each grid connection [kW] (base load minus PV); it uses up
            capacity on the site's total row.

        Returns
        -------
        ndarray, shape (n_rows,)
        """
        ub = self.b_import.copy()
        for node_id, cap in (node_cap_kw or {}).items():
            r = self.total_row(node_id)
            ub[r] = min(ub[r], cap)
        if background_kw is not None:
            ub[self.site_root_row] -= np.asarray(background_kw, dtype=np.float64)
        return ub

    def violation(
        self,
        p_kw: FloatArray,
        *,
        upper: FloatArray | None = None,
        lower: FloatArray | None = None,
    ) -> FloatArray:
        """How far each row is over its limit for connector powers ``p_kw`` (0 if within).

        ``p_kw`` may be (n_connectors,) or (n_connectors, n_steps); ``upper``/``lower`` default to
        ``b_import``/``b_export`` and broadcast against ``A @ p_kw``.
        """
        load = self.A @ p_kw
        ub = self.b_import if upper is None else upper
        lb = self.b_export if lower is None else lower
        if load.ndim == 2:
            ub = ub if ub.ndim == 2 else ub[:, None]
            lb = lb if lb.ndim == 2 else lb[:, None]
        over: FloatArray = np.maximum(np.maximum(load - ub, -lb - load), 0.0)
        return over


def compile_topology(sites: Sequence[SiteSpec]) -> Topology:
    """Compile sites into one block-diagonal capacity system.

    Parameters
    ----------
    sites : sequence of SiteSpec

    Returns
    -------
    Topology

    Raises
    ------
    TopologyError
        For duplicate ids, an unknown parent, a cycle, a negative or missing limit, a single-phase
        charger without a phase, or an unknown rotation.

    Examples
    --------
    >>> site = SiteSpec("depot", import_kw=20, chargers=[ChargerSpec("cp", "depot", max_kw=11)])
    >>> topo = compile_topology([site])
    >>> topo.connector_ids, topo.n_rows
    (('depot/cp/1',), 2)
    """
    b = _Builder()
    seen: set[str] = set()
    for site in sites:
        if site.id in seen:
            raise TopologyError(f"site {site.id!r}: duplicate site id")
        seen.add(site.id)
        b.add_site(site)
    return b.build()


class _Builder:
    """Flattens site specs into node and connector arrays, then builds ``A`` vectorised."""

    def __init__(self) -> None:
        self.site_ids: list[str] = []
        self.node_ids: list[str] = []
        self.node_site: list[int] = []
        self.node_parent_id: list[str | None] = []
        self.node_import: list[float] = []
        self.node_export: list[float] = []
        self.node_phase_a: list[tuple[float, float, float] | None] = []
        self.conn_ids: list[str] = []
        self.conn_node: list[int] = []
        self.conn_site: list[int] = []
        self.conn_coef: list[tuple[float, float, float]] = []
        self.conn_pmax: list[float] = []
        self.conn_pmin: list[float] = []
        self.conn_pdis: list[float] = []
        self.conn_phases: list[int] = []
        self.conn_voltage: list[float] = []
        self.conn_pf: list[float] = []

    def add_node(
        self,
        node_id: str,
        parent: str | None,
        site: int,
        import_kw: float,
        export_kw: float,
        phase_a: tuple[float, float, float] | None,
    ) -> int:
        self.node_ids.append(node_id)
        self.node_site.append(site)
        self.node_parent_id.append(parent)
        self.node_import.append(import_kw)
        self.node_export.append(export_kw)
        self.node_phase_a.append(phase_a)
        return len(self.node_ids) - 1

    def add_site(self, site: SiteSpec) -> None:
        s = len(self.site_ids)
        self.site_ids.append(site.id)
        where = f"site {site.id!r}"
        _check_limit(where, "import_kw", site.import_kw)
        _check_limit(where, "export_kw", site.export_kw)
        _check_positive(where, "voltage_v", site.voltage_v)
        if not 0 < site.power_factor <= 1:
            raise TopologyError(f"{where}: power_factor must be in (0, 1], got {site.power_factor}")
        phase_a = _check_phase_a(where, site.phase_a)
        self.add_node(site.id, None, s, site.import_kw, site.export_kw, phase_a)
        local: set[str] = {site.id}

        def qualify(node_id: str) -> str:
            return site.id if node_id == site.id else f"{site.id}/{node_id}"

        for node in site.nodes:
            w = f"{where}, node {node.id!r}"
            if node.id in local:
                raise TopologyError(f"{w}: duplicate node id")
            local.add(node.id)
            _check_limit(w, "import_kw", node.import_kw)
            export = node.import_kw if node.export_kw is None else node.export_kw
            _check_limit(w, "export_kw", export)
            self.add_node(
                qualify(node.id),
                qualify(node.parent),
                s,
                node.import_kw,
                export,
                _check_phase_a(w, node.phase_a),
            )
        for ch in site.chargers:
            self.add_charger(site, s, ch, local, qualify)

    def add_charger(
        self,
        site: SiteSpec,
        s: int,
        ch: ChargerSpec,
        local: set[str],
        qualify: Callable[[str], str],
    ) -> None:
        w = f"site {site.id!r}, charger {ch.id!r}"
        if ch.id in local:
            raise TopologyError(f"{w}: duplicate id (chargers and nodes share one namespace)")
        local.add(ch.id)
        _check_positive(w, "max_kw", ch.max_kw)
        if ch.connectors < 1:
            raise TopologyError(f"{w}: connectors must be >= 1, got {ch.connectors}")
        if ch.rotation not in _ROTATIONS:
            raise TopologyError(
                f"{w}: rotation must be one of {sorted(_ROTATIONS)}, got {ch.rotation!r}"
            )
        kind = ChargerKind(ch.kind)
        rot = _ROTATIONS[ch.rotation]
        pf = site.power_factor
        coef = [0.0, 0.0, 0.0]
        if kind is ChargerKind.DC or ch.phases == 3:
            v = ch.voltage_v or site.voltage_v
            phases = 3
            coef = [1000.0 / (3 * v * pf)] * 3
        elif ch.phases == 1:
            if ch.phase is None:
                raise TopologyError(
                    f"{w}: a single-phase charger needs phase (L1, L2, L3 or L1-L2)"
                )
            terms = ch.phase.split("-")
            if (
                any(t not in _PHASE_INDEX for t in terms)
                or len(terms) > 2
                or len(set(terms)) != len(terms)
            ):
                raise TopologyError(
                    f"{w}: phase must be L1, L2, L3 or a pair like L1-L2, got {ch.phase!r}"
                )
            v = ch.voltage_v or site.voltage_v * (math.sqrt(3) if len(terms) == 2 else 1.0)
            phases = 1
            for t in terms:
                coef[rot[_PHASE_INDEX[t]]] = 1000.0 / (v * pf)
        else:
            raise TopologyError(f"{w}: phases must be 1 or 3, got {ch.phases}")
        _check_positive(w, "voltage_v", v)
        if kind is ChargerKind.AC:
            _check_limit(w, "min_a", ch.min_a)
            p_min = float(kw_from_a(ch.min_a, voltage_v=v, phases=phases, power_factor=pf))
        else:
            _check_limit(w, "min_kw", ch.min_kw)
            p_min = ch.min_kw
        if p_min > ch.max_kw:
            raise TopologyError(f"{w}: minimum power {p_min:.3f} kW exceeds max_kw {ch.max_kw}")
        p_dis = 0.0
        if ch.bidirectional:
            p_dis = ch.max_kw if ch.discharge_max_kw is None else ch.discharge_max_kw
            _check_limit(w, "discharge_max_kw", p_dis)
        node = self.add_node(qualify(ch.id), qualify(ch.node), s, ch.max_kw, p_dis, None)
        for n in range(1, ch.connectors + 1):
            self.conn_ids.append(f"{site.id}/{ch.id}/{n}")
            self.conn_node.append(node)
            self.conn_site.append(s)
            self.conn_coef.append((coef[0], coef[1], coef[2]))
            self.conn_pmax.append(ch.max_kw)
            self.conn_pmin.append(p_min)
            self.conn_pdis.append(p_dis)
            self.conn_phases.append(phases)
            self.conn_voltage.append(v)
            self.conn_pf.append(pf)

    def build(self) -> Topology:
        n_nodes = len(self.node_ids)
        index = {nid: i for i, nid in enumerate(self.node_ids)}
        parent = np.empty(n_nodes, dtype=np.int64)
        for i, pid in enumerate(self.node_parent_id):
            if pid is None:
                parent[i] = i
            elif pid not in index or self.node_site[index[pid]] != self.node_site[i]:
                site = self.site_ids[self.node_site[i]]
                raise TopologyError(
                    f"site {site!r}, node {self.node_ids[i]!r}: unknown parent "
                    f"{pid.split('/', 1)[-1]!r}"
                )
            else:
                parent[i] = index[pid]
        is_root = parent == np.arange(n_nodes)
        depth = _depths(parent, is_root, self.node_ids)

        conn_node = np.asarray(self.conn_node, dtype=np.int64)
        conn_site = np.asarray(self.conn_site, dtype=np.int64)
        coef = np.asarray(self.conn_coef, dtype=np.float64).reshape(-1, 3)
        n_conn = len(conn_node)

        # Rows: every node has a total row; nodes with phase limits add three current rows.
        has_phase = np.array([pa is not None for pa in self.node_phase_a], dtype=bool)
        node_site = np.asarray(self.node_site, dtype=np.int64)
        row_node = np.concatenate([np.arange(n_nodes), np.repeat(np.flatnonzero(has_phase), 3)])
        row_kind = np.concatenate(
            [
                np.zeros(n_nodes, np.int8),
                np.tile(np.arange(1, 4, dtype=np.int8), int(has_phase.sum())),
            ]
        )
        phase_a = np.array([pa for pa in self.node_phase_a if pa is not None], dtype=np.float64)
        b_imp = np.concatenate(
            [np.asarray(self.node_import, dtype=np.float64), phase_a.reshape(-1)]
        )
        b_exp = np.concatenate(
            [np.asarray(self.node_export, dtype=np.float64), phase_a.reshape(-1)]
        )
        # Sort rows by site (stable: a site's total rows come before its phase rows, root first).
        order = np.lexsort((row_kind, depth[row_node], node_site[row_node]))
        row_node, row_kind, b_imp, b_exp = (
            row_node[order],
            row_kind[order],
            b_imp[order],
            b_exp[order],
        )
        row_of = np.full((n_nodes, 4), -1, dtype=np.int64)
        row_of[row_node, row_kind] = np.arange(len(row_node))

        # Entries: each connector against every ancestor (its charger up to the root).
        rows_l: list[IntArray] = []
        cols_l: list[IntArray] = []
        vals_l: list[FloatArray] = []
        node = conn_node.copy()
        cols = np.arange(n_conn)
        for _ in range(int(depth.max(initial=0)) + 1):
            live = node >= 0
            nl, cl = node[live], cols[live]
            rows_l.append(row_of[nl, 0])
            cols_l.append(cl)
            vals_l.append(np.ones(len(cl)))
            for k in range(3):
                r = row_of[nl, k + 1]
                keep = (r >= 0) & (coef[cl, k] > 0)
                rows_l.append(r[keep])
                cols_l.append(cl[keep])
                vals_l.append(coef[cl[keep], k])
            nxt = parent[node[live]]
            nxt[is_root[node[live]]] = -1
            node[live] = nxt
        n_rows = len(row_node)
        A = sp.csr_array(
            (np.concatenate(vals_l), (np.concatenate(rows_l), np.concatenate(cols_l))),
            shape=(n_rows, n_conn),
        )
        A.sum_duplicates()
        A.sort_indices()
        row_site = node_site[row_node]
        n_sites = len(self.site_ids)
        return Topology(
            site_ids=tuple(self.site_ids),
            node_ids=tuple(self.node_ids),
            node_site=node_site,
            node_parent=np.where(is_root, -1, parent),
            connector_ids=tuple(self.conn_ids),
            connector_site=conn_site,
            connector_charger=conn_node,
            A=A,
            b_import=b_imp,
            b_export=b_exp,
            row_node=row_node,
            row_kind=row_kind,
            row_site=row_site,
            site_conn_ptr=_ptr(conn_site, n_sites),
            site_row_ptr=_ptr(row_site, n_sites),
            site_root_row=row_of[np.flatnonzero(is_root), 0],
            p_max_kw=np.asarray(self.conn_pmax, dtype=np.float64),
            p_min_kw=np.asarray(self.conn_pmin, dtype=np.float64),
            p_discharge_max_kw=np.asarray(self.conn_pdis, dtype=np.float64),
            phases=np.asarray(self.conn_phases, dtype=np.int64),
            voltage_v=np.asarray(self.conn_voltage, dtype=np.float64),
            power_factor=np.asarray(self.conn_pf, dtype=np.float64),
        )


def _depths(parent: IntArray, is_root: NDArray[np.bool_], names: Sequence[str]) -> IntArray:
    """Depth of each node by pointer jumping; raises on a cycle (a node that never reaches root)."""
    n = len(parent)
    depth = np.zeros(n, dtype=np.int64)
    up = parent.copy()
    done = is_root.copy()
    for _ in range(n + 1):
        if done.all():
            return depth
        active = ~done
        depth[active] += 1
        reached = active & is_root[up]
        done |= reached
        moving = active & ~reached
        up[moving] = parent[up[moving]]
    bad = int(np.flatnonzero(~done)[0])
    raise TopologyError(f"node {names[bad]!r}: its parents form a cycle")


def _ptr(group: IntArray, n_groups: int) -> IntArray:
    if len(group) and np.any(np.diff(group) < 0):
        raise AssertionError("entries must be sorted by site")
    return np.concatenate([[0], np.cumsum(np.bincount(group, minlength=n_groups))]).astype(np.int64)


def _check_limit(where: str, name: str, value: float) -> None:
    if not isinstance(value, int | float) or math.isnan(value) or value < 0:
        raise TopologyError(f"{where}: {name} must be a number >= 0, got {value!r}")


def _check_positive(where: str, name: str, value: float) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise TopologyError(f"{where}: {name} must be a finite number > 0, got {value!r}")


def _check_phase_a(
    where: str, phase_a: Sequence[float] | None
) -> tuple[float, float, float] | None:
    if phase_a is None:
        return None
    values = tuple(phase_a)
    if len(values) != 3:
        raise TopologyError(f"{where}: phase_a must list 3 currents (L1, L2, L3), got {phase_a!r}")
    for v in values:
        _check_limit(where, "phase_a", v)
    return (float(values[0]), float(values[1]), float(values[2]))
