"""DR events and prices over HTTP: caps, levels, conflicts, cancellation, RFC 3339 times."""

from __future__ import annotations

from tests.gateway.conftest import Api, error_messages


def test_post_list_and_cancel_dr_events(site: Api) -> None:
    utility = site.client(site.key("utility", ["depot"]))
    with utility as c:
        r = c.post(
            "/dr-events",
            json={
                "id": "evt-1",
                "site_id": "depot",
                "start": "2030-03-02T17:00:00+01:00",
                "end": "2030-03-02T19:00:00+01:00",
                "cap_kw": 20,
                "program": "peak-shave",
            },
        )
        assert r.status_code == 201, r.text
        ev = r.json()
        assert (ev["start"], ev["end"]) == ("2030-03-02T16:00:00Z", "2030-03-02T18:00:00Z")
        assert (ev["kind"], ev["cap_kw"], ev["level"], ev["source"]) == (
            "import_cap_kw",
            20.0,
            None,
            "api",
        )
        r = c.post(
            "/dr-events",
            json={
                "site_id": "depot",
                "start": "2030-03-03T06:00:00-05:00",
                "end": "2030-03-03T08:00:00-05:00",
                "level": 2,
            },
        )
        assert r.status_code == 201, r.text
        level = r.json()
        assert (level["kind"], level["level"], level["start"]) == (
            "simple_level",
            2,
            "2030-03-03T11:00:00Z",
        )
        assert level["id"].startswith("dr_")
        listed = c.get("/dr-events", params={"site_id": "depot"}).json()
        assert [e["id"] for e in listed] == ["evt-1", level["id"]]
        window = c.get(
            "/dr-events", params={"start": "2030-03-03T00:00:00Z", "end": "2030-03-04T00:00:00Z"}
        ).json()
        assert [e["id"] for e in window] == [level["id"]]
        r = c.post("/dr-events/evt-1/cancel")
        assert (r.status_code, r.json()["status"]) == (200, "cancelled")
        assert c.post("/dr-events/evt-1/cancel").json()["cancelled_at"] == r.json()["cancelled_at"]
        assert [e["id"] for e in c.get("/dr-events", params={"status": "active"}).json()] == [
            level["id"]
        ]
        assert c.get("/dr-events/evt-1").json()["status"] == "cancelled"
        assert c.get("/dr-events/nope").status_code == 404


def test_dr_event_conflicts(site: Api) -> None:
    base = {"start": "2030-03-02T17:00:00Z", "end": "2030-03-02T19:00:00Z"}
    with site.client() as c:
        r = c.post("/dr-events", json={**base, "site_id": "unknown", "cap_kw": 20})
        assert r.status_code == 409
        assert "does not exist" in error_messages(r.json())[("body", "site_id")]
        r = c.post("/dr-events", json={**base, "site_id": "depot", "cap_kw": 2})  # min is 5
        assert r.status_code == 409
        assert "below the site's minimum" in error_messages(r.json())[("body", "cap_kw")]
        ok = {**base, "site_id": "depot", "cap_kw": 20, "id": "dup"}
        assert c.post("/dr-events", json=ok).status_code == 201
        r = c.post("/dr-events", json=ok)
        assert r.status_code == 409
        assert ("body", "id") in error_messages(r.json())
        assert len(c.get("/dr-events").json()) == 1


def test_dr_event_validation(site: Api) -> None:
    with site.client() as c:
        cases = [
            ({"cap_kw": 20, "level": 1}, ("body",), "exactly one"),
            ({}, ("body",), "exactly one"),
            ({"level": 4}, ("body", "level"), "less than or equal to 3"),
            ({"cap_kw": -1}, ("body", "cap_kw"), "greater than or equal to 0"),
            ({"cap_kw": 10, "end": "2030-03-02T16:00:00Z"}, ("body", "end"), "after start"),
            ({"cap_kw": 10, "start": "2030-03-02T17:00:00"}, ("body", "start"), "timezone"),
            ({"cap_kw": 10, "start": 1900000000}, ("body", "start"), "RFC 3339"),
            ({"cap_kw": 10, "start": "1900000000"}, ("body", "start"), "RFC 3339"),
            ({"cap_kw": 10, "start": "tomorrow"}, ("body", "start"), "RFC 3339"),
        ]
        for extra, loc, msg in cases:
            body = {
                "site_id": "depot",
                "start": "2030-03-02T17:00:00Z",
                "end": "2030-03-02T19:00:00Z",
                **extra,
            }
            r = c.post("/dr-events", json=body)
            assert r.status_code == 422, (extra, r.text)
            errors = error_messages(r.json())
            assert loc in errors, (extra, errors)
            assert msg in errors[loc], (extra, errors)
        assert c.get("/dr-events").json() == []


def test_price_series(site: Api) -> None:
    intervals = [
        {"start": "2030-03-02T00:00:00+01:00", "end": "2030-03-02T07:00:00+01:00", "price": 0.12},
        {"start": "2030-03-02T07:00:00+01:00", "end": "2030-03-02T23:00:00+01:00", "price": 0.31},
    ]
    with site.client(site.key("utility", ["depot"])) as c:
        r = c.post("/prices", json={"site_id": "depot", "currency": "EUR", "intervals": intervals})
        assert r.status_code == 201, r.text
        series = r.json()
        assert series["direction"] == "import"
        assert [i["start"] for i in series["intervals"]] == [
            "2030-03-01T23:00:00Z",
            "2030-03-02T06:00:00Z",
        ]
        assert c.get(f"/prices/{series['id']}").json() == series
        assert c.get("/prices", params={"site_id": "depot"}).json() == [series]
        overlap = [intervals[1], intervals[0]]
        r = c.post("/prices", json={"site_id": "depot", "intervals": overlap})
        assert r.status_code == 422
        assert "sorted" in error_messages(r.json())[("body", "intervals", 1, "start")]
        r = c.post("/prices", json={"site_id": "depot", "intervals": [], "direction": "sideways"})
        assert set(error_messages(r.json())) == {("body", "intervals"), ("body", "direction")}
        r = c.post("/prices", json={"site_id": "elsewhere", "intervals": intervals})
        assert r.status_code == 403  # not one of this utility's sites
