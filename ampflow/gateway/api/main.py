"""The FastAPI application: wiring only (routes live in ``routes/``, schemas in ``schemas/``).

``create_app(settings)`` returns an app whose lifespan opens the database, runs the migrations,
and starts the control loop as a background task; shutdown stops the loop and closes the
database. OpenAPI is served at ``/openapi.json`` and ``/docs``.

Examples
--------
>>> from ampflow.gateway.settings import Settings
>>> app = create_app(Settings(data_dir="/tmp/ampflow-doc"))
>>> app.title, "/sites/{site_id}/schedule" in app.openapi()["paths"]
('Ampflow', True)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from ampflow.gateway.api.auth import AuthMiddleware, KeyCache
from ampflow.gateway.api.context import AppContext
from ampflow.gateway.api.deps import single_valued_query
from ampflow.gateway.api.errors import install_error_handlers
from ampflow.gateway.api.routes import (
    billing,
    cdrs,
    dr_events,
    health,
    keys,
    limits,
    meter_values,
    prices,
    schedules,
    sessions,
    settlement,
    sites,
    stations,
    tariffs,
    tree,
)
from ampflow.gateway.control import ControlLoop, LimitSink, NoStations, StationCommands
from ampflow.gateway.db import Database
from ampflow.gateway.settings import Settings

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

DESCRIPTION = """
Capacity-safe, cost-optimal EV charging. Sites and their capacity tree, stations, sessions and
their targets, DR events and prices in; the plan and the limits last sent out.

Authenticate with an API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
Timestamps are RFC 3339 with an offset on input and UTC on output.
"""


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    sink: LimitSink | None = None,
    commands: StationCommands | None = None,
    control: bool = True,
) -> FastAPI:
    """Build the app.

    Parameters
    ----------
    settings : Settings
    db : Database, optional
        Use this database (already migrated or not) instead of opening the configured one.
    sink : LimitSink, optional
        Where the control loop sends limits; by default they are only recorded.
    commands : StationCommands, optional
        Remote start and stop; by default sessions are recorded directly.
    control : bool, default True
        Run the control loop in the background.
    """
    database = db if db is not None else Database(settings.effective_database_url())
    pepper = settings.secret_key.get_secret_value().encode()
    ctx = AppContext(
        settings=settings,
        db=database,
        keys=KeyCache(database, pepper),
        commands=commands if commands is not None else NoStations(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info("database %r: migrating", database)
        database.upgrade()
        if control:
            ctx.control = ControlLoop(database, settings, sink=sink)
            await ctx.control.start()
        try:
            yield
        finally:
            if ctx.control is not None:
                await ctx.control.stop()
                ctx.control = None
            if db is None:
                database.dispose()

    app = FastAPI(
        title="Ampflow",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(single_valued_query)],
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    app.add_middleware(AuthMiddleware, keys=lambda: ctx.keys)
    for module in (
        health,
        sites,
        tree,
        limits,
        schedules,
        stations,
        sessions,
        meter_values,
        dr_events,
        prices,
        keys,
        tariffs,
        billing,
        cdrs,
        settlement,
    ):
        app.include_router(module.router)
    return app
