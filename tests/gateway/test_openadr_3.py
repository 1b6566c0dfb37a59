"""OpenADR 3.1 end to end: Ampflow's VEN (inside the served app, on openadr3-client) against the
test suite's VTN (FastAPI, HTTPS, OAuth2 client credentials) on 127.0.0.1.

Covered: token discovery and client credentials; programs; events by webhook (a subscription
with the 3.1 operations and a bearer token) and by polling when the VTN offers no webhooks;
creation, update and deletion reaching the control loop's caps; SIMPLE, PRICE and
EXPORT_CAPACITY_LIMIT; usage reports the events ask for; bad events (missing intervals, unknown
payload, absurd units, a negative cap) rejected with an opt-out report, never removing a valid
cap; wrong credentials never crash the VEN.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ampflow.gateway.db import Database
from ampflow.gateway.db.models import Connector, Signal, Site
from ampflow.gateway.openadr.service import OpenAdrService
from ampflow.gateway.openadr.ven3 import Ven3
from tests.gateway.conftest import depot, make_settings
from tests.gateway.ocpp_testkit import Server, until
from tests.gateway.test_openadr_20 import dr_cap, run, running
from tests.gateway.test_openadr_vtn3 import Vtn3, make_pki

KW = {
    "objectType": "EVENT_PAYLOAD_DESCRIPTOR",
    "payloadType": "IMPORT_CAPACITY_LIMIT",
    "units": "KW",
}


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def ven_settings(
    tmp_path: Path,
    db: Database,
    vtn: Vtn3,
    *,
    callback: bool = True,
    poll_s: float = 3600.0,
    secret: str = Vtn3.VEN_SECRET,
    **extra: Any,
) -> Any:
    ven: dict[str, Any] = {
        "name": "dso",
        "protocol": "3.1",
        "vtn_url": vtn.url,
        "ven_name": "ampflow-depot",
        "program": "GAC",
        "sites": [{"site_id": "depot"}],
        "auth": {"client_id": Vtn3.VEN_ID, "client_secret": secret},
        "ca_file": str(vtn.pki.ca_cert),
        "poll_s": poll_s,
        "report_s": 0.2,
        **extra,
    }
    if callback:
        ven["callback"] = {"url": "http://127.0.0.1:{port}/openadr3/dso"}
    return make_settings(
        tmp_path,
        db.url.render_as_string(False),
        tick_s=3600.0,
        replan_s=3600.0,
        openadr={"vens": [ven]},
    )


def ven3(srv: Server) -> Ven3:
    svc = srv.app.state.openadr
    assert isinstance(svc, OpenAdrService)
    ven = svc.vens["dso"]
    assert isinstance(ven, Ven3)
    return ven


def stored(db: Database, kind: str | None = None) -> list[Signal]:
    with db.read() as s:
        q = s.query(Signal).filter_by(source="openadr3").order_by(Signal.pk)
        rows = [r for r in q if kind is None or r.kind == kind]
        for r in rows:
            _ = r.intervals  # loaded while the session is open
        return rows


def program(vtn: Vtn3) -> str:
    with vtn.bl() as c:
        r = c.post("/programs", json={"programName": "GAC", "payloadDescriptors": [KW]})
        assert r.status_code == 201
        return str(r.json()["id"])


def cap_event(
    program_id: str,
    *values: float,
    step: str = "PT1H",
    start: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    t0 = start or datetime.now(UTC) - timedelta(minutes=1)
    return {
        "programID": program_id,
        "eventName": "capacity",
        "priority": 0,
        "intervalPeriod": {"start": iso(t0), "duration": step},
        "intervals": [
            {"id": i, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [v]}]}
            for i, v in enumerate(values)
        ],
        **extra,
    }


async def post_site(srv: Server) -> None:
    with srv.client() as c:
        r = await asyncio.to_thread(c.post, "/sites", json=depot())
        assert r.status_code == 201


# -- webhooks -------------------------------------------------------------------------------------


def test_3_webhooks_create_update_delete_reach_the_caps(db: Database, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")

    async def scenario() -> None:
        with Vtn3(pki) as vtn:
            pid = await asyncio.to_thread(program, vtn)
            async with running(db, ven_settings(tmp_path, db, vtn)) as srv:
                await post_site(srv)
                await flow(vtn, srv, pid)
            assert vtn.state.subscriptions == {}  # removed when the VEN stopped

    async def flow(vtn: Vtn3, srv: Server, pid: str) -> None:
        ven = ven3(srv)
        await until(lambda: ven.connected.is_set(), what="VEN connected")
        assert ven.webhooks
        (sub,) = vtn.state.subscriptions.values()
        assert sub["clientName"] == "ampflow-depot"
        assert sub["programID"] == pid
        (op,) = sub["objectOperations"]
        assert op["operations"] == ["CREATE", "UPDATE", "DELETE"]
        assert op["bearerToken"]
        assert vtn.state.token_requests >= 1
        await until(lambda: vtn.state.event_reads >= 1, what="the first poll")
        reads = vtn.state.event_reads

        with vtn.bl() as c:
            ev = (await asyncio.to_thread(c.post, "/events", json=cap_event(pid, 12.0))).json()
        await until(lambda: stored(db), what="the event by webhook")
        assert vtn.state.event_reads == reads  # not by polling
        assert vtn.state.notifications[-1] == ("CREATE", ev["id"], 200)
        (sig,) = stored(db)
        assert (sig.kind, sig.external_id, sig.program) == (
            "import_cap_kw",
            f"dso|{ev['id']}|0",
            pid,
        )
        assert sig.intervals[0].value == 12.0
        await until(lambda: dr_cap(db) == pytest.approx(12.0), what="the cap in the loop")

        with vtn.bl() as c:
            r = await asyncio.to_thread(c.put, f"/events/{ev['id']}", json=cap_event(pid, 8.0))
            assert r.status_code == 200
        await until(lambda: stored(db)[0].intervals[0].value == 8.0, what="update")
        assert stored(db)[0].modification_number == 1
        await until(lambda: dr_cap(db) == pytest.approx(8.0), what="updated cap")

        with vtn.bl() as c:
            await asyncio.to_thread(c.delete, f"/events/{ev['id']}")
        await until(lambda: stored(db)[0].status == "cancelled", what="delete")
        await until(lambda: dr_cap(db) is None, what="cap lifted")

    run(scenario())


# -- polling, other payloads, reports -----------------------------------------------------------


def test_3_polling_simple_price_export_and_withdrawal(db: Database, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")

    async def scenario() -> None:
        with Vtn3(pki, webhooks=False) as vtn:
            pid = await asyncio.to_thread(program, vtn)
            settings = ven_settings(tmp_path, db, vtn, poll_s=0.3)
            async with running(db, settings) as srv:
                await post_site(srv)
                await flow(vtn, srv, pid)

    async def flow(vtn: Vtn3, srv: Server, pid: str) -> None:
        ven = ven3(srv)
        await until(lambda: ven.connected.is_set(), what="VEN connected")
        assert not ven.webhooks  # the VTN answered 501: polling
        t0 = datetime.now(UTC) - timedelta(minutes=1)
        body = {
            "programID": pid,
            "payloadDescriptors": [
                {"payloadType": "PRICE", "units": "KWH", "currency": "EUR"},
                {"payloadType": "EXPORT_CAPACITY_LIMIT", "units": "KW"},
            ],
            "intervalPeriod": {"start": iso(t0), "duration": "PT30M"},
            "intervals": [
                {
                    "id": i,
                    "payloads": [
                        {"type": "SIMPLE", "values": [level]},
                        {"type": "PRICE", "values": [price]},
                        {"type": "EXPORT_CAPACITY_LIMIT", "values": [7]},
                    ],
                }
                for i, (level, price) in enumerate([(2, 0.31), (1, 0.27)])
            ],
        }
        with vtn.bl() as c:
            ev = (await asyncio.to_thread(c.post, "/events", json=body)).json()
        await until(lambda: len(stored(db)) == 3, what="three signals by polling")
        by_kind = {s.kind: s for s in stored(db)}
        assert [iv.value for iv in by_kind["import_cap_kw"].intervals] == [25.0, 37.5]
        assert [iv.value for iv in by_kind["import_price"].intervals] == [0.31, 0.27]
        assert by_kind["import_price"].currency == "EUR"
        assert by_kind["export_cap_kw"].intervals[0].value == 7.0
        await until(lambda: dr_cap(db) == pytest.approx(25.0), what="SIMPLE cap")

        # The VTN stops listing the event (no webhook tells): the next poll withdraws it.
        with vtn.bl() as c:
            await asyncio.to_thread(c.delete, f"/events/{ev['id']}")
        await until(
            lambda: all(s.status == "cancelled" for s in stored(db)), what="withdrawn by polling"
        )
        await until(lambda: dr_cap(db) is None, what="cap lifted")

    run(scenario())


def test_3_usage_reports_the_event_asks_for(db: Database, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")

    async def scenario() -> None:
        with Vtn3(pki) as vtn:
            pid = await asyncio.to_thread(program, vtn)
            async with running(db, ven_settings(tmp_path, db, vtn)) as srv:
                await post_site(srv)
                metered(db, 11.0)
                ven = ven3(srv)
                await until(lambda: ven.connected.is_set(), what="VEN connected")
                # Two 2-second intervals starting 3 s from now: a report needs a sample within
                # its interval, so the event must reach the VEN before the first one ends even
                # on a busy machine (1-second intervals starting in 1 s failed under load).
                body = cap_event(
                    pid,
                    30.0,
                    30.0,
                    step="PT2S",
                    start=datetime.now(UTC) + timedelta(seconds=3),
                    reportDescriptors=[
                        {"payloadType": "USAGE", "units": "KWH"},
                        {"payloadType": "DEMAND", "units": "KW"},
                    ],
                )
                with vtn.bl() as c:
                    ev = (await asyncio.to_thread(c.post, "/events", json=body)).json()
                usage = [r for r in vtn.state.reports if r["eventID"] == ev["id"]]
                await until(
                    lambda: len([r for r in vtn.state.reports if r["eventID"] == ev["id"]]) >= 2,
                    timeout=20,
                    what="a report per interval",
                )
                usage = [r for r in vtn.state.reports if r["eventID"] == ev["id"]]
                first = usage[0]
                assert first["clientName"] == "ampflow-depot"
                assert first["clientID"] == Vtn3.VEN_ID
                assert {d["payloadType"]: d["units"] for d in first["payloadDescriptors"]} == {
                    "DEMAND": "KW",
                    "USAGE": "KWH",
                }
                (res,) = first["resources"]
                assert res["resourceName"] == "depot"
                values = {p["type"]: p["values"][0] for p in res["intervals"][0]["payloads"]}
                assert values["DEMAND"] == pytest.approx(11.0)
                assert values["USAGE"] == pytest.approx(11.0 * 2 / 3600.0, rel=1e-3)

    run(scenario())


def metered(db: Database, kw: float) -> None:
    """The depot's first connector reads ``kw`` now (as a station's meter values would)."""
    with db.write() as s:
        site = s.query(Site).filter_by(id="depot").one()
        conn = s.query(Connector).filter_by(site_pk=site.pk).order_by(Connector.pk).first()
        assert conn is not None
        conn.power_kw = kw
        conn.measured_at = datetime.now(UTC)


# -- bad events ---------------------------------------------------------------------------------


def test_3_bad_events_are_rejected_with_an_opt_out_and_keep_valid_caps(
    db: Database, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")

    async def scenario() -> None:
        with Vtn3(pki) as vtn:
            pid = await asyncio.to_thread(program, vtn)
            async with running(db, ven_settings(tmp_path, db, vtn, poll_s=0.5)) as srv:
                await post_site(srv)
                await flow(vtn, srv, pid)

    def opt_outs(vtn: Vtn3) -> dict[str, str]:
        out = {}
        for r in vtn.state.reports:
            for p in r["resources"][0]["intervals"][0]["payloads"]:
                if p["type"] == "x-OPT_OUT":
                    out[r["eventID"]] = p["values"][0]
        return out

    async def flow(vtn: Vtn3, srv: Server, pid: str) -> None:
        ven = ven3(srv)
        await until(lambda: ven.connected.is_set(), what="VEN connected")
        with vtn.bl() as c:
            valid = (await asyncio.to_thread(c.post, "/events", json=cap_event(pid, 20.0))).json()
        await until(lambda: dr_cap(db) == pytest.approx(20.0), what="the valid cap")

        absurd = cap_event(pid, 20.0)
        absurd["payloadDescriptors"] = [{**KW, "units": "CELSIUS"}]
        unknown = cap_event(pid, 1.0)
        unknown["intervals"][0]["payloads"][0]["type"] = "WEIRD_TYPE"
        bad = {
            "missing": {"programID": pid, "eventName": "no intervals"},
            "unknown": unknown,
            "absurd": absurd,
            "negative": cap_event(pid, -5.0),
        }
        ids = {}
        with vtn.bl() as c:
            for name, body in bad.items():
                r = await asyncio.to_thread(c.post, "/events", json=body)
                assert r.status_code == 201, r.text  # schema-valid, yet not followable
                ids[name] = r.json()["id"]
            # A bad update of the valid event leaves its cap in place.
            r = await asyncio.to_thread(c.put, f"/events/{valid['id']}", json=cap_event(pid, -1.0))
            assert r.status_code == 200
        await until(lambda: len(opt_outs(vtn)) == 5, what="five opt-out reports")
        reasons = opt_outs(vtn)
        assert "intervals" in reasons[ids["missing"]]
        assert "WEIRD_TYPE" in reasons[ids["unknown"]]
        assert "CELSIUS" in reasons[ids["absurd"]]
        assert "at least 0" in reasons[ids["negative"]]
        assert "at least 0" in reasons[valid["id"]]
        assert ven.processor.rejected == 5
        (sig,) = stored(db)
        assert sig.intervals[0].value == 20.0
        assert sig.status == "active"
        assert dr_cap(db) == pytest.approx(20.0)

        # The VEN carries on: a new valid, lower cap is followed.
        with vtn.bl() as c:
            await asyncio.to_thread(c.post, "/events", json=cap_event(pid, 15.0, priority=1))
        await until(lambda: dr_cap(db) == pytest.approx(15.0), what="the next valid cap")
        await asyncio.sleep(1.2)  # two more polls: the bad events are not reported twice
        assert len(opt_outs(vtn)) == 5
        assert sum(1 for r in vtn.state.reports if r["reportName"] == "ampflow opt-out") == 5

    run(scenario())


def test_3_wrong_credentials_never_crash_the_ven(db: Database, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")

    async def scenario() -> None:
        with Vtn3(pki) as vtn:
            await asyncio.to_thread(program, vtn)
            settings = ven_settings(tmp_path, db, vtn, secret="wrong-secret")
            async with running(db, settings) as srv:
                ven = ven3(srv)
                await until(lambda: vtn.state.token_requests >= 1, what="a token request")
                await asyncio.sleep(1.0)
                assert not ven.connected.is_set()
                with srv.client() as c:  # the server itself is fine
                    r = await asyncio.to_thread(c.get, "/health")
                    assert r.status_code == 200

    run(scenario())
