"""One station as the gateway knows it, across its connections: inbound events become store
writes, sink updates and control-loop wake-ups.

A :class:`StationLink` outlives its WebSockets: a reconnect with the same id attaches a new
connection to the same link (and closes the old one), so the outbound queue, the open
transactions and the sink's view of the station carry over. Every write goes through the
gateway's :class:`~.writer.GroupWriter` and is committed before the station gets its answer.

After a connection is attached, the link waits a moment for a BootNotification: a station that
rebooted sends one first, and gets the boot sequence (capabilities, station maximum, TxDefault,
then its transactions' profiles); a station that only reconnected does not, and gets its current
profiles re-sent. A restart of Ampflow is a reconnect of every station, and the open
transactions come back from the database when each one attaches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ampflow.engine.units import kw_from_a
from ampflow.gateway.db.base import Measurand, Phase
from ampflow.gateway.db.repo import meter
from ampflow.gateway.ocpp import store
from ampflow.gateway.ocpp.capabilities import Capabilities, Quirk, quirks_for
from ampflow.gateway.ocpp.events import (
    AuthStatus,
    BootInfo,
    ChargingNeeds,
    StatusChange,
    TxEnd,
    TxStart,
    parse_meter_values,
)
from ampflow.gateway.ocpp.outbound import OutboundQueue
from ampflow.gateway.ocpp.store import StationInfo, TxRef

if TYPE_CHECKING:
    from ampflow.gateway.ocpp.gateway import OcppGateway
    from ampflow.gateway.ocpp.protocol import CentralSystemMixin, WebSocketConnection

__all__ = ["StationLink"]

logger = logging.getLogger(__name__)

SETTLE_S = 2.0  # how long a new connection waits for a BootNotification before re-sending
NOTIFY_KW = 1.0  # a meter value that moves a connector's power this much wakes the control loop


class StationLink:
    """A station's state in the gateway; see the module notes.

    Parameters
    ----------
    gateway : OcppGateway
    station_id : str
    info : StationInfo or None
        None for an unknown station held pending.
    """

    def __init__(self, gateway: OcppGateway, station_id: str, info: StationInfo | None) -> None:
        self.gateway = gateway
        self.station_id = station_id
        self.info = info
        self.version: str | None = None
        self.calls: Any = None  # V16Calls or V201Calls
        self.cp: CentralSystemMixin | None = None
        self.conn: WebSocketConnection | None = None
        self.queue = OutboundQueue(station_id, retries=gateway.settings.ocpp.retries)
        self.txs: dict[int, TxRef] = {}
        self.accepted = info is not None and info.registration_status == "Accepted"
        self.boot_info: BootInfo | None = None
        self.last_seen: datetime | None = None
        self.capabilities = Capabilities() if info is None else info.capabilities
        self.quirks: frozenset[Quirk] = frozenset()
        self._ended: dict[str, int] = {}
        self._fresh: set[int] = set()  # connectors whose transaction started, not yet announced
        self._notified_kw: dict[int, float] = {}
        self._settle: asyncio.TimerHandle | None = None
        self.connections = 0
        self._refresh_quirks()

    # -- connection life cycle ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.cp is not None

    def now(self) -> datetime:
        return self.gateway.clock()

    def _refresh_quirks(self) -> None:
        boot, info = self.boot_info, self.info
        vendor = boot.vendor if boot else (info.vendor if info else None)
        model = boot.model if boot else (info.model if info else None)
        self.quirks = quirks_for(vendor, model, self.info.quirks if self.info else ())

    async def attach(
        self, cp: CentralSystemMixin, conn: WebSocketConnection, *, version: str, calls: Any
    ) -> None:
        """A new connection for this station; an older one is closed (the newest wins)."""
        old = self.conn
        self.cp, self.conn, self.version, self.calls = cp, conn, version, calls
        self.connections += 1
        self.queue.attach(cp)
        if old is not None and old is not conn:
            logger.info("%s: a new connection replaces the old one", self.station_id)
            asyncio.get_running_loop().create_task(old.close(1000, "replaced by a new connection"))
        if self.info is None:
            return
        opened = await asyncio.to_thread(self._read, store.open_transactions, self.info.pk)
        self.txs = {tx.connector: tx for tx in opened}
        self.gateway.sink.register(self)
        if self._settle is not None:
            self._settle.cancel()
        self._settle = asyncio.get_running_loop().call_later(SETTLE_S, self._settled)

    def detach(self, cp: CentralSystemMixin) -> None:
        """The connection of ``cp`` closed (nothing happens if a newer one replaced it)."""
        self.queue.detach(cp)
        if self.cp is not cp:
            return
        self.cp = self.conn = None
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None
        if self.info is not None:
            self.gateway.sink.station_offline(self)

    def _settled(self) -> None:
        self._settle = None
        if self.connected and self.accepted:
            self.gateway.sink.station_ready(self, booted=False)

    def _read(self, fn: Any, *args: Any) -> Any:
        with self.gateway.db.read() as s:
            return fn(s, *args)

    # -- inbound events -----------------------------------------------------------------------

    def refusal(self, action: str) -> str | None:
        """Why a CALL is refused (SecurityError), or None."""
        if self.accepted or action == "BootNotification":
            return None
        if self.info is None:
            return f"station {self.station_id!r} is not registered: it is held pending"
        return (
            f"station {self.station_id!r} is not accepted "
            f"(registration status {self.info.registration_status})"
        )

    def touch(self) -> None:
        self.last_seen = self.now()
        self.gateway.seen(self)

    async def boot(self, boot: BootInfo) -> tuple[str, int]:
        """A BootNotification: returns the registration status and the heartbeat interval."""
        interval = self.gateway.settings.ocpp.heartbeat_s
        self.boot_info = boot
        info = await asyncio.to_thread(self._read, store.load_station, self.station_id)
        if info is None:
            self.gateway.hold_pending(self.station_id, boot)
            return "Pending", interval
        self.info = info
        self.gateway.release_pending(self.station_id)
        self._refresh_quirks()
        status = info.registration_status
        self.accepted = status == "Accepted"
        version = self.version or "1.6"
        await self.gateway.writer.run(
            lambda s: store.record_boot(s, info.pk, version=version, boot=boot, at=self.now())
        )
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None
        return status, interval

    def after_boot(self) -> None:
        """The BootNotification was answered: start the boot sequence (not from the handler)."""
        if self.accepted and self.connected:
            self.gateway.sink.register(self)
            self.gateway.sink.station_ready(self, booted=True)

    async def status(self, change: StatusChange) -> None:
        info = self.info
        if info is None:
            return
        conn = info.connectors.get(change.connector)
        if change.connector != 0 and conn is None:
            logger.info("%s: status of unknown connector %d", self.station_id, change.connector)
            return
        pk = None if conn is None else conn.pk
        await self.gateway.writer.run(lambda s: store.record_status(s, info.pk, pk, change))

    async def authorize(self, token: str) -> tuple[AuthStatus, datetime | None, str | None]:
        info = self.info
        if info is None:
            return AuthStatus.INVALID, None, None
        if self.gateway.remote_token_valid(token):
            return AuthStatus.ACCEPTED, None, None  # the token of a remote start we asked for
        accept_unknown = self.gateway.settings.ocpp.authorize_unknown_tokens
        now = self.now()

        def check(s: Any) -> tuple[AuthStatus, datetime | None, str | None]:
            return store.authorize(
                s, token, site_pk=info.site_pk, now=now, accept_unknown=accept_unknown
            )

        result: tuple[AuthStatus, datetime | None, str | None] = await asyncio.to_thread(
            self._read, check
        )
        return result

    async def start_transaction(self, ev: TxStart, *, authorized: bool) -> TxRef | None:
        """Record a transaction; None if the connector is unknown."""
        info = self.info
        conn = None if info is None else info.connectors.get(ev.connector)
        if info is None or conn is None:
            logger.warning("%s: transaction on unknown connector %d", self.station_id, ev.connector)
            return None

        def write(s: Any) -> TxRef:
            return store.start_transaction(
                s,
                station_pk=info.pk,
                connector=conn,
                ocpp_id=ev.transaction_id,
                id_token=ev.id_token,
                meter_start_wh=ev.meter_start_wh,
                at=ev.at,
                authorized=authorized,
            )

        tx = await self.gateway.writer.run(write)
        if tx.authorized:
            self.txs[ev.connector] = tx
            self._fresh.add(ev.connector)
        return tx

    def knows_transaction(self, ocpp_id: str) -> bool:
        return any(tx.ocpp_id == ocpp_id for tx in self.txs.values())

    def connector_of(self, ocpp_id: str) -> int | None:
        return next((n for n, tx in self.txs.items() if tx.ocpp_id == ocpp_id), None)

    def after_transaction_change(self, connector: int) -> None:
        """A transaction started (its answer is out): its profile may be sent now."""
        tx = self.txs.get(connector)
        if tx is not None and connector in self._fresh:
            self._fresh.discard(connector)
            self.gateway.sink.transaction_started(self, connector, tx)
            self.gateway.notify("transaction started", replan=True)

    async def stop_transaction(
        self, end: TxEnd, *, meter_values: Sequence[dict[str, Any]] | None
    ) -> TxRef | None:
        info = self.info
        if info is None:
            return None
        number = self.connector_of(end.transaction_id)
        if meter_values and number is not None:
            await self.meter_values(number, meter_values, end.transaction_id)
        ref = await self.gateway.writer.run(lambda s: store.stop_transaction(s, info.pk, end))
        if ref is None:
            logger.info("%s: stop of unknown transaction %s", self.station_id, end.transaction_id)
            return None
        if self.txs.get(ref.connector, ref).ocpp_id == ref.ocpp_id:
            self.txs.pop(ref.connector, None)
        self._ended[ref.ocpp_id] = ref.connector
        return ref

    def after_transaction_end(self, ocpp_id: str) -> None:
        connector = self._ended.pop(ocpp_id, None)
        if connector is not None:
            self.gateway.sink.transaction_ended(self, connector)
            self.gateway.notify("transaction ended", replan=True)

    async def meter_values(
        self, connector: int, values: Sequence[dict[str, Any]], transaction_id: str | None
    ) -> None:
        """Store a connector's meter values, verify them against its limit, wake the loop on
        a large change (connector 0, the station's own meter, is not stored)."""
        info = self.info
        conn = None if info is None else info.connectors.get(connector)
        if conn is None:
            return
        readings, summary = parse_meter_values(
            values, now=self.now(), nominal_voltage_v=conn.voltage_v
        )
        samples = [
            meter.MeterSample(conn.pk, r.ts, r.measurand, r.value, r.phase) for r in readings
        ]
        if summary is not None and summary.power_derived and summary.power_w is not None:
            samples.append(
                meter.MeterSample(
                    conn.pk, summary.ts, Measurand.POWER_IMPORT_W, summary.power_w, Phase.NONE
                )
            )
        if samples:
            await self.gateway.writer.submit_merged("meter", samples, meter.ingest_meter_values)
        if summary is None or summary.power_w is None:
            return
        power_kw = summary.power_w / 1000.0
        self.gateway.sink.metered(self, connector, power_kw)
        if connector not in self.txs:
            return  # without a session, what the connector draws does not change the limits
        last = self._notified_kw.get(connector)
        if last is None or abs(power_kw - last) >= NOTIFY_KW:
            self._notified_kw[connector] = power_kw
            self.gateway.notify("meter value", replan=False)

    async def charging_needs(self, needs: ChargingNeeds) -> bool:
        """ISO 15118 charging needs of the EV on a connector: its session's new targets."""
        info = self.info
        tx = self.txs.get(needs.connector)
        conn = None if info is None else info.connectors.get(needs.connector)
        if tx is None or conn is None:
            return False
        if needs.ev_max_kw is None and needs.ev_max_a is not None:
            kw = float(kw_from_a(needs.ev_max_a, voltage_v=conn.voltage_v, phases=conn.phases))
            needs = ChargingNeeds(
                needs.connector,
                needs.departure_at,
                needs.energy_kwh,
                kw,
                needs.battery_kwh,
                needs.soc_pct,
                needs.soc_target_pct,
            )
        now = self.now()
        ok = await self.gateway.writer.run(
            lambda s: store.apply_charging_needs(s, tx.session_pk, needs, now)
        )
        if ok:
            self.gateway.notify("EV charging needs", replan=True)
        return bool(ok)

    def security_event(self, kind: str) -> None:
        logger.warning("%s: security event %s", self.station_id, kind)
