"""The WebSocket endpoint ``/ocpp/{station_id}``: handshake checks, then one ChargePoint per socket.

Before the socket is accepted:

* the subprotocol is negotiated: the first of the station's offers that Ampflow speaks
  (``ocpp2.0.1``, ``ocpp1.6``); a station that offers neither is refused (HTTP 400);
* an unknown station id is refused (HTTP 404) or, with ``ocpp.unknown_stations = "pending"``,
  accepted and answered ``Pending`` until it is registered;
* a station registered with a password must send HTTP Basic credentials, user name = its id
  (OCPP security profiles 1 and 2; profile 2 adds TLS, configured on the server): HTTP 401
  otherwise. Passwords are checked against their scrypt hash in a worker thread, and a verified
  password is remembered as a keyed digest so a reconnect costs no scrypt; repeated failures for
  one id are refused without checking for a minute.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from ampflow.gateway.api.schemas.stations import STATION_ID_PATTERN
from ampflow.gateway.db.crypto import verify_password
from ampflow.gateway.ocpp import store
from ampflow.gateway.ocpp.protocol import ConnectionClosedError, WebSocketConnection
from ampflow.gateway.ocpp.store import StationInfo
from ampflow.gateway.ocpp.v16 import ChargePoint16, V16Calls
from ampflow.gateway.ocpp.v201 import ChargePoint201, V201Calls
from ampflow.gateway.settings import UnknownStations

if TYPE_CHECKING:
    from ampflow.gateway.ocpp.gateway import OcppGateway

__all__ = ["SUBPROTOCOLS", "OcppEndpoint", "negotiate"]

logger = logging.getLogger(__name__)

SUBPROTOCOLS = {"ocpp2.0.1": "2.0.1", "ocpp1.6": "1.6"}
_FAILURES = 5  # failed logins of one id within _LOCKOUT_S before it is locked out
_LOCKOUT_S = 60.0


def negotiate(offered: Sequence[str]) -> str | None:
    """The subprotocol to accept: the station's first offer that Ampflow speaks.

    Examples
    --------
    >>> negotiate(["ocpp2.1", "ocpp1.6", "ocpp2.0.1"])
    'ocpp1.6'
    >>> negotiate(["ocpp1.5"]) is None
    True
    """
    return next((p for p in offered if p in SUBPROTOCOLS), None)


def basic_credentials(headers: Any) -> tuple[str, str] | None:
    """User name and password of an ``Authorization: Basic`` header, if any.

    Examples
    --------
    >>> basic_credentials({"authorization": "Basic " + base64.b64encode(b"cp-1:s3cret").decode()})
    ('cp-1', 's3cret')
    >>> basic_credentials({"authorization": "Bearer x"}) is None
    True
    """
    value = headers.get("authorization")
    if not value or not value.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class OcppEndpoint:
    """The ``/ocpp/{station_id}`` WebSocket route of a gateway."""

    def __init__(self, gateway: OcppGateway) -> None:
        self.gateway = gateway
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, tuple[str, bytes]] = {}
        self._failures: dict[str, list[float]] = {}

    async def handle(self, websocket: WebSocket) -> None:
        station_id = str(websocket.path_params.get("station_id", ""))
        subprotocol = negotiate(websocket.scope.get("subprotocols") or [])
        if subprotocol is None:
            offered = ", ".join(websocket.scope.get("subprotocols") or []) or "none"
            await _deny(websocket, 400, f"expected subprotocol ocpp2.0.1 or ocpp1.6, got {offered}")
            return
        if not re.fullmatch(STATION_ID_PATTERN, station_id):
            await _deny(websocket, 404, f"station id {station_id[:60]!r} is not valid")
            return
        info = await asyncio.to_thread(self._load, station_id)
        if info is None and self.gateway.settings.ocpp.unknown_stations is UnknownStations.REJECT:
            await _deny(websocket, 404, f"unknown station {station_id!r}")
            return
        if info is not None and info.password_hash is not None:
            problem = await self._authenticate(websocket, info)
            if problem is not None:
                await _deny(
                    websocket, 401, problem, {"WWW-Authenticate": 'Basic realm="ampflow-ocpp"'}
                )
                return
        await websocket.accept(subprotocol=subprotocol)
        await self._serve(websocket, station_id, info, SUBPROTOCOLS[subprotocol])

    def _load(self, station_id: str) -> StationInfo | None:
        with self.gateway.db.read() as s:
            return store.load_station(s, station_id)

    async def _serve(
        self, websocket: WebSocket, station_id: str, info: StationInfo | None, version: str
    ) -> None:
        ocpp = self.gateway.settings.ocpp
        link = self.gateway.link_for(station_id, info)
        conn = WebSocketConnection(websocket)
        kind = ChargePoint16 if version == "1.6" else ChargePoint201
        cp = kind(
            link,
            conn,
            response_timeout=ocpp.response_timeout_s,
            rate_per_s=ocpp.rate_per_s,
            rate_burst=ocpp.rate_burst,
        )
        calls = V16Calls if version == "1.6" else V201Calls
        logger.info("%s: connected (OCPP %s)", station_id, version)
        try:
            await link.attach(cp, conn, version=version, calls=calls)
            await cp.start()
        except ConnectionClosedError:
            pass
        finally:
            link.detach(cp)
            logger.info("%s: disconnected (code %s)", station_id, conn.close_code)

    async def _authenticate(self, websocket: WebSocket, info: StationInfo) -> str | None:
        """None if the station's Basic credentials are right, else why not."""
        assert info.password_hash is not None
        now = time.monotonic()
        recent = [t for t in self._failures.get(info.id, []) if now - t < _LOCKOUT_S]
        self._failures[info.id] = recent
        if len(recent) >= _FAILURES:
            return "too many failed logins; try again later"
        creds = basic_credentials(websocket.headers)
        if creds is None:
            return "HTTP Basic credentials are required"
        user, password = creds
        digest = hmac.new(self._key, password.encode(), hashlib.sha256).digest()
        cached = self._verified.get(info.id)
        known = cached is not None and cached[0] == info.password_hash
        if user == info.id and known and hmac.compare_digest(cached[1], digest):  # type: ignore[index]
            return None
        ok = user == info.id and await asyncio.to_thread(
            verify_password, password, info.password_hash
        )
        if not ok:
            recent.append(now)
            return "wrong user name or password (the user name is the station id)"
        self._verified[info.id] = (info.password_hash, digest)
        return None


async def _deny(
    websocket: WebSocket, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    logger.info("refused a station connection: %s %s", status, message)
    try:
        await websocket.send_denial_response(
            PlainTextResponse(message, status_code=status, headers=headers)
        )
    except RuntimeError:  # the server has no denial extension: a plain refusal (HTTP 403)
        await websocket.close(code=1008, reason=message[:120])
