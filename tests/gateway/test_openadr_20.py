"""OpenADR 2.0b end to end: Ampflow's VEN (inside the served app) against openleadr's own
``OpenADRServer`` as the VTN on 127.0.0.1, with a charger on the OCPP gateway.

Covered: registration and the VTN's poll period; TELEMETRY_USAGE at the cadence the VTN asks
for; a SIMPLE event (per-program fractions), a LOAD_DISPATCH kW event, a modification and a
cancellation, each reaching the control loop's limits and the charger as SetChargingProfile;
a price event; opt-out for a cap below the uncontrollable load and for a site the manager
opted out; bad events (unknown signal, absurd unit, negative cap) opted out of without removing
a valid cap; TLS with client certificates and XML signatures, and a wrong VTN fingerprint.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from openleadr import OpenADRServer, enums, objects, utils

from ampflow.gateway.db import Database
from ampflow.gateway.db.models import Signal, Site, SiteControl
from ampflow.gateway.openadr.service import OpenAdrService, install
from ampflow.gateway.openadr.ven20 import Ven20
from tests.gateway.conftest import ServerProcess, depot, make_key, make_settings
from tests.gateway.ocpp_testkit import Core, Server, connect, setup_depot, until
from tests.gateway.test_openadr_vtn3 import Pki, make_pki

pytestmark = [
    # openleadr's VTN keeps itself on its aiohttp app under a string key; aiohttp recommends
    # AppKey objects and warns. Only the VTN of these tests does that, not Ampflow's VEN.
    pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning"),
]

PROGRAM = "http://utility.test/dr"
POWER_KW = dataclasses.replace(enums.MEASUREMENTS.ACTIVE_POWER, scale="k")
POWER_W = dataclasses.replace(enums.MEASUREMENTS.ACTIVE_POWER, scale="none")
POWER_MW = dataclasses.replace(enums.MEASUREMENTS.ACTIVE_POWER, scale="M")
PRICE_EUR = dataclasses.replace(enums.MEASUREMENTS.CURRENCY_PER_KWH, unit="EUR")
TEMPERATURE = dataclasses.replace(enums.MEASUREMENTS.TEMPERATURE)


class Vtn20:
    """openleadr's VTN on an ephemeral 127.0.0.1 port, recording what VENs tell it."""

    def __init__(self, *, poll_s: float = 1.0, pki: Pki | None = None) -> None:
        self.pki = pki
        tls: dict[str, Any] = {}
        if pki is not None:
            tls = {
                "cert": str(pki.vtn_cert),
                "key": str(pki.vtn_key),
                "http_cert": str(pki.vtn_cert),
                "http_key": str(pki.vtn_key),
                "http_ca_file": str(pki.ca_cert),
            }
        self.server = OpenADRServer(
            vtn_id="TEST_VTN",
            http_host="127.0.0.1",
            http_port=0,
            requested_poll_freq=timedelta(seconds=poll_s),
            show_fingerprint=False,
            ven_lookup=self._lookup,
            **tls,
        )
        self.server.add_handler("on_create_party_registration", self._register)
        self.server.add_handler("on_register_report", self._register_report)
        self.vens: dict[str, dict[str, Any]] = {}  # ven_id -> registration
        self.opts: dict[str, list[str]] = {}
        self.telemetry: list[tuple[str, datetime, float]] = []
        self.url = ""

    async def start(self) -> None:
        await self.server.run()
        port = self.server.app_runner.addresses[0][1]
        scheme = "https" if self.pki else "http"
        self.url = f"{scheme}://127.0.0.1:{port}/OpenADR2/Simple/2.0b"

    async def stop(self) -> None:
        await self.server.stop()

    def _lookup(self, ven_id: str) -> dict[str, Any]:
        return self.vens.get(ven_id, {})

    async def _register(self, info: dict[str, Any]) -> tuple[str, str]:
        ven_id = f"ven-{len(self.vens) + 1}"
        fingerprint = None
        if self.pki is not None:
            fingerprint = utils.certificate_fingerprint(self.pki.ven_cert.read_text())
        self.vens[ven_id] = {
            "ven_id": ven_id,
            "ven_name": info["ven_name"],
            "fingerprint": fingerprint,
            "registration_id": f"reg-{ven_id}",
        }
        return ven_id, f"reg-{ven_id}"

    async def _register_report(
        self,
        ven_id: str,
        resource_id: str,
        measurement: str,
        unit: str,
        scale: str,
        min_sampling_interval: timedelta,
        max_sampling_interval: timedelta,
    ) -> tuple[Any, timedelta]:
        async def receive(values: list[tuple[datetime, float]]) -> None:
            self.telemetry.extend((resource_id, t, float(v)) for t, v in values)

        return receive, max(min_sampling_interval, timedelta(seconds=1))

    def opt_callback(self, event_id: str) -> Any:
        async def record(ven_id: str, event_id: str, opt_type: str) -> None:
            self.opts.setdefault(event_id, []).append(opt_type)

        return record

    @property
    def ven_id(self) -> str:
        (ven_id,) = self.vens
        return ven_id

    def event(
        self,
        event_id: str,
        signal_name: str,
        signal_type: str,
        values: list[float],
        *,
        measurement: Any = None,
        start: datetime | None = None,
        step: timedelta = timedelta(hours=1),
        targets: list[dict[str, str]] | None = None,
        priority: int = 0,
    ) -> str:
        """Queue an event for the VEN (an openleadr Event, so it may carry an itemBase)."""
        t0 = start or datetime.now(UTC) - timedelta(minutes=1)
        intervals = [
            objects.Interval(dtstart=t0 + i * step, duration=step, signal_payload=v, uid=i)
            for i, v in enumerate(values)
        ]
        event = objects.Event(
            event_descriptor=objects.EventDescriptor(
                event_id=event_id,
                modification_number=0,
                market_context=PROGRAM,
                event_status="far",
                priority=priority,
                created_date_time=datetime.now(UTC),
            ),
            event_signals=[
                objects.EventSignal(
                    intervals=intervals,
                    signal_name=signal_name,
                    signal_type=signal_type,
                    signal_id=f"{event_id}-s0",
                    measurement=measurement,
                )
            ],
            targets=targets or [{"ven_id": self.ven_id}],
        )
        return str(
            self.server.add_raw_event(self.ven_id, event, callback=self.opt_callback(event_id))
        )

    def modify(self, event_id: str, **changes: Any) -> None:
        """Change an event's first signal's payloads (``values``) or itemBase; bump its
        modification number, as a VTN operator would."""
        ev = utils.find_by(self.server.events[self.ven_id], "event_descriptor.event_id", event_id)
        sig = ev.event_signals[0]
        if "values" in changes:
            for iv, v in zip(sig.intervals, changes["values"], strict=True):
                iv.signal_payload = v
        if "measurement" in changes:
            sig.measurement = changes["measurement"]
        utils.increment_event_modification_number(ev)
        self.server.events_updated[self.ven_id] = True
        self.server.event_callbacks[event_id] = (ev, self.opt_callback(event_id))


