"""``ampflow`` commands for the server area: ``serve``, ``db upgrade``, ``keys ...``.

``ampflow serve`` runs the HTTP API with uvicorn on 127.0.0.1:8000 (by default), the OCPP central
system on the same port (``ws://HOST:PORT/ocpp/{station_id}``), and the control loop as a
background task; it migrates the database first. With ``tls_cert_file`` and ``tls_key_file`` set
it serves HTTPS and ``wss://`` (OCPP security profile 2). SIGINT and SIGTERM shut it down
gracefully (in-flight requests finish, the loop stops, the database is closed) with exit code 0.
``--demo`` seeds the Caltech demo site, prices, EVs and one key per role, printed once.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError

from ampflow.gateway.settings import Settings, load_settings

__all__ = ["register"]

logger = logging.getLogger(__name__)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML file with settings (else $AMPFLOW_CONFIG, if set)"),
]

keys_app = typer.Typer(help="API keys: create (printed once), list, revoke.", no_args_is_help=True)
db_app = typer.Typer(help="The database: migrations.", no_args_is_help=True)


def _settings(config: Path | None, **overrides: object) -> Settings:
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return load_settings(config, **given)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "settings"
        raise typer.BadParameter(f"{where}: {first['msg']}") from exc


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    # Listen now: requests that come while the app starts wait in the backlog, not refused.
    sock.listen(2048)
    return sock


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default: 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port; 0 picks a free one [default: 8000]")
    ] = None,
    config: ConfigOption = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Seed the Caltech demo and its keys")
    ] = False,
) -> None:
    """Run the HTTP API and the control loop (migrating the database first)."""
    from ampflow.gateway.api import create_app
    from ampflow.gateway.db import Database
    from ampflow.gateway.ocpp import OcppGateway

    settings = _settings(config, host=host, port=port)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    db = Database(settings.effective_database_url())
    db.upgrade()
    if demo:
        _seed_demo(db, settings)
    sock = _bind(settings.host, settings.port)
    bound = sock.getsockname()[1]
    cert, key = _tls(settings)
    gateway = OcppGateway(db, settings, manage_gc=True)
    app = create_app(settings, db=db, sink=gateway.sink, commands=gateway.commands)
    gateway.mount(app)
    if settings.openadr.vens:  # OpenADR VENs run once the control loop does
        from ampflow.gateway.openadr.service import install

        install(app)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=settings.log_level,
            timeout_graceful_shutdown=10,
            # OCPP frames are small and frequent: compressing each costs CPU at 1,000s of
            # stations and saves little (many chargers do not offer it anyway).
            ws_per_message_deflate=False,
            ssl_certfile=cert,
            ssl_keyfile=key,
        )
    )
    stopped_by: list[int] = []

    def _note(sig: int, _frame: FrameType | None) -> None:
        # uvicorn shuts down gracefully on the signal, then re-raises it to the handler it found:
        # this one, so the process exits normally after the shutdown instead of dying of it.
        stopped_by.append(sig)

    previous = {sig: signal.signal(sig, _note) for sig in (signal.SIGINT, signal.SIGTERM)}
    http, ws = ("https", "wss") if cert else ("http", "ws")
    typer.echo(
        f"ampflow: serving on {http}://{settings.host}:{bound} (API docs at /docs, "
        f"OCPP at {ws}://{settings.host}:{bound}/ocpp/{{station_id}})"
    )
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        db.dispose()
    if stopped_by:
        typer.echo(f"ampflow: stopped cleanly on {signal.Signals(stopped_by[0]).name}")
    if not server.started:
        raise typer.Exit(1)


def _tls(settings: Settings) -> tuple[str | None, str | None]:
    """The TLS certificate and key files, or none; both are needed, and must exist."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None and key is None:
        return None, None
    if cert is None or key is None:
        raise typer.BadParameter("tls_cert_file and tls_key_file: set both or neither")
    for name, path in (("tls_cert_file", cert), ("tls_key_file", key)):
        if not path.is_file():
            raise typer.BadParameter(f"{name}: no such file {str(path)!r}")
    return str(cert), str(key)


