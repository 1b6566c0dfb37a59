"""Reading and checking the tables of a scenario: sessions, prices, events, base load and PV.

Every check raises :class:`ScenarioError` naming the file, the 1-based data row, the column, the
value and what was expected. Series are mapped onto the scenario's step grid by their mean over
each step, so a price series may be coarser or finer than the step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import time as dtime
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ampflow.engine.errors import AmpflowError
from ampflow.engine.topology import SiteSpec, Topology

__all__ = ["ScenarioError", "Tables", "TimeOfDayLimit", "event_caps", "tod_caps"]

FloatArray = NDArray[np.float64]

SESSION_COLUMNS = ("session_id", "charger_id", "arrival", "departure", "energy_kwh", "max_kw")
OPTIONAL_SESSION_COLUMNS = (
    "site_id",
    "connector",
    "departure_estimate",
    "battery_kwh",
    "soc_arrival",
    "v2g",
)
_OFFSET = r"(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


class ScenarioError(AmpflowError):
    """A scenario file is invalid.

    Attributes
    ----------
    file : str
        The file at fault.
    row : int or None
        1-based data row of a table (the header is not counted), if the fault is in a row.
    column : str or None
        The column or YAML key path at fault.
    """

    def __init__(self, file: str | Path, message: str, *, row: int | None = None, column: str = ""):
        self.file = str(file)
        self.row = row
        self.column = column
        where = [self.file]
        if row is not None:
            where.append(f"row {row}")
        if column:
            where.append(f"column {column!r}" if row is not None else column)
        super().__init__(f"{', '.join(where)}: {message}")


@dataclass(frozen=True)
class TimeOfDayLimit:
    """An import limit on a site for part of some weekdays, in the scenario's local time.

    ``end <= start`` wraps past midnight; ``end == "00:00"`` means the end of the day.
    """

    days: tuple[int, ...]  # 0 = Monday
    start: dtime
    end: dtime
    import_kw: float


@dataclass(frozen=True)
class _Grid:
    start: pd.Timestamp
    dt_s: int
    n_steps: int

    @property
    def end(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(seconds=self.dt_s * self.n_steps)

    @property
    def times(self) -> pd.DatetimeIndex:
        return pd.date_range(self.start, periods=self.n_steps, freq=f"{self.dt_s}s")

    def step_of(self, ts: pd.Series) -> NDArray[np.float64]:
        """Fractional step index of each timestamp."""
        seconds = (ts - self.start).dt.total_seconds().to_numpy(dtype=np.float64)
        out: NDArray[np.float64] = seconds / self.dt_s
        return out


class Tables:
    """Reads the tables of one scenario onto its grid."""

    def __init__(self, folder: Path, grid: _Grid, site_ids: Sequence[str]):
        self.folder = folder
        self.grid = grid
        self.site_ids = tuple(site_ids)

    # -- sessions --------------------------------------------------------------------------------
    def sessions(self, path: Path | None, topo: Topology, end: pd.Timestamp) -> pd.DataFrame:
        assert path is not None
        t = _Table.read(path)
        t.require(SESSION_COLUMNS)
        df = pd.DataFrame({"session_id": t.text("session_id")})
        dup = df.session_id.duplicated()
        if dup.any():
            raise t.error(int(np.flatnonzero(dup)[0]), "session_id", "duplicate session id")
        df["site_id"], df["charger_id"] = self._chargers(t, topo)
        df["arrival"] = t.times("arrival")
        df["departure"] = t.times("departure")
        df["departure_estimate"] = t.times("departure_estimate", optional=True)
        df["energy_kwh"] = t.numbers("energy_kwh", minimum=0.0)
        df["max_kw"] = t.numbers("max_kw", minimum=0.0, strict=True)
        df["battery_kwh"] = t.numbers("battery_kwh", minimum=0.0, strict=True, optional=True)
        df["soc_arrival"] = t.numbers("soc_arrival", minimum=0.0, maximum=1.0, optional=True)
        df["v2g"] = t.flags("v2g")
        self._check_times(t, df, end)
        self._check_batteries(t, df, topo)
        df["connector"], df["column"] = self._connectors(t, df, topo)
        extra = [c for c in t.df.columns if c not in df.columns]
        for c in extra:  # keep what the file carries beyond the contract (e.g. user_id)
            df[c] = t.df[c].to_numpy()
        return df

    def _chargers(self, t: _Table, topo: Topology) -> tuple[list[str], list[str]]:
        chargers = t.text("charger_id")
        by_charger: dict[str, list[str]] = {}
        for cid in topo.connector_ids:
            site, charger, _ = cid.rsplit("/", 2)
            sites = by_charger.setdefault(charger, [])
            if site not in sites:
                sites.append(site)
        given = t.text("site_id") if "site_id" in t.df else None
        sites_out = []
        for i, charger in enumerate(chargers):
            if given is not None:
                site = given[i]
                if site not in self.site_ids:
                    raise t.error(i, "site_id", f"unknown site {site!r}; sites: {self.site_ids}")
                if site not in by_charger.get(charger, []):
                    raise t.error(i, "charger_id", f"site {site!r} has no charger {charger!r}")
            else:
                options = by_charger.get(charger, [])
                if not options:
                    known = ", ".join(sorted(by_charger)[:5])
                    raise t.error(
                        i,
                        "charger_id",
                        f"unknown charger {charger!r}; known: {known}, ...",
                    )
                if len(options) > 1:
                    raise t.error(
                        i, "charger_id", f"{charger!r} exists on sites {options}; add site_id"
                    )
                site = options[0]
            sites_out.append(site)
        return sites_out, chargers

    def _check_times(self, t: _Table, df: pd.DataFrame, end: pd.Timestamp) -> None:
        start = self.grid.start
        checks = [
            ("arrival", df.arrival < start, f"expected at or after the scenario start {start}"),
            ("arrival", df.arrival >= end, f"expected before the scenario end {end}"),
            ("departure", df.departure <= df.arrival, "expected a departure after the arrival"),
            ("departure", df.departure > end, f"expected at or before the scenario end {end}"),
            (
                "departure_estimate",
                df.departure_estimate.notna() & (df.departure_estimate <= df.arrival),
                "expected an estimated departure after the arrival",
            ),
        ]
        for column, bad, expected in checks:
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise t.error(i, column, expected)

    def _check_batteries(self, t: _Table, df: pd.DataFrame, topo: Topology) -> None:
        known = df.battery_kwh.notna() & df.soc_arrival.notna()
        over = known & (df.soc_arrival * df.battery_kwh + df.energy_kwh > df.battery_kwh + 1e-9)
        if over.any():
            i = int(np.flatnonzero(over.to_numpy())[0])
            raise t.error(i, "energy_kwh", "expected at most what fits in the battery")
        partial = df.battery_kwh.notna() != df.soc_arrival.notna()
        if partial.any():
            i = int(np.flatnonzero(partial.to_numpy())[0])
            col = "soc_arrival" if df.soc_arrival.isna().iloc[i] else "battery_kwh"
            raise t.error(i, col, "battery_kwh and soc_arrival must be given together")
        for k in np.flatnonzero(df.v2g.to_numpy()):
            i = int(k)
            if not known.iloc[i]:
                raise t.error(i, "v2g", "a V2G session needs battery_kwh and soc_arrival")
            cid = f"{df.site_id.iloc[i]}/{df.charger_id.iloc[i]}/1"
            if topo.p_discharge_max_kw[topo.connector_index(cid)] <= 0:
                raise t.error(i, "v2g", "the charger is not bidirectional")

    def _connectors(
        self, t: _Table, df: pd.DataFrame, topo: Topology
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        n = len(df)
        given = t.numbers("connector", minimum=1.0, optional=True)
        number = np.zeros(n, dtype=np.int64)
        column = np.zeros(n, dtype=np.int64)
        ids = set(topo.connector_ids)
        busy_until: dict[str, pd.Timestamp] = {}
        last_row: dict[str, int] = {}
        for i in np.argsort(df.arrival.to_numpy(), kind="stable"):
            site, charger = df.site_id.iloc[i], df.charger_id.iloc[i]
            base = f"{site}/{charger}/"
            arrival = df.arrival.iloc[i]
            if math.isnan(given[i]):
                k = 1
                while f"{base}{k + 1}" in ids and busy_until.get(f"{base}{k}", arrival) > arrival:
                    k += 1
            else:
                k = int(given[i])
                if k != given[i] or f"{base}{k}" not in ids:
                    raise t.error(int(i), "connector", f"charger {charger!r} has no connector {k}")
            cid = f"{base}{k}"
            if busy_until.get(cid, arrival) > arrival:
                raise t.error(
                    int(i),
                    "arrival",
                    f"overlaps session {df.session_id.iloc[last_row[cid]]!r} (row "
                    f"{last_row[cid] + 1}) on connector {cid!r}; expected one session at a time",
                )
            busy_until[cid] = df.departure.iloc[i]
            last_row[cid] = int(i)
            number[i] = k
            column[i] = topo.connector_index(cid)
        return number, column

    # -- series ----------------------------------------------------------------------------------
    def prices(self, path: Path | None) -> tuple[FloatArray, FloatArray]:
        assert path is not None
        t = _Table.read(path)
        t.require(("time", "import_per_kwh"))
        times = t.times("time")
        t.check_regular(times, "time")
        imp = t.numbers("import_per_kwh")
        exp = t.numbers("export_per_kwh", optional=True)
        if np.isnan(exp).all():
            exp = np.zeros_like(imp)
        elif np.isnan(exp).any():
            i = int(np.flatnonzero(np.isnan(exp))[0])
            raise t.error(i, "export_per_kwh", "expected a number on every row or none")
        return self.on_grid(t, times, imp), self.on_grid(t, times, exp)

    def site_series(self, path: Path | None, what: str) -> FloatArray:
        out = np.zeros((len(self.site_ids), self.grid.n_steps))
        if path is None:
            return out
        t = _Table.read(path)
        t.require(("time", "kw"))
        sites = t.text("site_id") if "site_id" in t.df else [self.site_ids[0]] * len(t.df)
        if "site_id" not in t.df and len(self.site_ids) > 1:
            raise t.error(None, "site_id", f"is required when there are several sites ({what})")
        times = t.times("time")
        kw = t.numbers("kw", minimum=0.0)
        frame = pd.DataFrame({"site": sites, "time": times, "kw": kw})
        for site, rows in frame.groupby("site", sort=False):
            if site not in self.site_ids:
                i = int(rows.index[0])
                raise t.error(i, "site_id", f"unknown site {site!r}; sites: {self.site_ids}")
            sub = _Table(
                t.path,
                t.df.loc[rows.index].reset_index(drop=True),
                offset=[int(x) for x in rows.index],
            )
            t.check_regular(rows.time, "time", table=sub)
            out[self.site_ids.index(str(site))] = self.on_grid(sub, rows.time, rows.kw.to_numpy())
        return out

    def on_grid(self, t: _Table, times: pd.Series, values: FloatArray) -> FloatArray:
        """Mean of a piecewise-constant series over each step; it must cover the whole grid."""
        x = self.grid.step_of(times)
        if len(x) == 1:
            raise t.error(0, "time", "expected at least two rows, to know the series' interval")
        dx = x[1] - x[0]
        if x[0] > 1e-9:
            raise t.error(0, "time", f"expected the first time at or before {self.grid.start}")
        if x[-1] + dx < self.grid.n_steps - 1e-9:
            raise t.error(len(x) - 1, "time", f"expected the series to cover to {self.grid.end}")
        edges = np.append(x, x[-1] + dx)
        cum = np.concatenate([[0.0], np.cumsum(values * dx)])
        at = np.interp(np.arange(self.grid.n_steps + 1, dtype=np.float64), edges, cum)
        mean: FloatArray = np.diff(at)
        return mean

    # -- events ----------------------------------------------------------------------------------
    def events(
        self, path: Path | None, sites: Sequence[SiteSpec], levels: Sequence[float]
    ) -> pd.DataFrame:
        columns = ["site_id", "start", "end", "cap_kw", "level", "price", "announced"]
        if path is None:
            return pd.DataFrame(
                {c: pd.Series(dtype="datetime64[ns, UTC]") for c in ("start", "end", "announced")}
            ).assign(site_id=pd.Series(dtype=str), cap_kw=np.zeros(0), price=np.zeros(0))[
                ["site_id", "start", "end", "cap_kw", "price", "announced"]
            ]
        t = _Table.read(path)
        t.require(("site_id", "start", "end"))
        unknown = [c for c in t.df.columns if c not in columns]
        if unknown:
            raise t.error(None, unknown[0], f"unknown column; expected some of {columns}")
        df = pd.DataFrame({"site_id": t.text("site_id")})
        df["start"], df["end"] = t.times("start"), t.times("end")
        cap = t.numbers("cap_kw", minimum=0.0, optional=True)
        level = t.numbers("level", minimum=0.0, maximum=3.0, optional=True)
        price = t.numbers("price", optional=True)
        import_kw = {s.id: s.import_kw for s in sites}
        for i in range(len(df)):
            site = df.site_id.iloc[i]
            if site not in import_kw:
                raise t.error(i, "site_id", f"unknown site {site!r}; sites: {self.site_ids}")
            if df.end.iloc[i] <= df.start.iloc[i]:
                raise t.error(i, "end", "expected the end after the start")
            if not math.isnan(level[i]):
                if level[i] != int(level[i]):
                    raise t.error(i, "level", f"expected a SIMPLE level 0..3, got {level[i]:g}")
                by_level = levels[int(level[i])] * import_kw[site]
                cap[i] = by_level if math.isnan(cap[i]) else min(cap[i], by_level)
            if math.isnan(cap[i]) and math.isnan(price[i]):
                raise t.error(i, "cap_kw", "expected a cap_kw, a level or a price on every event")
        df["cap_kw"] = cap
        df["price"] = price
        announced = t.times("announced", optional=True)
        df["announced"] = announced.fillna(self.grid.start).clip(upper=df.start)
        return df


def event_caps(
    events: pd.DataFrame, grid: _Grid, site_ids: Sequence[str], import_price: FloatArray
) -> tuple[FloatArray, NDArray[np.bool_]]:
    """DR caps per site and step (lowest wins), and DR prices written into ``import_price``."""
    cap = np.full((len(site_ids), grid.n_steps), np.inf)
    active = np.zeros(cap.shape, dtype=bool)
    first = np.floor(grid.step_of(events["start"])).astype(np.int64)
    last = np.ceil(grid.step_of(events["end"])).astype(np.int64)
    caps = events["cap_kw"].to_numpy(dtype=np.float64)
    prices = events["price"].to_numpy(dtype=np.float64)
    for k, site in enumerate(events["site_id"]):
        s = site_ids.index(str(site))
        lo, hi = max(int(first[k]), 0), min(int(last[k]), grid.n_steps)
        if not math.isnan(caps[k]):
            cap[s, lo:hi] = np.minimum(cap[s, lo:hi], caps[k])
            active[s, lo:hi] = True
        if not math.isnan(prices[k]):
            import_price[s, lo:hi] = np.maximum(import_price[s, lo:hi], prices[k])
    return cap, active


def tod_caps(
    limits: Mapping[str, Sequence[TimeOfDayLimit]],
    grid: _Grid,
    site_ids: Sequence[str],
    tz: str,
) -> FloatArray:
    """Time-of-day import limits per site and step, evaluated in local time (DST-aware)."""
    cap = np.full((len(site_ids), grid.n_steps), np.inf)
    local = grid.times.tz_convert(tz)
    minute = np.asarray(local.hour * 60 + local.minute)
    weekday = np.asarray(local.day_of_week)
    for site, items in limits.items():
        s = site_ids.index(site)
        for lim in items:
            lo = lim.start.hour * 60 + lim.start.minute
            hi = lim.end.hour * 60 + lim.end.minute or 24 * 60
            days = np.isin(weekday, lim.days)
            if hi > lo:
                on = days & (minute >= lo) & (minute < hi)
            else:  # wraps past midnight: the early hours belong to the previous day's window
                yesterday = np.isin((weekday - 1) % 7, lim.days)
                on = (days & (minute >= lo)) | (yesterday & (minute < hi))
            cap[s, on] = np.minimum(cap[s, on], lim.import_kw)
    return cap


class _Table:
    """A table read as text, with row-aware parsing and errors."""

    def __init__(self, path: Path, df: pd.DataFrame, *, offset: Sequence[int] | None = None):
        self.path = path
        self.df = df
        self.offset = None if offset is None else list(offset)

    @classmethod
    def read(cls, path: Path) -> _Table:
        try:
            if path.suffix.lower() == ".parquet":
                df = pd.read_parquet(path)
                df = df.astype({c: str for c in df.columns if df[c].dtype == object})
                for c in df.columns:
                    if isinstance(
                        df[c].dtype, pd.DatetimeTZDtype
                    ) or pd.api.types.is_datetime64_dtype(df[c]):
                        df[c] = df[c].map(lambda v: "" if pd.isna(v) else v.isoformat())
                    else:
                        df[c] = df[c].map(lambda v: "" if _missing(v) else str(v))
            else:
                df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise ScenarioError(path, f"cannot read the table ({exc})") from exc
        df.columns = [str(c).strip() for c in df.columns]
        return cls(path, df)

    def error(self, i: int | None, column: str, message: str) -> ScenarioError:
        row = None if i is None else (self.offset[i] if self.offset is not None else i) + 1
        value = ""
        if i is not None and column in self.df:
            value = f" (got {self.df[column].iloc[i]!r})"
        return ScenarioError(self.path, message + value, row=row, column=column)

    def require(self, columns: Sequence[str]) -> None:
        missing = [c for c in columns if c not in self.df.columns]
        if missing:
            raise ScenarioError(
                self.path,
                f"missing column {missing[0]!r}; the table has {list(self.df.columns)}",
                column=missing[0],
            )

    def text(self, column: str) -> list[str]:
        values = self.df[column].astype(str).str.strip()
        empty = values == ""
        if empty.any():
            raise self.error(int(np.flatnonzero(empty.to_numpy())[0]), column, "expected a value")
        return list(values)

    def times(self, column: str, *, optional: bool = False) -> pd.Series:
        if column not in self.df:
            if optional:
                return pd.Series(pd.NaT, index=self.df.index, dtype="datetime64[ns, UTC]")
            self.require([column])
        raw = self.df[column].astype(str).str.strip()
        empty = raw == ""
        if empty.any() and not optional:
            raise self.error(int(np.flatnonzero(empty.to_numpy())[0]), column, "expected a time")
        naive = ~empty & ~raw.str.contains(_OFFSET, regex=True)
        if naive.any():
            i = int(np.flatnonzero(naive.to_numpy())[0])
            raise self.error(i, column, "expected a timestamp with a UTC offset (not naive)")
        parsed = pd.to_datetime(raw.where(~empty), utc=True, format="ISO8601", errors="coerce")
        bad = parsed.isna() & ~empty
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise self.error(i, column, "expected an RFC 3339 timestamp")
        return parsed.astype("datetime64[ns, UTC]")

    def numbers(
        self,
        column: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        strict: bool = False,
        optional: bool = False,
    ) -> FloatArray:
        if column not in self.df:
            if optional:
                return np.full(len(self.df), np.nan)
            self.require([column])
        raw = self.df[column].astype(str).str.strip()
        values = pd.to_numeric(raw.where(raw != ""), errors="coerce").to_numpy(
            np.float64, copy=True
        )
        bad = (np.isnan(values) & ((raw != "").to_numpy() | (not optional))) | np.isinf(values)
        if minimum is not None:
            bad |= values < minimum if not strict else values <= minimum
        if maximum is not None:
            bad |= values > maximum
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            lo = "" if minimum is None else (f" > {minimum:g}" if strict else f" >= {minimum:g}")
            hi = "" if maximum is None else f" <= {maximum:g}"
            joint = " and" if lo and hi else ""
            raise self.error(i, column, f"expected a finite number{lo}{joint}{hi}")
        return values

    def flags(self, column: str) -> NDArray[np.bool_]:
        if column not in self.df:
            return np.zeros(len(self.df), dtype=bool)
        raw = self.df[column].astype(str).str.strip().str.lower()
        bad = ~raw.isin(_TRUE | _FALSE)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise self.error(i, column, "expected true or false")
        out: NDArray[np.bool_] = raw.isin(_TRUE).to_numpy()
        return out

    def check_regular(self, times: pd.Series, column: str, *, table: _Table | None = None) -> None:
        t = table or self
        diff = times.diff().dt.total_seconds().to_numpy()[1:]
        if len(diff) == 0:
            return
        step = diff[0]
        if step <= 0:
            raise t.error(1, column, "expected strictly increasing times")
        bad = diff != step
        if bad.any():
            i = int(np.flatnonzero(bad)[0]) + 1
            what = "a gap" if diff[i - 1] > step else "times out of order or uneven"
            raise t.error(
                i, column, f"{what}: expected one row every {step:g} s after the previous row"
            )


def _missing(v: object) -> bool:
    try:
        return bool(pd.isna(v))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False