def ven_settings(
    tmp_path: Path,
    db: Database,
    vtn: Vtn20,
    *,
    sites: list[dict[str, Any]] | None = None,
    tls: dict[str, Any] | None = None,
    **extra: Any,
) -> Any:
    ven: dict[str, Any] = {
        "name": "utility",
        "protocol": "2.0b",
        "vtn_url": vtn.url,
        "ven_name": "ampflow-depot",
        "program": PROGRAM,
        "sites": sites or [{"site_id": "depot"}],
        "programs": {PROGRAM: {"simple_fractions": [1.0, 0.6, 0.3, 0.0]}},
        "telemetry_min_s": 1.0,
        "allow_insecure": tls is None,
        **extra,
    }
    if tls is not None:
        ven["tls"] = tls
    return make_settings(
        tmp_path,
        db.url.render_as_string(False),
        ocpp={"response_timeout_s": 3.0, "retries": 1, "batch_wait_s": 2.0},
        tick_s=3600.0,
        replan_s=3600.0,
        default_dwell_h=0.25,
        openadr={"vens": [ven]},
    )


@contextlib.asynccontextmanager
async def running(db: Database, settings: Any) -> AsyncIterator[Server]:
    """The app with the OCPP gateway and the VENs on a live port (in its own thread)."""
    srv = Server(db, settings)
    assert install(srv.app)
    await asyncio.to_thread(srv.__enter__)
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.__exit__, None, None, None)


def ven20(srv: Server) -> Ven20:
    svc = srv.app.state.openadr
    assert isinstance(svc, OpenAdrService)
    ven = svc.vens["utility"]
    assert isinstance(ven, Ven20)
    return ven


