"""Every route: 401 without a (valid) key, 403 for a role or site out of scope, else served.

The test walks ``app.routes``; a route missing from ``ACCESS`` fails it, so no new route can
escape the check.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from ampflow.gateway.db.base import Role
from tests.gateway.billing_kit import BILLING_ACCESS, BILLING_LISTINGS, seed_billing
from tests.gateway.conftest import DEPOT, Api, depot

ADMIN, SM, UT, AN = "admin", "site_manager", "utility", "analyst"
ALL = {ADMIN, SM, UT, AN}
OPS = {ADMIN, SM, AN}
MANAGE = {ADMIN, SM}
SIGNAL = {ADMIN, UT}

T0, T1 = "2030-03-02T08:00:00+01:00", "2030-03-02T10:00:00+01:00"
BODIES: dict[str, dict[str, Any]] = {
    "site": {**DEPOT, "id": "depot"},
    "site_patch": {"import_kw": 45},
    "node": {"id": "panel-z", "parent": "depot", "import_kw": 10},
    "node_patch": {"import_kw": 28},
    "charger": {"id": "cp-z", "node": "depot", "max_kw": 11},
    "charger_patch": {"priority": 2},
    "connector_patch": {"priority": 2},
    "limits": {"windows": [{"start": "17:00", "end": "21:00", "import_kw": 30}]},
    "station": {"id": "CP-Z", "site_id": "depot", "password": "0123456789abcdef"},
    "station_patch": {"quirks": ["w_only"]},
    "session": {"connector_id": "depot/cp-2/1"},
    "session_patch": {"energy_target_kwh": 12},
    "meter": {
        "values": [{"connector_id": "depot/cp-1/1", "timestamp": T0, "value": 1000, "unit": "Wh"}]
    },
    "event": {"site_id": "depot", "start": T0, "end": T1, "cap_kw": 20},
    "prices": {
        "site_id": "depot",
        "intervals": [{"start": T0, "end": T1, "price": 0.3}],
    },
    "key": {"role": "analyst"},
}

# (method, path) -> (roles allowed on the depot, body, site-scoped?)
ACCESS: dict[tuple[str, str], tuple[set[str], str | None, bool]] = {
    ("GET", "/sites"): (ALL, None, True),
    ("POST", "/sites"): (MANAGE, "site", True),
    ("GET", "/sites/{site_id}"): (ALL, None, True),
    ("PATCH", "/sites/{site_id}"): (MANAGE, "site_patch", True),
    ("GET", "/sites/{site_id}/state"): (ALL, None, True),
    ("POST", "/sites/{site_id}/nodes"): (MANAGE, "node", True),
    ("PATCH", "/sites/{site_id}/nodes/{node_id}"): (MANAGE, "node_patch", True),
    ("POST", "/sites/{site_id}/chargers"): (MANAGE, "charger", True),
    ("PATCH", "/sites/{site_id}/chargers/{charger_id}"): (MANAGE, "charger_patch", True),
    ("PATCH", "/sites/{site_id}/chargers/{charger_id}/connectors/{number}"): (
        MANAGE,
        "connector_patch",
        True,
    ),
    ("GET", "/sites/{site_id}/limit-schedule"): (ALL, None, True),
    ("PUT", "/sites/{site_id}/limit-schedule"): (MANAGE, "limits", True),
    ("GET", "/sites/{site_id}/schedule"): (ALL, None, True),
    ("GET", "/sites/{site_id}/chargers/{charger_id}/connectors/{number}/schedule"): (
        ALL,
        None,
        True,
    ),
    ("POST", "/stations"): (MANAGE, "station", True),
    ("GET", "/stations"): (OPS, None, True),
    ("GET", "/stations/{station_id}"): (OPS, None, True),
    ("PATCH", "/stations/{station_id}"): (MANAGE, "station_patch", True),
    ("GET", "/sessions"): (OPS, None, True),
    ("POST", "/sessions"): (MANAGE, "session", True),
    ("GET", "/sessions/{session_id}"): (OPS, None, True),
    ("PATCH", "/sessions/{session_id}"): (MANAGE, "session_patch", True),
    ("POST", "/sessions/{session_id}/stop"): (MANAGE, None, True),
    ("GET", "/sessions/{session_id}/meter-values"): (OPS, None, True),
    ("POST", "/meter-values"): (MANAGE, "meter", True),
    ("POST", "/dr-events"): (SIGNAL, "event", True),
    ("GET", "/dr-events"): (ALL, None, True),
    ("GET", "/dr-events/{event_id}"): (ALL, None, True),
    ("POST", "/dr-events/{event_id}/cancel"): (SIGNAL, None, True),
    ("POST", "/prices"): (SIGNAL, "prices", True),
    ("GET", "/prices"): (ALL, None, True),
    ("GET", "/prices/{series_id}"): (ALL, None, True),
    ("POST", "/api-keys"): ({ADMIN}, "key", False),
    ("GET", "/api-keys"): ({ADMIN}, None, False),
    ("DELETE", "/api-keys/{key_id}"): ({ADMIN}, None, False),
}
ACCESS.update(BILLING_ACCESS)
PUBLIC = {("GET", "/health")}
LISTINGS = {"/sites", "/stations", "/sessions", "/dr-events", "/prices"} | BILLING_LISTINGS


def _routes(api: Api) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, including routers included with a prefix."""
    out = []
    for ctx in iter_route_contexts(api.app.routes):
        if isinstance(ctx.original_route, APIRoute):
            assert ctx.path is not None
            assert ctx.methods is not None
            out.extend((m, ctx.path) for m in sorted(ctx.methods))
    assert out, "no routes found"
    return out


