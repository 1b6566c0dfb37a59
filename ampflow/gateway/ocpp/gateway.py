"""The OCPP central system as a whole: stations, the endpoint, the sink, commands, wiring.

:class:`OcppGateway` owns the :class:`~.station.StationLink` of every station that connected, the
group writer, the :class:`~.sink.ProfileSink` the control loop sends limits to, and the
:class:`GatewayCommands` the API uses for remote start and stop. :meth:`OcppGateway.mount` adds the
``/ocpp/{station_id}`` WebSocket route to the FastAPI app and ties the gateway's start and stop to
the app's lifespan, so ``ampflow serve`` serves HTTP and OCPP on one port:

>>> from ampflow.gateway.api import create_app
>>> from ampflow.gateway.db import Database
>>> from ampflow.gateway.settings import Settings
>>> settings = Settings(data_dir="/tmp/ampflow-doc")
>>> db = Database(settings.effective_database_url())
>>> gw = OcppGateway(db, settings)
>>> app = create_app(settings, db=db, sink=gw.sink, commands=gw.commands)
>>> gw.mount(app)
>>> [r.path for r in app.routes if getattr(r, "path", "").startswith("/ocpp")]
['/ocpp/{station_id}']

The version-neutral commands (:meth:`~OcppGateway.set_charging_profile`, ...,
:meth:`~OcppGateway.reset`) queue a call on the station's outbound queue and return its
:class:`~.outbound.Outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import ocpp.messages
from fastapi import FastAPI
from starlette.routing import WebSocketRoute

from ampflow.gateway.db import Database
from ampflow.gateway.db.base import SessionStatus, utcnow
from ampflow.gateway.db.repo import sessions
from ampflow.gateway.ocpp import store
from ampflow.gateway.ocpp.events import BootInfo
from ampflow.gateway.ocpp.outbound import CommandStatus, Outcome
from ampflow.gateway.ocpp.profiles import CompositeLimit, ProfilePurpose, ProfileSpec
from ampflow.gateway.ocpp.protocol import WIRE_LOGGER
from ampflow.gateway.ocpp.server import OcppEndpoint
from ampflow.gateway.ocpp.sink import ProfileSink
from ampflow.gateway.ocpp.station import StationLink
from ampflow.gateway.ocpp.store import StationInfo
from ampflow.gateway.ocpp.writer import GroupWriter
from ampflow.gateway.settings import Settings

__all__ = ["GatewayCommands", "OcppGateway"]

logger = logging.getLogger(__name__)

_TOUCH_S = 30.0  # last contact is written at most this often [s]
_REMOTE_TOKEN_S = 300.0  # how long a remote start's token is accepted [s]
_GC_FULL_S = 3600.0  # with manage_gc: a full collection this often [s]


class OcppGateway:
    """Stations, their connections and what talks to them; see the module notes.

    Parameters
    ----------
    db : Database
    settings : Settings
    clock : callable, optional
        The current time (tz-aware UTC).
    manage_gc : bool, default False
        Tune the garbage collector for a server process (``ampflow serve``): every 30 s the
        objects alive (connections, their protocol state) are frozen out of the cyclic
        collector, whose full passes over ~400 objects per station otherwise stall every
        station for half a second at 2,000 stations; once an hour everything is collected
        once and frozen again, so cycles left by closed connections are still freed.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        manage_gc: bool = False,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.writer = GroupWriter(db)
        self.links: dict[str, StationLink] = {}
        self.pending: dict[str, BootInfo | None] = {}
        self.sink = ProfileSink(self)
        self.commands = GatewayCommands(self)
        self.endpoint = OcppEndpoint(self)
        self.remote_tokens: dict[str, float] = {}
        self._notify: Callable[[str, bool], None] = lambda reason, replan: None
        self._seen: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._toucher: asyncio.Task[None] | None = None
        self.manage_gc = manage_gc
        self._gc_full_at = time.monotonic()
        if WIRE_LOGGER.level == logging.NOTSET:
            WIRE_LOGGER.setLevel(logging.WARNING)  # every frame is logged at INFO/DEBUG

    # -- wiring -------------------------------------------------------------------------------

    def mount(self, app: FastAPI, *, path: str = "/ocpp/{station_id}") -> None:
        """Serve the endpoint in ``app`` and start and stop with its lifespan."""
        # A plain Starlette route: the app's HTTP dependencies do not apply to stations.
        app.router.routes.append(WebSocketRoute(path, self.endpoint.handle, name="ocpp"))
        inner = app.router.lifespan_context

        def notify(reason: str, replan: bool) -> None:
            control = app.state.ctx.control
            if control is not None:
                control.notify(reason, replan=replan)

        @asynccontextmanager
        async def lifespan(a: Any) -> AsyncIterator[Any]:
            async with inner(a) as state:
                self._notify = notify
                await self.start()
                try:
                    yield state
                finally:
                    await self.stop()

        app.router.lifespan_context = lifespan

    async def start(self) -> None:
        """Start the background work on the running loop.

        Schema validation of OCPP messages runs inline from now on (the ``ocpp`` package's
        default is a thread-pool hop per message, which costs more than the check itself).
        """
        ocpp.messages.ASYNC_VALIDATION = False
        self._loop = asyncio.get_running_loop()
        self.writer.start()
        self._toucher = asyncio.create_task(self._touch_loop(), name="ampflow-ocpp-touch")

    async def stop(self) -> None:
        """Close every station connection, stop the queues, write what is pending."""
        for link in list(self.links.values()):
            if link.conn is not None:
                await link.conn.close(1001, "server shutting down")
            await link.queue.stop()
        await self.sink.stop()
        if self._toucher is not None:
            self._toucher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._toucher
        await self._touch()
        await self.writer.stop()

    def notify(self, reason: str, *, replan: bool) -> None:
        """Wake the control loop."""
        self._notify(reason, replan)

    # -- stations -----------------------------------------------------------------------------

    def link_for(self, station_id: str, info: StationInfo | None) -> StationLink:
        """The station's link, created on first contact (its info refreshed on each)."""
        link = self.links.get(station_id)
        if link is None:
            link = self.links[station_id] = StationLink(self, station_id, info)
        elif info is not None:
            link.info = info
            link.accepted = info.registration_status == "Accepted"
        return link

    def hold_pending(self, station_id: str, boot: BootInfo | None) -> None:
        if station_id not in self.pending:
            logger.warning("unknown station %r held pending until it is registered", station_id)
        self.pending[station_id] = boot

    def release_pending(self, station_id: str) -> None:
        self.pending.pop(station_id, None)

    def seen(self, link: StationLink) -> None:
        self._seen.add(link.station_id)

    async def _touch_loop(self) -> None:
        while True:
            await asyncio.sleep(_TOUCH_S)
            await self._touch()
            if self.manage_gc:
                self._tune_gc()

    def _tune_gc(self) -> None:
        if time.monotonic() - self._gc_full_at >= _GC_FULL_S:
            self._gc_full_at = time.monotonic()
            gc.unfreeze()
            gc.collect()
        gc.freeze()

    async def _touch(self) -> None:
        seen = {}
        for sid in self._seen:
            link = self.links.get(sid)
            if link is not None and link.info is not None and link.last_seen is not None:
                seen[link.info.pk] = link.last_seen
        self._seen.clear()
        if seen:
            with contextlib.suppress(Exception):  # last contact is best effort
                await self.writer.run(lambda s: store.touch(s, seen))

    def connected_link(self, station_id: str) -> StationLink | None:
        link = self.links.get(station_id)
        return link if link is not None and link.connected and link.accepted else None

    def by_connector(self, connector_id: str) -> tuple[StationLink, int] | None:
        """The connected station and connector number of ``site/charger/n``."""
        for link in self.links.values():
            if link.info is None or not link.connected or not link.accepted:
                continue
            for number, conn in link.info.connectors.items():
                if conn.connector_id == connector_id:
                    return link, number
        return None

    # -- commands -----------------------------------------------------------------------------

    async def call(
        self, station_id: str, build: Callable[[Any], Any], *, key: str | None = None
    ) -> Outcome:
        """Queue the call ``build(calls)`` (``calls`` is the station's version) and await it."""
        link = self.connected_link(station_id)
        if link is None:
            return Outcome(
                "?", CommandStatus.OFFLINE, detail=f"station {station_id!r} not connected"
            )
        return await link.queue.submit(build(link.calls), key=key)

    async def set_charging_profile(self, station_id: str, spec: ProfileSpec) -> Outcome:
        return await self.call(station_id, lambda c: c.set_profile(spec))

    async def clear_charging_profile(
        self,
        station_id: str,
        *,
        profile_id: int | None = None,
        connector: int | None = None,
        purpose: ProfilePurpose | None = None,
        stack_level: int | None = None,
    ) -> Outcome:
        return await self.call(
            station_id,
            lambda c: c.clear_profile(
                profile_id=profile_id, connector=connector, purpose=purpose, stack_level=stack_level
            ),
        )

    async def get_composite_schedule(
        self, station_id: str, connector: int, *, duration_s: int = 300, unit: str | None = None
    ) -> tuple[Outcome, CompositeLimit | None]:
        link = self.connected_link(station_id)
        outcome = await self.call(station_id, lambda c: c.composite(connector, duration_s, unit))
        if link is None or not outcome.ok:
            return outcome, None
        return outcome, link.calls.parse_composite(outcome.response, self.clock())

    async def remote_start(
        self, station_id: str, connector: int, id_token: str, *, remote_start_id: int = 0
    ) -> Outcome:
        self.remote_tokens[id_token] = time.monotonic() + _REMOTE_TOKEN_S
        return await self.call(
            station_id, lambda c: c.remote_start(connector, id_token, remote_start_id)
        )

    async def remote_stop(self, station_id: str, transaction_id: str) -> Outcome:
        return await self.call(station_id, lambda c: c.remote_stop(transaction_id))

    async def trigger_message(
        self, station_id: str, message: str, *, connector: int | None = None
    ) -> Outcome:
        return await self.call(station_id, lambda c: c.trigger(message, connector))

    async def get_configuration(self, station_id: str, keys: list[str] | None = None) -> Outcome:
        """1.6 GetConfiguration; 2.0.1 GetVariables (keys as ``Component.Variable``)."""
        return await self.call(station_id, lambda c: c.get_configuration(keys))

    async def change_configuration(self, station_id: str, key: str, value: str) -> Outcome:
        """1.6 ChangeConfiguration; 2.0.1 SetVariables (key as ``Component.Variable``)."""
        return await self.call(station_id, lambda c: c.change_configuration(key, value))

    async def reset(self, station_id: str, *, hard: bool = False) -> Outcome:
        """1.6 Reset Soft/Hard; 2.0.1 Reset OnIdle/Immediate."""
        return await self.call(station_id, lambda c: c.reset(hard=hard))

    def remote_token_valid(self, token: str) -> bool:
        until = self.remote_tokens.get(token)
        return until is not None and until > time.monotonic()


