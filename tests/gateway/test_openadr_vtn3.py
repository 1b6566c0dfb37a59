"""A small OpenADR 3.1 VTN for the tests, served with FastAPI over HTTPS on 127.0.0.1, and a
throwaway PKI (CA, VTN and VEN certificates) that the 2.0b TLS tests use too.

The VTN implements what a VEN and a business-logic client use, following the 3.1.1 OpenAPI
schemas: ``GET /auth/server``, ``POST /auth/token`` (client credentials, form-encoded),
``/programs``, ``/events`` (create, search with ``programID``/``skip``/``limit`` <= 50, update,
delete), ``/subscriptions`` (operations ``READ|CREATE|UPDATE|DELETE``, webhooks with the
subscriber's bearer token), and ``/reports``. Every object carries ``id``, ``createdDateTime``,
``modificationDateTime`` and ``objectType``. Only the business-logic client may write programs
and events; requests without a valid bearer token get 401 problems.

The tests at the bottom check the VTN itself against the schema rules it claims.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote_plus

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tests.gateway.live import LiveServer

# -- a throwaway PKI ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, and VTN and VEN certificates it signed (both valid for 127.0.0.1)."""

    ca_cert: Path
    vtn_cert: Path
    vtn_key: Path
    ven_cert: Path
    ven_key: Path

    def context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the CA."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """A CA and two ECDSA P-256 certificates in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ampflow test CA")])
    ca = _cert("Ampflow test CA", ca_key, ca_name, ca_key, ca=True)
    out = {"ca_cert": directory / "ca.crt"}
    out["ca_cert"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("vtn", "ven"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"test {who}", key, ca_name, ca_key, ca=False)
        out[f"{who}_cert"] = directory / f"{who}.crt"
        out[f"{who}_key"] = directory / f"{who}.key"
        out[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, out[f"{who}_key"])
    return Pki(**out)


# -- the 3.1 schemas the VTN validates against ----------------------------------------------------

ObjectId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]*$")]
Name128 = Annotated[str, Field(min_length=1, max_length=128)]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IntervalPeriod(_Schema):
    start: str | None = None
    duration: str | None = None
    randomizeStart: str | None = None  # noqa: N815 - the wire name


class ValuesMap(_Schema):
    type: Name128
    values: list[Any]


class Interval(_Schema):
    id: int
    intervalPeriod: IntervalPeriod | None = None  # noqa: N815
    payloads: list[ValuesMap]


class EventPayloadDescriptor(_Schema):
    objectType: Literal["EVENT_PAYLOAD_DESCRIPTOR"] = "EVENT_PAYLOAD_DESCRIPTOR"  # noqa: N815
    payloadType: Name128  # noqa: N815
    units: str | None = None
    currency: str | None = None


class ReportPayloadDescriptor(_Schema):
    objectType: Literal["REPORT_PAYLOAD_DESCRIPTOR"] = "REPORT_PAYLOAD_DESCRIPTOR"  # noqa: N815
    payloadType: Name128  # noqa: N815
    readingType: str | None = None  # noqa: N815
    units: str | None = None
    accuracy: float | None = None
    confidence: int | None = Field(default=None, ge=0, le=100)


class ReportDescriptor(_Schema):
    payloadType: Name128  # noqa: N815
    readingType: str | None = None  # noqa: N815
    units: str | None = None
    targets: list[str] | None = None
    aggregate: bool = False
    startInterval: int = -1  # noqa: N815
    numIntervals: int = -1  # noqa: N815
    historical: bool = True
    frequency: int = -1
    repeat: int = 1
    reportIntervals: Literal["INTERVALS", "SUB_INTERVALS", "OPEN_INTERVALS"] = "INTERVALS"  # noqa: N815


class ProgramRequest(_Schema):
    programName: Name128  # noqa: N815
    intervalPeriod: IntervalPeriod | None = None  # noqa: N815
    programDescriptions: list[dict[str, Any]] | None = None  # noqa: N815
    payloadDescriptors: list[EventPayloadDescriptor | ReportPayloadDescriptor] | None = None  # noqa: N815
    attributes: list[ValuesMap] | None = None
    targets: list[str] | None = None


class EventRequest(_Schema):
    programID: ObjectId  # noqa: N815
    eventName: str | None = None  # noqa: N815
    duration: str | None = None
    priority: int | None = Field(default=None, ge=0)
    targets: list[str] | None = None
    reportDescriptors: list[ReportDescriptor] | None = None  # noqa: N815
    payloadDescriptors: list[EventPayloadDescriptor] | None = None  # noqa: N815
    intervalPeriod: IntervalPeriod | None = None  # noqa: N815
    intervals: list[Interval] | None = None


