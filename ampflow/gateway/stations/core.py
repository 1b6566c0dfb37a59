"""A charge point's inside, without the protocol: connectors, EVs, transactions, what it draws.

:class:`StationCore` is pure state plus arithmetic, driven by the caller's clock, so it is tested
without sockets. Every change of what a connector may draw goes through :meth:`recompute`,
which sets each connector's power to

``min(EV demand, composite limit of the connector)``, then shares the station maximum (connector
0) among the connectors (water-filling), and pauses a connector whose share is below the EV's
minimum current (IEC 61851: an AC EV cannot charge under 6 A).

So a station never draws above its composite schedule: the adapters call :meth:`recompute`
before they answer a SetChargingProfile, and the runtime calls it at every step and at every
instant a schedule period changes.

Examples
--------
>>> from datetime import UTC, datetime
>>> from ampflow.gateway.stations.config import StationConfig
>>> now = datetime(2026, 3, 2, 8, tzinfo=UTC)
>>> core = StationCore(StationConfig("CP-1", max_kw=7.4, phases=1, voltage_v=230.0))
>>> c = core.plug_in(EvPlan("s1", 0.0, 3600.0, 10.0, 11.0, "TAG1"), now=now)
>>> core.begin_tx(c.number, "T-1", now=now)
>>> core.recompute(now)
>>> c.power_w, c.status.value
(7400.0, 'Charging')
>>> core.advance(1800.0)
>>> round(c.delivered_kwh, 2), round(c.energy_wh)
(3.7, 3700)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from ampflow.gateway.stations.config import Quirk, StationConfig
from ampflow.gateway.stations.profiles import Period, ProfileStore, Purpose, Tx

__all__ = ["ConnectorState", "ConnectorStatus", "EvPlan", "StationCore"]


class ConnectorStatus(StrEnum):
    """Connector status (OCPP 1.6 ``ChargePointStatus``; 2.0.1 maps it to Available/Occupied)."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    UNAVAILABLE = "Unavailable"


@dataclass(frozen=True, slots=True)
class EvPlan:
    """An EV visit from a scenario, in simulated seconds from the simulation start.

    Attributes
    ----------
    session_id : str
    arrival_s, departure_s : float
        Plug-in and plug-out [simulated s].
    energy_kwh : float
        Energy the EV takes before it stops drawing [kWh].
    max_kw : float
        The EV's own charging power limit [kW].
    id_tag : str
        The token it authorises with.
    battery_kwh, soc_arrival : float or None
        Battery size [kWh] and state of charge at arrival [0-1], for SoC meter values.
    connector : int
        The connector it plugs into.
    """

    session_id: str
    arrival_s: float
    departure_s: float
    energy_kwh: float
    max_kw: float
    id_tag: str
    battery_kwh: float | None = None
    soc_arrival: float | None = None
    connector: int = 1


@dataclass
class ConnectorState:
    """The live state of one connector (mutable; owned by :class:`StationCore`)."""

    number: int
    status: ConnectorStatus = ConnectorStatus.AVAILABLE
    ev: EvPlan | None = None
    delivered_kwh: float = 0.0
    tx: Tx | None = None
    id_tag: str | None = None
    energy_wh: float = 0.0
    power_w: float = 0.0
    limit_w: float = 0.0
    phases: int = 3  # phases it charges on now
    meter_start_wh: float = 0.0
    seq_no: int = 0
    stopped: bool = False  # the transaction was stopped while the EV stays plugged in
    busy: bool = False  # a start or stop is on its way to the central system

    @property
    def wants_energy(self) -> bool:
        """Whether the EV still wants energy (plugged in, not full)."""
        return self.ev is not None and self.delivered_kwh < self.ev.energy_kwh - 1e-9

    @property
    def soc_pct(self) -> float | None:
        """The EV's state of charge [%], when its battery is known."""
        ev = self.ev
        if ev is None or ev.battery_kwh is None or ev.soc_arrival is None:
            return None
        return min(100.0, 100.0 * (ev.soc_arrival + self.delivered_kwh / ev.battery_kwh))

    def seq(self) -> int:
        """The next 2.0.1 TransactionEvent sequence number of this connector."""
        self.seq_no += 1
        return self.seq_no - 1


