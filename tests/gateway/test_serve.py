"""``ampflow serve`` as a real process: signals, the demo, the key and database commands."""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from ampflow.gateway.db.migrate import head_revision
from tests.gateway.conftest import DEPOT, ServerProcess, run_cli


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_signals(server: ServerProcess, sig: int) -> None:
    assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    assert server.stop(sig) == 0
    out = "".join(server.lines)
    assert f"stopped cleanly on {signal.Signals(sig).name}" in out
    assert any("control loop stopped" in line for line in server.stderr)
    assert any("Application shutdown complete" in line for line in server.stderr)


def test_key_and_database_commands(server_env: dict[str, str], server: ServerProcess) -> None:
    code, out, _ = run_cli(server_env, "db", "upgrade")
    assert code == 0
    assert f"revision {head_revision()}" in out
    code, out, _ = run_cli(server_env, "keys", "create", "--role", "admin")
    assert code == 0
    admin = out.strip()
    code, out, _ = run_cli(
        server_env, "keys", "create", "--role", "site_manager", "--site", "depot"
    )
    manager = out.strip()
    assert re.fullmatch(r"amp_[0-9a-f]{12}_\S+", manager)
    code, _, err = run_cli(server_env, "keys", "create", "--role", "utility")
    assert code == 2
    assert "at least one site" in err
    code, _, err = run_cli(server_env, "keys", "create", "--role", "wizard")
    assert code == 2
    assert "expected one of admin" in err
    with httpx.Client(base_url=server.url, headers={"X-API-Key": manager}, timeout=10) as c:
        assert c.post("/sites", json=DEPOT).status_code == 201
        assert c.post("/sites", json={**DEPOT, "id": "elsewhere"}).status_code == 403
    key_id = manager.split("_")[1]
    code, out, _ = run_cli(server_env, "keys", "list", "--json")
    assert {k["id"]: k for k in json.loads(out)}[key_id]["sites"] == ["depot"]
    code, out, _ = run_cli(server_env, "keys", "revoke", key_id)
    assert (code, out.strip()) == (0, f"revoked {key_id}")
    code, out, _ = run_cli(server_env, "keys", "list", "--json")
    assert {k["id"]: k for k in json.loads(out)}[key_id]["revoked"] is True
    # The server caches a verified key for at most 10 s; a key it has not seen is refused at once.
    with httpx.Client(base_url=server.url, headers={"X-API-Key": admin}, timeout=10) as c:
        listed = {k["id"]: k for k in c.get("/api-keys").json()}
        assert listed[key_id]["revoked_at"] is not None
    code, _, err = run_cli(server_env, "keys", "revoke", "000000000000")
    assert code == 2
    assert "no API key" in err


@pytest.mark.slow
def test_demo_seeds_a_site_keys_prices_and_reacts_to_dr(server_env: dict[str, str]) -> None:
    srv = ServerProcess(server_env, "--demo")
    try:
        keys = dict(
            re.findall(
                r"^\s+(admin|site_manager|utility|analyst)\s+(amp_\S+)$", "".join(srv.lines), re.M
            )
        )
        assert set(keys) == {"admin", "site_manager", "utility", "analyst"}
        with (
            httpx.Client(base_url=srv.url, headers={"X-API-Key": keys["analyst"]}) as analyst,
            httpx.Client(base_url=srv.url, headers={"X-API-Key": keys["utility"]}) as utility,
        ):
            site = analyst.get("/sites/caltech").json()
            assert len(site["chargers"]) == 54
            assert site["timezone"] == "America/Los_Angeles"
            prices = analyst.get("/prices", params={"site_id": "caltech"}).json()
            assert prices[0]["currency"] == "USD"
            assert {i["value"] for i in prices[0]["intervals"]} == {0.12, 0.16, 0.42}
            assert len(analyst.get("/sessions", params={"status": ["active"]}).json()) == 16
            plan = _wait(lambda: analyst.get("/sites/caltech/schedule").json()["plan"])
            assert plan["status"] == "optimal"  # type: ignore[index]
            now = datetime.now(UTC)
            event = {
                "site_id": "caltech",
                "start": now.isoformat(),
                "end": (now + timedelta(hours=1)).isoformat(),
                "cap_kw": 10,
            }
            r = utility.post("/dr-events", json=event)
            assert r.status_code == 201, r.text

            def capped() -> dict[str, object] | None:
                state: dict[str, object] = analyst.get("/sites/caltech/state").json()
                return state if state["dr_cap_kw"] == 10 else None

            state = _wait(capped)
            assert isinstance(state, dict)
            assert sum(c["limit_kw"] or 0 for c in state["connectors"]) <= 10 + 1e-6
        assert srv.stop() == 0
    finally:
        if srv.proc.poll() is None:
            srv.kill()
    # A second demo start keeps the site and issues new keys; the old ones are revoked.
    again = ServerProcess(server_env, "--demo")
    try:
        assert "(kept)" in "".join(again.lines)
        r = httpx.get(f"{again.url}/sites", headers={"X-API-Key": keys["admin"]}, timeout=10)
        assert r.status_code == 401
    finally:
        again.stop()


def _wait(probe: object, timeout: float = 60.0) -> object:
    """Poll ``probe`` until it returns something truthy (bounded)."""
    assert callable(probe)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")
