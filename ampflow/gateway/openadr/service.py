"""The VENs inside ``ampflow serve``: started after the control loop, stopped before it.

:func:`install` wraps the app's lifespan so that, once the database is migrated and the control
loop runs, every ``[[openadr.vens]]`` entry becomes a running VEN (2.0b or 3.1) whose events
wake the loop through ``ControlLoop.notify``. A VEN that cannot reach its VTN keeps retrying in
the background; it never stops the server.

Examples
--------
>>> from ampflow.gateway.api import create_app
>>> from ampflow.gateway.settings import Settings
>>> app = create_app(Settings(data_dir="/tmp/ampflow-doc"), control=False)
>>> install(app)  # no VENs configured: nothing to wrap
False
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI

from ampflow.gateway.db import Database
from ampflow.gateway.db.base import SignalSource, utcnow
from ampflow.gateway.openadr import store
from ampflow.gateway.openadr.config import OpenAdrSettings, Protocol, VenConfig
from ampflow.gateway.openadr.processor import EventProcessor
from ampflow.gateway.openadr.ven3 import Ven3
from ampflow.gateway.openadr.ven20 import Ven20

__all__ = ["OpenAdrService", "install"]

logger = logging.getLogger(__name__)


class OpenAdrService:
    """All configured VENs of one server.

    Parameters
    ----------
    db : Database
    settings : OpenAdrSettings
    notify : callable
        Wakes the control loop with a reason (``ControlLoop.notify``).
    clock : callable, optional
    """

    def __init__(
        self,
        db: Database,
        settings: OpenAdrSettings,
        *,
        notify: Callable[[str], None],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.notify = notify
        self.clock = clock
        self.vens: dict[str, Ven20 | Ven3] = {}

    def _make(self, config: VenConfig) -> Ven20 | Ven3:
        source = (
            SignalSource.OPENADR2 if config.protocol is Protocol.V2_0B else SignalSource.OPENADR3
        )
        processor = EventProcessor(
            self.db, config, source=source, notify=self.notify, clock=self.clock
        )
        if config.protocol is Protocol.V2_0B:
            return Ven20(config, processor, site_power_kw=self.site_power_kw)
        return Ven3(config, processor, site_power_kw=self.site_power_kw, clock=self.clock)

    async def start(self) -> None:
        """Start every VEN (each registers and polls in the background)."""
        for config in self.settings.vens:
            ven = self._make(config)
            self.vens[config.name] = ven
            await ven.start()
            logger.info(
                "OpenADR %s VEN %s started for site(s) %s",
                config.protocol.value,
                config.name,
                ", ".join(b.site_id for b in config.sites),
            )

    async def stop(self) -> None:
        """Stop every VEN."""
        for ven in self.vens.values():
            await ven.stop()
        self.vens.clear()

    async def site_power_kw(self, site_id: str) -> float:
        """A site's charging power now [kW] (telemetry)."""
        return await asyncio.to_thread(self._site_power, site_id)

    def _site_power(self, site_id: str) -> float:
        with self.db.read() as s:
            return store.site_power_kw(s, site_id, now=self.clock())


def install(app: FastAPI, settings: Any = None, db: Database | None = None) -> bool:
    """Run the configured VENs for the lifetime of ``app`` (made by ``create_app``).

    Parameters
    ----------
    app : FastAPI
    settings, db : optional
        Default: the app's own (``app.state.ctx``).

    Returns
    -------
    bool
        Whether any VEN is configured (and the lifespan was wrapped).
    """
    ctx = app.state.ctx
    settings = settings if settings is not None else ctx.settings
    database = db if db is not None else ctx.db
    if not settings.openadr.vens:
        return False
    inner = app.router.lifespan_context

    def notify(reason: str) -> None:
        ctx.notify(reason)

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            service = OpenAdrService(database, settings.openadr, notify=notify)
            app.state.openadr = service
            await service.start()
            try:
                yield state
            finally:
                await service.stop()

    app.router.lifespan_context = lifespan
    return True