def _seed(api: Api) -> dict[str, str]:
    with api.client() as c:
        assert c.post("/sites", json=DEPOT).status_code == 201
        assert c.post("/sites", json=depot("other")).status_code == 201
        assert c.post("/stations", json={"id": "CP1", "site_id": "depot"}).status_code == 201
        ses = c.post("/sessions", json={"connector_id": "depot/cp-1/1"}).json()
        body = {**BODIES["event"], "id": "ev-1"}
        assert c.post("/dr-events", json=body).status_code == 201
        assert c.post("/prices", json={**BODIES["prices"], "id": "pr-1"}).status_code == 201
        key = c.post("/api-keys", json={"role": "analyst"}).json()
    billing, bodies = seed_billing(api)
    BODIES.update(bodies)
    return {
        **billing,
        "site_id": "depot",
        "node_id": "panel-a",
        "charger_id": "cp-1",
        "number": "1",
        "station_id": "CP1",
        "session_id": ses["id"],
        "event_id": "ev-1",
        "series_id": "pr-1",
        "key_id": key["id"],
    }


def _call(
    client: httpx.Client, method: str, path: str, params: dict[str, str], body: str | None
) -> httpx.Response:
    url = re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], path)
    query = {"site_id": "depot"} if path in LISTINGS else None
    json = BODIES[body] if body is not None else None
    return client.request(method, url, json=json, params=query)


def test_every_route_is_in_the_access_table(api: Api) -> None:
    routes = set(_routes(api))
    assert routes - PUBLIC == set(ACCESS), "a route is missing from ACCESS (or ACCESS is stale)"


def test_public_paths_need_no_key(api: Api) -> None:
    with api.client(anonymous=True) as c:
        assert c.get("/health").json()["status"] == "ok"
        assert c.get("/openapi.json").json()["info"]["title"] == "Ampflow"
        assert c.get("/docs").status_code == 200


def test_every_route_answers_401_without_a_valid_key(api: Api) -> None:
    params = _seed(api)
    revoked = api.key(Role.ADMIN)
    with api.client() as c:
        key_id = revoked.split("_")[1]
        assert c.delete(f"/api-keys/{key_id}").status_code == 200
    clients = [
        api.client(anonymous=True),
        api.client("amp_000000000000_not-a-real-secret"),
        api.client("garbage"),
        api.client(revoked),
    ]
    for method, path in _routes(api):
        if (method, path) in PUBLIC:
            continue
        for client in clients:
            r = _call(client, method, path, params, ACCESS[(method, path)][1])
            assert r.status_code == 401, (method, path, r.text)
            assert "detail" in r.json()
        # Even a body that is not JSON at all gets 401 first.
        r = clients[0].request(
            method,
            re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], path),
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 401, (method, path)
    for client in clients:
        client.close()


@pytest.mark.parametrize("role", [ADMIN, SM, UT, AN])
def test_every_route_answers_403_out_of_role_or_scope(api: Api, role: str) -> None:
    params = _seed(api)
    in_scope = api.client(api.key(role, ["depot"] if role in (SM, UT) else []))
    out_of_scope = api.client(api.key(role, ["other"]))
    try:
        for method, path in _routes(api):
            if (method, path) in PUBLIC:
                continue
            allowed, body, scoped = ACCESS[(method, path)]
            r = _call(in_scope, method, path, params, body)
            if role in allowed:
                assert r.status_code not in (401, 403), (role, method, path, r.text)
            else:
                assert r.status_code == 403, (role, method, path, r.text)
            if role != ADMIN and scoped:
                r = _call(out_of_scope, method, path, params, body)
                assert r.status_code == 403, ("out of scope", role, method, path, r.text)
    finally:
        in_scope.close()
        out_of_scope.close()


def test_listings_only_show_the_keys_sites(api: Api) -> None:
    _seed(api)
    with api.client(api.key(Role.SITE_MANAGER, ["other"])) as c:
        assert [s["id"] for s in c.get("/sites").json()] == ["other"]
        assert c.get("/sessions").json() == []
        assert c.get("/dr-events").json() == []
    with api.client(api.key(Role.ANALYST)) as c:  # an analyst without sites sees all
        assert [s["id"] for s in c.get("/sites").json()] == ["depot", "other"]
        assert len(c.get("/sessions").json()) == 2  # the open one and the billed one