class GatewayCommands:
    """:class:`~ampflow.gateway.control.StationCommands` through the gateway.

    The API calls these from its worker threads after committing the session; they only queue
    work on the gateway's event loop. A start the station rejects (or cannot be asked for) ends
    the requested session; a stop without a running transaction ends the session at once.
    """

    def __init__(self, gateway: OcppGateway) -> None:
        self.gateway = gateway
        self._remote_ids = 0

    def handles(self, connector_id: str) -> bool:
        return self.gateway.by_connector(connector_id) is not None

    def _submit(self, coro_fn: Callable[[], Any]) -> None:
        loop = self.gateway._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the OCPP gateway is not running")
        loop.call_soon_threadsafe(lambda: loop.create_task(coro_fn()))

    def remote_start(self, session_id: str, connector_id: str, *, id_token: str | None) -> None:
        self._remote_ids += 1
        remote_id = self._remote_ids
        self._submit(lambda: self._start(session_id, connector_id, id_token, remote_id))

    def remote_stop(self, session_id: str, connector_id: str) -> None:
        self._submit(lambda: self._stop(session_id, connector_id))

    async def _start(
        self, session_id: str, connector_id: str, id_token: str | None, remote_id: int
    ) -> None:
        found = self.gateway.by_connector(connector_id)
        token = (id_token or f"AMP{remote_id:05d}")[:20]
        if found is not None:
            link, number = found
            outcome = await self.gateway.remote_start(
                link.station_id, number, token, remote_start_id=remote_id
            )
            if outcome.ok:
                return
            detail = f"{outcome.status.value} {outcome.detail}"
        else:
            detail = "station not connected"
        logger.info("remote start of %s on %s failed: %s", session_id, connector_id, detail)
        await self._end(session_id)

    async def _stop(self, session_id: str, connector_id: str) -> None:
        found = self.gateway.by_connector(connector_id)
        if found is not None:
            link, _ = found
            tx = next((t for t in link.txs.values() if t.session_id == session_id), None)
            if tx is not None:
                outcome = await self.gateway.remote_stop(link.station_id, tx.ocpp_id)
                if outcome.ok:
                    return
        await self._end(session_id)

    async def _end(self, session_id: str) -> None:
        await self.gateway.writer.run(
            lambda s: sessions.stop_session(s, session_id, status=SessionStatus.COMPLETED)
        )
        self.gateway.notify("remote command failed", replan=True)
