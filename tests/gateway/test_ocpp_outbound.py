"""The per-station outbound queue against a scripted ChargePoint: order, urgent calls, coalescing,
timeouts with a bounded retry, CallErrors, rejections, and connections that go away."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocpp.exceptions import NotSupportedError

from ampflow.gateway.ocpp.outbound import CommandStatus, OutboundQueue


@dataclass
class Cmd:
    """A stand-in for an ``ocpp`` call dataclass."""

    name: str


@dataclass
class Answer:
    status: str = "Accepted"


class ScriptedCp:
    """Answers each call as ``script(name, attempt)`` says: an Answer, an exception, or hang."""

    def __init__(self, script: Callable[[str, int], Any]) -> None:
        self.script = script
        self.sent: list[str] = []
        self.expected: list[str | None] = []
        self.release = asyncio.Event()

    def expect(self, uid: str | None) -> None:
        self.expected.append(uid)

    async def call(self, payload: Cmd, *, suppress: bool, unique_id: str) -> Any:
        assert suppress is False
        self.sent.append(payload.name)
        outcome = self.script(payload.name, self.sent.count(payload.name))
        if outcome == "hang":
            await self.release.wait()
            return Answer()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def test_order_urgent_and_coalescing() -> None:
    async def scenario() -> None:
        cp = ScriptedCp(lambda name, n: Answer("Rejected" if name == "no" else "Accepted"))
        q = OutboundQueue("S", retries=1)
        q.attach(cp)
        # Everything is queued before the worker first runs.
        first = q.submit(Cmd("a"))
        old = q.submit(Cmd("limit-1"), key="tx:1")
        second = q.submit(Cmd("b"))
        new = q.submit(Cmd("limit-2"), key="tx:1")  # replaces limit-1, queued behind b
        urgent = q.submit(Cmd("lower"), urgent=True)
        rejected = q.submit(Cmd("no"))
        assert old.done()
        assert old.result().status is CommandStatus.SUPERSEDED
        outcomes = await asyncio.gather(first, second, new, urgent, rejected)
        assert [o.status for o in outcomes[:4]] == [CommandStatus.ACCEPTED] * 4
        assert outcomes[4].status is CommandStatus.REJECTED
        assert cp.sent == ["lower", "a", "b", "limit-2", "no"]
        assert len(q.history) == 6  # the superseded one is recorded too
        await q.stop()

    asyncio.run(scenario())


def test_offline_fails_fast() -> None:
    async def scenario() -> None:
        q = OutboundQueue("S", retries=2)
        out = await q.submit(Cmd("a"))
        assert out.status is CommandStatus.OFFLINE
        assert out.attempts == 0
        await q.stop()

    asyncio.run(scenario())


def test_timeouts_are_retried_a_bounded_number_of_times() -> None:
    async def scenario() -> None:
        def script(name: str, n: int) -> Any:
            if name == "flaky" and n == 1:
                return TimeoutError()
            if name == "dead":
                return TimeoutError()
            return Answer()

        cp = ScriptedCp(script)
        q = OutboundQueue("S", retries=2)
        q.attach(cp)
        flaky = await q.submit(Cmd("flaky"))
        assert (flaky.status, flaky.attempts) == (CommandStatus.ACCEPTED, 2)
        dead = await q.submit(Cmd("dead"))
        assert (dead.status, dead.attempts) == (CommandStatus.TIMEOUT, 3)
        once = await q.submit(Cmd("dead"), retries=0)
        assert (once.status, once.attempts) == (CommandStatus.TIMEOUT, 1)
        # Every attempt had its own id, and the id was cleared after it.
        ids = [x for x in cp.expected if x is not None]
        assert len(set(ids)) == len(ids) == 2 + 3 + 1
        assert cp.expected[-1] is None
        await q.stop()

    asyncio.run(scenario())


def test_call_errors_are_not_retried() -> None:
    async def scenario() -> None:
        cp = ScriptedCp(lambda name, n: NotSupportedError(description="no such thing"))
        q = OutboundQueue("S", retries=3)
        q.attach(cp)
        out = await q.submit(Cmd("x"))
        assert out.status is CommandStatus.ERROR
        assert out.attempts == 1
        assert out.detail.startswith("NotSupported")
        await q.stop()

    asyncio.run(scenario())


def test_a_closed_or_replaced_connection_ends_the_call_in_flight() -> None:
    async def scenario() -> None:
        cp = ScriptedCp(lambda name, n: "hang")
        q = OutboundQueue("S", retries=3)
        q.attach(cp)
        hung = q.submit(Cmd("a"))
        await asyncio.sleep(0.01)
        q.detach(cp)  # the socket closed: no waiting for the 30 s timeout
        out = await asyncio.wait_for(hung, 5)
        assert out.status is CommandStatus.OFFLINE
        fresh = ScriptedCp(lambda name, n: Answer())
        q.attach(cp)
        hung = q.submit(Cmd("b"))
        await asyncio.sleep(0.01)
        q.attach(fresh)  # a new connection replaces the old one
        assert (await asyncio.wait_for(hung, 5)).status is CommandStatus.OFFLINE
        assert (await q.submit(Cmd("c"))).ok
        assert fresh.sent == ["c"]
        queued = q.submit(Cmd("d"))
        await q.stop()
        assert (await queued).status in (CommandStatus.ACCEPTED, CommandStatus.OFFLINE)

    asyncio.run(scenario())