class ObjectOperation(_Schema):
    objects: list[Literal["PROGRAM", "EVENT", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE"]]
    operations: list[Literal["READ", "CREATE", "UPDATE", "DELETE"]]
    callbackUrl: Annotated[str, Field(min_length=2, max_length=8000)]  # noqa: N815
    bearerToken: str | None = None  # noqa: N815


class SubscriptionRequest(_Schema):
    clientName: Name128  # noqa: N815
    programID: ObjectId | None = None  # noqa: N815
    objectOperations: list[ObjectOperation]  # noqa: N815
    targets: list[str] | None = None


class ReportResource(_Schema):
    resourceName: Name128  # noqa: N815
    intervalPeriod: IntervalPeriod | None = None  # noqa: N815
    intervals: list[Interval]


class ReportRequest(_Schema):
    eventID: ObjectId  # noqa: N815
    clientName: Name128  # noqa: N815
    reportName: str | None = None  # noqa: N815
    payloadDescriptors: list[ReportPayloadDescriptor] | None = None  # noqa: N815
    resources: list[ReportResource]


# -- the VTN --------------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _problem(status: int, title: str, detail: str = "") -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}, status
    )


@dataclass
class Vtn3State:
    """Everything the VTN holds, and what it saw."""

    clients: dict[str, tuple[str, str]]  # client_id -> (secret, role "VEN"|"BL")
    tokens: dict[str, str] = field(default_factory=dict)  # token -> client_id
    programs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: list[dict[str, Any]] = field(default_factory=list)
    token_requests: int = 0
    notifications: list[tuple[str, str, int]] = field(default_factory=list)  # (op, id, status)
    event_reads: int = 0
    webhooks: bool = True
    counter: int = 0

    def new_id(self, kind: str) -> str:
        self.counter += 1
        return f"{kind}-{self.counter}"


def _caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> tuple[str, str]:
    """The client id and role ("VEN" or "BL") of the request's bearer token."""
    st: Vtn3State = request.app.state.vtn
    token = (authorization or "").removeprefix("Bearer ").strip()
    client = st.tokens.get(token)
    if client is None:
        raise HTTPException(401, "a valid bearer token is required")
    return client, st.clients[client][1]


Caller = Annotated[tuple[str, str], Depends(_caller)]
Skip = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=0, le=50)]


