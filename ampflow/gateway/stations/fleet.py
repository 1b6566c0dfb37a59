"""The stations of a scenario's site, and running many of them at once.

One simulated station per charger of the site (station id = charger id), with the charger's
connectors, phases, voltage and power; its EVs are the scenario's sessions on that charger,
timed from ``start`` in simulated seconds. Quirks are handed out to a share of the stations,
deterministically (every ``1/share``-th station, each quirk from another offset).

Examples
--------
>>> from ampflow.scenarios.bundled import bundled_scenario
>>> from ampflow.scenarios.format import load_scenario
>>> sc = load_scenario(bundled_scenario("caltech-week"))
>>> fleet = fleet_from_scenario(sc, start="2019-10-08T07:30-07:00", hours=24, stations=54)
>>> len(fleet.configs), fleet.configs[0].station_id, fleet.configs[0].phases
(54, 'CA-148', 1)
>>> fleet.n_evs, fleet.charger_of["CA-148"]
(39, 'CA-148')
>>> quirky = fleet_from_scenario(sc, quirks={"w_only": 0.1, "ignores_number_phases": 0.1})
>>> [c.station_id for c in quirky.configs if Quirk.W_ONLY in c.quirks]
['CA-308', 'CA-318', 'CA-489', 'CA-499', 'CA-509']
>>> [c.station_id for c in quirky.configs if Quirk.IGNORES_NUMBER_PHASES in c.quirks]
['CA-305', 'CA-315', 'CA-325', 'CA-496', 'CA-506']
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from ampflow.engine.topology import ChargerKind, ChargerSpec, SiteSpec
from ampflow.gateway.stations.config import OcppVersion, Quirk, StationConfig, StationConfigError
from ampflow.gateway.stations.core import EvPlan
from ampflow.gateway.stations.runtime import SimClock, SimulatedStation
from ampflow.scenarios.format import Scenario

__all__ = ["Fleet", "fleet_from_scenario", "run_fleet"]


@dataclass(frozen=True)
class Fleet:
    """Station configurations and their EVs, timed from ``start`` (simulated seconds);
    ``charger_of`` maps a station id to the charger it drives (None for clones)."""

    site_id: str
    start: datetime
    configs: tuple[StationConfig, ...]
    evs: Mapping[str, tuple[EvPlan, ...]]
    charger_of: Mapping[str, str | None]
    timezone: str = "UTC"

    @property
    def n_evs(self) -> int:
        """EVs visiting the fleet's stations."""
        return sum(len(v) for v in self.evs.values())

    def stations(
        self,
        url: str,
        *,
        clock: SimClock,
        step_s: float = 1.0,
        response_timeout_s: float = 15.0,
        iso15118: bool = True,
    ) -> list[SimulatedStation]:
        """One :class:`SimulatedStation` per configuration, sharing ``clock``."""
        return [
            SimulatedStation(
                cfg,
                url,
                evs=self.evs.get(cfg.station_id, ()),
                clock=clock,
                step_s=step_s,
                response_timeout_s=response_timeout_s,
                iso15118=iso15118,
            )
            for cfg in self.configs
        ]


def _id_tag(session_id: str) -> str:
    return "EV" + hashlib.sha1(session_id.encode()).hexdigest()[:10].upper()


def _has_quirk(i: int, share: float) -> bool:
    return math.floor((i + 1) * share + 1e-9) > math.floor(i * share + 1e-9)


def _config(
    charger: ChargerSpec, site: SiteSpec, station_id: str, *, version: OcppVersion, **kw: object
) -> StationConfig:
    dc = charger.kind is ChargerKind.DC
    return StationConfig(
        station_id,
        version=version,
        connectors=charger.connectors,
        max_kw=charger.max_kw,
        phases=3 if dc else charger.phases,
        voltage_v=charger.voltage_v or site.voltage_v,
        min_a=0.0 if dc else charger.min_a,
        **kw,  # type: ignore[arg-type]
    )


