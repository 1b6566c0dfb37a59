"""A server killed with SIGKILL in the middle of a stream of writes loses nothing it acknowledged,
and leaves no write half-done; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import DEPOT, ServerProcess, run_cli

BATCH = 50
ACKS_BEFORE_KILL = 40


def _event(i: int, t0: datetime) -> dict[str, Any]:
    start = t0 + timedelta(hours=i)
    return {
        "id": f"kill-{i}",
        "site_id": "depot",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=30)).isoformat(),
        "cap_kw": 10 + i % 20,
    }


def _batch(i: int, t0: datetime) -> dict[str, Any]:
    base = t0 + timedelta(seconds=i * BATCH)
    return {
        "values": [
            {
                "connector_id": "depot/cp-1/1",
                "timestamp": (base + timedelta(seconds=j)).isoformat(),
                "value": 1000.0 * i + j,
            }
            for j in range(BATCH)
        ]
    }


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill(server_env: dict[str, str]) -> None:
    srv = ServerProcess(server_env)
    code, out, _ = run_cli(server_env, "keys", "create", "--role", "admin")
    assert code == 0
    headers = {"X-API-Key": out.strip()}
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    with httpx.Client(base_url=srv.url, headers=headers, timeout=30) as c:
        assert c.post("/sites", json=DEPOT).status_code == 201
        session = c.post("/sessions", json={"connector_id": "depot/cp-1/1"}).json()["id"]

    acked: list[int] = []
    attempted: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        with httpx.Client(base_url=srv.url, headers=headers, timeout=30) as c:
            i = 0
            while not stop.is_set():
                attempted.append(i)
                try:
                    if i % 2 == 0:
                        r = c.post("/dr-events", json=_event(i, t0))
                    else:
                        r = c.post("/meter-values", json=_batch(i, t0))
                except httpx.TransportError:
                    return  # the server is gone; this write was never acknowledged
                if r.status_code == 201:
                    acked.append(i)
                i += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while len(acked) < ACKS_BEFORE_KILL and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    assert len(acked) >= ACKS_BEFORE_KILL, "the writer did not get far enough"
    srv.kill()  # SIGKILL, in the middle of the stream
    stop.set()
    thread.join(30)
    assert not thread.is_alive()

    again = ServerProcess(server_env)
    try:
        with httpx.Client(base_url=again.url, headers=headers, timeout=30) as c:
            events = {
                e["id"]: e
                for e in c.get("/dr-events", params={"site_id": "depot", "limit": 1000}).json()
            }
            series = c.get(f"/sessions/{session}/meter-values", params={"limit": 10000}).json()
        stamps = {p["timestamp"] for p in series["points"]}
        for i in acked:
            if i % 2 == 0:
                ev = events[f"kill-{i}"]  # acknowledged, so it must be there
                assert ev["cap_kw"] == 10 + i % 20
                assert len(ev["intervals"]) == 1
            else:
                want = {v["timestamp"].replace("+00:00", "Z") for v in _batch(i, t0)["values"]}
                assert want <= stamps, f"batch {i} was acknowledged but is incomplete"
        # Whatever was in flight is either all there or not at all.
        for i in set(attempted) - set(acked):
            if i % 2 == 1:
                want = {v["timestamp"].replace("+00:00", "Z") for v in _batch(i, t0)["values"]}
                assert len(want & stamps) in (0, BATCH)
        n_batches = len([i for i in attempted if i % 2 == 1 and i not in acked])
        assert len(stamps) in {
            BATCH * (len([i for i in acked if i % 2 == 1]) + k) for k in range(n_batches + 1)
        }
    finally:
        again.stop()
