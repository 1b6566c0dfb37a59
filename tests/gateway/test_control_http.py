"""Over real HTTP: a DR event, a capacity change or a new target reaches the limits at the very
next tick, woken by the change (the periodic tick is an hour here, so only a wake-up can do it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.gateway.conftest import DEPOT, Api


def _schedule(c: httpx.Client) -> dict[str, Any]:
    out: dict[str, Any] = c.get("/sites/depot/schedule").json()
    return out


def _next_tick(c: httpx.Client, since: datetime, timeout: float = 30.0) -> dict[str, Any]:
    """The schedule of the first tick that started after ``since`` (bounded wait).

    A tick already running when a change was committed may record after it without seeing it;
    the change wakes the loop, and the tick that starts next must apply it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = _schedule(c)
        if s["decided_at"] is not None and datetime.fromisoformat(s["decided_at"]) > since:
            return s
        time.sleep(0.02)
    raise AssertionError(f"no tick started after {since} within {timeout} s")


def _total(s: dict[str, Any]) -> float:
    return sum(x["limit_kw"] or 0.0 for x in s["connectors"])


def test_changes_reach_the_limits_at_the_next_tick(serve: Callable[..., Api]) -> None:
    api = serve(control=True, tick_s=3600.0, replan_s=3600.0)
    with api.client() as c:
        assert c.post("/sites", json=DEPOT).status_code == 201
        for cid in ("depot/cp-1/1", "depot/cp-2/1", "depot/cp-1/2"):
            assert c.post("/sessions", json={"connector_id": cid}).status_code == 201
        before = _next_tick(c, datetime.now(UTC))
        assert _total(before) == 29.4  # 22 shared by cp-1's two connectors + 7.4 on cp-2

        now = datetime.now(UTC)
        event = {
            "site_id": "depot",
            "start": now.isoformat(),
            "end": (now + timedelta(hours=1)).isoformat(),
            "cap_kw": 12,
        }
        assert c.post("/dr-events", json=event).status_code == 201
        after = _next_tick(c, datetime.now(UTC))
        assert after["dr_cap_kw"] == 12
        assert after["import_limit_kw"] == 12
        assert _total(after) <= 12 + 1e-6
        assert after["active_signals"]

        assert c.patch("/sites/depot", json={"import_kw": 8, "min_import_kw": 0}).status_code == 200
        capped = _next_tick(c, datetime.now(UTC))
        assert capped["import_limit_kw"] == 8
        assert _total(capped) <= 8 + 1e-6

        session = c.get("/sessions", params={"status": ["active"]}).json()[-1]
        assert session["connector_id"] == "depot/cp-1/1"
        r = c.patch(f"/sessions/{session['id']}", json={"energy_target_kwh": 0})
        assert r.status_code == 200
        done = _next_tick(c, datetime.now(UTC))
        limit = {x["connector_id"]: x["limit_kw"] for x in done["connectors"]}
        assert limit["depot/cp-1/1"] == 0.0  # it needs nothing more
        assert c.get(f"/sessions/{session['id']}").json()["limit_kw"] == 0.0
