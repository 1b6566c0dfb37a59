"""Sites over HTTP: the tree, limits in kW and A, time-of-day limits, validation, idempotency."""

from __future__ import annotations

from typing import Any

from tests.gateway.conftest import DEPOT, Api, depot


def _errors(body: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    return {tuple(e["loc"]): e["msg"] for e in body["detail"]}


def test_create_and_read_the_tree(api: Api) -> None:
    with api.client() as c:
        r = c.post("/sites", json=DEPOT)
        assert r.status_code == 201, r.text
        site = c.get("/sites/depot").json()
    assert site == r.json()
    assert site["phase_a"] == [80.0, 80.0, 80.0]
    assert [n["id"] for n in site["nodes"]] == ["panel-a"]
    assert site["nodes"][0]["parent"] == "depot"
    cp1 = site["chargers"][0]
    assert (cp1["id"], cp1["node"], cp1["max_kw"]) == ("cp-1", "panel-a", 22.0)
    assert [c["id"] for c in cp1["connectors"]] == ["depot/cp-1/1", "depot/cp-1/2"]
    assert site["chargers"][1]["phase"] == "L2"
    assert site["created_at"].endswith("Z")


def test_limits_in_kw_and_amps_and_the_site_minimum(api: Api) -> None:
    with api.client() as c:
        c.post("/sites", json=DEPOT)
        r = c.patch("/sites/depot", json={"import_kw": 40, "phase_a": [63, 63, 63]})
        assert r.status_code == 200, r.text
        assert (r.json()["import_kw"], r.json()["phase_a"], r.json()["revision"]) == (
            40.0,
            [63.0, 63.0, 63.0],
            2,
        )
        r = c.patch("/sites/depot/nodes/panel-a", json={"import_kw": None, "phase_a": [32, 32, 32]})
        assert r.status_code == 200, r.text
        assert r.json()["nodes"][0] == {
            "id": "panel-a",
            "parent": "depot",
            "import_kw": None,
            "export_kw": None,
            "phase_a": [32.0, 32.0, 32.0],
        }
        r = c.patch("/sites/depot", json={"import_kw": 4})  # below min_import_kw = 5
        assert r.status_code == 409
        assert "below the site's minimum" in _errors(r.json())[("body", "import_kw")]
        r = c.patch("/sites/depot", json={"import_kw": None})
        assert r.status_code == 422  # a site always has an import limit
        r = c.patch("/sites/depot", json={"phase_a": None})  # null removes the A limit
        assert r.json()["phase_a"] is None
        assert c.get("/sites/depot").json()["import_kw"] == 40.0


def test_bad_trees_get_field_level_422(api: Api) -> None:
    bad = depot()
    bad["nodes"] = [
        {"id": "a", "parent": "b"},
        {"id": "b", "parent": "a"},
        {"id": "c", "parent": "nowhere"},
    ]
    bad["chargers"] = [
        {"id": "a", "node": "depot", "max_kw": 11},
        {"id": "x", "node": "depot", "max_kw": 7, "phases": 1},
    ]
    with api.client() as c:
        r = c.post("/sites", json=bad)
        assert r.status_code == 422
        errors = _errors(r.json())
        assert "cycle" in errors[("body", "nodes", 0, "parent")]
        assert "unknown parent 'nowhere'" in errors[("body", "nodes", 2, "parent")]
        assert "duplicate id 'a'" in errors[("body", "chargers", 0, "id")]
        assert "needs phase" in errors[("body", "chargers", 1, "phase")]
        r = c.post(
            "/sites",
            json={**DEPOT, "import_kw": -1, "timezone": "Mars/Base", "extra": 1, "id": "a/b"},
        )
        errors = _errors(r.json())
        assert set(errors) >= {
            ("body", "import_kw"),
            ("body", "timezone"),
            ("body", "extra"),
            ("body", "id"),
        }
        assert "IANA" in errors[("body", "timezone")]
        # Nothing was written.
        assert c.get("/sites").json() == []


def test_duplicates_conflict_and_idempotency_keys_replay(api: Api) -> None:
    with api.client() as c:
        r1 = c.post("/sites", json=DEPOT, headers={"Idempotency-Key": "k1"})
        r2 = c.post("/sites", json=DEPOT, headers={"Idempotency-Key": "k1"})
        assert (r1.status_code, r2.status_code) == (201, 201)
        assert r2.json() == r1.json()
        assert r2.headers["Idempotent-Replayed"] == "true"
        r3 = c.post("/sites", json=DEPOT)
        assert r3.status_code == 409
        assert "already exists" in _errors(r3.json())[("body", "id")]
        r4 = c.post("/sites", json=depot("other"), headers={"Idempotency-Key": "k1"})
        assert r4.status_code == 422
        assert ("header", "Idempotency-Key") in _errors(r4.json())
        assert [s["id"] for s in c.get("/sites").json()] == ["depot"]
    # Keys are per API key: another caller's k1 is a different record.
    with api.client(api.key("admin")) as c:
        assert (
            c.post("/sites", json=depot("two"), headers={"Idempotency-Key": "k1"}).status_code
            == 201
        )


def test_grow_the_tree_and_set_priorities(api: Api) -> None:
    with api.client() as c:
        c.post("/sites", json=DEPOT)
        r = c.post("/sites/depot/nodes", json={"id": "panel-b", "parent": "depot", "import_kw": 20})
        assert r.status_code == 201, r.text
        r = c.post(
            "/sites/depot/chargers",
            json={"id": "dc-1", "node": "panel-b", "max_kw": 50, "kind": "DC", "priority": 2},
        )
        assert r.status_code == 201, r.text
        dc = next(ch for ch in r.json()["chargers"] if ch["id"] == "dc-1")
        assert (dc["priority"], dc["phases"]) == (2.0, 3)
        r = c.patch("/sites/depot/chargers/cp-1", json={"connectors": 3, "priority": 3})
        assert [x["number"] for x in r.json()["chargers"][0]["connectors"]] == [1, 2, 3]
        r = c.patch("/sites/depot/chargers/cp-1/connectors/3", json={"priority": 0.5})
        assert r.json() == {
            "id": "depot/cp-1/3",
            "number": 3,
            "priority": 0.5,
            "status": None,
            "status_at": None,
        }
        assert (
            c.post("/sites/depot/nodes", json={"id": "cp-1", "parent": "depot"}).status_code == 409
        )
        r = c.post("/sites/depot/chargers", json={"id": "z", "node": "nope", "max_kw": 7})
        assert r.status_code == 409
        assert ("body", "node") in _errors(r.json())
        assert c.patch("/sites/depot/nodes/nope", json={"import_kw": 1}).status_code == 404
        assert c.get("/sites/nope").status_code == 404
        r = c.patch("/sites/depot/chargers/cp-2", json={"min_a": 40})  # above max_kw at 230 V
        assert r.status_code == 409


def test_time_of_day_limits_round_trip_and_conflict(api: Api) -> None:
    schedule = {
        "windows": [
            {
                "weekdays": ["mon", "tue", "wed", "thu", "fri"],
                "start": "17:00",
                "end": "21:00",
                "import_kw": 30,
            },
            {"start": "22:00", "end": "06:00", "node_id": "panel-a", "import_a": 16},
            {"weekdays": ["sat"], "start": "08:00", "end": "00:00", "export_kw": 0},
        ]
    }
    with api.client() as c:
        c.post("/sites", json=DEPOT)
        r = c.put("/sites/depot/limit-schedule", json=schedule)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["timezone"] == "Europe/Amsterdam"
        assert out["windows"][0]["weekdays"] == ["mon", "tue", "wed", "thu", "fri"]
        assert (out["windows"][1]["start"], out["windows"][1]["end"]) == ("22:00", "06:00")
        assert out["windows"][2]["end"] == "24:00"
        assert c.get("/sites/depot/limit-schedule").json() == out
        low = {"windows": [{"start": "17:00", "end": "21:00", "import_kw": 1}]}
        r = c.put("/sites/depot/limit-schedule", json=low)
        assert r.status_code == 409
        assert ("body", "windows", 0, "import_kw") in _errors(r.json())
        bad = {
            "windows": [
                {"start": "25:00", "end": "21:00", "import_kw": 9},
                {"start": "01:00", "end": "02:00"},
            ]
        }
        r = c.put("/sites/depot/limit-schedule", json=bad)
        assert r.status_code == 422
        errors = _errors(r.json())
        assert ("body", "windows", 0, "start") in errors
        assert "at least one of import_kw" in errors[("body", "windows", 1)]
        unknown = {"windows": [{"start": "01:00", "end": "02:00", "node_id": "x", "import_kw": 9}]}
        r = c.put("/sites/depot/limit-schedule", json=unknown)
        assert r.status_code == 409
        assert "no node 'x'" in _errors(r.json())[("body", "windows", 0, "node_id")]
        assert c.get("/sites/depot/limit-schedule").json() == out  # unchanged


def test_a_single_valued_query_parameter_given_twice_is_refused(api: Api) -> None:
    with api.client() as c:
        c.post("/sites", json=DEPOT)
        r = c.get("/sites", params=[("site_id", "depot"), ("site_id", "other")])
        assert r.status_code == 422
        assert "expected one value" in _errors(r.json())[("query", "site_id")]
        # A list-valued parameter may repeat.
        r = c.get("/sessions", params=[("status", "active"), ("status", "completed")])
        assert r.status_code == 200


def test_text_with_nul_characters_is_refused_by_field(api: Api) -> None:
    with api.client() as c:
        r = c.post("/sites", json={**DEPOT, "name": "De\x00pot"})
        assert r.status_code == 422
        assert "NUL" in _errors(r.json())[("body", "name")]
        assert c.get("/sites").json() == []
