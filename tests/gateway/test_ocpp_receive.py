"""The receive loop over real WebSockets on 127.0.0.1: a station's CALL whose handling waits (here
for a held store write) does not hold up the answers to Ampflow's own calls to that station, the
station's CALLs are still answered one at a time in the order sent, and a connection that closes
mid-handler leaves no task behind."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from ocpp.messages import MessageType

from ampflow.gateway.ocpp import protocol
from ampflow.gateway.ocpp.events import StatusChange
from ampflow.gateway.ocpp.station import StationLink
from tests.gateway.ocpp_testkit import (
    Core,
    Server,
    connect,
    iso,
    ocpp_server_fixture,  # noqa: F401 - the fixture
    on_server,
    setup_depot,
    until,
)


class HeldStatus:
    """Replaces ``StationLink.status``: each call waits for ``release`` before it is stored."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.stored: list[str] = []
        original = StationLink.status

        async def status(link: StationLink, change: StatusChange) -> None:
            self.entered.set()
            await asyncio.to_thread(self.release.wait, 60.0)
            await original(link, change)
            self.stored.append(change.status)

        monkeypatch.setattr(StationLink, "status", status)


async def _send_call(cp: Any, uid: str, action: str, payload: dict[str, Any]) -> None:
    """A CALL sent raw, without waiting for its answer (which lands in ``cp._response_queue``)."""
    await cp._connection.send(json.dumps([MessageType.Call, uid, action, payload]))


async def _booted(cp: Any, core: Core) -> None:
    assert (await cp.boot()).status == "Accepted"
    await until(lambda: core.limit_kw(1) == 0.0, what="the boot sequence (TxDefault 0 A)")


async def _handler_tasks(srv: Server, station_id: str) -> list[str]:
    """The CALL handler tasks of ``station_id`` on the server's loop."""
    name = f"ampflow-ocpp-calls-{station_id}"

    async def names() -> list[str]:
        return [t.get_name() for t in asyncio.all_tasks() if t.get_name() == name]

    return list(await on_server(srv, names()))


async def _no_handler_task(srv: Server, station_id: str) -> bool:
    return await _handler_tasks(srv, station_id) == []


STATUS = {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}


def test_answers_to_our_calls_pass_a_waiting_handler_and_calls_stay_in_order(
    ocpp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No retry, and a timeout far above a round trip on loopback: an answer stuck behind the
    # held handler ends the call TIMEOUT instead of ACCEPTED.
    srv = ocpp_server(response_timeout_s=10.0, retries=0)
    setup_depot(srv, ("CP1", "cp-1", None))
    core = Core()

    async def scenario() -> None:
        async with connect(srv, "CP1", core) as cp:
            await _booted(cp, core)
            held = HeldStatus(monkeypatch)
            try:
                await _send_call(
                    cp, "status-1", "StatusNotification", {**STATUS, "timestamp": iso()}
                )
                await until(held.entered.is_set, what="the StatusNotification handler")

                # Ampflow's call to the station completes while that handler still waits.
                outcome, limit = await on_server(
                    srv, srv.gateway.get_composite_schedule("CP1", 1), timeout=30.0
                )
                assert outcome.ok, outcome
                assert limit is not None
                assert not held.release.is_set()
                assert held.stored == []

                # A second CALL is not answered before the first: after another round trip of
                # ours (the server has read the Heartbeat by then) nothing has been answered.
                await _send_call(cp, "heartbeat-2", "Heartbeat", {})
                outcome = await on_server(srv, srv.gateway.get_configuration("CP1"), timeout=30.0)
                assert outcome.ok, outcome
                assert cp._response_queue.empty()

                held.release.set()
                answers = [await asyncio.wait_for(cp._response_queue.get(), 10.0) for _ in range(2)]
            finally:
                held.release.set()
            assert [a.unique_id for a in answers] == ["status-1", "heartbeat-2"]
            assert [a.message_type_id for a in answers] == [MessageType.CallResult] * 2
            assert "currentTime" in answers[1].payload
            assert held.stored == ["Preparing"]
            # The connection still works as before.
            assert await cp.authorize("TAG-OK") == "Accepted"

    asyncio.run(scenario())


@pytest.mark.parametrize("finishes", [True, False], ids=["finishes", "cancelled"])
def test_a_connection_closing_mid_handler_leaves_no_task(
    ocpp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch, finishes: bool
) -> None:
    """The CALL being handled when the socket closes may finish (its write is kept) within
    ``_FINISH_S``, else it is cancelled; the CALLs queued behind it are dropped."""
    srv = ocpp_server()
    setup_depot(srv, ("CP1", "cp-1", None))
    core = Core()
    if not finishes:
        monkeypatch.setattr(protocol, "_FINISH_S", 0.2)

    async def scenario() -> None:
        held: HeldStatus | None = None
        try:
            async with connect(srv, "CP1", core) as cp:
                await _booted(cp, core)
                assert await _handler_tasks(srv, "CP1") == ["ampflow-ocpp-calls-CP1"]
                held = HeldStatus(monkeypatch)
                status = {**STATUS, "timestamp": iso()}
                await _send_call(cp, "status-1", "StatusNotification", status)
                await _send_call(
                    cp, "status-2", "StatusNotification", {**status, "status": "Faulted"}
                )
                await until(held.entered.is_set, what="the StatusNotification handler")
            # The station has gone; the server has seen it while the handler still waits.
            link = srv.gateway.links["CP1"]
            cp_of_server = link.cp
            assert cp_of_server is not None
            await until(lambda: cp_of_server._closing, what="the server saw the close")
            if finishes:
                held.release.set()
            await until(lambda: not link.connected, what="the link detached")
            await until(lambda: _no_handler_task(srv, "CP1"), what="no task of the connection")
            assert await _handler_tasks(srv, "CP1") == []
            assert held.stored == (["Preparing"] if finishes else [])
        finally:
            if held is not None:
                held.release.set()

    asyncio.run(scenario())
