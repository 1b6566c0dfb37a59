"""The scenario file format: a YAML file plus CSV or Parquet tables beside it.

This is the public contract of ``DESIGN.md`` ("Scenario files"). :func:`load_scenario` reads a
scenario, checks every field and returns a :class:`Scenario` of tz-aware UTC tables and arrays on
the scenario's step grid. A bad file raises :class:`ScenarioError`, which names the file, the row
and the column, the value and what was expected. Nothing is silently dropped or clipped.

Beyond the contract, a site may carry time-of-day import limits in the scenario's time zone::

    limits:
      - {days: [mon, tue, wed, thu, fri], start: "16:00", end: "21:00", import_kw: 80}

and the scenario may set ``dr_levels`` (the fraction of each site's import limit that SIMPLE
levels 0..3 leave, default ``[1.0, 0.75, 0.5, 0.0]``), ``degradation_per_kwh`` (battery wear per
kWh discharged), ``default_dwell_h`` (the typical dwell a policy may assume for a session
without a departure estimate, learnt from data before the scenario) and ``description``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import yaml
from numpy.typing import NDArray

from ampflow.engine.errors import AmpflowError
from ampflow.engine.topology import ChargerSpec, NodeSpec, SiteSpec, Topology, compile_topology
from ampflow.scenarios.tables import (
    ScenarioError,
    Tables,
    TimeOfDayLimit,
    _Grid,
    event_caps,
    tod_caps,
)

__all__ = [
    "DEFAULT_DR_LEVELS",
    "Scenario",
    "ScenarioError",
    "TimeOfDayLimit",
    "load_scenario",
]

FloatArray = NDArray[np.float64]

DEFAULT_DR_LEVELS: tuple[float, float, float, float] = (1.0, 0.75, 0.5, 0.0)

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Scenario:
    """A loaded scenario: sites, sessions and signals on one step grid.

    Times in tables are tz-aware UTC; arrays over time have ``n_steps`` entries, one per step
    starting at ``times[k]``.

    Attributes
    ----------
    sessions : pandas.DataFrame
        One row per session: ``session_id``, ``site_id``, ``charger_id``, ``connector`` (1-based),
        ``column`` (the connector's column in ``topology``), ``arrival``, ``departure``,
        ``departure_estimate`` (NaT if not given), ``energy_kwh`` [kWh], ``max_kw`` [kW],
        ``battery_kwh`` and ``soc_arrival`` (NaN if not given), ``v2g`` (bool).
    import_price, export_price : ndarray, shape (n_sites, n_steps)
        [currency/kWh]; DR price events already applied to the import price.
    base_load_kw, pv_kw : ndarray, shape (n_sites, n_steps)
        Uncontrolled load and PV production at each grid connection [kW], 0 if not given.
    cap_kw : ndarray, shape (n_sites, n_steps)
        The lowest of the DR caps and time-of-day limits on each site's import [kW]; ``inf``
        where none applies. The grid connection limit is in ``topology``.
    dr_active : ndarray of bool, shape (n_sites, n_steps)
        Whether a DR cap (from ``events``) applies.
    events : pandas.DataFrame
        The DR events: ``site_id``, ``start``, ``end``, ``cap_kw`` (levels already turned into
        kW), ``price`` (NaN if none), ``announced`` (when a policy may first know of it).
    """

    name: str
    path: Path | None
    timezone: str
    start: pd.Timestamp
    end: pd.Timestamp
    dt_s: int
    sites: tuple[SiteSpec, ...]
    topology: Topology
    sessions: pd.DataFrame
    import_price: FloatArray
    export_price: FloatArray
    base_load_kw: FloatArray
    pv_kw: FloatArray
    cap_kw: FloatArray
    dr_active: NDArray[np.bool_]
    events: pd.DataFrame
    demand_charge_per_kw: float = 0.0
    degradation_per_kwh: float = 0.0
    description: str = ""
    default_dwell_h: float | None = None
    time_of_day_limits: Mapping[str, tuple[TimeOfDayLimit, ...]] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return int(self.import_price.shape[1])

    @property
    def times(self) -> pd.DatetimeIndex:
        """Start of every step (UTC)."""
        return pd.date_range(self.start, periods=self.n_steps, freq=f"{self.dt_s}s")

    @property
    def background_kw(self) -> FloatArray:
        """Base load minus PV at each grid connection [kW], shape (n_sites, n_steps)."""
        out: FloatArray = self.base_load_kw - self.pv_kw
        return out

    @property
    def departure_known(self) -> bool:
        """Whether policies see true departures (no ``departure_estimate`` column given)."""
        return bool(self.sessions["departure_estimate"].isna().all())


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file and the tables it names.

    Parameters
    ----------
    path : str or Path
        The YAML file; tables are resolved relative to its folder.

    Returns
    -------
    Scenario

    Raises
    ------
    ScenarioError
        For any invalid field, naming the file, row, column and what was expected.

    Examples
    --------
    >>> from ampflow.scenarios import bundled_scenario
    >>> s = load_scenario(bundled_scenario("caltech-week"))
    >>> s.topology.n_connectors, s.dt_s, s.n_steps
    (54, 300, 2016)
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(path, f"cannot read the file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(path, f"not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ScenarioError(path, "expected a mapping of scenario keys at the top level")
    return _Loader(path, raw).load()


class _Loader:
    def __init__(self, path: Path, raw: dict[str, Any]):
        self.path = path
        self.raw = raw

    def fail(self, key: str, message: str) -> ScenarioError:
        return ScenarioError(self.path, message, column=key)

    def load(self) -> Scenario:
        raw = self.raw
        _no_unknown(self, "", raw, set(_TOP_LEVEL))
        tz = self.timezone()
        start = self.timestamp("start")
        end = self.timestamp("end")
        dt_s = self.step()
        if end <= start:
            raise self.fail("end", f"must be after start ({start.isoformat()}), got {end}")
        span = (end - start).total_seconds()
        if span % dt_s:
            raise self.fail("end", f"end - start ({span:g} s) must be a whole number of steps")
        n_steps = int(span // dt_s)
        sites = self.sites()
        try:
            topo = compile_topology(sites)
        except AmpflowError as exc:
            raise self.fail("sites", str(exc)) from exc
        grid = _Grid(start, dt_s, n_steps)
        site_ids = topo.site_ids
        tables = Tables(self.path.parent, grid, site_ids)
        sessions = tables.sessions(self.table_path("sessions", required=True), topo, end)
        import_price, export_price = tables.prices(self.table_path("prices", required=True))
        levels = self.dr_levels()
        events = tables.events(self.table_path("events"), sites, levels)
        import_price = np.tile(import_price, (len(site_ids), 1))
        export_price = np.tile(export_price, (len(site_ids), 1))
        cap, dr_active = event_caps(events, grid, site_ids, import_price)
        tod = {s.id: self.tod_limits(i, s) for i, s in enumerate(sites)}
        cap = np.minimum(cap, tod_caps(tod, grid, site_ids, tz))
        return Scenario(
            name=str(raw.get("name") or self.path.stem),
            path=self.path,
            timezone=tz,
            start=start,
            end=end,
            dt_s=dt_s,
            sites=tuple(sites),
            topology=topo,
            sessions=sessions,
            import_price=import_price,
            export_price=export_price,
            base_load_kw=tables.site_series(self.table_path("base_load"), "base_load"),
            pv_kw=tables.site_series(self.table_path("pv"), "pv"),
            cap_kw=cap,
            dr_active=dr_active,
            events=events,
            demand_charge_per_kw=self.number("demand_charge_per_kw", 0.0),
            degradation_per_kwh=self.number("degradation_per_kwh", 0.0),
            description=str(raw.get("description", "")),
            default_dwell_h=self.dwell(),
            time_of_day_limits={k: v for k, v in tod.items() if v},
        )

    # -- top-level keys --------------------------------------------------------------------------
    def timezone(self) -> str:
        tz = self.raw.get("timezone", "UTC")
        try:
            ZoneInfo(str(tz))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise self.fail("timezone", f"expected an IANA time zone name, got {tz!r}") from exc
        return str(tz)

    def timestamp(self, key: str) -> pd.Timestamp:
        value = self.raw.get(key)
        if value is None:
            raise self.fail(key, "is required (an RFC 3339 timestamp with offset)")
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise self.fail(key, f"expected an RFC 3339 timestamp, got {value!r}") from exc
        if ts.tzinfo is None:
            raise self.fail(key, f"expected a timestamp with a UTC offset, got naive {value!r}")
        return ts.tz_convert("UTC")

    def step(self) -> int:
        value = self.raw.get("step", "5min")
        try:
            td = pd.Timedelta(value) if isinstance(value, str) else pd.Timedelta(seconds=value)
        except (ValueError, TypeError) as exc:
            raise self.fail("step", f"expected a duration such as '5min', got {value!r}") from exc
        seconds = td.total_seconds()
        if seconds <= 0 or seconds != int(seconds):
            raise self.fail("step", f"expected a whole number of seconds > 0, got {value!r}")
        return int(seconds)

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:
            raise self.fail(key, f"expected a number >= {minimum:g}, got {value!r}")
        if not math.isfinite(value):
            raise self.fail(key, f"expected a finite number, got {value!r}")
        return float(value)

    def dwell(self) -> float | None:
        if self.raw.get("default_dwell_h") is None:
            return None
        value = self.number("default_dwell_h", 0.0)
        if value <= 0:
            raise self.fail("default_dwell_h", f"expected a number of hours > 0, got {value!r}")
        return value

    def dr_levels(self) -> tuple[float, ...]:
        value = self.raw.get("dr_levels", list(DEFAULT_DR_LEVELS))
        ok = isinstance(value, list) and len(value) == 4
        ok = ok and all(isinstance(v, int | float) and 0 <= v <= 1 for v in value)
        if not ok:
            raise self.fail("dr_levels", f"expected 4 fractions in [0, 1], got {value!r}")
        return tuple(float(v) for v in value)

    def table_path(self, key: str, *, required: bool = False) -> Path | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.fail(key, "is required (a CSV or Parquet file beside the YAML)")
            return None
        p = self.path.parent / str(value)
        if p.suffix.lower() not in (".csv", ".parquet", ".gz"):
            raise self.fail(key, f"expected a .csv, .csv.gz or .parquet file, got {value!r}")
        if not p.exists():
            raise self.fail(key, f"file {str(value)!r} not found beside the scenario")
        return p

    # -- sites -----------------------------------------------------------------------------------
    def sites(self) -> list[SiteSpec]:
        raw_sites = self.raw.get("sites")
        if not isinstance(raw_sites, list) or not raw_sites:
            raise self.fail("sites", "expected a non-empty list of sites")
        return [self.site(i, s) for i, s in enumerate(raw_sites)]

    def site(self, i: int, raw: Any) -> SiteSpec:
        key = f"sites[{i}]"
        d = _mapping(self, key, raw, {"id", "import_kw"})
        known = {
            "id",
            "import_kw",
            "export_kw",
            "voltage_v",
            "phase_a",
            "power_factor",
            "nodes",
            "chargers",
            "limits",
            "name",
        }
        _no_unknown(self, key, d, known)
        nodes = [
            NodeSpec(**self.fields(f"{key}.nodes[{j}]", n, _NODE_FIELDS))
            for j, n in enumerate(_list(self, f"{key}.nodes", d.get("nodes", [])))
        ]
        chargers = [
            ChargerSpec(**self.charger(f"{key}.chargers[{j}]", c, str(d["id"])))
            for j, c in enumerate(_list(self, f"{key}.chargers", d.get("chargers", [])))
        ]
        site = self.fields(key, {k: v for k, v in d.items() if k in _SITE_FIELDS}, _SITE_FIELDS)
        return SiteSpec(**site, nodes=nodes, chargers=chargers)

    def charger(self, key: str, raw: Any, site_id: str) -> dict[str, Any]:
        d = _mapping(self, key, raw, {"id", "max_kw"})
        d = dict(d)
        d.setdefault("node", site_id)
        out = self.fields(key, d, _CHARGER_FIELDS)
        if str(out.get("kind", "AC")).upper() == "DC":
            out["phases"] = 3
        return out

    def fields(self, key: str, d: Any, spec: Mapping[str, str]) -> dict[str, Any]:
        d = _mapping(self, key, d, set())
        _no_unknown(self, key, d, set(spec))
        out: dict[str, Any] = {}
        for name, kind in spec.items():
            if name not in d:
                continue
            out[name] = _typed(self, f"{key}.{name}", d[name], kind)
        return out

    def tod_limits(self, i: int, site: SiteSpec) -> tuple[TimeOfDayLimit, ...]:
        raw = self.raw["sites"][i].get("limits", [])
        out = []
        for j, item in enumerate(_list(self, f"sites[{i}].limits", raw)):
            key = f"sites[{i}].limits[{j}]"
            d = _mapping(self, key, item, {"start", "end", "import_kw"})
            _no_unknown(self, key, d, {"days", "start", "end", "import_kw"})
            days = d.get("days", list(_DAYS))
            if not isinstance(days, list) or any(str(x).lower()[:3] not in _DAYS for x in days):
                raise self.fail(f"{key}.days", f"expected weekday names like mon, got {days!r}")
            out.append(
                TimeOfDayLimit(
                    days=tuple(sorted({_DAYS.index(str(x).lower()[:3]) for x in days})),
                    start=_clock(self, f"{key}.start", d["start"]),
                    end=_clock(self, f"{key}.end", d["end"]),
                    import_kw=float(_typed(self, f"{key}.import_kw", d["import_kw"], "kw")),
                )
            )
        return tuple(out)


_TOP_LEVEL = (
    "name",
    "description",
    "timezone",
    "start",
    "end",
    "step",
    "sites",
    "sessions",
    "prices",
    "demand_charge_per_kw",
    "degradation_per_kwh",
    "default_dwell_h",
    "dr_levels",
    "events",
    "base_load",
    "pv",
)
_SITE_FIELDS = {
    "id": "id",
    "import_kw": "kw",
    "export_kw": "kw",
    "voltage_v": "pos",
    "phase_a": "phase_a",
    "power_factor": "pos",
}
_NODE_FIELDS = {
    "id": "id",
    "parent": "id",
    "import_kw": "kw",
    "export_kw": "kw",
    "phase_a": "phase_a",
}
_CHARGER_FIELDS = {
    "id": "id",
    "node": "id",
    "max_kw": "pos",
    "connectors": "count",
    "kind": "kind",
    "phases": "count",
    "phase": "id",
    "rotation": "id",
    "min_a": "kw",
    "min_kw": "kw",
    "voltage_v": "pos",
    "bidirectional": "bool",
    "discharge_max_kw": "kw",
}


def _mapping(loader: _Loader, key: str, raw: Any, required: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise loader.fail(key, f"expected a mapping, got {raw!r}")
    missing = sorted(required - set(raw))
    if missing:
        raise loader.fail(f"{key}.{missing[0]}", "is required")
    return raw


def _list(loader: _Loader, key: str, raw: Any) -> list[Any]:
    if not isinstance(raw, list):
        raise loader.fail(key, f"expected a list, got {raw!r}")
    return raw


def _no_unknown(loader: _Loader, key: str, d: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        raise loader.fail(where, f"unknown key; expected one of {sorted(known)}")


def _typed(loader: _Loader, key: str, value: Any, kind: str) -> Any:
    def bad(expected: str) -> ScenarioError:
        return loader.fail(key, f"expected {expected}, got {value!r}")

    is_num = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "id":
        if not isinstance(value, str | int) or isinstance(value, bool) or not str(value):
            raise bad("a non-empty string")
        return str(value)
    if kind in ("kw", "pos"):
        if not is_num or not value >= 0 or (kind == "pos" and value == 0):
            raise bad("a number > 0" if kind == "pos" else "a number >= 0")
        return float(value)
    if kind == "count":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad("a whole number >= 1")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "kind":
        if str(value).upper() not in ("AC", "DC"):
            raise bad("AC or DC")
        return str(value).upper()
    if kind == "phase_a":
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value] * 3
        ok = isinstance(value, list) and len(value) == 3
        if not ok or not all(isinstance(v, int | float) and v >= 0 for v in value):
            raise bad("three currents >= 0 [A] for L1, L2, L3")
        return tuple(float(v) for v in value)
    raise AssertionError(kind)  # pragma: no cover


def _clock(loader: _Loader, key: str, value: Any) -> dtime:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", str(value))
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise loader.fail(key, f"expected a local time HH:MM, got {value!r}")
    return dtime(int(m[1]), int(m[2]))
