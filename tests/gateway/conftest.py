"""Fixtures for the gateway tests: a fresh database per test, on SQLite and on PostgreSQL.

The ``db_url`` fixture is parametrised over SQLite (a file in the test's tmp dir) and, when
``AMPFLOW_TEST_DATABASE_URL`` is set (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
PostgreSQL. Each PostgreSQL test gets its own schema (through ``search_path``), dropped at the
end, so tests are isolated and may run beside other users of the same database.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from ampflow.gateway.api import create_app
from ampflow.gateway.cli import app as cli
from ampflow.gateway.db import Database
from ampflow.gateway.db.base import Role
from ampflow.gateway.db.repo import keys as key_repo
from ampflow.gateway.settings import Environment, Settings
from tests.gateway.live import LiveServer

PG_URL = os.environ.get("AMPFLOW_TEST_DATABASE_URL")
BACKENDS = ["sqlite", *(["postgresql"] if PG_URL else [])]


def pg_schema_url(base_url: str, schema: str) -> str:
    """``base_url`` with its ``search_path`` set to ``schema``."""
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@contextmanager
def fresh_database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'ampflow.db'}"
        return
    assert PG_URL is not None
    schema = f"ampflow_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield pg_schema_url(PG_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database per test, on each backend."""
    with fresh_database(request.param, tmp_path_factory) as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database."""
    database = Database(db_url)
    database.upgrade()
    try:
        yield database
    finally:
        database.dispose()


# --- the API over real HTTP --------------------------------------------------------------------

SECRET = "test-secret-key-0123456789abcdef0123456789"


def make_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    """Test settings: a long tick, so the loop only runs when woken (or when a test asks)."""
    values: dict[str, Any] = {
        "environment": Environment.TEST,
        "secret_key": SecretStr(SECRET),
        "data_dir": tmp_path,
        "database_url": db_url,
        "tick_s": 3600.0,
        "replan_s": 3600.0,
    }
    values.update(overrides)
    return Settings(**values)


def make_key(db: Database, role: Role | str, sites: Sequence[str] = ()) -> str:
    """A new API key's token."""
    with db.write() as s:
        _, token = key_repo.create_api_key(
            s, role=Role(role), pepper=SECRET.encode(), site_ids=list(sites)
        )
    return token


@dataclass
class Api:
    """A live server with its database, settings and an admin key."""

    url: str
    db: Database
    settings: Settings
    app: Any
    admin: str

    def client(self, token: str | None = None, *, anonymous: bool = False) -> httpx.Client:
        """An HTTP client with ``token`` (default the admin key), or none if ``anonymous``."""
        headers = {} if anonymous else {"Authorization": f"Bearer {token or self.admin}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    def key(self, role: Role | str, sites: Sequence[str] = ()) -> str:
        return make_key(self.db, role, sites)

    @property
    def control(self) -> Any:
        return self.app.state.ctx.control


@pytest.fixture
def serve(db: Database, tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Start the app on a live server: ``serve(control=True, tick_s=..., ...)``."""
    stack = ExitStack()

    def start(*, control: bool = False, sink: Any = None, **overrides: Any) -> Api:
        settings = make_settings(tmp_path, str(db.url.render_as_string(False)), **overrides)
        app = create_app(settings, db=db, control=control, sink=sink)
        live = stack.enter_context(LiveServer(app))
        return Api(live.url, db, settings, app, make_key(db, Role.ADMIN))

    with stack:
        yield start


@pytest.fixture
def api(serve: Callable[..., Api]) -> Api:
    """The API on a live server, without the control loop."""
    return serve()


def depot(site_id: str = "depot") -> dict[str, Any]:
    """A small site: 50 kW and 80 A per phase, a 30 kW panel with a 2-connector 22 kW charger,
    and a single-phase 7.4 kW charger on L2; minimum import 5 kW."""
    return {
        "id": site_id,
        "name": "Depot",
        "timezone": "Europe/Amsterdam",
        "import_kw": 50,
        "phase_a": [80, 80, 80],
        "min_import_kw": 5,
        "nodes": [{"id": "panel-a", "parent": site_id, "import_kw": 30}],
        "chargers": [
            {"id": "cp-1", "node": "panel-a", "max_kw": 22, "connectors": 2},
            {"id": "cp-2", "node": site_id, "max_kw": 7.4, "phases": 1, "phase": "L2"},
        ],
    }


DEPOT = depot()


@pytest.fixture
def site(api: Api) -> Api:
    """The API on a live server with the :data:`DEPOT` site created."""
    with api.client() as c:
        assert c.post("/sites", json=DEPOT).status_code == 201
    return api


def error_messages(body: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    """An error response's ``detail``: each error's location, as a tuple, to its message."""
    return {tuple(e["loc"]): e["msg"] for e in body["detail"]}


# --- ampflow as a process ------------------------------------------------------------------

AMPFLOW = str(Path(sys.executable).parent / "ampflow")
STARTUP_S = 60


class ServerProcess:
    """``ampflow serve --port 0`` in a subprocess; ``url`` once it listens."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [AMPFLOW, "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self.threads: list[threading.Thread] = []
        self._drain(self.proc.stderr, self.stderr)
        self.url = self._wait_for_url()

    def _drain(self, stream: IO[str] | None, into: list[str]) -> None:
        def run() -> None:
            assert stream is not None
            for line in stream:
                into.append(line)

        self._thread(run)

    def _thread(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _close(self) -> None:
        for thread in self.threads:
            thread.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def _wait_for_url(self) -> str:
        assert self.proc.stdout is not None
        found = threading.Event()
        url: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                m = re.search(r"serving on (http://[\d.]+:\d+)", line)
                if m and not url:
                    url.append(m.group(1))
                    found.set()

        self._thread(read)
        if not found.wait(STARTUP_S):
            self.kill()
            raise AssertionError(f"server did not start: {''.join(self.stderr)[-3000:]}")
        return url[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)
        self._close()


@pytest.fixture
def server_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for ``ampflow`` subprocesses on the test database."""
    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AMPFLOW_") or k == "AMPFLOW_TEST_DATABASE_URL"
    }
    out.update(
        {
            "AMPFLOW_DATABASE_URL": db_url,
            "AMPFLOW_DATA_DIR": str(tmp_path),
            "AMPFLOW_ENVIRONMENT": "test",
            "AMPFLOW_SECRET_KEY": SECRET,
            "AMPFLOW_TICK_S": "0.5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return out


@pytest.fixture
def server(server_env: dict[str, str]) -> Iterator[ServerProcess]:
    """``ampflow serve`` on the test database, killed at the end if still running."""
    srv = ServerProcess(server_env)
    try:
        yield srv
    finally:
        if srv.proc.poll() is None:
            srv.kill()


def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Exit code, stdout, and stderr with rich's box drawing and line wrapping undone."""
    result = CliRunner().invoke(cli, list(args), env=env)
    err = " ".join(re.sub(r"[\u2500-\u257f]", " ", result.stderr).split())
    return result.exit_code, result.stdout, err