class Vtn3(LiveServer):
    """The VTN app served over HTTPS in a thread; ``bl()`` is a business-logic client."""

    VEN_ID, VEN_SECRET = "ampflow-ven", "ven-secret-0123456789"
    BL_ID, BL_SECRET = "utility-bl", "bl-secret-0123456789"

    def __init__(self, pki: Pki, *, webhooks: bool = True) -> None:
        self.pki = pki
        self.state = Vtn3State(
            clients={self.VEN_ID: (self.VEN_SECRET, "VEN"), self.BL_ID: (self.BL_SECRET, "BL")},
            webhooks=webhooks,
        )
        self.app = self._app()
        super().__init__(
            self.app,
            scheme="https",
            what="the test VTN",
            ssl_certfile=str(pki.vtn_cert),
            ssl_keyfile=str(pki.vtn_key),
            timeout_graceful_shutdown=2,
        )

    def bl(self) -> httpx.Client:
        """A business-logic client with a token."""
        r = httpx.post(
            f"{self.url}/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.BL_ID,
                "client_secret": self.BL_SECRET,
            },
            verify=self.pki.context(),
        )
        r.raise_for_status()
        token = r.json()["access_token"]
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            verify=self.pki.context(),
            timeout=20.0,
        )

    # -- the app ------------------------------------------------------------------------------

    def _app(self) -> FastAPI:
        app = FastAPI(title="test VTN 3.1")
        st = self.state
        app.state.vtn = st

        def bl_only(who: tuple[str, str]) -> None:
            if who[1] != "BL":
                raise HTTPException(403, "only the business logic may write this")

        @app.exception_handler(HTTPException)
        async def problems(_: Request, exc: HTTPException) -> JSONResponse:
            return _problem(exc.status_code, str(exc.detail))

        @app.get("/auth/server")
        def auth_server(request: Request) -> dict[str, str]:
            return {"tokenURL": f"{str(request.base_url).rstrip('/')}/auth/token"}

        @app.post("/auth/token")
        async def token(request: Request) -> JSONResponse:
            # application/x-www-form-urlencoded (RFC 6749), parsed by hand: no multipart needed
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            st.token_requests += 1
            if form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type"}, 400)
            client_id, secret = form.get("client_id", ""), form.get("client_secret")
            basic = request.headers.get("authorization", "")
            if basic.startswith("Basic "):  # RFC 6749 2.3.1: servers must accept HTTP Basic too
                user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                client_id, secret = unquote_plus(user), unquote_plus(password)
            if not client_id or st.clients.get(client_id, ("", ""))[0] != secret:
                return JSONResponse({"error": "invalid_client"}, 401)
            tok = secrets.token_urlsafe(24)
            st.tokens[tok] = client_id
            return JSONResponse({"access_token": tok, "token_type": "Bearer", "expires_in": 3600})

        def page(items: list[dict[str, Any]], skip: int, limit: int) -> list[dict[str, Any]]:
            return items[skip : skip + limit]

        @app.get("/programs")
        def programs(who: Caller, skip: Skip = 0, limit: Limit = 50) -> list[dict[str, Any]]:
            return page(list(st.programs.values()), skip, limit)

        @app.post("/programs", status_code=201)
        def create_program(body: ProgramRequest, who: Caller) -> dict[str, Any]:
            bl_only(who)
            obj = self._stored("PROGRAM", "program", body.model_dump(exclude_none=True))
            st.programs[obj["id"]] = obj
            return obj

        @app.get("/events")
        def events(
            who: Caller,
            programID: Annotated[str | None, Query()] = None,
            skip: Skip = 0,
            limit: Limit = 50,
        ) -> list[dict[str, Any]]:
            st.event_reads += 1
            found = [e for e in st.events.values() if programID in (None, e["programID"])]
            return page(found, skip, limit)

        @app.post("/events", status_code=201)
        async def create_event(body: EventRequest, who: Caller) -> dict[str, Any]:
            bl_only(who)
            if body.programID not in st.programs:
                raise HTTPException(404, f"program {body.programID} does not exist")
            obj = self._stored("EVENT", "event", body.model_dump(exclude_none=True))
            st.events[obj["id"]] = obj
            await self._notify("EVENT", "CREATE", obj)
            return obj

        @app.put("/events/{event_id}")
        async def update_event(event_id: str, body: EventRequest, who: Caller) -> dict[str, Any]:
            bl_only(who)
            old = st.events.get(event_id)
            if old is None:
                raise HTTPException(404, f"no event {event_id}")
            obj = {
                **{k: old[k] for k in ("id", "createdDateTime", "objectType")},
                "modificationDateTime": _now(),
                **body.model_dump(exclude_none=True),
            }
            st.events[event_id] = obj
            await self._notify("EVENT", "UPDATE", obj)
            return obj

        @app.delete("/events/{event_id}")
        async def delete_event(event_id: str, who: Caller) -> dict[str, Any]:
            bl_only(who)
            obj = st.events.pop(event_id, None)
            if obj is None:
                raise HTTPException(404, f"no event {event_id}")
            await self._notify("EVENT", "DELETE", obj)
            return obj

        @app.post("/subscriptions", status_code=201)
        def subscribe(body: SubscriptionRequest, who: Caller) -> Any:
            if not st.webhooks:
                return _problem(501, "Not Implemented", "this VTN offers no webhooks")
            obj = self._stored("SUBSCRIPTION", "sub", body.model_dump(exclude_none=True))
            obj["clientID"] = who[0]
            st.subscriptions[obj["id"]] = obj
            return obj

        @app.get("/subscriptions")
        def subscriptions(who: Caller, skip: Skip = 0, limit: Limit = 50) -> list[dict[str, Any]]:
            return page(list(st.subscriptions.values()), skip, limit)

        @app.delete("/subscriptions/{sub_id}")
        def unsubscribe(sub_id: str, who: Caller) -> dict[str, Any]:
            obj = st.subscriptions.pop(sub_id, None)
            if obj is None:
                raise HTTPException(404, f"no subscription {sub_id}")
            return obj

        @app.post("/reports", status_code=201)
        def report(body: ReportRequest, who: Caller) -> dict[str, Any]:
            if who[1] != "VEN":
                raise HTTPException(403, "only VENs write reports")
            obj = self._stored("REPORT", "report", body.model_dump(exclude_none=True))
            obj["clientID"] = who[0]
            st.reports.append(obj)
            return obj

        @app.get("/reports")
        def reports(who: Caller, skip: Skip = 0, limit: Limit = 50) -> list[dict[str, Any]]:
            return page(st.reports, skip, limit)

        return app

    def _stored(self, object_type: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        now = _now()
        return {
            "id": self.state.new_id(kind),
            "createdDateTime": now,
            "modificationDateTime": now,
            "objectType": object_type,
            **body,
        }

    async def _notify(self, object_type: str, operation: str, obj: dict[str, Any]) -> None:
        """POST a notification to every matching subscription's callback (bounded)."""
        posts = []
        for sub in list(self.state.subscriptions.values()):
            if sub.get("programID") not in (None, obj.get("programID")):
                continue
            for op in sub["objectOperations"]:
                if object_type in op["objects"] and operation in op["operations"]:
                    posts.append((op["callbackUrl"], op.get("bearerToken")))
        async with httpx.AsyncClient(timeout=5.0) as client:
            for url, token in posts:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                body = {"objectType": object_type, "operation": operation, "object": obj}
                try:
                    r = await client.post(url, json=body, headers=headers)
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0
                self.state.notifications.append((operation, str(obj["id"]), status))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def vtn3(pki: Pki) -> Iterator[Vtn3]:
    with Vtn3(pki) as vtn:
        yield vtn


# -- the VTN itself -------------------------------------------------------------------------------


def test_vtn3_token_endpoint_and_bearer_auth(vtn3: Vtn3, pki: Pki) -> None:
    with httpx.Client(base_url=vtn3.url, verify=pki.context()) as c:
        assert c.get("/auth/server").json() == {"tokenURL": f"{vtn3.url}/auth/token"}
        bad = c.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": vtn3.VEN_ID,
                "client_secret": "x",
            },
        )
        assert bad.status_code == 401
        assert bad.json() == {"error": "invalid_client"}
        assert c.get("/events").status_code == 401
        ok = c.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": vtn3.VEN_ID,
                "client_secret": vtn3.VEN_SECRET,
            },
        ).json()
        assert ok["token_type"] == "Bearer"
        headers = {"Authorization": f"Bearer {ok['access_token']}"}
        assert c.get("/events", headers=headers).json() == []
        # A VEN may not write events.
        r = c.post("/events", json={"programID": "p"}, headers=headers)
        assert r.status_code == 403


