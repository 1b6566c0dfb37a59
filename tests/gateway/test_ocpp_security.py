"""The endpoint's defences, over real WebSockets: unknown ids (rejected or held pending), HTTP
Basic auth with hashed passwords (security profile 1) and TLS (profile 2), subprotocol
negotiation, malformed and schema-invalid messages answered with the right CallError without
ending the connection, and the per-connection rate limit."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp.exceptions import SecurityError
from ocpp.v16 import call as call16

from ampflow.gateway.db.base import Measurand
from ampflow.gateway.db.models import MeterValue
from tests.gateway.ocpp_testkit import (
    PASSWORD,
    Core,
    Server,
    connect,
    ocpp_server_fixture,  # noqa: F401 - the fixture
    setup_depot,
)


async def _status_of_refusal(srv: Server, station_id: str, **kw: Any) -> int:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(f"{srv.ws}/{station_id}", open_timeout=10, **kw):
            pass
    return int(info.value.response.status_code)


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_handshake_checks(ocpp_server: Callable[..., Server]) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("CP1", "cp-1", PASSWORD), ("CP2", "cp-2", None))
    sub = {"subprotocols": ["ocpp1.6"]}

    async def scenario() -> None:
        assert await _status_of_refusal(srv, "NOBODY", **sub) == 404
        assert await _status_of_refusal(srv, "CP2", subprotocols=["ocpp1.5"]) == 400
        assert await _status_of_refusal(srv, "CP2") == 400  # no subprotocol at all
        assert await _status_of_refusal(srv, "CP1", **sub) == 401  # no credentials
        wrong = _basic("CP1", "not-the-password-at-all")
        assert await _status_of_refusal(srv, "CP1", additional_headers=wrong, **sub) == 401
        other = _basic("CP2", PASSWORD)  # the user name must be the station id
        assert await _status_of_refusal(srv, "CP1", additional_headers=other, **sub) == 401
        async with connect(srv, "CP1", Core(), password=PASSWORD) as cp:
            assert (await cp.boot()).status == "Accepted"
        async with connect(srv, "CP1", Core(), password=PASSWORD) as cp:  # cached: no scrypt
            assert (await cp.boot()).status == "Accepted"
        # Offering both, the station's first choice that Ampflow speaks wins.
        async with websockets.connect(
            f"{srv.ws}/CP2", subprotocols=["ocpp2.1", "ocpp2.0.1", "ocpp1.6"]
        ) as ws:
            assert ws.subprotocol == "ocpp2.0.1"
        # Repeated failures lock the id out for a while, even with the right password.
        for _ in range(3):
            await _status_of_refusal(srv, "CP1", additional_headers=wrong, **sub)
        good = _basic("CP1", PASSWORD)
        assert await _status_of_refusal(srv, "CP1", additional_headers=good, **sub) == 401

    asyncio.run(scenario())


def test_unknown_stations_are_held_pending_until_registered(
    ocpp_server: Callable[..., Server],
) -> None:
    srv = ocpp_server(unknown_stations="pending")
    setup_depot(srv)

    async def scenario() -> None:
        async with connect(srv, "NEWBIE", Core()) as cp:
            assert (await cp.boot()).status == "Pending"
            assert "NEWBIE" in srv.gateway.pending
            with pytest.raises(SecurityError, match="not registered"):
                await cp.call(call16.Authorize(id_tag="TAG-OK"), suppress=False)
            with srv.client() as c:
                body = {"id": "NEWBIE", "site_id": "depot", "charger_id": "cp-1"}
                assert c.post("/stations", json=body).status_code == 201
            assert (await cp.boot()).status == "Accepted"
            assert await cp.authorize("TAG-OK") == "Accepted"
            assert "NEWBIE" not in srv.gateway.pending

    asyncio.run(scenario())


# What a station may send, and the CallError it must get (1.6 spelling, 2.0.1 spelling).
MALFORMED: list[tuple[str, str | None, tuple[str, str]]] = [
    ("not json at all", "-1", ("FormationViolation", "FormatViolation")),
    ('{"a": 1}', "-1", ("ProtocolError", "RpcFrameworkError")),
    ('[2, "m1", "Heartbeat"]', "m1", ("ProtocolError", "ProtocolError")),
    ('[2, "m2", ["Heartbeat"], {}]', "m2", ("FormationViolation", "FormatViolation")),
    ('[2, "m3", "Heartbeat", []]', "m3", ("FormationViolation", "FormatViolation")),
    ('[9, "m4"]', "m4", ("PropertyConstraintViolation", "MessageTypeNotSupported")),
    ('[2, "m5", "FlyToTheMoon", {}]', "m5", ("NotSupported", "NotSupported")),
    ('[2, "m6", "Reset", {"type": "Hard"}]', "m6", ("NotImplemented", "NotImplemented")),
]
BOOT_16 = [
    ('{"chargePointVendor": 5, "chargePointModel": "x"}', "TypeConstraintViolation"),
    ('{"chargePointVendor": "x"}', "ProtocolError"),
    ('{"chargePointVendor": "x", "chargePointModel": "y", "bogus": 1}', "FormationViolation"),
    (
        '{"chargePointVendor": "' + "x" * 30 + '", "chargePointModel": "y"}',
        "TypeConstraintViolation",
    ),
]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_malformed_messages_get_call_errors_and_the_loop_lives_on(
    ocpp_server: Callable[..., Server], version: str
) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("CP1", "cp-1", None))
    sub = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    which = 0 if version == "1.6" else 1

    async def scenario() -> None:
        async with websockets.connect(f"{srv.ws}/CP1", subprotocols=[sub]) as ws:

            async def roundtrip(frame: str) -> list[Any]:
                await ws.send(frame)
                return list(json.loads(await asyncio.wait_for(ws.recv(), 10)))

            for frame, uid, codes in MALFORMED:
                reply = await roundtrip(frame)
                assert reply[:3] == [4, uid, codes[which]], frame
            if version == "1.6":
                for payload, code in BOOT_16:
                    reply = await roundtrip(f'[2, "b", "BootNotification", {payload}]')
                    assert reply[:3] == [4, "b", code], payload
                assert (await roundtrip('[2, "dt", "DataTransfer", {"vendorId": "acme"}]')) == [
                    3,
                    "dt",
                    {"status": "Rejected"},
                ]
                # Quirky meter values: kWh, L1-N, a value that is not a number.
                values = [
                    {"value": "12.5", "unit": "kWh", "measurand": "Energy.Active.Import.Register"},
                    {"value": "16", "unit": "A", "measurand": "Current.Import", "phase": "L1-N"},
                    {"value": "n/a", "measurand": "SoC"},
                ]
                frame = json.dumps(
                    [
                        2,
                        "mv",
                        "MeterValues",
                        {
                            "connectorId": 1,
                            "transactionId": 0,
                            "meterValue": [
                                {"timestamp": "2026-01-01T00:00:00Z", "sampledValue": values}
                            ],
                        },
                    ]
                )
                assert await roundtrip(frame) == [3, "mv", {}]
            await ws.send('[3, "nobody-asked", {}]')  # a stray answer is dropped silently
            reply = await roundtrip('[2, "hb", "Heartbeat", {}]')
            assert reply[:2] == [3, "hb"]
            assert "currentTime" in reply[2]

    asyncio.run(scenario())
    if version == "1.6":
        with srv.db.read() as s:
            rows = {(r.measurand, r.phase): r.value for r in s.query(MeterValue)}
        assert rows[(int(Measurand.ENERGY_IMPORT_WH), 0)] == 12500.0
        assert rows[(int(Measurand.CURRENT_IMPORT_A), 1)] == 16.0
        assert rows[(int(Measurand.POWER_IMPORT_W), 0)] == 16 * 230.0  # derived


def test_message_rate_limit(ocpp_server: Callable[..., Server]) -> None:
    srv = ocpp_server(rate_per_s=1.0, rate_burst=3)
    setup_depot(srv, ("CP1", "cp-1", None))

    async def scenario() -> None:
        async with websockets.connect(f"{srv.ws}/CP1", subprotocols=["ocpp1.6"]) as ws:
            replies = []
            for i in range(5):
                await ws.send(f'[2, "h{i}", "Heartbeat", {{}}]')
                replies.append(json.loads(await ws.recv()))
            assert [r[0] for r in replies] == [3, 3, 3, 4, 4]
            assert replies[3][2] == "GenericError"
            assert "rate limit" in replies[3][3]

            async def flood() -> None:
                for i in range(20):
                    await ws.send(f'[2, "f{i}", "Heartbeat", {{}}]')
                    await ws.recv()

            with pytest.raises(websockets.ConnectionClosed) as closed:
                await flood()  # a flood: the connection is closed
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008

    asyncio.run(scenario())


def test_a_rate_limited_call_is_answered_in_turn(ocpp_server: Callable[..., Server]) -> None:
    """Calls sent back to back (against OCPP-J's one-at-a-time rule) are answered in the order
    they came, the refused one included: its CallError does not overtake the answers to the
    calls before it that are still being handled."""
    srv = ocpp_server(rate_per_s=0.5, rate_burst=3)
    setup_depot(srv, ("CP1", "cp-1", None))
    values = [{"value": "12500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]
    meter = {
        "connectorId": 1,
        "meterValue": [{"timestamp": "2026-01-01T00:00:00Z", "sampledValue": values}],
    }

    async def scenario() -> None:
        async with websockets.connect(f"{srv.ws}/CP1", subprotocols=["ocpp1.6"]) as ws:
            frames = [json.dumps([2, f"m{i}", "MeterValues", meter]) for i in range(3)]
            frames.append('[2, "over", "Heartbeat", {}]')
            for frame in frames:
                await ws.send(frame)
            replies = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in frames]
            assert [r[1] for r in replies] == ["m0", "m1", "m2", "over"]
            assert [r[0] for r in replies] == [3, 3, 3, 4]
            assert "rate limit" in replies[3][3]

    asyncio.run(scenario())


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_security_profile_2_tls_and_basic_auth(
    ocpp_server: Callable[..., Server], tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    srv = ocpp_server(ssl={"ssl_certfile": str(cert), "ssl_keyfile": str(key)})
    setup_depot(srv, ("CP1", "cp-1", PASSWORD))
    context = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        async with websockets.connect(
            f"{srv.ws}/CP1",
            subprotocols=["ocpp1.6"],
            additional_headers=_basic("CP1", PASSWORD),
            ssl=context,
        ) as ws:
            await ws.send(
                '[2, "b", "BootNotification", {"chargePointVendor": "A", "chargePointModel": "B"}]'
            )
            reply = json.loads(await ws.recv())
            assert reply[2]["status"] == "Accepted"
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(f"{srv.ws}/CP1", subprotocols=["ocpp1.6"], ssl=context):
                pass
        assert info.value.response.status_code == 401

    asyncio.run(scenario())
    assert srv.ws.startswith("wss://")