class StationCore:
    """Connectors, held profiles and the physics of one station (see the module notes)."""

    def __init__(self, cfg: StationConfig) -> None:
        self.cfg = cfg
        self.profiles = ProfileStore()
        self.connectors = [
            ConnectorState(n, phases=cfg.phases) for n in range(1, cfg.connectors + 1)
        ]
        self.heartbeat_s: float | None = cfg.heartbeat_s
        self.meter_interval_s = cfg.meter_interval_s
        self.connection_timeout_s = 60.0  # how long a remote start waits for an EV [s]

    def __iter__(self) -> Iterator[ConnectorState]:
        return iter(self.connectors)

    def connector(self, number: int) -> ConnectorState:
        """Connector ``number`` (1-based). Raises KeyError."""
        if not 1 <= number <= len(self.connectors):
            raise KeyError(f"station {self.cfg.station_id!r}: no connector {number}")
        return self.connectors[number - 1]

    def transactions(self) -> dict[int, Tx]:
        """Running transactions by connector."""
        return {c.number: c.tx for c in self.connectors if c.tx is not None}

    @property
    def power_w(self) -> float:
        """What the station draws now [W]."""
        return sum(c.power_w for c in self.connectors)

    # --- EVs and transactions ----------------------------------------------------------------

    def free_connector(self, preferred: int) -> ConnectorState | None:
        """``preferred`` if no EV is plugged into it, else any free connector, else None."""
        order = sorted(self.connectors, key=lambda c: c.number != preferred)
        return next((c for c in order if c.ev is None), None)

    def plug_in(self, ev: EvPlan, *, now: datetime) -> ConnectorState:
        """Plug ``ev`` into its connector (or another free one). Raises KeyError if none."""
        c = self.free_connector(ev.connector)
        if c is None:
            raise KeyError(f"station {self.cfg.station_id!r}: every connector is taken")
        c.ev, c.delivered_kwh, c.stopped, c.id_tag = ev, 0.0, False, ev.id_tag
        c.status = ConnectorStatus.PREPARING
        return c

    def unplug(self, number: int) -> None:
        """The EV leaves connector ``number`` (its transaction must have ended)."""
        c = self.connector(number)
        c.ev, c.id_tag, c.stopped = None, None, False
        c.power_w = 0.0
        c.status = ConnectorStatus.AVAILABLE

    def begin_tx(self, number: int, transaction_id: str, *, now: datetime) -> None:
        """A transaction starts on connector ``number``."""
        c = self.connector(number)
        c.tx = Tx(transaction_id, now)
        c.meter_start_wh = c.energy_wh
        c.seq_no = 0
        c.stopped = False

    def end_tx(self, number: int) -> None:
        """The transaction on connector ``number`` ends; its TxProfiles are deleted."""
        c = self.connector(number)
        c.tx = None
        c.power_w = 0.0
        c.stopped = c.ev is not None
        self.profiles.clear(connector=number, purpose=Purpose.TX)
        if c.ev is not None:
            c.status = ConnectorStatus.FINISHING

    def reboot(self) -> None:
        """What a reset keeps: connectors and EVs stay; every transaction is gone (the caller
        has stopped them); TxProfiles go with them; a ``volatile_profiles`` station forgets
        every profile."""
        for c in self.connectors:
            if c.tx is not None:
                self.end_tx(c.number)
            c.busy = False
        if Quirk.VOLATILE_PROFILES in self.cfg.quirks:
            self.profiles.clear()

    def reconnected(self) -> None:
        """After a reconnect: a ``volatile_profiles`` station forgets its profiles."""
        if Quirk.VOLATILE_PROFILES in self.cfg.quirks:
            self.profiles.clear()

    # --- physics -----------------------------------------------------------------------------

    def advance(self, sim_dt_s: float) -> None:
        """Integrate ``sim_dt_s`` simulated seconds at the present power."""
        if sim_dt_s <= 0:
            return
        for c in self.connectors:
            if c.power_w <= 0:
                continue
            kwh = c.power_w * sim_dt_s / 3.6e6
            if c.ev is not None:
                kwh = min(kwh, max(c.ev.energy_kwh - c.delivered_kwh, 0.0))
                c.delivered_kwh += kwh
            c.energy_wh += kwh * 1000.0

    def min_w(self, c: ConnectorState) -> float:
        """The least power an AC EV charges at on connector ``c`` [W]."""
        return self.cfg.min_a * self.cfg.voltage_v * c.phases

    def recompute(self, now: datetime) -> None:
        """Set every connector's limit, power and status for time ``now``."""
        cfg = self.cfg
        demand: dict[int, float] = {}
        for c in self.connectors:
            c.limit_w, c.phases = self.profiles.limit(c.number, now, cfg, c.tx)
            if c.tx is not None and c.ev is not None and c.wants_energy:
                demand[c.number] = min(c.ev.max_kw, cfg.max_kw) * 1000.0
        cap_w = self.profiles.limit_w(0, now, cfg)
        alloc = _water_fill(
            {n: min(d, self.connector(n).limit_w) for n, d in demand.items()}, cap_w
        )
        for c in self.connectors:
            share = alloc.get(c.number, 0.0)
            c.power_w = share if share >= self.min_w(c) - 1e-6 else 0.0
            c.status = self._status(c, share)

    def _status(self, c: ConnectorState, share: float) -> ConnectorStatus:
        if c.ev is None:
            return ConnectorStatus.AVAILABLE
        if c.tx is None:
            return ConnectorStatus.FINISHING if c.stopped else ConnectorStatus.PREPARING
        if not c.wants_energy:
            return ConnectorStatus.SUSPENDED_EV
        if c.power_w <= 0:
            return ConnectorStatus.SUSPENDED_EVSE
        return ConnectorStatus.CHARGING

    def current_a(self, c: ConnectorState) -> float:
        """Current per phase in use of connector ``c`` [A]."""
        return c.power_w / (self.cfg.voltage_v * c.phases)

    def offered_a(self, c: ConnectorState) -> float:
        """Current per phase connector ``c`` may draw [A]."""
        return c.limit_w / (self.cfg.voltage_v * c.phases)

    # --- profiles ----------------------------------------------------------------------------

    def composite(
        self, connector: int, start: datetime, duration_s: int, unit: str
    ) -> list[Period]:
        """The composite schedule of ``connector`` (0: the station) over ``duration_s`` from
        ``start``, in ``unit`` (A per phase or W), equal neighbours merged."""
        tx = None if connector == 0 else self.connector(connector).tx
        end = start + timedelta(seconds=duration_s)
        points = [start, *self.profiles.breakpoints(start, end, tx)]
        out: list[Period] = []
        for t in points:
            limit_w, phases = self.profiles.limit(connector, t, self.cfg, tx)
            if unit == "W":
                q = Period(0, limit_w, None)
            else:
                q = Period(0, limit_w / (self.cfg.voltage_v * phases), phases)
            offset = int((t - start).total_seconds())
            if (
                out
                and abs(out[-1].limit - q.limit) < 1e-9
                and out[-1].number_phases == q.number_phases
            ):
                continue
            if out and out[-1].start_s == offset:
                out.pop()
            out.append(Period(offset, q.limit, q.number_phases))
        return out


def _water_fill(want: dict[int, float], cap: float) -> dict[int, float]:
    """Share ``cap`` among ``want`` max-min fairly: nobody gets more than they want."""
    if sum(want.values()) <= cap:
        return dict(want)
    out: dict[int, float] = {}
    left = max(cap, 0.0)
    pending = sorted(want.items(), key=lambda kv: kv[1])
    while pending:
        share = left / len(pending)
        n, w = pending[0]
        if w <= share:
            out[n] = w
            left -= w
            pending.pop(0)
            continue
        for n, _ in pending:
            out[n] = share
        break
    return out
