"""Helpers for the billing tests: OCPI tariffs, sessions with meter values run through the store
and the billing service, and the billing rows of the route access table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from ampflow.gateway import billing
from ampflow.gateway.db import Database
from ampflow.gateway.db.base import Measurand, Phase
from ampflow.gateway.db.models import Session
from ampflow.gateway.db.repo import meter, sessions
from tests.gateway.conftest import Api


def tariff(tariff_id: str = "t1", *elements: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An OCPI 2.2.1 Tariff; by default 0.25/kWh (10 % VAT) and a 0.50 start fee (20 % VAT)."""
    if not elements:
        elements = (
            {
                "price_components": [
                    {"type": "ENERGY", "price": 0.25, "vat": 10.0, "step_size": 1},
                    {"type": "FLAT", "price": 0.50, "vat": 20.0, "step_size": 1},
                ]
            },
        )
    return {
        "country_code": "NL",
        "party_id": "AMP",
        "id": tariff_id,
        "currency": "EUR",
        "elements": list(elements),
        "last_updated": "2026-01-01T00:00:00Z",
        **extra,
    }


def loads(text: str) -> Any:
    """JSON with exact decimals."""
    return json.loads(text, parse_float=Decimal)


def as_sent(obj: Any) -> Any:
    """``obj`` as the server reads it: its JSON with exact decimals."""
    return loads(json.dumps(obj))


@dataclass(frozen=True)
class Reading:
    """A meter reading [Wh, W, Wh exported]."""

    at: datetime
    wh: float
    w: float | None = None
    export_wh: float | None = None


def start(
    db: Database,
    connector_id: str,
    at: datetime,
    *,
    token: str | None = None,
    **targets: Any,
) -> str:
    """Open a session (as the API does without a station); returns its id."""
    with db.write() as s:
        row = sessions.start_session(
            s, connector_id=connector_id, started_at=at, id_token=token, targets=targets
        )
        return row.session.id


def read(db: Database, session_id: str, readings: Sequence[Reading]) -> None:
    """Store meter values of the session's connector."""
    with db.write() as s:
        pk = sessions.get_session(s, session_id).session.connector_pk
        samples = []
        for r in readings:
            ts = int(r.at.timestamp())
            samples.append(meter.MeterSample(pk, ts, Measurand.ENERGY_IMPORT_WH, r.wh))
            if r.w is not None:
                samples.append(meter.MeterSample(pk, ts, Measurand.POWER_IMPORT_W, r.w, Phase.NONE))
            if r.export_wh is not None:
                samples.append(meter.MeterSample(pk, ts, Measurand.ENERGY_EXPORT_WH, r.export_wh))
        meter.ingest_meter_values(s, samples)


def end(db: Database, session_id: str, at: datetime, *, now: datetime | None = None) -> None:
    """End a session and bill it, as the end of a transaction does."""
    with db.write() as s:
        row = sessions.stop_session(s, session_id, at=at)
        billing.on_session_end(s, row.session, now=now)


def run(
    db: Database,
    connector_id: str,
    readings: Sequence[Reading],
    stop: datetime,
    *,
    token: str | None = None,
    now: datetime | None = None,
    **targets: Any,
) -> str:
    """A whole session: starts at the first reading, ends at ``stop``, billed at ``now``."""
    session_id = start(db, connector_id, readings[0].at, token=token, **targets)
    read(db, session_id, readings)
    end(db, session_id, stop, now=now)
    return session_id


def session_pk(db: Database, session_id: str) -> int:
    with db.read() as s:
        return s.get_one(Session, sessions.get_session(s, session_id).session.pk).pk


# --- the billing rows of tests/gateway/test_api_auth.py ------------------------------------------

ADMIN, SM, UT, AN = "admin", "site_manager", "utility", "analyst"
ALL = {ADMIN, SM, UT, AN}
OPS = {ADMIN, SM, AN}
MANAGE = {ADMIN, SM}

BILLING_BODIES: dict[str, dict[str, Any]] = {
    "tariff": tariff("t-auth"),
    "tariff_put": tariff("t1"),
    "billing_patch": {"idle_grace_s": 120},
    "preview": {
        "start": "2030-03-02T08:00:00+01:00",
        "stop": "2030-03-02T10:00:00+01:00",
        "energy_kwh": 10,
    },
    "credit": {"reason": "meter replaced"},
    "cdr_issue": {"session_id": "set-by-seed"},
}

# (method, path) -> (roles allowed on the depot, body, site-scoped?)
BILLING_ACCESS: dict[tuple[str, str], tuple[set[str], str | None, bool]] = {
    ("GET", "/sites/{site_id}/tariffs"): (OPS, None, True),
    ("POST", "/sites/{site_id}/tariffs"): (MANAGE, "tariff", True),
    ("GET", "/sites/{site_id}/tariffs/{tariff_id}"): (OPS, None, True),
    ("PUT", "/sites/{site_id}/tariffs/{tariff_id}"): (MANAGE, "tariff_put", True),
    ("DELETE", "/sites/{site_id}/tariffs/{tariff_id}"): (MANAGE, None, True),
    ("GET", "/sites/{site_id}/billing"): (OPS, None, True),
    ("PATCH", "/sites/{site_id}/billing"): (MANAGE, "billing_patch", True),
    ("POST", "/sites/{site_id}/price-preview"): (OPS, "preview", True),
    ("GET", "/cdrs"): (OPS, None, True),
    ("POST", "/cdrs"): (MANAGE, "cdr_issue", True),
    ("GET", "/cdrs/{cdr_id}"): (OPS, None, True),
    ("POST", "/cdrs/{cdr_id}/credit"): ({ADMIN}, "credit", True),
    ("GET", "/cdrs/{cdr_id}/audit"): (OPS, None, True),
    ("GET", "/invoices"): (OPS, None, True),
    ("GET", "/v2g/sessions/{session_id}"): (OPS, None, True),
    ("GET", "/v2g/drivers"): (OPS, None, True),
    ("GET", "/v2g/sites/{site_id}"): (ALL, None, True),
}
BILLING_LISTINGS = {"/cdrs", "/invoices", "/v2g/drivers"}


def seed_billing(api: Api) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """A tariff on the depot and an ended session with its CDR: path parameters and bodies."""
    with api.client() as c:
        assert c.put("/sites/depot/tariffs/t1", json=tariff("t1")).status_code == 201
        ses = c.post("/sessions", json={"connector_id": "depot/cp-2/1", "id_token": "TAG-1"})
        assert ses.status_code == 201, ses.text
        session_id = ses.json()["id"]
        assert c.post(f"/sessions/{session_id}/stop").status_code == 200
        cdrs = c.get("/cdrs", params={"session_id": session_id}).json()
    assert len(cdrs) == 1, cdrs
    bodies = dict(BILLING_BODIES)
    bodies["cdr_issue"] = {"session_id": session_id}
    return {"tariff_id": "t1", "cdr_id": cdrs[0]["id"]}, bodies
