"""One outbound queue per station: calls to the station, one at a time, with retry and outcome.

Nothing calls a station from inside an ``@on`` handler (that would block the receive loop it
waits on). Everything that talks to a station submits a call here and, if it cares, awaits the
:class:`Outcome`. One worker per station sends the calls in order through the ``ocpp`` package's
``call`` (which holds the one-CALL-in-flight rule and the response timeout), and:

* retries a call that timed out, at most ``retries`` more times, on the same connection;
* never retries a rejection or a CallError (the station answered);
* fails fast with ``offline`` when the station is not connected, and when its connection closes
  or is replaced while a call is in flight (the call is cancelled, never left to time out);
* replaces a queued call by a newer one with the same ``key`` (the older one ends ``superseded``),
  so a burst of limit changes for one connector sends only the latest;
* puts ``urgent`` calls (limit decreases) ahead of everything queued;
* keeps the last outcomes per station in :attr:`OutboundQueue.history`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from jsonschema.exceptions import ValidationError as SchemaError  # type: ignore[import-untyped]
from ocpp.exceptions import OCPPError, UnknownCallErrorCodeError

from ampflow.gateway.ocpp.protocol import ConnectionClosedError

__all__ = ["CommandStatus", "OutboundQueue", "Outcome"]

logger = logging.getLogger(__name__)


class CommandStatus(StrEnum):
    """How an outbound call ended."""

    ACCEPTED = "accepted"  # answered, and the answer's status (if any) is Accepted
    REJECTED = "rejected"  # answered with another status (Rejected, NotSupported, Unknown ...)
    ERROR = "error"  # a CallError, or a call we could not even build
    TIMEOUT = "timeout"  # no answer after every attempt
    OFFLINE = "offline"  # not connected, or the connection went away
    SUPERSEDED = "superseded"  # replaced by a newer call with the same key before it was sent


@dataclass(frozen=True, slots=True)
class Outcome:
    """The recorded outcome of one outbound call."""

    action: str
    status: CommandStatus
    response: Any = None
    detail: str = ""
    attempts: int = 0
    queued_at: float = 0.0  # time.monotonic()
    done_at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is CommandStatus.ACCEPTED


@dataclass
class _Command:
    payload: Any
    key: str | None
    retries: int
    future: asyncio.Future[Outcome]
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def action(self) -> str:
        return type(self.payload).__name__


def _status_of(response: Any) -> CommandStatus:
    status = getattr(response, "status", None)
    if status is None or str(status) == "Accepted":
        return CommandStatus.ACCEPTED
    return CommandStatus.REJECTED


class OutboundQueue:
    """The calls waiting for one station; see the module notes.

    Parameters
    ----------
    station_id : str
    retries : int
        Further attempts after a timeout.
    history : int
        How many outcomes to keep.
    """

    def __init__(self, station_id: str, *, retries: int, history: int = 200) -> None:
        self.station_id = station_id
        self.retries = retries
        self.history: deque[Outcome] = deque(maxlen=history)
        self._queue: deque[_Command] = deque()
        self._cp: Any = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[Any] | None = None

    @property
    def connected(self) -> bool:
        return self._cp is not None

    def __len__(self) -> int:
        return len(self._queue)

    def attach(self, cp: Any) -> None:
        """Send through this ChargePoint from now on (a new connection)."""
        if self._cp is not None and self._cp is not cp:
            self._cancel_inflight()
        self._cp = cp

    def detach(self, cp: Any) -> None:
        """The connection of ``cp`` is gone (nothing happens if it was already replaced)."""
        if self._cp is cp:
            self._cp = None
            self._cancel_inflight()

    def _cancel_inflight(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()

    def submit(
        self,
        payload: Any,
        *,
        key: str | None = None,
        urgent: bool = False,
        retries: int | None = None,
    ) -> asyncio.Future[Outcome]:
        """Queue a call (an ``ocpp`` ``call.X`` dataclass); returns a future of its outcome."""
        loop = asyncio.get_running_loop()
        cmd = _Command(
            payload, key, self.retries if retries is None else retries, loop.create_future()
        )
        if key is not None:
            for old in [c for c in self._queue if c.key == key]:
                self._queue.remove(old)
                self._finish(old, CommandStatus.SUPERSEDED, detail="replaced by a newer call")
        if urgent:
            self._queue.appendleft(cmd)
        else:
            self._queue.append(cmd)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name=f"ampflow-ocpp-out-{self.station_id}")
        assert self._wake is not None
        self._wake.set()
        return cmd.future

    async def stop(self) -> None:
        """Stop the worker; queued calls end ``offline``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._queue:
            self._finish(self._queue.popleft(), CommandStatus.OFFLINE, detail="gateway stopped")

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            cmd = self._queue.popleft()
            status, response, detail, attempts = await self._execute(cmd)
            self._finish(cmd, status, response=response, detail=detail, attempts=attempts)

    def _finish(
        self,
        cmd: _Command,
        status: CommandStatus,
        *,
        response: Any = None,
        detail: str = "",
        attempts: int = 0,
    ) -> None:
        outcome = Outcome(
            cmd.action, status, response, detail, attempts, cmd.queued_at, time.monotonic()
        )
        self.history.append(outcome)
        if status not in (CommandStatus.ACCEPTED, CommandStatus.SUPERSEDED):
            logger.info("%s: %s %s %s", self.station_id, cmd.action, status.value, detail)
        if not cmd.future.done():
            cmd.future.set_result(outcome)

    async def _execute(self, cmd: _Command) -> tuple[CommandStatus, Any, str, int]:
        attempts = 0
        while True:
            cp = self._cp
            if cp is None:
                return CommandStatus.OFFLINE, None, "station not connected", attempts
            attempts += 1
            uid = str(uuid.uuid4())
            cp.expect(uid)
            task = asyncio.ensure_future(cp.call(cmd.payload, suppress=False, unique_id=uid))
            self._inflight = task
            try:
                await asyncio.wait({task})
            finally:
                self._inflight = None
                cp.expect(None)
                if not task.done():  # the worker itself was cancelled
                    task.cancel()
            if task.cancelled():
                return CommandStatus.OFFLINE, None, "connection closed during the call", attempts
            exc = task.exception()
            if exc is None:
                response = task.result()
                return _status_of(response), response, "", attempts
            if isinstance(exc, TimeoutError):
                if attempts <= cmd.retries and self._cp is cp:
                    continue
                return (
                    CommandStatus.TIMEOUT,
                    None,
                    f"no answer after {attempts} attempt(s)",
                    attempts,
                )
            return self._failure(cmd, exc, attempts)

    def _failure(
        self, cmd: _Command, exc: BaseException, attempts: int
    ) -> tuple[CommandStatus, Any, str, int]:
        if isinstance(exc, ConnectionClosedError):
            return CommandStatus.OFFLINE, None, "connection closed during the call", attempts
        if isinstance(exc, OCPPError):
            return CommandStatus.ERROR, None, f"{exc.code}: {exc.description}", attempts
        if isinstance(exc, UnknownCallErrorCodeError | SchemaError | TypeError | ValueError):
            logger.warning("%s: %s failed: %s", self.station_id, cmd.action, exc)
            return CommandStatus.ERROR, None, str(exc)[:200], attempts
        logger.error("%s: %s failed", self.station_id, cmd.action, exc_info=exc)
        return CommandStatus.ERROR, None, f"{type(exc).__name__}: {exc}"[:200], attempts