def _seed_demo(db: object, settings: Settings) -> None:
    from ampflow.gateway.db import Database
    from ampflow.gateway.db.demo import DEMO_SITE, seed_demo

    assert isinstance(db, Database)
    seed = seed_demo(db, pepper=settings.secret_key.get_secret_value().encode())
    typer.echo(
        f"ampflow demo: site {DEMO_SITE!r} ({'created' if seed.created_site else 'kept'}), "
        f"{seed.sessions} EVs plugged in, prices "
        f"{'seeded' if seed.price_series else 'already current'}"
    )
    typer.echo("ampflow demo keys (shown once; use as 'Authorization: Bearer <key>'):")
    for role, token in seed.keys.items():
        typer.echo(f"  {role:<13} {token}")


def db_upgrade(config: ConfigOption = None) -> None:
    """Run the database migrations up to the newest."""
    from ampflow.gateway.db import Database
    from ampflow.gateway.db.migrate import current_revision

    settings = _settings(config)
    db = Database(settings.effective_database_url())
    try:
        db.upgrade()
        typer.echo(f"database {db!r} is at revision {current_revision(db.engine)}")
    finally:
        db.dispose()


def keys_create(
    role: Annotated[str, typer.Option(help="admin, site_manager, utility or analyst")],
    site: Annotated[
        list[str] | None, typer.Option("--site", help="A site in the key's scope (repeatable)")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    config: ConfigOption = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from ampflow.gateway.db import Database
    from ampflow.gateway.db.base import Role
    from ampflow.gateway.db.errors import ConflictError
    from ampflow.gateway.db.repo import keys

    try:
        parsed = Role(role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise typer.BadParameter(
            f"expected one of {choices}, got {role!r}", param_hint="--role"
        ) from None
    settings = _settings(config)
    db = Database(settings.effective_database_url())
    try:
        db.upgrade()
        with db.write() as s:
            row, token = keys.create_api_key(
                s,
                role=parsed,
                pepper=settings.secret_key.get_secret_value().encode(),
                site_ids=site or [],
                name=name,
            )
            key_id = row.id
    except ConflictError as exc:
        raise typer.BadParameter(exc.message, param_hint="--site") from exc
    finally:
        db.dispose()
    typer.echo(token)
    typer.echo(
        f"(key id {key_id}, role {parsed.value}; this is the only time it is shown)", err=True
    )


def keys_list(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List API keys (never their secrets)."""
    from ampflow.gateway.db import Database
    from ampflow.gateway.db.repo import keys

    db = Database(_settings(config).effective_database_url())
    try:
        db.upgrade()
        with db.read() as s:
            rows = [
                (k.id, k.role, [x.site_id for x in k.sites], k.name, k.revoked_at is not None)
                for k in keys.list_api_keys(s)
            ]
    finally:
        db.dispose()
    if as_json:
        fields = ("id", "role", "sites", "name", "revoked")
        typer.echo(json.dumps([dict(zip(fields, r, strict=True)) for r in rows]))
        return
    for key_id, role, scope, name, revoked in rows:
        state = "revoked" if revoked else "active"
        typer.echo(f"{key_id}  {role:<13} {state:<8} {','.join(scope) or '*'}  {name}")


def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (the 12 characters after 'amp_')")],
    config: ConfigOption = None,
) -> None:
    """Revoke an API key."""
    from ampflow.gateway.db import Database
    from ampflow.gateway.db.errors import NotFoundError
    from ampflow.gateway.db.repo import keys

    db = Database(_settings(config).effective_database_url())
    try:
        db.upgrade()
        with db.write() as s:
            keys.revoke_api_key(s, key_id)
    except NotFoundError as exc:
        raise typer.BadParameter(exc.message, param_hint="KEY_ID") from exc
    finally:
        db.dispose()
    typer.echo(f"revoked {key_id}")


keys_app.command("create")(keys_create)
keys_app.command("list")(keys_list)
keys_app.command("revoke")(keys_revoke)
db_app.command("upgrade")(db_upgrade)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main ampflow app."""
    app.command("serve")(serve)
    app.add_typer(db_app, name="db")
    app.add_typer(keys_app, name="keys")