def test_vtn3_follows_the_31_schemas(vtn3: Vtn3) -> None:
    with vtn3.bl() as c:
        prog = c.post("/programs", json={"programName": "GAC"}).json()
        assert set(prog) >= {"id", "createdDateTime", "modificationDateTime", "objectType"}
        assert c.post("/events", json={"programID": prog["id"], "bogus": 1}).status_code == 422
        assert c.post("/events", json={"programID": prog["id"], "priority": -1}).status_code == 422
        for i in range(60):
            c.post("/events", json={"programID": prog["id"], "eventName": f"e{i}"})
        assert len(c.get("/events").json()) == 50  # one page at most
        assert c.get("/events", params={"limit": 51}).status_code == 422
        assert len(c.get("/events", params={"skip": 50}).json()) == 10
        op = {"objects": ["EVENT"], "operations": ["POST"], "callbackUrl": "https://x/cb"}
        legacy = {"clientName": "v", "objectOperations": [op]}
        assert c.post("/subscriptions", json=legacy).status_code == 422  # 3.1 names only
        ok = {"clientName": "v", "objectOperations": [{**op, "operations": ["CREATE"]}]}
        assert c.post("/subscriptions", json=ok).status_code == 201


def test_vtn3_sends_webhooks_with_the_subscribers_token(vtn3: Vtn3) -> None:
    seen: list[tuple[str | None, dict[str, Any]]] = []
    hook = FastAPI()

    @hook.post("/cb")
    async def cb(request: Request) -> dict[str, str]:
        seen.append((request.headers.get("authorization"), await request.json()))
        return {}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(hook, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        with vtn3.bl() as c:
            prog = c.post("/programs", json={"programName": "GAC"}).json()
            sub = {
                "clientName": "v",
                "programID": prog["id"],
                "objectOperations": [
                    {
                        "objects": ["EVENT"],
                        "operations": ["CREATE", "DELETE"],
                        "callbackUrl": f"http://127.0.0.1:{port}/cb",
                        "bearerToken": "tok",
                    }
                ],
            }
            assert c.post("/subscriptions", json=sub).status_code == 201
            ev = c.post("/events", json={"programID": prog["id"]}).json()
            c.put(f"/events/{ev['id']}", json={"programID": prog["id"], "priority": 1})
            c.delete(f"/events/{ev['id']}")
        assert [(a, b["operation"], b["object"]["id"]) for a, b in seen] == [
            ("Bearer tok", "CREATE", ev["id"]),
            ("Bearer tok", "DELETE", ev["id"]),
        ]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_pki_certificates_verify_against_the_ca(pki: Pki) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.ven_cert), str(pki.ven_key))  # the key matches the certificate
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    for cert_file in (pki.vtn_cert, pki.ven_cert):
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