def stored(db: Database, site_id: str = "depot") -> list[Signal]:
    with db.read() as s:
        site = s.query(Site).filter_by(id=site_id).one()
        rows = s.query(Signal).filter_by(site_pk=site.pk, source="openadr2").order_by(Signal.pk)
        return [r for r in rows if r.intervals is not None]


def dr_cap(db: Database, site_id: str = "depot") -> float | None:
    with db.read() as s:
        site = s.query(Site).filter_by(id=site_id).one()
        row = s.get(SiteControl, site.pk)
        return None if row is None else row.dr_cap_kw


def run(coro: Any, timeout: float = 120.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout)

    asyncio.run(bounded())


# -- the main flow, down to the charger ----------------------------------------------------------


def test_20_events_reach_the_control_loop_and_the_charger(db: Database, tmp_path: Path) -> None:
    core = Core(ev_max_kw=22.0)

    async def scenario() -> None:
        vtn = Vtn20(poll_s=1.0)
        await vtn.start()
        try:
            async with running(db, ven_settings(tmp_path, db, vtn)) as srv:
                await asyncio.to_thread(setup_depot, srv, ("CP1", "cp-1", None))
                await flow(vtn, srv)
        finally:
            await vtn.stop()

    async def flow(vtn: Vtn20, srv: Server) -> None:
        # Registration, at the VTN's poll period.
        await until(lambda: vtn.vens, what="registration")
        assert [v["ven_name"] for v in vtn.vens.values()] == ["ampflow-depot"]
        ven = ven20(srv)
        await until(lambda: ven.registered.is_set(), what="VEN registered")
        assert ven.ven_id == vtn.ven_id
        assert ven.poll_period == timedelta(seconds=1)

        async with connect(srv, "CP1", core) as cp:
            await cp.boot()
            await cp.status(1, "Preparing")
            tx_id, status = await cp.start_tx(1, "TAG-OK")
            assert status == "Accepted"
            await until(lambda: (core.limit_kw(1) or 0) > 21.9, what="TxProfile, whole charger")
            drawn = await cp.meter(1)

            # Telemetry: the site's power, at the cadence the VTN asked for (1 s).
            await until(
                lambda: any(v == pytest.approx(drawn, abs=0.05) for _, _, v in vtn.telemetry),
                what="telemetry of the site's power",
            )
            assert {r for r, _, _ in vtn.telemetry} == {"depot"}

            # SIMPLE level 2 under this program's rules: 30 % of 50 kW.
            vtn.event("ev-simple", "SIMPLE", "level", [2, 2])
            await until(lambda: vtn.opts.get("ev-simple") == ["optIn"], what="optIn SIMPLE")
            await until(lambda: (core.limit_kw(1) or 99) <= 15.0 + 1e-6, what="SIMPLE cap")
            await until(lambda: dr_cap(db) == pytest.approx(15.0), what="recorded cap")
            (sig,) = stored(db)
            assert (sig.kind, sig.external_id, sig.program) == (
                "import_cap_kw",
                "utility|ev-simple|0",
                PROGRAM,
            )
            assert [iv.value for iv in sig.intervals] == [15.0, 15.0]

            # LOAD_DISPATCH setpoint in W: 9,000 W is 9 kW; the lowest cap wins.
            vtn.event("ev-dispatch", "LOAD_DISPATCH", "setpoint", [9000.0], measurement=POWER_W)
            await until(lambda: vtn.opts.get("ev-dispatch") == ["optIn"], what="optIn dispatch")
            await until(lambda: (core.limit_kw(1) or 99) <= 9.0 + 1e-6, what="dispatch cap")
            await until(lambda: dr_cap(db) == pytest.approx(9.0), what="recorded cap")
            assert await cp.meter(1) <= 9.0 + 1e-6

            # Cancellation lifts the dispatch cap: back to the SIMPLE cap.
            vtn.server.cancel_event(vtn.ven_id, "ev-dispatch")
            await until(lambda: (core.limit_kw(1) or 0) > 9.5, what="cap lifted")
            assert core.limit_kw(1) == pytest.approx(15.0, abs=0.1)
            await until(lambda: dr_cap(db) == pytest.approx(15.0), what="recorded cap")
            statuses = {s.external_id: s.status for s in stored(db)}
            assert statuses == {
                "utility|ev-simple|0": "active",
                "utility|ev-dispatch|0": "cancelled",
            }

            # A modification: level 1 is 60 %, 30 kW, above what the charger can take.
            vtn.modify("ev-simple", values=[1, 1])
            await until(lambda: vtn.opts.get("ev-simple") == ["optIn", "optIn"], what="mod opt")
            await until(lambda: (core.limit_kw(1) or 0) > 21.0, what="modified cap")
            simple = next(s for s in stored(db) if s.external_id == "utility|ev-simple|0")
            assert simple.modification_number == 1
            assert [iv.value for iv in simple.intervals] == [30.0, 30.0]
            await cp.stop_tx(str(tx_id))

    run(scenario())


