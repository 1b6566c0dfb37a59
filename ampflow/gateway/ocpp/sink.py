"""The control loop's limits as charging profiles, in a safe order, verified.

:class:`ProfileSink` implements :class:`~ampflow.gateway.control.LimitSink`. For every connector
of a connected station it keeps a :class:`~.ordering.Ledger` slot: the allocator's target and the
bound the station may be enforcing, in kW, both as the station will see them (rounded down to the
0.1 A or 0.1 W of the schemas). What it sends:

* **TxProfile** per running transaction: the connector's limit now, then the plan's limits for the
  coming steps but never above the limit now (the station can lower itself for a DR event it has
  been told about, even if it loses its connection, but never raise itself), at most the
  station's number of periods;
* **ChargePointMaxProfile / ChargingStationMaxProfile** on connector 0 at boot and reconnect: the
  station's ceiling (its charger's maximum within the feeders above it);
* **TxDefaultProfile** on connector 0 at boot and reconnect: ``ocpp.tx_default_a``, so a new session
  draws at most that until the loop has decided (0 A by default).

Decreases go out at once; an increase waits until every other connector of its site is at or below
its target (see :mod:`.ordering`), so the site holds while profiles are in flight.

Verification
------------
After a TxProfile is accepted the sink asks for the composite schedule where the station supports
it (``composite_delay_s`` later, so that a round of limits is not slowed by the checks of its first
answers, and not at all if a newer profile went out meanwhile), and compares every meter value
with the connector's bound (after ``verify_grace_s`` for the EV to follow a decrease). A station is
flagged (``Station.flags``, shown by the API) when it draws above its limit twice in a row
(``over_limit``), rejects profiles twice in a row (``rejects_profiles``), reports a composite
limit above what it accepted (``ignores_profiles``), stops answering (``unresponsive``), or has no
smart charging (``no_smart_charging``). A flagged station's connectors are no longer sent
profiles; :meth:`ProfileSink.uncontrollable_kw` hands them to the control loop as fixed load at
their bound or measured power, whichever is higher, so the allocator lowers everyone else. Flags
other than ``no_smart_charging`` expire after ``flag_hold_s``, after which the station is tried
again. Idle connectors whose bound is above zero (before the TxDefault is accepted, or with a
non-zero ``tx_default_a``) are reported the same way, since a session may start on them at any
moment.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ampflow.engine.profiles import charging_schedule
from ampflow.engine.units import a_from_kw, kw_from_a
from ampflow.gateway.control import ConnectorLimit
from ampflow.gateway.db.base import ChargingProfileStatus
from ampflow.gateway.ocpp import store
from ampflow.gateway.ocpp.capabilities import Quirk, choose_unit
from ampflow.gateway.ocpp.ordering import EPS_KW, Answer, Ledger
from ampflow.gateway.ocpp.outbound import CommandStatus, Outcome
from ampflow.gateway.ocpp.profiles import ProfilePurpose, ProfileSpec, profile_id
from ampflow.gateway.ocpp.store import ConnectorInfo, TxRef

if TYPE_CHECKING:
    from ampflow.gateway.ocpp.gateway import OcppGateway
    from ampflow.gateway.ocpp.station import StationLink

__all__ = ["Flag", "ProfileSink"]

logger = logging.getLogger(__name__)

_DEFAULT_MAX_PERIODS = 5  # when the station does not say how many periods it takes
_COMPOSITE_S = 300  # horizon of the composite schedule asked for [s]


class Flag:
    """Why a station is treated as uncontrollable (the values stored in ``Station.flags``)."""

    OVER_LIMIT = "over_limit"
    REJECTS_PROFILES = "rejects_profiles"
    IGNORES_PROFILES = "ignores_profiles"
    UNRESPONSIVE = "unresponsive"
    NO_SMART_CHARGING = "no_smart_charging"


@dataclass
class _Connector:
    """A connector the sink drives."""

    info: ConnectorInfo
    station_id: str
    site_id: str
    limit: ConnectorLimit | None = None
    limit_kw: float | None = None  # the loop's last limit (from the store after a restart)
    fixed: bool = False  # the target is the fixed load the allocator assumed, not a limit
    tx: TxRef | None = None
    status: str = "idle"
    measured_kw: float | None = None
    lowered_at: float = -math.inf  # monotonic time the bound last went down
    over: int = 0
    rejects: int = 0
    generation: int = 0


@dataclass
class _Station:
    """What the sink knows about a station beyond its connectors."""

    link: StationLink
    flags: dict[str, float] = field(default_factory=dict)  # flag -> expiry (monotonic)
    ready: bool = False  # the boot / reconnect sequence has run
    default_kw: dict[int, float] = field(default_factory=dict)  # TxDefault bound per connector
    setup: asyncio.Task[None] | None = None


class ProfileSink:
    """Limits to charging profiles; see the module notes.

    Parameters
    ----------
    gateway : OcppGateway
    """

    def __init__(self, gateway: OcppGateway) -> None:
        self.gateway = gateway
        self.settings = gateway.settings.ocpp
        self.ledger = Ledger()
        self.connectors: dict[int, _Connector] = {}
        self.stations: dict[str, _Station] = {}
        self._answers: dict[int, asyncio.Future[None]] = {}
        self._reported: dict[int, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[int, asyncio.TimerHandle] = {}  # composite checks to come

    # -- the LimitSink protocol ---------------------------------------------------------------

    async def send_limits(self, limits: Sequence[ConnectorLimit]) -> Mapping[int, str]:
        """Take the loop's changed limits, send what is safe now, wait up to ``batch_wait_s``
        for answers, and report each connector's state (``accepted``, ``rejected``,
        ``pending``, ``held``, ``offline``, ``flagged``, ``idle`` or ``unmanaged``)."""
        statuses: dict[int, str] = {}
        sites: set[str] = set()
        for x in limits:
            c = self.connectors.get(x.connector_pk)
            if c is None:
                statuses[x.connector_pk] = "unmanaged"
                continue
            c.limit, c.limit_kw = x, x.limit_kw
            self._set_target(c, x.limit_kw)
            sites.add(c.site_id)
        for site in sorted(sites):
            self._reconcile(site)
        batch = [x.connector_pk for x in limits if x.connector_pk in self.connectors]
        deadline = time.monotonic() + self.settings.batch_wait_s
        while True:
            waiting = [self._answers[pk] for pk in batch if pk in self._answers]
            remaining = deadline - time.monotonic()
            if not waiting or remaining <= 0:
                break
            await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        for pk in batch:
            statuses[pk] = self._status(pk)
        return statuses

    def _set_target(self, c: _Connector, limit_kw: float) -> None:
        """The ledger target for the loop's limit: the fixed load itself when the allocator took
        the connector as fixed load at exactly this (rounding it down would leave it above its
        target, blocking every increase at its site), else the limit as the station will see
        it. A fixed load is bookkeeping, never sent: see :meth:`_refresh_held`."""
        fixed = self._reported.get(c.info.pk)
        c.fixed = fixed is not None and abs(fixed - limit_kw) <= 1e-4
        self.ledger.set_target(
            c.info.pk, fixed if c.fixed and fixed is not None else self._emitted_kw(c, limit_kw)
        )

    def uncontrollable_kw(self) -> dict[int, float]:
        """Connectors the allocator must take as fixed load [kW], by connector pk."""
        out: dict[int, float] = {}
        self._reported = out
        now = time.monotonic()
        controllable = {sid: self._controllable(st, now) for sid, st in self.stations.items()}
        for pk, c in self.connectors.items():
            bound = self.ledger.slots[pk].bound_kw
            if c.tx is None:
                if bound > EPS_KW:
                    out[pk] = bound
            elif not controllable.get(c.station_id, False):
                out[pk] = max(bound, c.measured_kw or 0.0)
        # A fixed connector the last decision already gave exactly its fixed load is settled at
        # it, whatever order its setup and that decision came in.
        touched = set()
        for pk, kw in out.items():
            c, slot = self.connectors[pk], self.ledger.slots[pk]
            if c.limit_kw is not None and slot.target_kw != kw and abs(c.limit_kw - kw) <= 1e-4:
                self._set_target(c, c.limit_kw)
                touched.add(c.site_id)
        for site in sorted(touched):
            self._reconcile(site)
        return out

    # -- station life cycle -------------------------------------------------------------------

    def register(self, link: StationLink) -> None:
        """A station connected: track its connectors (their targets from the last decision)."""
        info = link.info
        if info is None:
            return
        st = self.stations.get(link.station_id)
        if st is None:
            st = self.stations[link.station_id] = _Station(link)
            for flag in info.flags:
                st.flags[flag] = math.inf if flag == Flag.NO_SMART_CHARGING else 0.0
        st.link = link
        fresh = []
        for number, conn in info.connectors.items():
            c = self.connectors.get(conn.pk)
            if c is None:
                c = self.connectors[conn.pk] = _Connector(conn, link.station_id, info.site_id)
                self.ledger.add(conn.pk, info.site_id, bound_kw=conn.max_kw)
                fresh.append(conn.pk)
            c.info, c.tx = conn, link.txs.get(number)
        self._refresh_held(st)
        if fresh:
            self._spawn(self._load_targets(fresh))

    async def _load_targets(self, pks: list[int]) -> None:
        def read() -> dict[int, float]:
            with self.gateway.db.read() as s:
                return store.last_limits(s, pks)

        limits = await asyncio.to_thread(read)
        for pk, kw in limits.items():
            c = self.connectors.get(pk)
            slot = self.ledger.slots.get(pk)
            if c is not None and slot is not None and slot.target_kw is None:
                c.limit_kw = kw
                self.ledger.set_target(pk, self._emitted_kw(c, kw))

    def station_ready(self, link: StationLink, *, booted: bool) -> None:
        """Run the boot (or reconnect) sequence in its own task."""
        st = self.stations.get(link.station_id)
        if st is None:
            return
        if st.setup is not None and not st.setup.done():
            st.setup.cancel()
        st.ready = False
        self._cancel_checks(link)
        self._refresh_held(st)
        st.setup = self._spawn(self._setup(st, booted=booted))

    def station_offline(self, link: StationLink) -> None:
        st = self.stations.get(link.station_id)
        if st is not None and st.link is link:
            st.ready = False
            self._cancel_checks(link)
            self._refresh_held(st)

    def _cancel_checks(self, link: StationLink) -> None:
        """Drop the station's composite checks to come: they would read a station that lost (or
        is being sent again) the profiles they were to check."""
        for conn in link.info.connectors.values() if link.info is not None else ():
            handle = self._timers.pop(conn.pk, None)
            if handle is not None:
                handle.cancel()

    def transaction_started(self, link: StationLink, connector: int, tx: TxRef) -> None:
        c = self._connector(link, connector)
        if c is not None:
            c.tx, c.over, c.rejects = tx, 0, 0
            c.lowered_at = time.monotonic()  # the EV gets the grace period to settle
            self._refresh_held(self.stations[link.station_id])
            self._reconcile(c.site_id)

    def transaction_ended(self, link: StationLink, connector: int) -> None:
        c = self._connector(link, connector)
        if c is None:
            return
        c.tx, c.measured_kw = None, None
        st = self.stations[link.station_id]
        # The station deletes the TxProfile: the connector falls back to its default.
        self.ledger.set_bound(c.info.pk, st.default_kw.get(connector, c.info.max_kw))
        self._refresh_held(st)
        self._reconcile(c.site_id)

    def _connector(self, link: StationLink, number: int) -> _Connector | None:
        info = link.info
        conn = None if info is None else info.connectors.get(number)
        return None if conn is None else self.connectors.get(conn.pk)

    # -- sending ------------------------------------------------------------------------------

    def _controllable(self, st: _Station, now: float) -> bool:
        """Whether profiles may be sent to the station (its expired flags are dropped)."""
        expired = [f for f, until in st.flags.items() if until <= now]
        for f in expired:
            del st.flags[f]
        if expired:
            self._save_flags(st)
            self._refresh_held(st)
        return self._is_controllable(st)

    @staticmethod
    def _is_controllable(st: _Station) -> bool:
        link = st.link
        return (
            st.ready
            and link.connected
            and not st.flags
            and link.capabilities.smart_charging is not False
            and Quirk.NO_SMART_CHARGING not in link.quirks
        )

    def _refresh_held(self, st: _Station) -> None:
        """Hold the station's connectors while it is not controllable or has no transaction."""
        info = st.link.info
        if info is None:
            return
        ok = self._is_controllable(st)
        for conn in info.connectors.values():
            c = self.connectors.get(conn.pk)
            if c is None:
                continue
            held = c.tx is None or not ok
            if c.fixed and not held and self.ledger.slots[conn.pk].held:
                # Released with a fixed load as its target: that was the allocator's pessimistic
                # assumption (a booting station, an idle connector, a flagged station), not a
                # share of the site, and sending it could raise several stations at once above
                # the site's limit. Keep what the station has until the next decision.
                self.ledger.keep(conn.pk)
                c.fixed = False
            self.ledger.hold(conn.pk, held)

    def _reconcile(self, site: str) -> None:
        for pk, kw in self.ledger.due(site):
            self._send_tx_profile(self.connectors[pk], kw)

    def _send_tx_profile(self, c: _Connector, kw: float) -> None:
        st = self.stations[c.station_id]
        assert c.tx is not None
        spec = self._tx_spec(st.link, c, kw)
        lower = kw < self.ledger.slots[c.info.pk].accepted_kw
        logger.debug(
            "%s: connector %d TxProfile %.3f kW (first period %s %s), accepted %.3f kW",
            st.link.station_id,
            c.info.number,
            kw,
            spec.first_limit,
            spec.schedule["chargingRateUnit"],
            self.ledger.slots[c.info.pk].accepted_kw,
        )
        c.status, c.generation = "pending", c.generation + 1
        future = st.link.queue.submit(
            st.link.calls.set_profile(spec), key=f"tx:{c.info.number}", urgent=lower
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._answers[c.info.pk] = done
        self._spawn(self._answered(st, c, spec, kw, future, done))

    async def _answered(
        self,
        st: _Station,
        c: _Connector,
        spec: ProfileSpec,
        kw: float,
        future: asyncio.Future[Outcome],
        done: asyncio.Future[None],
    ) -> None:
        outcome = await future
        pk = c.info.pk
        before = self.ledger.slots[pk].accepted_kw
        if outcome.status is CommandStatus.ACCEPTED:
            self.ledger.resolve(pk, Answer.ACCEPTED)
            c.status, c.rejects = "accepted", 0
            if st.flags.pop(Flag.UNRESPONSIVE, None) is not None:
                self._save_flags(st)
                self._refresh_held(st)
            if kw < before:
                c.lowered_at = time.monotonic()
            self._check_composite(st, c, kw)
        elif outcome.status in (CommandStatus.TIMEOUT, CommandStatus.OFFLINE):
            self.ledger.resolve(pk, Answer.LOST)
            c.status = "offline" if outcome.status is CommandStatus.OFFLINE else "pending"
            if outcome.status is CommandStatus.TIMEOUT:
                self._flag(st, Flag.UNRESPONSIVE)
        else:
            self.ledger.resolve(pk, Answer.REJECTED)
            c.status, c.rejects = "rejected", c.rejects + 1
            if c.rejects >= 2:
                self._flag(st, Flag.REJECTS_PROFILES)
        self._record(st, c.info.pk, c.tx, spec, kw, outcome)
        if not done.done():
            done.set_result(None)
        if self._answers.get(pk) is done:
            del self._answers[pk]
        self._reconcile(c.site_id)

    def _status(self, pk: int) -> str:
        c = self.connectors[pk]
        slot = self.ledger.slots[pk]
        st = self.stations.get(c.station_id)
        if st is None or not st.link.connected:
            return "offline"
        if st.flags:
            return "flagged"
        if c.tx is None:
            return "idle"
        if slot.inflight_kw is not None:
            return "pending"
        if slot.target_kw is not None and abs(slot.target_kw - slot.accepted_kw) > EPS_KW:
            return "held" if c.status != "rejected" else "rejected"
        return c.status

    # -- profiles -----------------------------------------------------------------------------

    def _unit(self, link: StationLink) -> str:
        return choose_unit(link.capabilities, link.quirks)

    def _schedule(
        self,
        link: StationLink,
        info: ConnectorInfo,
        limits_kw: Sequence[float],
        *,
        dt_s: int,
        start: datetime,
        schedule_id: int,
    ) -> dict[str, Any]:
        caps = link.capabilities
        schedule = charging_schedule(
            [max(0.0, float(x)) for x in limits_kw],
            dt_s=dt_s,
            start=start,
            version=link.version or "1.6",
            unit=self._unit(link),
            number_phases=max(1, min(3, info.phases)),
            voltage_v=info.voltage_v,
            power_factor=info.power_factor,
            max_periods=caps.max_periods or _DEFAULT_MAX_PERIODS,
            include_number_phases=Quirk.IGNORES_NUMBER_PHASES not in link.quirks,
            schedule_id=schedule_id,
        )
        schedule.pop("duration", None)  # the last period lasts until it is replaced
        return schedule

    def _kw_of(self, link: StationLink, info: ConnectorInfo, limit: float) -> float:
        if self._unit(link) == "W":
            return limit / 1000.0
        return float(
            kw_from_a(
                limit, voltage_v=info.voltage_v, phases=info.phases, power_factor=info.power_factor
            )
        )

    def _emitted_kw(self, c: _Connector, kw: float) -> float:
        """``kw`` as the station will see it: rounded down to its unit's 0.1 [kW]."""
        st = self.stations.get(c.station_id)
        if st is None or kw <= 0:
            return max(kw, 0.0)
        schedule = self._schedule(
            st.link, c.info, [kw], dt_s=60, start=self.gateway.clock(), schedule_id=1
        )
        return self._kw_of(st.link, c.info, float(schedule["chargingSchedulePeriod"][0]["limit"]))

    def _tx_spec(self, link: StationLink, c: _Connector, kw: float) -> ProfileSpec:
        now = self.gateway.clock()
        if c.limit is not None and self._emitted_kw(c, c.limit.limit_kw) == kw:
            kw = c.limit.limit_kw  # round once, from the allocator's own value
        limits, start, step = [kw], now, 60
        x = c.limit
        if x is not None and x.plan_kw and x.plan_start is not None and x.plan_step_s:
            k0 = int((now - x.plan_start).total_seconds() // x.plan_step_s)
            if 0 <= k0 < len(x.plan_kw):
                tail = [min(kw, float(v)) for v in x.plan_kw[k0 + 1 :]]
                limits = [kw, *tail]
                step = int(x.plan_step_s)
                start = x.plan_start + timedelta(seconds=k0 * step)
        number = c.info.number
        assert c.tx is not None
        schedule = self._schedule(
            link, c.info, limits, dt_s=step, start=start, schedule_id=1000 + number
        )
        stack = (
            1
            if link.capabilities.max_stack_level is None
            else min(1, link.capabilities.max_stack_level)
        )
        return ProfileSpec(number, ProfilePurpose.TX, stack, schedule, transaction_id=c.tx.ocpp_id)

    def _station_spec(self, link: StationLink, purpose: ProfilePurpose, kw: float) -> ProfileSpec:
        assert link.info is not None
        info = next(iter(link.info.connectors.values()))
        schedule = self._schedule(
            link,
            info,
            [kw],
            dt_s=60,
            start=self.gateway.clock(),
            schedule_id=profile_id(purpose, 0),
        )
        return ProfileSpec(0, purpose, 0, schedule)

    # -- boot and reconnect -------------------------------------------------------------------

    async def _setup(self, st: _Station, *, booted: bool) -> None:
        link = st.link
        info = link.info
        if info is None or not info.connectors:
            return
        caps = link.capabilities
        if booted or caps.smart_charging is None:
            outcome = await link.queue.submit(link.calls.capabilities_call(), key="capabilities")
            if outcome.ok:
                caps = link.calls.parse_capabilities(outcome.response)
                link.capabilities = caps
                self._spawn(
                    self.gateway.writer.run(lambda s: store.save_capabilities(s, info.pk, caps))
                )
        for conn in info.connectors.values():  # targets in the unit the station takes
            c = self.connectors.get(conn.pk)
            if c is not None and c.limit_kw is not None:
                self._set_target(c, c.limit_kw)
        if caps.smart_charging is False or Quirk.NO_SMART_CHARGING in link.quirks:
            self._flag(st, Flag.NO_SMART_CHARGING, hold_s=math.inf)
            return
        if booted or Quirk.PROFILE_LOST_ON_RECONNECT in link.quirks:
            for conn in info.connectors.values():  # what it enforces now is unknown
                self.ledger.raise_bound(conn.pk, conn.max_kw)
            st.default_kw.clear()
        if Quirk.REJECTS_STATION_MAX not in link.quirks:
            spec = self._station_spec(link, ProfilePurpose.STATION_MAX, info.ceiling_kw)
            await self._send_station_profile(st, spec)
        await self._send_tx_default(st)
        for number, conn in info.connectors.items():  # their TxProfiles, again
            if number in link.txs:
                self.ledger.refresh(conn.pk)
        st.ready = True
        self._refresh_held(st)
        self._reconcile(info.site_id)
        self.gateway.notify("station profiles set", replan=False)

    async def _send_tx_default(self, st: _Station) -> None:
        link = st.link
        assert link.info is not None
        conns = list(link.info.connectors.values())
        amps = self.settings.tx_default_a
        first = conns[0]
        kw = float(kw_from_a(amps, voltage_v=first.voltage_v, phases=first.phases))
        spec = self._station_spec(link, ProfilePurpose.TX_DEFAULT, kw)
        if not await self._send_station_profile(st, spec):
            return
        for conn in conns:
            default = self._kw_of(link, conn, self._in_unit(link, conn, kw))
            st.default_kw[conn.number] = default
            if conn.number not in link.txs:
                self.ledger.set_bound(conn.pk, min(default, self.ledger.slots[conn.pk].accepted_kw))

    def _in_unit(self, link: StationLink, info: ConnectorInfo, kw: float) -> float:
        if self._unit(link) == "W":
            return math.floor(kw * 10_000.0) / 10.0
        amps = float(a_from_kw(kw, voltage_v=info.voltage_v, phases=info.phases))
        return math.floor(amps * 10.0 + 1e-9) / 10.0

    async def _send_station_profile(self, st: _Station, spec: ProfileSpec) -> bool:
        link = st.link
        outcome = await link.queue.submit(
            link.calls.set_profile(spec), key=f"{spec.purpose.value}:0"
        )
        assert link.info is not None
        kw = self._kw_of(link, next(iter(link.info.connectors.values())), spec.first_limit)
        self._record(st, None, None, spec, kw, outcome)
        if outcome.status in (CommandStatus.REJECTED, CommandStatus.ERROR):
            logger.warning(
                "%s: %s %s: %s", link.station_id, spec.purpose.value, outcome.status, outcome.detail
            )
            if spec.purpose is ProfilePurpose.TX_DEFAULT:  # no safe default: not controllable
                self._flag(st, Flag.REJECTS_PROFILES)
        elif outcome.status is CommandStatus.TIMEOUT:
            self._flag(st, Flag.UNRESPONSIVE)
        return outcome.ok

    # -- verification -------------------------------------------------------------------------

    def _check_composite(self, st: _Station, c: _Connector, kw: float) -> None:
        link = st.link
        if Quirk.NO_COMPOSITE_SCHEDULE in link.quirks:
            return
        pk, delay = c.info.pk, self.settings.composite_delay_s
        old = self._timers.pop(pk, None)
        if old is not None:
            old.cancel()
        at = (c.generation, link.connections)
        if delay <= 0:
            self._ask_composite(st, link, c, kw, at)
            return
        self._timers[pk] = asyncio.get_running_loop().call_later(
            delay, self._ask_composite, st, link, c, kw, at
        )

    def _ask_composite(
        self, st: _Station, link: StationLink, c: _Connector, kw: float, at: tuple[int, int]
    ) -> None:
        self._timers.pop(c.info.pk, None)
        if (
            at != (c.generation, link.connections)
            or st.link is not link
            or not link.connected
            or not st.ready
        ):
            # A newer profile went out (its answer brings its own check), or the station went
            # offline or came back on a new connection (it may have lost the profile: it is
            # being sent again).
            return
        future = link.queue.submit(
            link.calls.composite(c.info.number, _COMPOSITE_S, self._unit(link)),
            key=f"composite:{c.info.number}",
        )

        async def check() -> None:
            outcome = await future
            if not outcome.ok or at != (c.generation, link.connections):
                return
            limit = link.calls.parse_composite(outcome.response, self.gateway.clock())
            if limit is None:
                return
            got = limit.kw(
                voltage_v=c.info.voltage_v, phases=c.info.phases, power_factor=c.info.power_factor
            )
            tolerance = self._kw_of(link, c.info, 0.1)
            if got > kw + tolerance:
                logger.warning(
                    "%s: composite schedule of connector %d allows %.2f kW, %.2f kW accepted",
                    link.station_id,
                    c.info.number,
                    got,
                    kw,
                )
                self.ledger.raise_bound(c.info.pk, got)
                self._flag(st, Flag.IGNORES_PROFILES)

        self._spawn(check())

    def metered(self, link: StationLink, connector: int, power_kw: float) -> None:
        """A meter value: flag a connector that draws above its bound twice in a row."""
        c = self._connector(link, connector)
        if c is None:
            return
        c.measured_kw = power_kw
        st = self.stations.get(c.station_id)
        if c.tx is None or st is None:
            return
        if time.monotonic() - c.lowered_at < self.settings.verify_grace_s:
            return
        bound = self.ledger.slots[c.info.pk].bound_kw
        tolerance = max(self.settings.over_limit_tolerance_kw, 0.05 * bound)
        if power_kw > bound + tolerance:
            c.over += 1
            if c.over >= 2:
                logger.warning(
                    "%s: connector %d draws %.2f kW above its limit %.2f kW",
                    link.station_id,
                    connector,
                    power_kw,
                    bound,
                )
                self._flag(st, Flag.OVER_LIMIT)
        else:
            c.over = 0

    def _flag(self, st: _Station, flag: str, *, hold_s: float | None = None) -> None:
        new = flag not in st.flags
        st.flags[flag] = time.monotonic() + (
            self.settings.flag_hold_s if hold_s is None else hold_s
        )
        if new:
            logger.warning("%s: flagged %s", st.link.station_id, flag)
            self._save_flags(st)
            self._refresh_held(st)
            self.gateway.notify(f"station flagged {flag}", replan=False)

    def flags(self, station_id: str) -> list[str]:
        """The station's active flags."""
        st = self.stations.get(station_id)
        return [] if st is None else sorted(st.flags)

    # -- records ------------------------------------------------------------------------------

    def _save_flags(self, st: _Station) -> None:
        info = st.link.info
        if info is not None:
            flags = list(st.flags)
            self._spawn(self.gateway.writer.run(lambda s: store.save_flags(s, info.pk, flags)))

    def _record(
        self,
        st: _Station,
        connector_pk: int | None,
        tx: TxRef | None,
        spec: ProfileSpec,
        kw: float,
        outcome: Outcome,
    ) -> None:
        info = st.link.info
        if info is None:
            return
        status = {
            CommandStatus.ACCEPTED: ChargingProfileStatus.ACCEPTED,
            CommandStatus.REJECTED: ChargingProfileStatus.REJECTED,
            CommandStatus.SUPERSEDED: ChargingProfileStatus.SUPERSEDED,
        }.get(outcome.status, ChargingProfileStatus.FAILED)
        now = self.gateway.clock()
        sent = now - timedelta(seconds=max(0.0, outcome.done_at - outcome.queued_at))
        rec = store.ProfileRecord(
            station_pk=info.pk,
            connector_pk=connector_pk,
            transaction_pk=None if tx is None else tx.pk,
            ocpp_profile_id=spec.profile_id,
            purpose=spec.purpose.value,
            stack_level=spec.stack_level,
            kind=spec.kind,
            rate_unit=str(spec.schedule.get("chargingRateUnit", "A")),
            schedule=spec.schedule,
            limit_kw=round(kw, 4),
            status=status,
            attempts=outcome.attempts,
            sent_at=sent,
            responded_at=now if outcome.status is not CommandStatus.SUPERSEDED else None,
            outcome=f"{outcome.status.value} {outcome.detail}".strip(),
        )
        # Merged with the batch's other profiles into one insert (see store.record_profiles).
        self._spawn(self.gateway.writer.submit_merged("profiles", [rec], store.record_profiles))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("sink task failed", exc_info=task.exception())

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
