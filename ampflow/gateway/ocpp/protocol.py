"""What both protocol versions share: the WebSocket adapter and a robust receive path.

The ``ocpp`` package's ``ChargePoint.route_message`` drops a message it cannot parse without an
answer, lets an unhashable action kill the receive loop, and hands every response to the next
outbound call whatever its id (pain points 17 and 19 in ``shared/reference/ocpp.md``).
:class:`CentralSystemMixin` replaces it:

* every malformed CALL gets a CallError with the message id when it can be read, else ``-1``:
  unreadable JSON is a ``FormatViolation`` (``FormationViolation`` in 1.6), a frame that is not an
  RPC array an ``RpcFrameworkError`` (2.0.1) or ``ProtocolError`` (1.6), schema errors keep the
  codes the package gives them (``TypeConstraintViolation``, ``ProtocolError``, ...);
* responses are only passed on when their id is the one an outbound call is waiting for, so a late
  answer can never be taken for the next one;
* a station that is not accepted (unknown and held pending, or registered as pending/rejected) gets
  ``SecurityError`` for anything but a BootNotification;
* a token bucket limits each connection's rate; a CALL over the limit gets a ``GenericError``, and a
  connection that keeps flooding is closed with code 1008;
* nothing a station sends can end the loop: only the socket closing does;
* the receive loop never waits for a handler: responses reach the waiting outbound call at once,
  while the station's CALLs are queued (on receipt, after the rate limit) and handled one at a
  time, in order, by one task per connection. A station may have several CALLs outstanding
  (OCPP allows one; that is not relied on) but at most :data:`_BACKLOG` wait: beyond that the loop
  reads on only as the handler catches up. When the connection closes, the CALL being handled
  gets :data:`_FINISH_S` to finish (its writes are usually under way; its answer cannot be sent),
  the ones still queued are dropped (the station repeats what it was not answered) and the task
  ends with the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from ocpp.exceptions import OCPPError
from ocpp.messages import MessageType, unpack
from ocpp.routing import after as _after
from ocpp.routing import on as _on
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

if TYPE_CHECKING:
    from ampflow.gateway.ocpp.station import StationLink

__all__ = [
    "WIRE_LOGGER",
    "CentralSystemMixin",
    "ConnectionClosedError",
    "TokenBucket",
    "WebSocketConnection",
    "after",
    "on",
]

logger = logging.getLogger(__name__)
WIRE_LOGGER = logging.getLogger("ampflow.gateway.ocpp.wire")

# 1.6 spells two error codes differently (OCPP-J 1.6, section 4.2.3).
_V16_CODES = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
}
_FLOOD_LIMIT = 3  # consecutive bursts over the limit before the connection is closed
_BACKLOG = 16  # inbound CALLs queued behind the one being handled before the loop stops reading
_FINISH_S = 10.0  # [s] the CALL being handled when the connection closes gets this long


F = TypeVar("F", bound=Callable[..., Any])


def on(action: str, *, skip_schema_validation: bool = False) -> Callable[[F], F]:
    """``ocpp.routing.on`` with a type: marks a handler of ``action``."""
    return cast(Callable[[F], F], _on(action, skip_schema_validation=skip_schema_validation))


def after(action: str) -> Callable[[F], F]:
    """``ocpp.routing.after`` with a type: runs after the answer to ``action`` is sent."""
    return cast(Callable[[F], F], _after(action))


class ConnectionClosedError(Exception):
    """The WebSocket is closed."""


class WebSocketConnection:
    """A Starlette WebSocket as the ``recv``/``send`` connection the ``ocpp`` package expects."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.close_code: int | None = None

    async def recv(self) -> str:
        try:
            message = await self.ws.receive()
        except (RuntimeError, WebSocketDisconnect) as exc:
            raise ConnectionClosedError(str(exc)) from exc
        if message["type"] == "websocket.disconnect":
            self.close_code = message.get("code")
            raise ConnectionClosedError(f"closed with code {self.close_code}")
        text = message.get("text")
        if text is not None:
            return str(text)
        data = message.get("bytes") or b""
        return data.decode("utf-8", errors="replace")  # OCPP-J is text; the parser will object

    async def send(self, data: str) -> None:
        try:
            await self.ws.send_text(data)
        except (RuntimeError, WebSocketDisconnect, OSError) as exc:
            raise ConnectionClosedError(str(exc)) from exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.ws.application_state is WebSocketState.CONNECTED:
            try:
                await self.ws.close(code=code, reason=reason)
            except (RuntimeError, OSError):
                logger.debug("closing an already closed socket")


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up.

    Examples
    --------
    >>> b = TokenBucket(rate=1.0, burst=2, clock=lambda: 0.0)
    >>> [b.take() for _ in range(3)]
    [True, True, False]
    """

    def __init__(self, *, rate: float, burst: int, clock: Any = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.last = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Connection(Protocol):
    async def recv(self) -> str: ...
    async def send(self, data: str) -> None: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...


def _message_id(raw: str) -> tuple[int | None, str]:
    """The message type and id of a frame, as far as they can be read (``-1`` if not)."""
    try:
        frame = json.loads(raw)
    except (ValueError, TypeError):
        return None, "-1"
    if not isinstance(frame, list) or not frame:
        return None, "-1"
    kind = frame[0] if isinstance(frame[0], int) else None
    uid = frame[1] if len(frame) > 1 and isinstance(frame[1], str) and frame[1] else "-1"
    return kind, uid[:36]


class CentralSystemMixin:
    """The receive path of a central-system ChargePoint; see the module notes.

    Mixed in before ``ocpp.v16.ChargePoint`` / ``ocpp.v201.ChargePoint``.
    """

    _ocpp_version: str
    _connection: _Connection
    _response_queue: Any
    link: StationLink

    def _setup(self, link: StationLink, *, rate_per_s: float, rate_burst: int) -> None:
        self.link = link
        self._bucket = TokenBucket(rate=rate_per_s, burst=rate_burst)
        self._floods = 0
        self._awaiting: str | None = None
        self.received = 0
        self._calls: asyncio.Queue[Callable[[], Awaitable[None]]] | None = None
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    def expect(self, unique_id: str | None) -> None:
        """The id of the outbound call now waiting for its answer (None: none)."""
        self._awaiting = unique_id

    def _code(self, code: str) -> str:
        return _V16_CODES.get(code, code) if self._ocpp_version == "1.6" else code

    async def _reply_error(self, uid: str, code: str, description: str, cause: str = "") -> None:
        frame = [MessageType.CallError, uid, self._code(code), description, {"cause": cause[:500]}]
        await self._connection.send(json.dumps(frame, separators=(",", ":")))

    async def _send(self, message: str) -> None:
        if message.startswith("[4,"):
            message = self._clean_error(message)
        WIRE_LOGGER.debug("%s: send %s", self.link.station_id, message)
        await self._connection.send(message)

    def _clean_error(self, message: str) -> str:
        """Version-correct error codes, and no echo of the whole message in the details."""
        try:
            frame = json.loads(message)
            frame[2] = self._code(str(frame[2]))
            details = frame[4] if isinstance(frame[4], dict) else {}
            cause = details.get("cause")
            frame[4] = {"cause": str(cause)[:500]} if cause is not None else {}
            return json.dumps(frame, separators=(",", ":"))
        except (ValueError, IndexError, TypeError):
            return message

    async def start(self) -> None:
        """The receive loop: read a frame, route it, until the socket closes.

        Replaces ``ChargePoint.start``: CALLs are handled by a task of this connection, so the
        loop keeps reading (and passing on responses) while a handler waits.

        Raises
        ------
        ConnectionClosedError
            When the socket closes (the only way the loop ends).
        """
        self._calls = asyncio.Queue(maxsize=_BACKLOG)
        self._closing = False
        self._idle.set()
        handler = asyncio.create_task(
            self._handle_calls(self._calls), name=f"ampflow-ocpp-calls-{self.link.station_id}"
        )
        try:
            while True:
                message = await self._connection.recv()
                WIRE_LOGGER.info("%s: receive message %s", self.link.station_id, message)
                await self.route_message(message)
        finally:
            await self._stop_handler(handler)

    async def _stop_handler(self, handler: asyncio.Task[None]) -> None:
        """Let the CALL being handled finish (bounded), drop the queued ones, end the task."""
        self._closing = True
        self._calls = None
        task = asyncio.current_task()
        try:
            if task is None or task.cancelling() == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), _FINISH_S)
        finally:
            handler.cancel()
            await asyncio.wait({handler})
            if not handler.cancelled() and handler.exception() is not None:
                logger.error(
                    "%s: the CALL handler failed",
                    self.link.station_id,
                    exc_info=handler.exception(),
                )

    async def _handle_calls(self, calls: asyncio.Queue[Callable[[], Awaitable[None]]]) -> None:
        """The connection's CALL handler: one job at a time, in the order received."""
        while True:
            job = await calls.get()
            if self._closing:
                continue  # the socket is gone: no answer could be sent (the station repeats it)
            self._idle.clear()
            try:
                await job()
            except ConnectionClosedError:
                logger.debug("%s: an answer could not be sent", self.link.station_id)
                self._closing = True  # the receive loop ends too
            finally:
                self._idle.set()

    async def _in_order(self, job: Callable[[], Awaitable[None]]) -> None:
        """Queue ``job`` behind the CALLs received before (inline when no loop runs)."""
        if self._closing:
            raise ConnectionClosedError("an answer could not be sent: the socket is gone")
        if self._calls is None:
            await job()
        else:
            await self._calls.put(job)

    async def route_message(self, raw_msg: str) -> None:
        """Route one frame: responses at once, CALLs to the handler; never raises for anything
        the station sends (only :class:`ConnectionClosedError` once the socket is gone)."""
        self.received += 1
        self.link.touch()
        if not self._bucket.take():
            await self._over_limit(raw_msg)
            return
        self._floods = 0
        try:
            msg = unpack(raw_msg)
        except OCPPError as exc:
            if _message_id(raw_msg)[0] in (MessageType.CallResult, MessageType.CallError):
                logger.info("%s: dropped a malformed response: %s", self.link.station_id, exc)
                return
            await self._in_order(functools.partial(self._unparsable, raw_msg, exc))
            return
        if msg.message_type_id == MessageType.Call:
            await self._in_order(functools.partial(self._call, msg, raw_msg))
        elif msg.unique_id == self._awaiting and self._awaiting is not None:
            self._response_queue.put_nowait(msg)
        else:
            logger.info("%s: dropped a response to no pending call", self.link.station_id)

    async def _call(self, msg: Any, raw_msg: str) -> None:
        """Handle one CALL; a failure becomes a CallError, never an exception."""
        try:
            await self._route_call(msg)
        except ConnectionClosedError:
            raise
        except OCPPError as exc:
            await self._reply_error(str(msg.unique_id)[:36], exc.code, exc.description, _cause(exc))
        except Exception:
            logger.exception("%s: failed to handle %.200s", self.link.station_id, raw_msg)
            await self._reply_error(
                str(msg.unique_id)[:36], "InternalError", "An unexpected error occurred."
            )

    async def _route_call(self, msg: Any) -> None:
        uid = msg.unique_id
        if not isinstance(uid, str) or not uid or len(uid) > 36:
            await self._reply_error("-1", _rpc_error(self._ocpp_version), "messageId unreadable")
            return
        if not isinstance(msg.action, str) or not isinstance(msg.payload, dict):
            await self._reply_error(
                uid, "FormatViolation", "action must be a string and payload an object"
            )
            return
        refusal = self.link.refusal(msg.action)
        if refusal is not None:
            await self._reply_error(uid, "SecurityError", refusal)
            return
        await self._handle_call(msg)  # type: ignore[attr-defined]

    async def _unparsable(self, raw: str, exc: OCPPError) -> None:
        _, uid = _message_id(raw)
        if uid == "-1" and exc.code != "FormatViolation":
            code = _rpc_error(self._ocpp_version)
        elif exc.code == "PropertyConstraintViolation" and self._ocpp_version != "1.6":
            code = "MessageTypeNotSupported"
        else:
            code = exc.code
        await self._reply_error(uid, code, exc.description, _cause(exc))

    async def _over_limit(self, raw: str) -> None:
        kind, uid = _message_id(raw)
        if kind == MessageType.Call:
            # In turn, behind the answers to the calls before it.
            refuse = functools.partial(
                self._reply_error,
                uid,
                "GenericError",
                f"rate limit: at most {self._bucket.rate:g} messages/s "
                f"(burst {self._bucket.burst:g})",
            )
            await self._in_order(refuse)
        self._floods += 1
        if self._floods >= _FLOOD_LIMIT * self._bucket.burst:
            logger.warning("%s: closing a flooding connection", self.link.station_id)
            await self._connection.close(1008, "message rate limit exceeded")


def _rpc_error(version: str) -> str:
    return "ProtocolError" if version == "1.6" else "RpcFrameworkError"


def _cause(exc: OCPPError) -> str:
    details = exc.details if isinstance(exc.details, dict) else {}
    return str(details.get("cause", ""))