def fleet_from_scenario(
    scenario: Scenario,
    *,
    start: str | datetime | None = None,
    hours: float | None = None,
    stations: int | None = None,
    site_id: str | None = None,
    version: OcppVersion | str = OcppVersion.V16,
    quirks: Mapping[Quirk, float] | Mapping[str, float] | None = None,
    password: str | None = None,
    meter_interval_s: float = 10.0,
) -> Fleet:
    """The stations of one site of ``scenario`` (see the module notes).

    Parameters
    ----------
    scenario : Scenario
    start : str or datetime, optional
        Simulated start (default: the scenario's start); EVs already there are plugged in.
    hours : float, optional
        Only EVs arriving within this many simulated hours of ``start``.
    stations : int, optional
        Number of stations (default: every charger of the site); more than the site has are
        clones (``{charger}.{k}``) whose EVs are the same sessions.
    site_id : str, optional
        The site (default: the first).
    version : OcppVersion
    quirks : mapping of Quirk to float, optional
        Share of the stations with each quirk, in [0, 1].
    password : str, optional
        HTTP Basic password of every station.
    meter_interval_s : float
        Real seconds between meter values.

    Raises
    ------
    StationConfigError
        For an unknown site or quirk, a share outside [0, 1], or ``stations`` < 1.
    """
    site = _site(scenario, site_id)
    t0 = pd.Timestamp(start) if start is not None else scenario.start
    if t0.tzinfo is None:
        t0 = t0.tz_localize(scenario.timezone)
    t0 = t0.tz_convert("UTC")
    n = len(site.chargers) if stations is None else stations
    if not isinstance(n, int) or n < 1:
        raise StationConfigError(f"stations must be an integer >= 1, got {stations!r}")
    shares = _shares(quirks or {})
    version = OcppVersion(version)
    configs, evs, charger_of = [], {}, {}
    by_charger = _sessions(scenario, site.id, t0, hours)
    for i in range(n):
        charger = site.chargers[i % len(site.chargers)]
        k = i // len(site.chargers)
        sid = charger.id if k == 0 else f"{charger.id}.{k}"
        # Each quirk counts from another station, so shares rarely land on the same ones.
        mine = frozenset(
            q for k, (q, share) in enumerate(shares.items()) if _has_quirk(i + 3 * k, share)
        )
        configs.append(
            _config(
                charger,
                site,
                sid,
                version=version,
                quirks=mine,
                password=password,
                meter_interval_s=meter_interval_s,
            )
        )
        evs[sid] = by_charger.get(charger.id, ())
        charger_of[sid] = charger.id if k == 0 else None
    return Fleet(site.id, t0.to_pydatetime(), tuple(configs), evs, charger_of, scenario.timezone)


def _site(scenario: Scenario, site_id: str | None) -> SiteSpec:
    if site_id is None:
        return scenario.sites[0]
    for site in scenario.sites:
        if site.id == site_id:
            return site
    known = [s.id for s in scenario.sites]
    raise StationConfigError(f"site_id must be one of {known}, got {site_id!r}")


def _shares(quirks: Mapping[Quirk, float] | Mapping[str, float]) -> dict[Quirk, float]:
    out = {}
    for key, share in quirks.items():
        try:
            quirk = Quirk(key)
        except ValueError:
            choices = ", ".join(q.value for q in Quirk)
            raise StationConfigError(f"quirk must be one of {choices}, got {key!r}") from None
        if not 0.0 <= share <= 1.0:
            raise StationConfigError(f"quirk {quirk.value}: share must be in [0, 1], got {share}")
        out[quirk] = float(share)
    return out


def _sessions(
    scenario: Scenario, site_id: str, t0: pd.Timestamp, hours: float | None
) -> dict[str, tuple[EvPlan, ...]]:
    df = scenario.sessions
    df = df[(df.site_id == site_id) & (df.departure > t0)]
    if hours is not None:
        df = df[df.arrival < t0 + pd.Timedelta(hours=hours)]
    df = df.sort_values("arrival")
    arrival = (df.arrival - t0).dt.total_seconds().to_numpy(dtype=float)
    departure = (df.departure - t0).dt.total_seconds().to_numpy(dtype=float)
    nan = pd.Series(float("nan"), index=df.index)
    battery = df.get("battery_kwh", nan).to_numpy(dtype=float)
    soc = df.get("soc_arrival", nan).to_numpy(dtype=float)
    connector = df.get("connector", pd.Series(1, index=df.index)).to_numpy(dtype=int)
    columns = zip(
        df.session_id.astype(str),
        df.charger_id.astype(str),
        arrival,
        departure,
        df.energy_kwh.to_numpy(dtype=float),
        df.max_kw.to_numpy(dtype=float),
        battery,
        soc,
        connector,
        strict=True,
    )
    out: dict[str, list[EvPlan]] = {}
    for sid, charger, a, d, kwh, kw, bat, s0, conn in columns:
        out.setdefault(charger, []).append(
            EvPlan(
                session_id=sid,
                arrival_s=max(float(a), 0.0),
                departure_s=float(d),
                energy_kwh=float(kwh),
                max_kw=float(kw),
                id_tag=_id_tag(sid),
                battery_kwh=None if math.isnan(bat) else float(bat),
                soc_arrival=None if math.isnan(s0) else float(s0),
                connector=max(int(conn), 1),
            )
        )
    return {k: tuple(v) for k, v in out.items()}


async def run_fleet(
    stations: Sequence[SimulatedStation], stop: asyncio.Event, *, ramp_s: float = 0.0
) -> None:
    """Run ``stations`` until ``stop`` is set; connections are spread over ``ramp_s``."""

    async def one(i: int, station: SimulatedStation) -> None:
        if ramp_s > 0 and len(stations) > 1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ramp_s * i / (len(stations) - 1))
        if not stop.is_set():
            await station.run(stop)

    await asyncio.gather(*(one(i, s) for i, s in enumerate(stations)))
