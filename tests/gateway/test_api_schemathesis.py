"""schemathesis against the live app (uvicorn on 127.0.0.1, control loop running): for every
operation, a bounded number of generated requests, valid and invalid. No 5xx, and every answer
conforms to the OpenAPI schema (status code, content type, headers, body)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ampflow.gateway.api import create_app
from ampflow.gateway.db import Database
from ampflow.gateway.settings import Settings
from tests.gateway.conftest import (
    BACKENDS,
    DEPOT,
    Api,
    LiveServer,
    depot,
    fresh_database,
    make_key,
    make_settings,
)

EXAMPLES = 10


@pytest.fixture(scope="module", params=BACKENDS)
def st_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """One live app per database for the whole module (the fuzzing accumulates in it), with a
    site, a station, a session, a DR event and prices to find."""
    with fresh_database(request.param, tmp_path_factory) as url:
        db = Database(url)
        db.upgrade()
        settings = make_settings(
            tmp_path_factory.mktemp("data"), url, tick_s=3600.0, replan_s=3600.0
        )
        app = create_app(settings, db=db, control=True)
        try:
            with LiveServer(app) as live:
                api = Api(live.url, db, settings, app, make_key(db, "admin"))
                _seed(api)
                yield api
        finally:
            db.dispose()


def _seed(api: Api) -> None:
    now = datetime.now(UTC)
    with api.client() as c:
        assert c.post("/sites", json=DEPOT).status_code == 201
        assert c.post("/sites", json=depot("other")).status_code == 201
        assert c.post("/stations", json={"id": "CP1", "site_id": "depot"}).status_code == 201
        assert c.post("/sessions", json={"connector_id": "depot/cp-1/1"}).status_code == 201
        event = {
            "id": "ev-1",
            "site_id": "depot",
            "start": now.isoformat(),
            "end": (now + timedelta(hours=1)).isoformat(),
            "cap_kw": 20,
        }
        assert c.post("/dr-events", json=event).status_code == 201
        prices = {
            "id": "pr-1",
            "site_id": "depot",
            "intervals": [
                {
                    "start": now.isoformat(),
                    "end": (now + timedelta(hours=1)).isoformat(),
                    "price": 0.2,
                }
            ],
        }
        assert c.post("/prices", json=prices).status_code == 201


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """Every operation of the app, read from its OpenAPI document (no server needed): valid
    inputs for all, and invalid inputs for those that take any."""
    app = create_app(
        Settings(data_dir=Path("/nonexistent"), database_url="sqlite://"), control=False
    )
    out = []
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            out.append((method.upper(), path, GenerationMode.POSITIVE))
            if op.get("parameters") or op.get("requestBody"):
                out.append((method.upper(), path, GenerationMode.NEGATIVE))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_api_conforms_to_its_schema(
    st_api: Api, method: str, path: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{st_api.url}/openapi.json", timeout=30)
    operation = schema[path][method]
    # Both documented schemes carry the key, so schemathesis treats auth as given, and probes
    # what happens without it.
    headers = {"Authorization": f"Bearer {st_api.admin}", "X-API-Key": st_api.admin}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES if mode is GenerationMode.POSITIVE else EXAMPLES // 2,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        # Every built-in check except positive_data_acceptance: schema-valid input may still be
        # refused with a field-level 422 by rules OpenAPI cannot state (a tree's parents exist,
        # end after start, sorted intervals, an IANA time zone).
        case.call_and_validate(
            headers=headers, timeout=30, excluded_checks=[positive_data_acceptance]
        )

    check()