# -- prices, opt-outs and bad events ----------------------------------------------------------


def test_20_prices_opt_outs_and_bad_events(db: Database, tmp_path: Path) -> None:
    sites: list[dict[str, Any]] = [
        {"site_id": "depot"},
        {"site_id": "depot-b", "resource": "meter-b", "opted_out": True},
    ]

    async def scenario() -> None:
        vtn = Vtn20(poll_s=1.0)
        await vtn.start()
        try:
            async with running(db, ven_settings(tmp_path, db, vtn, sites=sites)) as srv:
                with srv.client() as c:
                    for site in (depot(), depot("depot-b")):
                        assert (
                            await asyncio.to_thread(c.post, "/sites", json=site)
                        ).status_code == 201
                await flow(vtn, srv)
        finally:
            await vtn.stop()

    async def answer(vtn: Vtn20, event_id: str, n: int = 1) -> str:
        await until(lambda: len(vtn.opts.get(event_id, [])) >= n, what=f"answer to {event_id}")
        return vtn.opts[event_id][n - 1]

    async def flow(vtn: Vtn20, srv: Server) -> None:
        await until(lambda: vtn.vens, what="registration")
        ven = ven20(srv)
        await until(lambda: ven.registered.is_set(), what="VEN registered")

        # A price event: 24 hourly prices in EUR/kWh, stored as a price series, no cap.
        prices = [round(0.2 + 0.01 * h, 2) for h in range(24)]
        vtn.event("ev-price", "ELECTRICITY_PRICE", "price", prices, measurement=PRICE_EUR)
        assert await answer(vtn, "ev-price") == "optIn"
        price_sig = next(s for s in stored(db) if s.kind == "import_price")
        assert price_sig.currency == "EUR"
        assert [iv.value for iv in price_sig.intervals] == prices
        await until(lambda: dr_cap(db, "depot") is None and srv.control.plan_count > 0)

        # A valid cap first, shared between the two sites by their import limits (50/50).
        vtn.event("ev-cap", "LOAD_DISPATCH", "setpoint", [40.0], measurement=POWER_KW)
        # The manager opted depot-b out: the VEN opts out, depot-b's cap is recorded, unused;
        # depot keeps following its share.
        assert await answer(vtn, "ev-cap") == "optOut"
        assert "opted out" in ven.processor.answers["ev-cap"].reason
        caps = by_site_now(db)
        assert caps["depot"].intervals[0].value == pytest.approx(20.0)
        assert caps["depot"].opt_state == "opt_in"
        assert caps["depot-b"].opt_state == "opt_out"
        await until(lambda: dr_cap(db, "depot") == pytest.approx(20.0), what="depot cap")
        assert dr_cap(db, "depot-b") is None

        # Bad modifications are rejected (logged, opted out of) and leave the valid cap.
        bad = [
            ({"values": [-5.0]}, "at least 0"),  # a cap below zero
            ({"measurement": TEMPERATURE}, "itemBase"),  # absurd units
            ({"values": [40.0], "measurement": POWER_MW}, "units"),  # 40 MW at a 50 kW site
        ]
        for n, (change, reason) in enumerate(bad, start=2):
            vtn.modify("ev-cap", **change)
            assert await answer(vtn, "ev-cap", n) == "optOut"
            assert reason in ven.processor.answers["ev-cap"].reason
            caps = by_site_now(db)
            assert [iv.value for iv in caps["depot"].intervals] == [20.0]
            assert caps["depot"].modification_number == 0
            assert dr_cap(db, "depot") == pytest.approx(20.0)
        assert ven.processor.rejected == 3

        # An unknown signal name: opted out of, nothing stored, the VEN carries on.
        vtn.event("ev-unknown", "x-mystery", "level", [1])
        assert await answer(vtn, "ev-unknown") == "optOut"
        assert not any("ev-unknown" in (s.external_id or "") for s in stored(db))

        # A cap below the uncontrollable load (5 kW) cannot be honoured: opt out, no cap.
        vtn.event(
            "ev-low",
            "LOAD_DISPATCH",
            "setpoint",
            [3.0],
            measurement=POWER_KW,
            targets=[{"resource_id": "depot"}],
        )
        assert await answer(vtn, "ev-low") == "optOut"
        assert not any("ev-low" in (s.external_id or "") for s in stored(db))
        assert "uncontrollable" in ven.processor.answers["ev-low"].reason
        assert dr_cap(db, "depot") == pytest.approx(20.0)

    run(scenario())


