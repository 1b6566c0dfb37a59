"""A simulated charge point at run time: its EVs' timeline, its physics, its connection.

:class:`SimulatedStation` runs two loops:

* the **physics** loop, always (also offline, as a real charger keeps charging on the profiles
  it holds): it integrates energy at the present power, plugs EVs in and out on the scenario's
  timeline (in simulated time, :class:`SimClock`), and recomputes every connector's power at
  every step and at every instant a schedule period changes;
* the **connection** loop: connect with the version's subprotocol (and HTTP Basic credentials,
  security profile 1), BootNotification until accepted, StatusNotification for every connector,
  then send what the outbox holds, in order, one CALL at a time. Transactions' start and stop
  survive a lost connection; status and meter values are sent fresh after a reconnect.

Inbound calls are handled by the version adapter (:mod:`.v16`, :mod:`.v201`); anything they
must send afterwards is posted here and sent only after their reply went out. A Reset stops
the transactions, closes the socket, keeps the station offline for ``reboot_s``, then
reconnects and boots again; profiles other than TxProfiles survive, unless the station has the
``volatile_profiles`` quirk.

Profiles are evaluated in wall-clock time (they come from a real central system); EVs live in
simulated time, so at ``speed`` 60 an EV takes one minute of energy per real second at the
power it is allowed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from operator import methodcaller
from typing import Any

from ocpp.exceptions import OCPPError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from ampflow.gateway.stations._common import EndedTx, StationLink, StopReason
from ampflow.gateway.stations.config import OcppVersion, StationConfig
from ampflow.gateway.stations.core import ConnectorStatus, EvPlan, StationCore
from ampflow.gateway.stations.profiles import Profile, Purpose, Rejection, check_profile

__all__ = ["ProfileEvent", "SimClock", "SimulatedStation"]

logger = logging.getLogger(__name__)

_RESET = "reset"


@dataclass(frozen=True, slots=True)
class SimClock:
    """Simulated seconds since ``origin`` (a ``time.monotonic()`` reading), ``speed`` x real.

    Stations of one fleet share one clock, so their EVs keep the scenario's relative timing.
    """

    speed: float = 1.0
    origin: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"speed must be > 0, got {self.speed!r}")

    def sim_s(self) -> float:
        """Simulated seconds elapsed."""
        return (time.monotonic() - self.origin) * self.speed

    def real_delay(self, sim_s: float) -> float:
        """Real seconds until simulated second ``sim_s`` (0 if passed)."""
        return max((sim_s - self.sim_s()) / self.speed, 0.0)

    def wall_at(self, sim_s: float) -> datetime:
        """The wall-clock time at which simulated second ``sim_s`` comes."""
        return datetime.now(UTC) + timedelta(seconds=(sim_s - self.sim_s()) / self.speed)


@dataclass(frozen=True, slots=True)
class ProfileEvent:
    """A SetChargingProfile the station answered: when (monotonic), what, why rejected."""

    at: float
    profile: Profile
    rejection: Rejection | None

    @property
    def accepted(self) -> bool:
        return self.rejection is None


@dataclass(slots=True)
class _Outgoing:
    label: str
    fn: Callable[[Any], Awaitable[None]]
    persistent: bool


@dataclass(frozen=True, slots=True)
class _Remote:
    id_tag: str
    profile: Profile | None
    remote_id: int | None
    deadline: float


class SimulatedStation:
    """A charge point that speaks OCPP over a real WebSocket (see the module notes).

    Parameters
    ----------
    cfg : StationConfig
    url : str
        Central system base URL; the station connects to ``{url}/{station_id}``.
    evs : iterable of EvPlan
        The EVs that visit, in simulated seconds of ``clock``.
    clock : SimClock, optional
        Shared simulated time (default: real time, starting now).
    step_s : float
        Longest real time between two physics steps [s].
    response_timeout_s : float
        How long a CALL waits for its result [s].
    iso15118 : bool
        2.0.1 only: EVs report departure time and energy (NotifyEVChargingNeeds).
    """

    def __init__(
        self,
        cfg: StationConfig,
        url: str,
        *,
        evs: Iterable[EvPlan] = (),
        clock: SimClock | None = None,
        step_s: float = 1.0,
        response_timeout_s: float = 15.0,
        iso15118: bool = True,
    ) -> None:
        self.cfg = cfg
        self.core = StationCore(cfg)
        self.url = f"{url.rstrip('/')}/{cfg.station_id}"
        self.clock = clock or SimClock()
        self.step_s = step_s
        self.response_timeout_s = response_timeout_s
        self.iso15118 = iso15118
        self.profile_log: deque[ProfileEvent] = deque(maxlen=512)
        self.counts: Counter[str] = Counter()
        self.online = asyncio.Event()
        self.booted = False
        self.boots = 0
        self.connections = 0
        self.last_error: str | None = None
        self._evs = deque(sorted(evs, key=lambda e: e.arrival_s))
        self._outbox: deque[_Outgoing] = deque()
        self._deferred: list[_Outgoing] = []
        self._handling = 0
        self._replied = asyncio.Event()
        self._replied.set()
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._reported: dict[int, ConnectorStatus] = {}
        self._remote: dict[int, _Remote] = {}
        self._begin_queued: set[int] = set()
        self._reset_when_idle = False
        self._boot_reason = "PowerUp"
        self._last_sim = self.clock.sim_s()
        self._next_meter = 0.0
        self._next_heartbeat = 0.0

    # --- the host interface of the adapters ---------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wake(self) -> None:
        self._wake.set()

    def post(
        self, label: str, fn: Callable[[Any], Awaitable[None]], *, persistent: bool = False
    ) -> None:
        """Queue ``fn(link)``; sent once the reply to the call being handled has gone out."""
        self._deferred.append(_Outgoing(label, fn, persistent))

    def handling(self, busy: bool) -> None:
        """A call is being handled (``busy``), or its reply went out."""
        self._handling += 1 if busy else -1
        if self._handling == 0:
            self._replied.set()
        else:
            self._replied.clear()

    def flush_posted(self) -> None:
        """Move what handlers posted into the outbox (after their reply was sent)."""
        if self._deferred:
            self._outbox.extend(self._deferred)
            self._deferred.clear()
            self._ready.set()

    def apply_profile(self, p: Profile, *, strict: bool) -> Rejection | None:
        now = self._sync()
        core = self.core
        rejection = check_profile(
            p, self.cfg, transactions=core.transactions(), now=now, strict=strict
        ) or core.profiles.conflict(p, strict=strict, max_profiles=self.cfg.max_profiles)
        if rejection is None:
            core.profiles.install(p, strict=strict)
            core.recompute(now)  # before the reply: the station already honours the profile
            self.counts["profile_accepted"] += 1
        else:
            self.counts["profile_rejected"] += 1
            logger.info("%s: rejected profile %d: %s", self.cfg.station_id, p.profile_id, rejection)
        self.profile_log.append(ProfileEvent(time.monotonic(), p, rejection))
        self.wake()
        return rejection

    def clear_profiles(
        self,
        *,
        profile_id: int | None,
        connector: int | None,
        purpose: Purpose | None,
        stack_level: int | None,
    ) -> int:
        now = self._sync()
        n = self.core.profiles.clear(
            profile_id=profile_id, connector=connector, purpose=purpose, stack_level=stack_level
        )
        self.core.recompute(now)
        self.wake()
        return n

    def remote_start(
        self, connector: int | None, id_tag: str, profile: Profile | None, *, remote_id: int | None
    ) -> bool:
        numbers = [connector] if connector else [c.number for c in self.core]
        for n in numbers:
            if not 1 <= n <= self.cfg.connectors:
                return False
            c = self.core.connector(n)
            if c.tx is not None or c.busy or n in self._begin_queued or n in self._remote:
                continue
            deadline = time.monotonic() + self.core.connection_timeout_s
            self._remote[n] = _Remote(id_tag, profile, remote_id, deadline)
            if c.ev is not None:
                c.stopped, c.id_tag = False, id_tag
            self.wake()
            return True
        return False

    def remote_stop(self, transaction_id: str) -> bool:
        for c in self.core:
            if c.tx is not None and c.tx.transaction_id == transaction_id and not c.busy:
                self._sync()
                ended = self._end(c.number, StopReason.REMOTE)
                self.post("stop", methodcaller("stop_tx", ended), persistent=True)
                self.wake()
                return True
        return False

    def request_reset(self, *, hard: bool, when_idle: bool = False) -> None:
        if when_idle:
            self._reset_when_idle = True
            return
        reason = StopReason.HARD_RESET if hard else StopReason.SOFT_RESET
        self.post(_RESET, partial(self._stop_all, reason=reason), persistent=True)

    # --- running --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        physics = asyncio.create_task(self._physics(), name=f"{self.cfg.station_id}-physics")
        backoff = 0.2
        try:
            while not stop.is_set():
                outcome = await self._connect_once(stop)
                if outcome == _RESET:
                    await self._reboot()
                    backoff = 0.2
                    continue
                if outcome == "online":
                    backoff = 0.2
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
        finally:
            physics.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await physics

    def _headers(self) -> dict[str, str]:
        if self.cfg.password is None:
            return {}
        token = base64.b64encode(f"{self.cfg.station_id}:{self.cfg.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def _connect_once(self, stop: asyncio.Event) -> str:
        want = self.cfg.version.subprotocol
        try:
            async with connect(
                self.url,
                subprotocols=[Subprotocol(want)],
                additional_headers=self._headers(),
                open_timeout=10,
                ping_interval=30,
                ping_timeout=30,
                max_queue=64,
            ) as ws:
                if ws.subprotocol != want:
                    self.last_error = f"the server chose subprotocol {ws.subprotocol!r}"
                    logger.warning("%s: %s", self.cfg.station_id, self.last_error)
                    return "lost"
                self.connections += 1
                return await self._serve(ws, stop)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.debug("%s: connection failed: %s", self.cfg.station_id, self.last_error)
            return "lost"
        finally:
            self.online.clear()

    async def _serve(self, ws: ClientConnection, stop: asyncio.Event) -> str:
        link = self._make_link(ws)
        recv = asyncio.create_task(link.start(), name=f"{self.cfg.station_id}-recv")
        work = asyncio.create_task(self._online(link), name=f"{self.cfg.station_id}-send")
        stopper = asyncio.create_task(stop.wait())
        done, pending = await asyncio.wait(
            {recv, work, stopper}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                self.last_error = f"{type(exc).__name__}: {exc}"
        if work in done and not work.cancelled() and work.exception() is None:
            return str(work.result())
        return "stop" if stopper in done else "online"

    def _make_link(self, ws: ClientConnection) -> Any:
        from ampflow.gateway.stations.v16 import Link16
        from ampflow.gateway.stations.v201 import Link201

        cls = Link16 if self.cfg.version is OcppVersion.V16 else Link201
        return cls(self, ws, response_timeout=self.response_timeout_s)

    async def _online(self, link: StationLink) -> str:
        if not self.booted:
            await self._boot(link)
        else:
            self.core.reconnected()
            self._sync()
        # What was queued for the last connection is stale, except transactions' start and stop.
        kept = [item for item in self._outbox if item.persistent]
        self._outbox.clear()
        self._outbox.extend(kept)
        for n in range(0, self.cfg.connectors + 1):
            await link.status(n)
            if n:
                self._reported[n] = self.core.connector(n).status
        mono = time.monotonic()
        self._next_meter = mono + self.core.meter_interval_s
        self._next_heartbeat = mono + (self.core.heartbeat_s or 0.0)
        self.online.set()
        self.wake()
        while True:
            while not self._outbox:
                self._ready.clear()
                await self._ready.wait()
            item = self._outbox[0]
            if item.label == _RESET:
                await self._replied.wait()  # never cut a reply off
                with contextlib.suppress(OCPPError, TimeoutError):
                    await item.fn(link)
                self._outbox.popleft()
                return _RESET
            try:
                await item.fn(link)
                self.counts[f"sent_{item.label}"] += 1
            except OCPPError as exc:
                self.counts["call_errors"] += 1
                logger.info("%s: %s answered %s", self.cfg.station_id, item.label, exc)
            except TimeoutError:
                self.counts["timeouts"] += 1
                logger.info("%s: %s got no answer", self.cfg.station_id, item.label)
            self._outbox.popleft()

    async def _boot(self, link: StationLink) -> None:
        while True:
            status, interval = await link.boot(self._boot_reason)
            self.counts["boot_notifications"] += 1
            if status == "Accepted":
                self.booted = True
                self.boots += 1
                if self.cfg.heartbeat_s is None and interval > 0:
                    self.core.heartbeat_s = interval
                return
            # Pending or Rejected: the central system may configure us meanwhile; try again.
            await asyncio.sleep(interval if interval > 0 else 5.0)

    async def _stop_all(self, link: StationLink, *, reason: StopReason) -> None:
        self._sync()
        for c in self.core:
            if c.tx is not None:
                await link.stop_tx(self._end(c.number, reason))

    async def _reboot(self) -> None:
        self.online.clear()
        self.booted = False
        self._boot_reason = "RemoteReset"
        self._sync()
        self.core.reboot()
        for c in self.core:
            c.stopped = False  # EVs still plugged in start charging again after the boot
        self._outbox = deque(item for item in self._outbox if item.label == "stop")
        self._begin_queued.clear()
        self._remote.clear()
        await asyncio.sleep(self.cfg.reboot_s)

    # --- physics --------------------------------------------------------------------------------

    def _sync(self) -> datetime:
        """Integrate energy up to now, then recompute; returns now."""
        sim = self.clock.sim_s()
        self.core.advance(sim - self._last_sim)
        self._last_sim = sim
        now = self.now()
        self.core.recompute(now)
        return now

    def _end(self, number: int, reason: StopReason) -> EndedTx:
        c = self.core.connector(number)
        assert c.tx is not None
        ended = EndedTx(
            number, c.tx.transaction_id, c.energy_wh, c.id_tag, reason, self.now(), c.seq()
        )
        self.core.end_tx(number)
        self.counts["transactions_ended"] += 1
        return ended

    async def _physics(self) -> None:
        while True:
            self._wake.clear()
            now = self._sync()
            sim = self._last_sim
            self.core.profiles.drop_expired(now)
            self._timeline(sim, now)
            self.core.recompute(now)
            if self.online.is_set():
                self._report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._delay(sim, now))

    def _timeline(self, sim: float, now: datetime) -> None:
        core = self.core
        while self._evs and self._evs[0].arrival_s <= sim:
            ev = self._evs.popleft()
            if ev.departure_s <= sim:
                continue
            if core.free_connector(ev.connector) is None:
                self.counts["evs_turned_away"] += 1
                continue
            core.plug_in(ev, now=now)
            self.counts["evs_arrived"] += 1
        for c in core:
            if c.ev is not None and c.ev.departure_s <= sim and not c.busy:
                if c.tx is not None:
                    ended = self._end(c.number, StopReason.EV_DISCONNECTED)
                    self._send(_Outgoing("stop", methodcaller("stop_tx", ended), True))
                core.unplug(c.number)
                self._remote.pop(c.number, None)
        expired = [n for n, r in self._remote.items() if r.deadline < time.monotonic()]
        for n in expired:
            if core.connector(n).tx is None and n not in self._begin_queued:
                del self._remote[n]

    def _send(self, item: _Outgoing) -> None:
        self._outbox.append(item)
        self._ready.set()

    def _report(self) -> None:
        """Queue status changes, transaction starts, meter values and heartbeats."""
        for c in self.core:
            n = c.number
            old = self._reported.get(n)
            if old is not None and old is not c.status:
                call = methodcaller("status_changed", n, old, c.status)
                self._send(_Outgoing("status", call, False))
            self._reported[n] = c.status
            if (
                c.ev is not None
                and c.tx is None
                and not c.stopped
                and n not in self._begin_queued
                and (c.wants_energy or n in self._remote)
            ):
                self._begin_queued.add(n)
                ev = c.ev
                self._send(_Outgoing("begin", partial(self._begin, n=n, ev=ev), True))
        mono = time.monotonic()
        if mono >= self._next_meter:
            self._next_meter = mono + self.core.meter_interval_s
            for c in self.core:
                if c.tx is not None:
                    self._send(_Outgoing("meter", methodcaller("meter", c.number), False))
        hb = self.core.heartbeat_s
        if hb and mono >= self._next_heartbeat:
            self._next_heartbeat = mono + hb
            self._send(_Outgoing("heartbeat", methodcaller("heartbeat"), False))
        if self._reset_when_idle and not self.core.transactions():
            self._reset_when_idle = False
            stop_all = partial(self._stop_all, reason=StopReason.SOFT_RESET)
            self._send(_Outgoing(_RESET, stop_all, True))

    async def _begin(self, link: StationLink, *, n: int, ev: EvPlan) -> None:
        c = self.core.connector(n)
        try:
            if c.ev is not ev or c.tx is not None:
                return
            c.busy = True
            remote = self._remote.pop(n, None)
            if remote is None:
                if not await link.authorize(ev.id_tag):
                    c.stopped = True
                    self.counts["authorize_rejected"] += 1
                    return
            else:
                c.id_tag = remote.id_tag
            self._sync()
            accepted = await link.start_tx(
                n, remote_id=None if remote is None else remote.remote_id
            )
            self.counts["transactions_started"] += 1
            tx = self.core.transactions()[n]  # start_tx began it
            if remote is not None and remote.profile is not None:
                p = replace(remote.profile, connector=n, transaction_id=tx.transaction_id)
                self.apply_profile(p, strict=False)
            if not accepted:
                await link.stop_tx(self._end(n, StopReason.DEAUTHORIZED))
                return
            await self._ev_needs(link, n, ev)
        finally:
            c.busy = False
            self._begin_queued.discard(n)
            self.wake()

    async def _ev_needs(self, link: StationLink, n: int, ev: EvPlan) -> None:
        ev_needs = getattr(link, "ev_needs", None)  # 2.0.1 only
        if self.iso15118 and ev_needs is not None:
            c = self.core.connector(n)
            left_wh = (ev.energy_kwh - c.delivered_kwh) * 1000.0
            await ev_needs(n, departure=self.clock.wall_at(ev.departure_s), energy_wh=left_wh)

    def _delay(self, sim: float, now: datetime) -> float:
        clock = self.clock
        delays = [self.step_s]
        if self._evs:
            delays.append(clock.real_delay(self._evs[0].arrival_s))
        horizon = now + timedelta(seconds=self.step_s)
        for c in self.core:
            if c.ev is not None:
                delays.append(clock.real_delay(c.ev.departure_s))
                if c.power_w > 0:
                    left_s = (c.ev.energy_kwh - c.delivered_kwh) * 3.6e6 / c.power_w
                    delays.append(left_s / clock.speed)
            points = self.core.profiles.breakpoints(now, horizon, c.tx)
            if points:
                delays.append((points[0] - now).total_seconds())
        if self.online.is_set():
            mono = time.monotonic()
            delays.append(self._next_meter - mono)
            if self.core.heartbeat_s:
                delays.append(self._next_heartbeat - mono)
        return max(min(delays), 0.005)
