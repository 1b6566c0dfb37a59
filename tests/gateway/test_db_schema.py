"""The migrations build exactly the models' schema, on SQLite and PostgreSQL, and the types hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.exc import IntegrityError, StatementError

from ampflow.gateway.db import Database
from ampflow.gateway.db.base import Measurand, Phase
from ampflow.gateway.db.migrate import current_revision, downgrade, head_revision, schema_diff
from ampflow.gateway.db.models import MeterValue, Site
from ampflow.gateway.settings import Environment, Settings, load_settings


def test_migrations_match_models(db: Database) -> None:
    assert current_revision(db.engine) == head_revision()
    assert schema_diff(db.engine) == []


def test_downgrade_then_upgrade_round_trips(db: Database) -> None:
    downgrade(db.engine, "base")
    assert current_revision(db.engine) is None
    assert "sites" not in sa.inspect(db.engine).get_table_names()
    db.upgrade()
    assert schema_diff(db.engine) == []


def test_upgrade_is_idempotent(db: Database) -> None:
    db.upgrade()
    assert current_revision(db.engine) == head_revision()


def _site(site_id: str, **kw: object) -> Site:
    return Site(id=site_id, timezone="Europe/Amsterdam", import_kw=50.0, **kw)


def test_datetimes_come_back_as_utc(db: Database) -> None:
    cet = timezone(timedelta(hours=1))
    with db.write() as s:
        s.add(_site("a", created_at=datetime(2026, 3, 2, 9, 30, tzinfo=cet)))
    with db.read() as s:
        site = s.scalars(sa.select(Site)).one()
    assert site.created_at == datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    assert site.created_at.utcoffset() == timedelta(0)


def test_naive_datetimes_are_refused(db: Database) -> None:
    def write() -> None:
        with db.write() as s:
            s.add(_site("a", created_at=datetime(2026, 3, 2, 9, 30)))

    with pytest.raises(StatementError, match="timezone-aware"):
        write()


def test_a_failed_write_leaves_nothing(db: Database) -> None:
    with db.write() as s:
        s.add(_site("a"))

    def write_both() -> None:
        with db.write() as s:
            s.add(_site("b"))
            s.flush()
            s.add(_site("a"))  # duplicate id: the whole transaction goes

    with pytest.raises(IntegrityError):
        write_both()
    with db.read() as s:
        assert s.scalars(sa.select(Site.id)).all() == ["a"]


def test_meter_values_are_compact_and_keyed(db: Database) -> None:
    """No surrogate id: the natural key is the primary key (and the SQLite table has no rowid)."""
    pk = sa.inspect(db.engine).get_pk_constraint("meter_values")
    assert pk["constrained_columns"] == ["connector_pk", "measurand", "phase", "ts"]
    columns = [c["name"] for c in sa.inspect(db.engine).get_columns("meter_values")]
    assert columns == ["connector_pk", "measurand", "phase", "ts", "value"]
    if db.dialect == "sqlite":
        with db.engine.connect() as conn:
            ddl = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'meter_values'"
            ).scalar_one()
        assert "WITHOUT ROWID" in ddl
    # The same key twice is refused, so a re-sent value cannot be stored twice.
    row = {
        "connector_pk": 1,
        "measurand": Measurand.POWER_IMPORT_W,
        "phase": Phase.NONE,
        "ts": 1_772_438_400,
        "value": 7400.0,
    }
    with db.write() as s:
        s.add(_site("a"))
        s.flush()
        s.execute(
            sa.text(
                "INSERT INTO chargers (site_pk, id, max_kw, kind, phases, rotation, min_a, min_kw,"
                " bidirectional, priority) VALUES (1, 'cp', 11, 'AC', 3, 'RST', 6, 0, false, 1)"
            )
        )
        s.execute(
            sa.text(
                "INSERT INTO connectors (charger_pk, site_pk, number, priority) VALUES (1, 1, 1, 1)"
            )
        )
        s.execute(sa.insert(MeterValue), [row])
    with pytest.raises(IntegrityError), db.write() as s:
        s.execute(sa.insert(MeterValue), [row])


def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError), db.write() as s:
        s.execute(
            sa.insert(MeterValue),
            [{"connector_pk": 999, "measurand": 1, "phase": 0, "ts": 0, "value": 0.0}],
        )


def test_settings_read_environment_and_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "ampflow.toml"
    toml.write_text('tick_s = 2.5\nreplan_s = 60\ndatabase_url = "sqlite:////tmp/from-file.db"\n')
    monkeypatch.setenv("AMPFLOW_REPLAN_S", "120")
    monkeypatch.delenv("AMPFLOW_DATABASE_URL", raising=False)
    s = load_settings(toml, port=9001)
    assert (s.tick_s, s.replan_s, s.port) == (2.5, 120.0, 9001)  # kwargs > env > file
    assert s.effective_database_url() == "sqlite:////tmp/from-file.db"
    monkeypatch.setenv("AMPFLOW_CONFIG", str(toml))
    assert load_settings().tick_s == 2.5
    with pytest.raises(FileNotFoundError, match="config_file"):
        load_settings(tmp_path / "missing.toml")


def test_settings_default_data_dir_and_sqlite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("AMPFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("AMPFLOW_DATA_DIR", raising=False)
    s = Settings()
    assert s.data_dir == tmp_path / "ampflow"
    assert s.effective_database_url() == f"sqlite:///{tmp_path / 'ampflow' / 'ampflow.db'}"


@pytest.mark.parametrize("environment", ["production", "test"])
def test_settings_refuse_default_secret_outside_development(
    environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AMPFLOW_SECRET_KEY", raising=False)
    with pytest.raises(ValueError, match="secret_key"):
        Settings(environment=Environment(environment))
    with pytest.raises(ValueError, match="at least 32"):
        Settings(environment=Environment(environment), secret_key=SecretStr("short"))
    ok = Settings(environment=Environment(environment), secret_key=SecretStr("x" * 32))
    assert ok.secret_key.get_secret_value() == "x" * 32