def by_site_now(db: Database) -> dict[str, Signal]:
    return {
        site: next(s for s in stored(db, site) if s.kind == "import_cap_kw")
        for site in ("depot", "depot-b")
    }


# -- TLS and XML signatures ----------------------------------------------------------------------


def test_20_tls_client_certificates_and_signatures(db: Database, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")

    async def scenario() -> None:
        vtn = Vtn20(poll_s=1.0, pki=pki)
        await vtn.start()
        tls = {
            "cert_file": str(pki.ven_cert),
            "key_file": str(pki.ven_key),
            "ca_file": str(pki.ca_cert),
            "vtn_fingerprint": utils.certificate_fingerprint(pki.vtn_cert.read_text()),
        }
        try:
            async with running(db, ven_settings(tmp_path, db, vtn, tls=tls)) as srv:
                with srv.client() as c:
                    r = await asyncio.to_thread(c.post, "/sites", json=depot())
                    assert r.status_code == 201
                ven = ven20(srv)
                await until(lambda: ven.registered.is_set(), what="VEN registered over TLS")
                vtn.event("ev-tls", "SIMPLE", "level", [3])
                await until(lambda: vtn.opts.get("ev-tls") == ["optIn"], what="signed optIn")
                (sig,) = stored(db)
                assert sig.intervals[0].value == pytest.approx(5.0)  # level 3: the minimum import
        finally:
            await vtn.stop()

    run(scenario())


def test_20_a_vtn_with_the_wrong_certificate_is_not_trusted(db: Database, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")

    async def scenario() -> None:
        vtn = Vtn20(poll_s=1.0, pki=pki)
        await vtn.start()
        tls = {
            "cert_file": str(pki.ven_cert),
            "key_file": str(pki.ven_key),
            "ca_file": str(pki.ca_cert),
            "vtn_fingerprint": "00:11:22:33:44:55:66:77:88:99",  # not the VTN's
        }
        try:
            async with running(db, ven_settings(tmp_path, db, vtn, tls=tls)) as srv:
                ven = ven20(srv)
                await asyncio.sleep(2.5)
                assert not ven.registered.is_set()  # every answer's signature is refused
        finally:
            await vtn.stop()

    run(scenario())


# -- inside ampflow serve -------------------------------------------------------------------------


def test_20_ampflow_serve_runs_the_configured_vens(
    server_env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def on_loop(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    async def make_vtn() -> Vtn20:
        vtn = Vtn20(poll_s=1.0)
        await vtn.start()
        return vtn

    vtn = on_loop(make_vtn())
    config = tmp_path / "ampflow.toml"
    config.write_text(
        "\n".join(
            [
                "[[openadr.vens]]",
                'name = "utility"',
                'protocol = "2.0b"',
                f'vtn_url = "{vtn.url}"',
                'ven_name = "ampflow-serve"',
                "allow_insecure = true",
                'sites = [{ site_id = "depot" }]',
            ]
        )
    )
    db = Database(db_url)
    db.upgrade()
    token = make_key(db, "admin")
    srv = ServerProcess({**server_env, "AMPFLOW_CONFIG": str(config)})
    try:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}) as c:
            assert c.post("/sites", json=depot()).status_code == 201
        deadline = time.monotonic() + 30
        while not vtn.vens and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [v["ven_name"] for v in vtn.vens.values()] == ["ampflow-serve"]

        async def add() -> None:
            vtn.event("ev-serve", "LOAD_DISPATCH", "setpoint", [12.0], measurement=POWER_KW)

        on_loop(add())
        while vtn.opts.get("ev-serve") != ["optIn"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vtn.opts.get("ev-serve") == ["optIn"]
        (sig,) = stored(db)
        assert sig.intervals[0].value == 12.0
        while dr_cap(db) != pytest.approx(12.0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dr_cap(db) == pytest.approx(12.0)
        assert srv.stop() == 0  # SIGTERM: the VEN stops with the server
    finally:
        if srv.proc.poll() is None:
            srv.kill()
        on_loop(vtn.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        db.dispose()
