"""Helpers to write small scenarios into a temporary folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

SITE: dict[str, Any] = {
    "id": "depot",
    "import_kw": 40.0,
    "voltage_v": 230,
    "nodes": [{"id": "panel", "parent": "depot", "phase_a": [63, 63, 63]}],
    "chargers": [
        {"id": "cp-1", "node": "panel", "connectors": 2, "max_kw": 22, "phases": 3},
        {"id": "cp-2", "node": "panel", "max_kw": 7.4, "phases": 1, "phase": "L2"},
        {"id": "dc-1", "node": "depot", "max_kw": 50, "kind": "DC", "bidirectional": True},
    ],
}

START = "2026-03-02T00:00:00+01:00"


def sessions_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def default_sessions(**change: object) -> pd.DataFrame:
    """The sessions :func:`write_scenario` writes by default: ``a`` (30 kWh on cp-1, 00:10 to
    04:00) and ``b`` (10 kWh on cp-2, 01:00 to 05:00), with ``change`` applied to ``b``."""
    rows: list[dict[str, object]] = [
        {
            "session_id": "a",
            "charger_id": "cp-1",
            "arrival": "2026-03-02T00:10:00+01:00",
            "departure": "2026-03-02T04:00:00+01:00",
            "energy_kwh": 30.0,
            "max_kw": 11.0,
        },
        {
            "session_id": "b",
            "charger_id": "cp-2",
            "arrival": "2026-03-02T01:00:00+01:00",
            "departure": "2026-03-02T05:00:00+01:00",
            "energy_kwh": 10.0,
            "max_kw": 7.4,
        },
    ]
    rows[1].update(change)
    return pd.DataFrame(rows)


def write_scenario(
    folder: Path,
    *,
    sessions: pd.DataFrame | None = None,
    prices: pd.DataFrame | None = None,
    extra: dict[str, Any] | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
    hours: int = 6,
) -> Path:
    """A one-site scenario of ``hours`` with 15-minute steps; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    start = pd.Timestamp(START)
    if sessions is None:
        sessions = default_sessions()
    if prices is None:
        times = pd.date_range(start, periods=hours, freq="h")
        prices = pd.DataFrame(
            {
                "time": [t.isoformat() for t in times],
                "import_per_kwh": [0.3, 0.1, 0.1, 0.2, 0.4, 0.3][:hours] + [0.2] * (hours - 6),
            }
        )
    sessions.to_csv(folder / "sessions.csv", index=False)
    prices.to_csv(folder / "prices.csv", index=False)
    doc: dict[str, Any] = {
        "name": "tiny",
        "timezone": "Europe/Amsterdam",
        "start": START,
        "end": (start + pd.Timedelta(hours=hours)).isoformat(),
        "step": "15min",
        "sites": [SITE],
        "sessions": "sessions.csv",
        "prices": "prices.csv",
    }
    for name, table in (tables or {}).items():
        table.to_csv(folder / f"{name}.csv", index=False)
        doc[name] = f"{name}.csv"
    doc.update(extra or {})
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_scenario(tmp_path / "tiny")
