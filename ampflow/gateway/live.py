"""The live terminal view of ``ampflow demo-live``: a site's power against its limit.

:class:`LiveView` keeps a short history of :class:`SitePoint` samples (what the central system
measures from meter values, what the simulated stations really draw, the effective import limit
and the DR cap) and renders it with rich: a chart of the recent minutes with the limit as a line,
the numbers now, the stations' states and a log of what happened.

Examples
--------
>>> import io
>>> from rich.console import Console
>>> view = LiveView("caltech", capacity_kw=150.0, width=20, height=5)
>>> for t in range(20):
...     view.add(SitePoint(float(t), 90.0 + t, 90.0 + t, 150.0 if t < 10 else 60.0,
...                        None if t < 10 else 60.0))
>>> console = Console(record=True, width=100, file=io.StringIO())
>>> console.print(view.render([]))
>>> text = console.export_text()
>>> "DR cap 60.0 kW" in text, "drawn 109.0 kW" in text, "above the limit for 10 s" in text
(True, True, True)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ampflow.gateway.stations import ConnectorStatus, SimulatedStation
from ampflow.gateway.stations.demo import (
    DemoOptions,
    ServerProcess,
    drawn_kw,
    post_dr_event,
    sim_now,
    site_state,
)
from ampflow.gateway.stations.fleet import Fleet
from ampflow.gateway.stations.runtime import SimClock

__all__ = ["DemoDisplay", "LiveView", "SitePoint", "station_summary"]

_TOLERANCE_KW = 0.5  # drawn above the limit by more than this shows red


@dataclass(frozen=True, slots=True)
class SitePoint:
    """One sample of a site.

    Attributes
    ----------
    t_s : float
        Seconds since the view started [s].
    power_kw : float or None
        Site power as the central system measures it (meter values) [kW].
    drawn_kw : float
        What the simulated stations draw [kW].
    limit_kw : float or None
        Effective import limit, caps included [kW].
    dr_cap_kw : float or None
        Active DR cap [kW].
    """

    t_s: float
    power_kw: float | None
    drawn_kw: float
    limit_kw: float | None
    dr_cap_kw: float | None


def station_summary(stations: Sequence[SimulatedStation]) -> dict[str, int]:
    """Counts over ``stations``: online, connector states, profiles and transactions."""
    out: Counter[str] = Counter()
    for st in stations:
        out["stations"] += 1
        out["online"] += st.online.is_set()
        for c in st.core:
            out[c.status.value] += 1
        out["profiles accepted"] += st.counts["profile_accepted"]
        out["profiles rejected"] += st.counts["profile_rejected"]
        out["transactions"] += st.counts["transactions_started"]
        out["reboots"] += max(st.boots - 1, 0)
    return dict(out)


class LiveView:
    """History and rendering of one site (see the module notes).

    Parameters
    ----------
    site_id : str
    capacity_kw : float
        The site's grid connection [kW], the chart's scale.
    width, height : int
        Chart size in characters (one column per sample).
    """

    def __init__(
        self, site_id: str, *, capacity_kw: float, width: int = 72, height: int = 12
    ) -> None:
        self.site_id = site_id
        self.capacity_kw = capacity_kw
        self.width = width
        self.height = height
        self.history: deque[SitePoint] = deque(maxlen=width)
        self.events: deque[str] = deque(maxlen=6)
        self.footer = ""
        self.over_s = 0.0  # seconds the stations drew above the limit (beyond tolerance)

    def add(self, point: SitePoint) -> None:
        """Record a sample."""
        if self.history and point.limit_kw is not None:
            dt = point.t_s - self.history[-1].t_s
            if point.drawn_kw > point.limit_kw + _TOLERANCE_KW:
                self.over_s += max(dt, 0.0)
        self.history.append(point)

    def note(self, message: str) -> None:
        """Add a line to the event log."""
        self.events.append(message)

    def render(
        self, stations: Sequence[SimulatedStation], *, sim_time: datetime | None = None
    ) -> RenderableType:
        """The whole view."""
        parts: list[RenderableType] = [self._headline(sim_time), self._chart()]
        parts.append(self._stations(stations))
        if self.events:
            parts.append(Panel(Text("\n".join(self.events)), title="events", title_align="left"))
        if self.footer:
            parts.append(Text(self.footer, style="dim"))
        return Group(*parts)

    def _headline(self, sim_time: datetime | None) -> RenderableType:
        last = self.history[-1] if self.history else None
        if last is None:
            return Text(f"site {self.site_id}: waiting for the first reading ...")
        over = last.limit_kw is not None and last.drawn_kw > last.limit_kw + _TOLERANCE_KW
        limit = "-" if last.limit_kw is None else f"{last.limit_kw:.1f} kW"
        cap = "none" if last.dr_cap_kw is None else f"{last.dr_cap_kw:.1f} kW"
        measured = "-" if last.power_kw is None else f"{last.power_kw:.1f} kW"
        first = Text.assemble(
            (f"{self.site_id}  ", "bold"),
            "drawn ",
            (f"{last.drawn_kw:.1f} kW", "bold red" if over else "bold green"),
            f"  metered {measured}  limit {limit}  DR cap ",
            (cap, "bold yellow" if last.dr_cap_kw is not None else ""),
        )
        clock = "" if sim_time is None else f"{sim_time:%a %H:%M} simulated   "
        second = Text(f"{clock}above the limit for {self.over_s:.0f} s", style="dim")
        return Group(first, second)

    def _chart(self) -> RenderableType:
        points = list(self.history)
        top = _scale(points, self.capacity_kw)
        rows = self.height
        step = top / rows
        lines = []
        for r in range(rows, 0, -1):
            lo, hi = (r - 1) * step, r * step
            label = f"{hi:6.0f} " if r in (rows, (rows + 1) // 2, 1) else "       "
            line = Text(label, style="dim")
            for p in points:
                line.append(_cell(p, lo, hi))
            lines.append(line)
        legend = Text.assemble(
            ("█", "green"),
            " drawn   ",
            ("█", "red"),
            " above limit   ",
            ("─", "cyan"),
            " limit   ",
            ("─", "yellow"),
            " DR cap   [kW, one column per sample]",
        )
        return Panel(Group(*lines, legend), title="site power", title_align="left")

    def _stations(self, stations: Sequence[SimulatedStation]) -> RenderableType:
        s = station_summary(stations)
        table = Table.grid(padding=(0, 3))
        for _ in range(4):
            table.add_column()
        states = [x.value for x in ConnectorStatus]
        table.add_row(
            f"stations online {s.get('online', 0)}/{s.get('stations', 0)}",
            f"transactions {s.get('transactions', 0)}",
            f"profiles accepted {s.get('profiles accepted', 0)}",
            f"rejected {s.get('profiles rejected', 0)}",
        )
        table.add_row(*(f"{k} {s.get(k, 0)}" for k in states[1:5]))
        return Panel(table, title="stations", title_align="left")


def _scale(points: Sequence[SitePoint], capacity_kw: float) -> float:
    """Chart top [kW]: room for the draw and the DR cap; the limit if it is near."""
    drawn = max((p.drawn_kw for p in points), default=0.0)
    caps = max((p.dr_cap_kw or 0.0 for p in points), default=0.0)
    limit = min((p.limit_kw or capacity_kw for p in points), default=capacity_kw)
    return max(drawn, caps, min(limit, 2.0 * drawn), 10.0) * 1.15


def _cell(p: SitePoint, lo: float, hi: float) -> Text:
    limit = p.limit_kw
    line = "yellow" if p.dr_cap_kw is not None else "cyan"
    on_line = limit is not None and lo <= limit < hi
    if p.drawn_kw > lo:
        if on_line:  # the limit stays visible across the bar
            return Text("━", style=f"bold {line} on green")
        over = limit is not None and p.drawn_kw > limit + _TOLERANCE_KW and lo >= limit
        return Text("█", style="red" if over else "green")
    if on_line:
        return Text("─", style=line)
    return Text(" ")


class DemoDisplay:
    """Drives ``ampflow demo-live``: samples the site every ``period_s``, posts the scripted DR
    event, and shows :class:`LiveView` with rich Live (or one line per sample when the console
    is not a terminal)."""

    def __init__(self, console: Console, *, period_s: float = 1.0) -> None:
        self.console = console
        self.period_s = period_s
        self.view: LiveView | None = None
        self.points: list[SitePoint] = []
        self.dr_event: dict[str, Any] | None = None

    def status(self, message: str) -> None:
        self.console.print(f"[dim]ampflow demo:[/] {message}", soft_wrap=True, highlight=False)

    def note(self, message: str) -> None:
        if self.view is not None:
            self.view.note(message)
        if self.view is None or not self.console.is_terminal:
            self.status(message)

    async def run(
        self,
        *,
        server: ServerProcess,
        api: httpx.AsyncClient,
        fleet: Fleet,
        stations: Sequence[SimulatedStation],
        clock: SimClock,
        options: DemoOptions,
        stop: asyncio.Event,
    ) -> None:
        site = await site_state(api, fleet.site_id)
        capacity = (site or {}).get("import_limit_kw") or 150.0
        view = LiveView(fleet.site_id, capacity_kw=float(capacity))
        view.footer = (
            f"API {server.url}/docs   key (analyst): {server.keys.get('analyst', '?')}   "
            f"{len(stations)} stations, OCPP {options.version.value}, speed x{options.speed:g}"
            "   Ctrl-C to stop"
        )
        self.view = view
        start = fleet.start.astimezone(ZoneInfo(fleet.timezone))
        self.note(f"{fleet.n_evs} EVs of {options.scenario} from {start:%Y-%m-%d %H:%M} local")
        t0 = time.monotonic()
        live_ctx: Any = (
            Live(view.render(stations), console=self.console, refresh_per_second=4)
            if self.console.is_terminal
            else contextlib.nullcontext()
        )
        with live_ctx as live:
            while not stop.is_set():
                elapsed = time.monotonic() - t0
                if options.duration_s is not None and elapsed >= options.duration_s:
                    break
                if self.dr_event is None and elapsed >= options.dr_after_s:
                    cap = options.dr_cap_kw
                    if cap is None:  # half of what the site draws: a cap that binds
                        cap = max(round(drawn_kw(stations) / 2.0), 5.0)
                    self.dr_event = await self._post_dr(server, fleet.site_id, cap, options)
                point = await self._sample(api, fleet.site_id, stations, elapsed)
                view.add(point)
                self.points.append(point)
                if live is not None:
                    live.update(view.render(stations, sim_time=sim_now(fleet, clock)))
                else:
                    line = _line(point, sim_now(fleet, clock), station_summary(stations))
                    self.console.print(line, highlight=False, soft_wrap=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.period_s)

    async def _post_dr(
        self, server: ServerProcess, site_id: str, cap_kw: float, options: DemoOptions
    ) -> dict[str, Any]:
        # As the utility would: with the utility's key, scoped to the demo site.
        key = server.keys.get("utility") or server.keys["admin"]
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as utility:
            event = await post_dr_event(utility, site_id, cap_kw=cap_kw, minutes=options.dr_minutes)
        self.note(
            f"DR event {event['id']} posted through the API (utility key): cap {cap_kw:g} kW "
            f"for {options.dr_minutes:g} min"
        )
        return event

    async def _sample(
        self,
        api: httpx.AsyncClient,
        site_id: str,
        stations: Sequence[SimulatedStation],
        elapsed: float,
    ) -> SitePoint:
        state = await site_state(api, site_id) or {}
        return SitePoint(
            elapsed,
            state.get("power_kw"),
            drawn_kw(stations),
            state.get("import_limit_kw"),
            state.get("dr_cap_kw"),
        )


def _line(p: SitePoint, sim_time: datetime, s: dict[str, int]) -> str:
    limit = "-" if p.limit_kw is None else f"{p.limit_kw:.1f}"
    cap = "-" if p.dr_cap_kw is None else f"{p.dr_cap_kw:.1f}"
    metered = "-" if p.power_kw is None else f"{p.power_kw:.1f}"
    return (
        f"t={p.t_s:6.1f}s sim {sim_time:%H:%M} drawn {p.drawn_kw:7.2f} kW "
        f"metered {metered} kW limit {limit} kW DR cap {cap} kW | online {s.get('online', 0)} "
        f"charging {s.get('Charging', 0)} paused {s.get('SuspendedEVSE', 0)} "
        f"full {s.get('SuspendedEV', 0)} waiting {s.get('Preparing', 0)}"
    )
